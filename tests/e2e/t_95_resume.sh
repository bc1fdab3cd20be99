# Checkpoints, resume and signals, end to end. A resumed run must continue
# bit for bit: the same steps.jsonl (but timings) and the same weights as a
# run that was never interrupted.
RS=(--set train.steps_per_epoch=400 --set model.hidden=48 --set checkpoint.every_steps=50)
# start NAME [--set ...]: a job in the background; its pid in $bg. Worker 0
# sleeps 2 ms a step (debug.slow_ms: timing only; no straggler events) so a
# signal lands mid-run on a fast machine or a loaded one alike.
start() {
    local name="$1"; shift
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$name" "${RS[@]}" --set debug.slow_ms=2 \
        --set watchdog.straggler_window=0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
}

check "uninterrupted reference run" run_done ref 2 "${RS[@]}"

resume_epoch() {
    run rs_ep 2 "${RS[@]}" --set train.epochs=1 || return 1
    run rs_ep 2 "${RS[@]}" --resume latest || return 1
    same_run "$TMP/ref" "$TMP/rs_ep"
}
check "1 epoch, then --resume latest for the 2nd == 2 epochs straight" resume_epoch

sigusr1() {
    start rs_u1
    wait_lines "$TMP/rs_u1/steps.jsonl" 120 || return 1
    sig_job USR1 mpirun || return 1 # as sbatch --signal=B:USR1 does; mpirun forwards it
    wait "$bg" || { echo "stopped run exited $?"; return 1; }
    grep -q "stopped by a signal" "$TMP/rs_u1.out" || return 1
    local n; n=$(wc -l <"$TMP/rs_u1/steps.jsonl")
    [ "$n" -lt 800 ] || { echo "signal came too late to test anything"; return 1; }
    ls "$TMP/rs_u1/checkpoints/step-$(printf %08d "$n").safetensors" >/dev/null || return 1
    run rs_u1 2 "${RS[@]}" --resume latest || return 1
    same_run "$TMP/ref" "$TMP/rs_u1"
}
check "SIGUSR1 through mpirun: checkpoint at the next step, exit 0; resume == uninterrupted" sigusr1

sigusr2() {
    start rs_u2 --set checkpoint.every_steps=0
    wait_lines "$TMP/rs_u2/steps.jsonl" 120 || return 1
    sig_job USR2 mpirun || return 1
    wait "$bg" || return 1
    [ "$(ls "$TMP/rs_u2/checkpoints" | wc -l)" -ge 2 ] || return 1 # the requested one and the final one
    cmp <(strip_t "$TMP/ref/steps.jsonl") <(strip_t "$TMP/rs_u2/steps.jsonl") &&
        build/tests/stcmp "$TMP/ref/final.safetensors" "$TMP/rs_u2/final.safetensors" 0
}
check "SIGUSR2: a checkpoint mid-run, training unchanged" sigusr2

sigterm() {
    start rs_term
    wait_lines "$TMP/rs_term/steps.jsonl" 120 || return 1
    sig_job TERM clipd || return 1 # reaching the coordinator itself, not through mpirun
    wait "$bg" || { echo "exit $?"; return 1; }
    grep -q "stopped by a signal" "$TMP/rs_term.out" || return 1
    local n; n=$(wc -l <"$TMP/rs_term/steps.jsonl")
    ls "$TMP/rs_term/checkpoints/step-$(printf %08d "$n").safetensors" >/dev/null || return 1
    run rs_term 2 "${RS[@]}" --resume latest || return 1
    same_run "$TMP/ref" "$TMP/rs_term"
}
check "SIGTERM to the coordinator: the same graceful stop, exit 0" sigterm

sighup() {
    start rs_hup
    wait_lines "$TMP/rs_hup/steps.jsonl" 120 || return 1
    mv "$TMP/rs_hup/steps.jsonl" "$TMP/rs_hup/steps.jsonl.1"
    sig_job HUP clipd || return 1
    wait "$bg" || return 1
    grep -q "log files reopened" "$TMP/rs_hup.err" || return 1
    # old file and new file together hold every step exactly once, in order
    cat "$TMP/rs_hup/steps.jsonl.1" "$TMP/rs_hup/steps.jsonl" | jq -s -e 'map(.step) == [range(1; 801)]' >/dev/null
}
check "SIGHUP: log files reopened after logrotate moved them, no line lost" sighup

sigkill() {
    start rs_kill
    wait_lines "$TMP/rs_kill/steps.jsonl" 170 || return 1
    local t0=$SECONDS
    kill -KILL "$(job_pids "$bg" clipd-worker | tail -1)" # one worker
    wait "$bg"
    local rc=$?
    [ "$rc" != 0 ] || { echo "killed job exited 0"; return 1; }
    [ $((SECONDS - t0)) -lt 60 ] || { echo "took $((SECONDS - t0)) s to end"; return 1; }
    run rs_kill 2 "${RS[@]}" --resume latest || return 1
    same_run "$TMP/ref" "$TMP/rs_kill"
}
check "SIGKILL of a worker: job ends in seconds; --resume latest == uninterrupted" sigkill

