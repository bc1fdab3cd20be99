# Gradient sync and norm collective under mpirun against a float64 reference,
# for sizes that do and do not divide by W, and fewer elements than ranks.
for w in 1 2 3 4; do
    for n in 1000 7 2 100003; do
        check "sync W=$w n=$n: identical bits on every rank, norm = float64 reference" \
            mpirun -np "$w" build/tests/mpi_sync "$n"
    done
done
