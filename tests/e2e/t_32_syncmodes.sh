# Sync modes: gradient buckets overlapped with backward, and sharded
# (ZeRO-1) optimizer state, against the plain replicated run.
# sync.reproducible false: the default (auto) is false for sharded and true
# for replicated runs, which take their norms another way (t_45 has
# reproducible runs with buckets and sharded).
SM=(--set checkpoint.every_steps=10 --set train.momentum=0.5 --set sync.reproducible=false)
# same_logs A B: identical steps/epochs/events (but timings)
same_logs() {
    cmp <(strip_t "$1/steps.jsonl") <(strip_t "$2/steps.jsonl") || { echo "steps.jsonl differ"; return 1; }
    cmp <(strip_t "$1/epochs.jsonl") <(strip_t "$2/epochs.jsonl") || { echo "epochs.jsonl differ"; return 1; }
    cmp <(strip_t "$1/events.jsonl") <(strip_t "$2/events.jsonl") || return 1
}

# The tiny model's ~5k parameters fit one default bucket; 1 KiB buckets cut
# it into ~20, started during backward. Same bits, step by step. Both as
# messages (sync.shared_memory off); then the default on one node: the
# gradients added in place through the shared window, same bits again.
bucketed() {
    local opt="$1"
    run sm_one_$opt 3 "${SM[@]}" --set train.optimizer="$opt" --set sync.bucket_kb=0 --set sync.shared_memory=off || return 1
    run sm_bkt_$opt 3 "${SM[@]}" --set train.optimizer="$opt" --set sync.bucket_kb=1 --set sync.shared_memory=off || return 1
    grep -q "in 1 bucket" "$TMP/sm_one_$opt.err" && grep -Eq "in [0-9]{2,} buckets" "$TMP/sm_bkt_$opt.err" ||
        { echo "bucket counts not as configured"; return 1; }
    same_logs "$TMP/sm_one_$opt" "$TMP/sm_bkt_$opt" || return 1
    build/tests/stcmp "$TMP/sm_one_$opt/final.safetensors" "$TMP/sm_bkt_$opt/final.safetensors" 0 || return 1
    run sm_shm_$opt 3 "${SM[@]}" --set train.optimizer="$opt" || return 1
    grep -q "sync replicated through shared memory" "$TMP/sm_shm_$opt.err" || { echo "not through shared memory"; return 1; }
    same_logs "$TMP/sm_one_$opt" "$TMP/sm_shm_$opt" || return 1
    build/tests/stcmp "$TMP/sm_one_$opt/final.safetensors" "$TMP/sm_shm_$opt/final.safetensors" 0
}
for opt in sgd adam; do
    check "sync $opt, 3 workers: 1 KiB buckets overlapped with backward == one bucket == shared memory, bit for bit" bucketed "$opt"
done

# Plain SGD (no momentum) through the shared window: the embedding rows no
# worker's tokens touched are skipped by the sum, the copies, the next
# zero-grad and the update; the same bits as dense messages, and the window
# holds the row flags (the start line says so).
plain_sgd_rows() {
    run sm_pmsg 3 "${SM[@]}" --set train.optimizer=sgd --set train.momentum=0 --set sync.shared_memory=off || return 1
    run sm_pshm 3 "${SM[@]}" --set train.optimizer=sgd --set train.momentum=0 || return 1
    grep -q "sync replicated through shared memory (one node), embedding rows only where touched" "$TMP/sm_pshm.err" ||
        { echo "not through shared memory with rows"; grep "sync replicated" "$TMP/sm_pshm.err"; return 1; }
    same_logs "$TMP/sm_pmsg" "$TMP/sm_pshm" || return 1
    build/tests/stcmp "$TMP/sm_pmsg/final.safetensors" "$TMP/sm_pshm/final.safetensors" 0
}
check "plain sgd, 3 workers: shared memory skipping untouched embedding rows == messages, bit for bit" plain_sgd_rows

