# The protocol module (common/proto_mpi.c) under mpirun: its own dup of
# world (a message on world is not seen), the start-up broadcast, control
# messages, the step ring (3 rounds of 4 per worker, in order), a request
# to worker 0, wrong-size step messages received whole and refused, done.
for w in 1 2 3; do
    check "protocol W=$w: typed send/receive on the module's communicator" \
        mpirun -np "$((w + 1))" build/tests/mpi_proto
done