corrupt() {
    local ck="$TMP/ref/checkpoints" newest
    newest=$(ls "$ck" | sort | tail -1)
    cp -r "$TMP/ref" "$TMP/rs_bad"
    printf '\xff' | dd of="$TMP/rs_bad/checkpoints/$newest" bs=1 seek=5000 conv=notrunc status=none
    expect_exit 2 "checksum" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/rs_bad" "${RS[@]}" \
        --resume "$TMP/rs_bad/checkpoints/$newest" || return 1
    run rs_bad 2 "${RS[@]}" --resume latest || return 1
    grep -q "skipping .*$newest.*checksum" "$TMP/rs_bad.err" || { cat "$TMP/rs_bad.err"; return 1; }
    same_run "$TMP/ref" "$TMP/rs_bad" # redone from the previous checkpoint, bit for bit
}
check "a bit-flipped checkpoint: latest falls back saying why; by path: exit 2" corrupt

wrong_job() {
    expect_exit 2 "written by 2 workers" $LAUNCH -n 3 "$TINY" --set run.dir="$TMP/ref" "${RS[@]}" --resume latest || return 1
    expect_exit 2 "model" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/ref" "${RS[@]}" --set model.hidden=32 --resume latest
}
check "resume with another worker count or model: exit 2 naming why" wrong_job

keep_k() { [ "$(ls "$TMP/ref/checkpoints" | wc -l)" = 3 ] && ! ls -a "$TMP/ref/checkpoints" | grep -q tmp; }
check "checkpoint.keep=3 keeps the newest 3, no temporary files left" keep_k

numpy_reads() {
    /usr/bin/python3 tests/tools/read_weights.py "$TMP/ref/final.safetensors" \
        "$TMP/ref/checkpoints/step-00000800.safetensors" 16 8 48
}
check "NumPy alone reads final.safetensors and a checkpoint (docs/CHECKPOINTS.md)" numpy_reads

end_of_epoch() {
    # keep every checkpoint; resume from the one at the last step of epoch 1,
    # written before that epoch's validation: the resumed run redoes the
    # epoch's end, logs its events once, and sets aside the newer checkpoints
    # (clip_events always: a clip_inactive event at each epoch's end)
    local CI=(--set checkpoint.keep=100 --set clip.max_norm=1e9 --set divergence.clip_events=always)
    run rs_end 2 "${RS[@]}" "${CI[@]}" || return 1
    cp -r "$TMP/rs_end" "$TMP/rs_end2"
    run rs_end2 2 "${RS[@]}" "${CI[@]}" \
        --resume "$TMP/rs_end2/checkpoints/step-00000400.safetensors" || return 1
    grep -q "set aside .*step-00000450" "$TMP/rs_end2.err" || return 1
    jq -s -e 'map(select(.kind == "clip_inactive")) | length == 2' "$TMP/rs_end2/events.jsonl" >/dev/null || return 1
    same_run "$TMP/rs_end" "$TMP/rs_end2"
}
check "resume at an epoch's last step: its end is redone once; newer checkpoints set aside" end_of_epoch

rollback_resume() {
    local RB=(--set debug.spike_step=620 --set divergence.action=rollback)
    run rb_ref 2 "${RS[@]}" "${RB[@]}" || return 1
    jq -s -e 'any(.[]; .action == "rollback" and .rollback_to == 600)' "$TMP/rb_ref/events.jsonl" >/dev/null || return 1
    start rb_kill "${RB[@]}"
    wait_lines "$TMP/rb_kill/steps.jsonl" 470 || return 1
    kill -KILL "$(job_pids "$bg" clipd-worker | tail -1)"
    wait "$bg"
    run rb_kill 2 "${RS[@]}" "${RB[@]}" --resume latest || return 1
    same_run "$TMP/rb_ref" "$TMP/rb_kill"
}
check "a run with a rollback, killed and resumed, == the uninterrupted run" rollback_resume

ahead_of_logs() {
    # a job killed after worker 0 wrote step 400's checkpoint but before the
    # coordinator logged step 400: latest must take the checkpoint before
    run rs_ahead 2 "${RS[@]}" --set checkpoint.keep=100 --set train.epochs=1 || return 1
    head -380 "$TMP/rs_ahead/steps.jsonl" >"$TMP/cut" && mv "$TMP/cut" "$TMP/rs_ahead/steps.jsonl"
    run rs_ahead 2 "${RS[@]}" --set checkpoint.keep=100 --resume latest || return 1
    grep -q "skipping .*step-00000400.*the logs end at 380" "$TMP/rs_ahead.err" || return 1
    grep -q "resuming from .*step-00000350" "$TMP/rs_ahead.err" || return 1
    same_run "$TMP/ref" "$TMP/rs_ahead"
}
check "a checkpoint ahead of the logs (killed before logging it): latest takes the one before" ahead_of_logs
