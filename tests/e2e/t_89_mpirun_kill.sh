# SIGKILL of mpirun at random steps, with real jobs. The ranks see their
# parent gone and stop (the coordinator between steps, the workers within
# 0.1 s); no rank dies of SIGPIPE writing to mpirun's closed pipes; the
# launcher says mpirun was killed, exit 1; every log holds whole lines and
# whole steps (a step is in steps.jsonl only with its tensors.jsonl line);
# and --resume latest then ends exactly like a run never disturbed.
# MK_SEEDS="7 8" reruns chosen seeds.
MK=(--set train.steps_per_epoch=1000 --set model.hidden=32 --set data.seq_len=32 --set checkpoint.every_steps=25
    --set metrics.listen=off --set watchdog.straggler_window=0)
# the killed jobs: worker 0 sleeps 2 ms a step (debug.slow_ms; timing only,
# the results stay those of the reference), so a kill at a random step lands
# while the job still runs however fast the machine
MK_SLOW=(--set debug.slow_ms=2)
read -ra MK_SEEDS <<<"${MK_SEEDS:-1 2 3}"

mk_whole() { # DIR: whole JSON lines, and tensors.jsonl has the line of every 10th step logged
    local f last
    for f in steps epochs events tensors; do
        [ ! -s "$1/$f.jsonl" ] && continue
        jq -e . "$1/$f.jsonl" >/dev/null || { echo "$f.jsonl: a torn line"; return 1; }
        [ "$(tail -c 1 "$1/$f.jsonl" | od -An -c | tr -d ' ')" = '\n' ] || { echo "$f.jsonl: no final newline"; return 1; }
    done
    last=$(tail -1 "$1/steps.jsonl" | jq .seq)
    jq -s -e --argjson last "$last" '[.[] | .seq | select(. <= $last)] == [range(10; $last + 1; 10)]' "$1/tensors.jsonl" >/dev/null ||
        { echo "tensors.jsonl does not have the line of every 10th step up to step $last"; return 1; }
}

check "reference run, never disturbed" run_done mk_ref 2 "${MK[@]}"

mk_kill() {
    local seed="$1" at d pids m t0
    RANDOM="$seed"
    at=$(((RANDOM * 32768 + RANDOM) % 400 + 30))
    d="mk_$seed"
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$d" "${MK[@]}" "${MK_SLOW[@]}" >"$TMP/$d.out" 2>"$TMP/$d.err" &
    bg=$!
    wait_lines "$TMP/$d/steps.jsonl" 1 || return 1
    pids=$(job_pids "$bg" clipd-worker; job_pids "$bg" clipd)
    m=$(job_pids "$bg" mpirun)
    [ -n "$m" ] && [ -n "$pids" ] || { echo "no mpirun or ranks in the job"; return 1; }
    wait_lines "$TMP/$d/steps.jsonl" "$at" || return 1
    t0=$SECONDS
    kill -KILL "$m"
    wait "$bg"
    local rc=$?
    echo "seed $seed: SIGKILL to mpirun at step >= $at; launcher exit $rc; steps.jsonl has $(wc -l <"$TMP/$d/steps.jsonl") lines"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    grep -q "^clipd-launch: mpirun was killed by signal 9: the job ended, exit 1" "$TMP/$d.err" || return 1
    [ ! -e "$TMP/$d/final.safetensors" ] || { echo "the kill came after the run finished: tested nothing"; return 1; }
    # shellcheck disable=SC2086 # one pid per word
    all_gone 30 $pids || return 1
    echo "every rank ended within $((SECONDS - t0)) s"
    mk_whole "$TMP/$d" || return 1
    run "$d" 2 "${MK[@]}" --resume latest || { tail -5 "$TMP/$d.err"; return 1; }
    grep -o 'resuming from .*' "$TMP/$d.err"
    same_run "$TMP/mk_ref" "$TMP/$d"
}
for s in "${MK_SEEDS[@]}"; do
    check "SIGKILL of mpirun at a random step (seed $s): ranks stop, whole lines and steps; resume == undisturbed" mk_kill "$s"
done

# A run whose tensors.jsonl lacks a line its cadence asks for (as a job
# killed between a step's lines under an older clipd left it): latest takes
# an older checkpoint, saying why; that checkpoint by path is refused.
mk_hole() {
    local d="$TMP/mk_hole" ck one=(--set train.epochs=1 --set train.steps_per_epoch=300)
    run mk_hole_ref 2 "${MK[@]}" "${one[@]}" || return 1
    run mk_hole 2 "${MK[@]}" "${one[@]}" || return 1
    ck=$(printf '%s/checkpoints/step-%08d.safetensors' "$d" 300)
    [ -f "$ck" ] || { echo "no checkpoint at step 300"; return 1; }
    grep -v '^{"seq":300,' "$d/tensors.jsonl" >"$d/t" && mv "$d/t" "$d/tensors.jsonl" # bytes kept as they are
    expect_exit 2 "tensors.jsonl misses the line of step 300 of the run" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$d" "${MK[@]}" "${one[@]}" --resume "$ck" || return 1
    run mk_hole 2 "${MK[@]}" "${one[@]}" --resume latest || { tail -5 "$d.err"; return 1; }
    grep "skipping" "$d.err"
    grep -q "skipping $ck: tensors.jsonl misses the line of step 300" "$d.err" || return 1
    grep -q "resuming from $(printf '%s/checkpoints/step-%08d.safetensors' "$d" 275)" "$d.err" || return 1
    same_run "$TMP/mk_hole_ref" "$d"
}
check "tensors.jsonl missing a step's line: latest takes the checkpoint before, by path it is refused" mk_hole

# Another log.tensor_norms_every on resume: the logs kept are checked against
# the cadence they were written with (RUN_DIR/config.yaml), so the newest
# checkpoint is taken, not one before it.
mk_cadence() {
    local d="$TMP/mk_cad" one=(--set train.epochs=1 --set train.steps_per_epoch=300)
    run mk_cad 2 "${MK[@]}" "${one[@]}" --set log.tensor_norms_every=10 || return 1
    run mk_cad 2 "${MK[@]}" "${one[@]}" --set train.epochs=2 --set log.tensor_norms_every=7 --resume latest ||
        { tail -5 "$d.err"; return 1; }
    grep -o 'resuming from .*' "$d.err"
    ! grep -q "skipping" "$d.err" || { grep skipping "$d.err"; return 1; }
    grep -q "resuming from $(printf '%s/checkpoints/step-%08d.safetensors' "$d" 300)" "$d.err"
}
check "another log.tensor_norms_every on resume: the newest checkpoint is taken (the logs checked against their own cadence)" mk_cadence