# The shared window's file goes where Open MPI puts it (/dev/shm, or
# osc_sm_backing_directory): with too little room there (Docker gives 64 MiB),
# the workers say so in one line and sync as messages, same bits (Open MPI
# 4.1 would hang allocating it). A 1 MiB tmpfs stands in for a full /dev/shm.
shm_full() {
    local d="$TMP/smallshm"
    mkdir -p "$d" && mount -t tmpfs -o size=1m tmpfs "$d" ||
        { echo "cannot mount a tmpfs at $d (needs root and CAP_SYS_ADMIN): not tested"; return 1; }
    OMPI_MCA_osc_sm_backing_directory="$d" run sm_full 3 "${SM[@]}" --set train.optimizer=sgd
    local rc=$?
    umount "$d"
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -3 "$TMP/sm_full.err"; return 1; }
    grep "warn: sync.shared_memory" "$TMP/sm_full.err"
    [ "$(grep -c "warn: sync.shared_memory auto: every worker is on one node, but $d has 1 MiB free, the gradients' window needs [0-9]* MiB: gradients go as messages" "$TMP/sm_full.err")" = 1 ] || return 1
    grep -q "sync replicated in 1 bucket" "$TMP/sm_full.err" || return 1
    same_logs "$TMP/sm_one_sgd" "$TMP/sm_full" || return 1
    build/tests/stcmp "$TMP/sm_one_sgd/final.safetensors" "$TMP/sm_full/final.safetensors" 0
}
check "shared memory: too little room for the window: one warning, messages instead, same bits" shm_full

# Sharded: each worker keeps optimizer state for 1/W of the parameters and
# updates only those, then all-gathers parameters. Required: parameters
# within float rounding of replicated mode (tol 1e-6 of the largest value).
sharded() {
    local opt="$1"
    [ -s "$TMP/sm_one_$opt/final.safetensors" ] || return 1
    run sm_shd_$opt 3 "${SM[@]}" --set train.optimizer="$opt" --set sync.bucket_kb=1 --set sync.mode=sharded || return 1
    grep -q "sync sharded" "$TMP/sm_shd_$opt.err" || { echo "not sharded"; return 1; }
    build/tests/stcmp "$TMP/sm_one_$opt/final.safetensors" "$TMP/sm_shd_$opt/final.safetensors" 1e-6 || return 1
    # checkpoints hold the whole optimizer state, gathered from the shards
    /usr/bin/python3 tests/tools/ckcmp.py "$TMP/sm_one_$opt/checkpoints/step-00000030.safetensors" \
        "$TMP/sm_shd_$opt/checkpoints/step-00000030.safetensors" 1e-6
}
for opt in sgd adam; do
    check "sync $opt, 3 workers: sharded == replicated to float rounding (weights and checkpointed moments)" sharded "$opt"
done

# Resume across modes: a replicated checkpoint resumed sharded, and a sharded
# one resumed sharded, finish where the uninterrupted runs do.
sharded_resume() {
    run sm_shr 3 "${SM[@]}" --set train.optimizer=adam --set sync.mode=sharded --set train.epochs=1 || return 1
    run sm_shr 3 "${SM[@]}" --set train.optimizer=adam --set sync.mode=sharded --resume latest || return 1
    same_logs "$TMP/sm_shd_adam" "$TMP/sm_shr" || return 1
    build/tests/stcmp "$TMP/sm_shd_adam/final.safetensors" "$TMP/sm_shr/final.safetensors" 0 || return 1
    run sm_x 3 "${SM[@]}" --set train.optimizer=adam --set train.epochs=1 || return 1
    run sm_x 3 "${SM[@]}" --set train.optimizer=adam --set sync.mode=sharded --resume latest || return 1
    build/tests/stcmp "$TMP/sm_one_adam/final.safetensors" "$TMP/sm_x/final.safetensors" 1e-6
}
check "sharded: 1 epoch + resume == straight run; replicated checkpoint resumes sharded" sharded_resume

# Sharded with a rollback (the in-memory snapshot holds the shard's state) and
# 2 workers == 1 worker at the same global batch.
sharded_rollback() {
    local rb=(--set debug.spike_step=25 --set divergence.action=rollback --set divergence.warmup=10)
    run sm_rb1 1 "${SM[@]}" "${rb[@]}" --set data.batch_per_worker=8 || return 1
    run sm_rb2 2 "${SM[@]}" "${rb[@]}" --set sync.mode=sharded --set sync.bucket_kb=1 || return 1
    jq -s -e 'map(select(.action == "rollback")) | length == 1' "$TMP/sm_rb2/events.jsonl" >/dev/null ||
        { echo "no rollback"; cat "$TMP/sm_rb2/events.jsonl"; return 1; }
    build/tests/stcmp "$TMP/sm_rb1/final.safetensors" "$TMP/sm_rb2/final.safetensors" 1e-5
}
check "sharded, 2 workers, with a rollback == 1 worker at the same global batch" sharded_rollback
