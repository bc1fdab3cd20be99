# Watchdog and stragglers, with real jobs. A worker stopped with SIGSTOP
# holds every step up: past watchdog.warn_seconds the coordinator writes one
# `stall` event (action log) naming the ranks whose record is missing and a
# warning; SIGCONT before watchdog.seconds heals it and the run finishes,
# exit 0. Left stopped, past watchdog.seconds: a `stall` event with action
# abort, one error line, exit 1, no process left, and --resume latest
# finishes like a run never stalled. A worker slowed on purpose
# (debug.slow_ms) is a `straggler` event naming it.
WD=(--set train.steps_per_epoch=1500 --set model.hidden=48 --set checkpoint.every_steps=50 --set metrics.listen=off)
# A job to be stopped mid-run: worker 0 sleeps 2 ms a step (timing only) so
# that the steps are not over before the stop, however fast the machine; no
# straggler events for it.
SLOW=(--set debug.slow_ms=2 --set watchdog.straggler_window=0)

wd_start() { # NAME [--set ...]: a job in the background, pid in $bg
    local name="$1"; shift
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$name" "${WD[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
}
wd_wait_event() { # FILE JQ_FILTER: until a line of FILE matches (at most 60 s)
    for _ in $(seq 600); do
        [ -s "$1" ] && [ -n "$(jq -c "select($2)" "$1" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    echo "$1: no line matching $2 after 60 s"
    return 1
}

check "reference run, never stalled" run_done wd_ref 2 "${WD[@]}"

wd_healed() {
    local d="$TMP/wd_heal" w rc
    wd_start wd_heal --set watchdog.seconds=60 --set watchdog.warn_seconds=2 "${SLOW[@]}"
    wait_lines "$d/steps.jsonl" 100 || return 1
    w=$(job_pids "$bg" clipd-worker | tail -1)
    [ -n "$w" ] || { echo "no worker"; return 1; }
    kill -STOP "$w"
    wd_wait_event "$d/events.jsonl" '.kind == "stall"' || { kill -CONT "$w"; return 1; }
    kill -CONT "$w"
    wait "$bg"
    rc=$?
    jq -c 'select(.kind == "stall")' "$d/events.jsonl"
    [ "$rc" = 0 ] || { echo "exit $rc"; return 1; }
    jq -s -e '[.[] | select(.kind == "stall")] | length == 1 and (.[0] | .action == "log" and .threshold == 2
        and .value >= 2 and (.ranks | length) >= 1 and all(.ranks[]; . == 0 or . == 1) and .step > 100)' \
        "$d/events.jsonl" >/dev/null || { echo "not one stall event (log) with ranks and the step"; return 1; }
    [ "$(grep -c "warn: step [0-9]*: no record from worker(s) \[" "$TMP/wd_heal.err")" = 1 ] || { echo "not one warning"; return 1; }
    grep -q "the stall healed" "$TMP/wd_heal.err" || return 1
    ! grep -q "error:" "$TMP/wd_heal.err" || { echo "an error line"; return 1; }
    # the run itself is the one never stalled
    cmp <(strip_t "$TMP/wd_ref/steps.jsonl") <(strip_t "$d/steps.jsonl") &&
        build/tests/stcmp "$TMP/wd_ref/final.safetensors" "$d/final.safetensors" 0
}
check "a worker stopped, then continued before watchdog.seconds: one stall warning (event, action log), exit 0, same run" wd_healed

# The whole job suspended (scontrol suspend, gang scheduling, a paused VM:
# every process SIGSTOPped) for longer than watchdog.seconds, then continued:
# the coordinator did not run either, so that is no stall of the workers.
wd_suspended() {
    local d="$TMP/wd_susp" pids rc
    wd_start wd_susp --set watchdog.seconds=3 --set watchdog.warn_seconds=2
    wait_lines "$d/steps.jsonl" 100 || return 1
    pids=$(job_pids "$bg" clipd; job_pids "$bg" clipd-worker)
    [ "$(echo "$pids" | wc -w)" = 3 ] || { echo "not 3 ranks: $pids"; return 1; }
    kill -STOP $pids
    sleep 5
    kill -CONT $pids
    wait "$bg"
    rc=$?
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -3 "$d.err"; return 1; }
    ! jq -e 'select(.kind == "stall")' "$d/events.jsonl" >/dev/null || { echo "a stall event"; return 1; }
    cmp <(strip_t "$TMP/wd_ref/steps.jsonl") <(strip_t "$d/steps.jsonl")
}
check "the whole job suspended 5 s (watchdog.seconds=3), then continued: no stall, exit 0, same run" wd_suspended

wd_abort() {
    local d="$TMP/wd_abort" w rc pids t0 took
    wd_start wd_abort --set watchdog.seconds=5 --set watchdog.warn_seconds=1 "${SLOW[@]}"
    wait_lines "$d/steps.jsonl" 120 || return 1
    pids=$(job_pids "$bg" clipd-worker; job_pids "$bg" clipd)
    w=$(job_pids "$bg" clipd-worker | tail -1)
    t0=$SECONDS
    kill -STOP "$w"
    wait "$bg"
    rc=$?
    took=$((SECONDS - t0))
    jq -c 'select(.kind == "stall")' "$d/events.jsonl"
    echo "exit $rc, $took s after SIGSTOP"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; tail -20 "$TMP/wd_abort.err"; return 1; }
    [ "$took" -lt 60 ] || { echo "it took $took s"; return 1; }
    # the last two: the warning, then the abort at the same step (a loaded
    # machine may show a healed 1 s stall before the SIGSTOP: only log ones)
    jq -s -e '[.[] | select(.kind == "stall")] | length >= 2 and (.[:-2] | all(.[]; .action == "log"))
        and (.[-2:] | .[0].action == "log" and .[0].threshold == 1
        and .[1].action == "abort" and .[1].threshold == 5 and .[1].value >= 5 and .[0].step == .[1].step
        and (.[1].ranks | length) >= 1)' "$d/events.jsonl" >/dev/null || { echo "not a warning then an abort event"; return 1; }
    [ "$(grep -c "error: step [0-9]*: no record from worker(s) .* (watchdog.seconds 5): ending the job, exit 1" "$TMP/wd_abort.err")" = 1 ] ||
        { echo "not one error line"; return 1; }
    # shellcheck disable=SC2086 # one pid per word
    all_gone 10 $pids || return 1
    run wd_abort 2 "${WD[@]}" --resume latest || { tail -5 "$d.err"; return 1; }
    grep -o 'resuming from .*' "$d.err"
    same_run "$TMP/wd_ref" "$d"
}
check "a worker left stopped: stall warning, then abort after watchdog.seconds, exit 1; resume == never stalled" wd_abort

# A worker that stops after the run's last record, at MPI_Finalize (the
# debug.stop_at_end hook: the last worker SIGSTOPs itself there), would hold
# the job forever: every watchdog is past. The coordinator's finalize is
# watched too: after watchdog.seconds one error line, exit 1, no process
# left, and the run's outputs complete (the same weights as a run that ended
# cleanly).
wd_end() {
    local d="$TMP/wd_end" rc=0 t0 took
    run_done wd_endref 2 "${WD[@]}" --set train.steps_per_epoch=60 || return 1
    t0=$SECONDS
    run wd_end 2 "${WD[@]}" --set train.steps_per_epoch=60 --set watchdog.seconds=3 --set debug.stop_at_end=true || rc=$?
    took=$((SECONDS - t0))
    echo "exit $rc after $took s"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; tail -5 "$d.err"; return 1; }
    [ "$took" -lt 60 ] || { echo "it took $took s"; return 1; }
    [ "$(grep -c "error: MPI_Finalize: not every worker finished within watchdog.seconds 3 after the job's end" "$d.err")" = 1 ] ||
        { echo "not one error line"; tail -5 "$d.err"; return 1; }
    grep -Eq "^clipd: run '[^']+' done: 2 of 2 epochs, step 120, 2 workers," "$d.out" || { echo "no summary"; return 1; }
    ! ps -eo stat,args | grep -F "$d" | grep -v grep | grep -q . || { echo "a process of the job is left"; return 1; }
    same_run "$TMP/wd_endref" "$d"
}
check "a worker stopped at the very end (MPI_Finalize): exit 1 after watchdog.seconds, one line, outputs complete" wd_end

wd_straggler() {
    local d="$TMP/wd_slow"
    run wd_slow 2 "${WD[@]}" --set train.steps_per_epoch=60 --set debug.slow_ms=5 --set debug.slow_worker=1 \
        --set watchdog.straggler_window=20 || { tail -5 "$d.err"; return 1; }
    jq -c 'select(.kind == "straggler")' "$d/events.jsonl"
    jq -s -e '[.[] | select(.kind == "straggler")] | length >= 1 and all(.[]; .ranks == [1] and .action == "log"
        and .value > .threshold and .threshold == 3 * .baseline and .window == 20)' "$d/events.jsonl" >/dev/null ||
        { echo "no straggler event naming worker 1 alone"; return 1; }
    grep -q "warn: step [0-9]*: worker 1 is a straggler" "$d.err" || return 1
    grep -q "straggler [1-9]" "$d.out" || { echo "not in the summary"; return 1; }
    # the same slow worker with the window off: no event
    run wd_slow0 2 "${WD[@]}" --set train.steps_per_epoch=60 --set debug.slow_ms=5 --set debug.slow_worker=1 \
        --set watchdog.straggler_window=0 || return 1
    ! grep -q straggler "$TMP/wd_slow0/events.jsonl"
}
check "a worker 5 ms slower per step (debug.slow_ms): a straggler event naming it" wd_straggler
