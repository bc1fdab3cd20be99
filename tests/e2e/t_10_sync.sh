# Gradient sync and norm collective under mpirun against a float64 reference,
# for sizes that do and do not divide by W, and fewer elements than ranks.
for w in 1 2 3 4; do
    for n in 1000 7 2 100003; do
        check "sync W=$w n=$n: identical bits on every rank, norm = float64 reference" \
            mpirun -np "$w" build/tests/mpi_sync "$n"
        # The same through the shared window (sync.shared_memory auto: one node;
        # one rank has no window), and so with sync.reproducible's statistics.
        [ "$w" -gt 1 ] || continue
        check "sync W=$w n=$n through shared memory: identical bits on every rank, norm = float64 reference" \
            mpirun -np "$w" build/tests/mpi_sync "$n" shm
        check "sync W=$w n=$n reproducible, through shared memory: identical bits on every rank, norm = float64 reference" \
            mpirun -np "$w" build/tests/mpi_sync "$n" shmrepro
    done
done
# Buckets: the reduction cut into buckets of 7, 100, 4096 and 20000 floats,
# started as the buffer becomes final, gives the same gradient bits (checked
# inside) and the same norm bits as one bucket; buckets started before the
# end are reduced and all-gathered by sync_progress alone, as they land
# (20000: one all-gather per bucket; smaller ones in groups of 16384 floats),
# holding the rank-order sums before sync_grads (checked inside), each
# all-gather group reduced a 1/W part by every rank (checked inside: the
# buckets' traffic goes both ways, not to one owner). "shm": the shared
# window's reduction gives those bits too.
# (7, not 1: 100003 one-float buckets took 60 s at W=3 with the per-bucket
# all-gathers; a config cannot make buckets below 1 KiB = 256 floats.)
buckets_same_norm() {
    local w="$1" ref="" b norm
    for b in 0 7 100 4096 20000 shm; do
        norm=$(mpirun -np "$w" build/tests/mpi_sync 100003 "$b" | grep -o 'norm [0-9.e+-]*') || return 1
        echo "bucket $b: $norm"
        [ -z "$ref" ] && ref="$norm"
        [ "$norm" = "$ref" ] || { echo "norm differs from one bucket's: $ref"; return 1; }
    done
}
# same_norm W A B: mpi_sync's modes A (messages) and B (shared memory) pass
# and give the same norm bits:
# - repro / shmrepro: sync.reproducible's statistics (over the whole
#   gradient, in flat order);
# - rows / shmrows: an embedding-like matrix of rows of which each rank
#   writes a fifth (the rest zero): through shared memory only the rows some
#   rank wrote are added, copied and counted, and the sync lists exactly
#   those (checked inside); the gradient bits equal the dense sync's.
same_norm() {
    local a b
    a=$(mpirun -np "$1" build/tests/mpi_sync 100003 "$2" | grep -o 'norm [0-9.e+-]*') || return 1
    b=$(mpirun -np "$1" build/tests/mpi_sync 100003 "$3" | grep -o 'norm [0-9.e+-]*') || return 1
    echo "messages ($2): $a; shared memory ($3): $b"
    [ -n "$a" ] && [ "$a" = "$b" ]
}
for w in 2 3; do
    check "sync W=$w reproducible: shared memory == messages, norm bit for bit" same_norm "$w" repro shmrepro
    check "sync W=$w, rows a fifth written: shared memory skipping the others == messages, bit for bit" same_norm "$w" rows shmrows
    check "sync W=$w in buckets of 7, 100, 4096, 20000 floats and through shared memory: same bits as one bucket, gathered as they land, split 1/W a rank" buckets_same_norm "$w"
done
# worker/state.c's unit tests on 3 real ranks: the checkpoint gathers every
# rank's streams and carried state; resumed by 3 workers, by 1 with all the
# streams and by 6 with half each, every worker holds its own rows.
state_3_ranks() {
    mpirun -np 3 build/tests/test_state >"$TMP/state.out" 2>&1
    local rc=$?
    cat "$TMP/state.out"
    [ "$rc" = 0 ] || return 1
    [ "$(grep -c 'PASSED  \] 7 test' "$TMP/state.out")" = 3 ] || { echo "not every rank passed 7 tests"; return 1; }
    grep -q 'written by 3 workers x data.batch_per_worker 4' "$TMP/state.out"
}
check "state: checkpoint of 3 ranks, resumed by 3, 1 and 6 workers (test_state under mpirun)" state_3_ranks
