#!/usr/bin/env bash
# tests/asan/run.sh [BIN_DIR]: real mpirun jobs with the coordinator and the
# workers built with -fsanitize=address,undefined (`make asan` builds them
# in build/asan, the default BIN_DIR), leak checking on:
#   1. 2 workers, 1 epoch: checkpoints, a NaN step skipped, a gradient
#      spike rolled back to a checkpoint;
#   2. --resume latest for the 2nd epoch;
#   3. a long job serving metrics, scraped (and sent junk) while it trains,
#      stopped by SIGTERM (checkpoint at the next step, exit 0);
#   4. clipd-report on the resumed run; a bad config through mpirun (exit 2).
# Each process writes its sanitizer output to its own file. LeakSanitizer
# runs at every exit with tests/asan/lsan.supp, which names Open MPI's
# libraries only, and lists the suppressions it used: so every MPI process
# must leave a file (its leak check ran: Open MPI always leaves something to
# suppress), and no file may hold a report.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/asan}
for b in clipd clipd-worker clipd-report; do
    [ -x "$bin/$b" ] || { echo "asan: $bin/$b not built (make asan)" >&2; exit 1; }
done
source tests/lib.sh # mpirun's environment, make_tmp, check, job_pids
make_tmp asan
trap 'rm -rf "$TMP"' EXIT
export CLIPD_BIN=$bin
# Full malloc stacks (the fast unwinder stops in Open MPI's components, and
# such a stack could be matched by no suppression); one log file per process.
san_env() { # JOB: sanitizer settings for the processes of one job
    local d="$TMP/san/$1"
    mkdir -p "$d"
    export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=40:strict_string_checks=1:check_initialization_order=1:log_path=$d/asan"
    export LSAN_OPTIONS="suppressions=$PWD/tests/asan/lsan.supp:print_suppressions=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$d/ubsan"
}
# clean JOB N: at least N processes left a leak-check file, and no file has a report.
clean() {
    local d="$TMP/san/$1" n
    n=$(ls "$d" | grep -c '^asan\.')
    if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error|SUMMARY:' "$d"/* 2>/dev/null; then
        grep -hE -A25 'ERROR:|runtime error' "$d"/* | head -60
        return 1
    fi
    [ "$n" -ge "$2" ] || { echo "$n of $2 processes ran the leak check"; ls -l "$d"; return 1; }
    if [ "$n" -gt 0 ] && grep -L 'Suppressions used' "$d"/asan.* | grep .; then
        echo "no leak check in the file(s) above"
        return 1
    fi
    return 0
}
LAUNCH="timeout 300 deploy/clipd-launch"
TINY=tests/e2e/tiny.yaml
DV=(--set train.steps_per_epoch=60 --set checkpoint.every_steps=20 --set divergence.window=20
    --set divergence.warmup=20 --set debug.nan_step=5 --set debug.spike_step=45
    --set divergence.action=rollback)

first_epoch() {
    san_env run1
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/run" "${DV[@]}" --set train.epochs=1 \
        >"$TMP/run1.out" 2>"$TMP/run1.err"
    local rc=$?
    clean run1 3 || return 1
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -5 "$TMP/run1.err"; return 1; }
    grep -q "non-finite steps 1, rollbacks 1" "$TMP/run1.out" || { tail -3 "$TMP/run1.out"; return 1; }
}
check "1 epoch, 2 workers: checkpoints, NaN step skipped, spike rolled back; no sanitizer report" first_epoch

resumed() {
    san_env run2
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/run" "${DV[@]}" --resume latest \
        >"$TMP/run2.out" 2>"$TMP/run2.err"
    local rc=$?
    clean run2 3 || return 1
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -5 "$TMP/run2.err"; return 1; }
    [ "$(jq -s 'map(select(.step == 120)) | length' "$TMP/run/steps.jsonl")" = 1 ]
}
check "--resume latest for the 2nd epoch; no sanitizer report" resumed

scraped_and_stopped() {
    san_env sig
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/sig" --set train.steps_per_epoch=1000000 \
        --set checkpoint.every_steps=0 >"$TMP/sig.out" 2>"$TMP/sig.err" &
    local bg=$! port="" i code
    for i in $(seq 600); do # the default metrics.listen: a free port, in RUN_DIR/metrics.addr
        port=$(sed -n 's/^127\.0\.0\.1://p' "$TMP/sig/metrics.addr" 2>/dev/null)
        [ -n "$port" ] && [ -s "$TMP/sig/steps.jsonl" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { kill "$bg"; echo "no metrics port logged"; return 1; }
    for i in 1 2 3; do
        for path in /metrics /status /healthz /nope; do
            curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port$path" || { echo "GET $path failed"; kill "$bg"; return 1; }
        done
        curl -s -o /dev/null --max-time 5 -X POST -d x "http://127.0.0.1:$port/metrics"
        # in a subshell: the server may close first, and SIGPIPE must end only that
        (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /m\r\nX: \0\xff\r\n\r\n' >&3) 2>/dev/null
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/metrics")
    kill -TERM $(job_pids "$bg" clipd) || return 1
    wait "$bg"
    local rc=$?
    clean sig 3 || return 1
    [ "$rc" = 0 ] || { echo "stopped job exited $rc"; tail -5 "$TMP/sig.err"; return 1; }
    [ "$code" = 200 ] || { echo "scrape answered $code"; return 1; }
    grep -q "stopped by a signal" "$TMP/sig.out" && ls "$TMP/sig/checkpoints/"step-*.safetensors >/dev/null
}
check "metrics scraped during training, SIGTERM stop with checkpoint; no sanitizer report" scraped_and_stopped

report_and_bad_input() {
    san_env report
    "$bin/clipd-report" "$TMP/run" --json >"$TMP/report.json"
    local rc=$?
    clean report 0 || return 1 # no MPI: nothing suppressed, so no file unless there is a report
    [ "$rc" = 0 ] || { echo "clipd-report exited $rc"; return 1; }
    jq -e '.steps_executed == 125 and .rollbacks == 1' "$TMP/report.json" >/dev/null || { head -c 300 "$TMP/report.json"; return 1; }
    san_env bad
    printf 'model:\n  hidden: -3\n' >"$TMP/bad.yaml"
    $LAUNCH -n 2 "$TMP/bad.yaml" >"$TMP/bad.out" 2>"$TMP/bad.err"
    rc=$?
    [ "$rc" = 2 ] || { echo "bad config: exit $rc, wanted 2"; cat "$TMP/bad.err"; return 1; }
    clean bad 1 # mpirun may kill the ranks still exiting once one exits 2
}
check "clipd-report; a bad config through mpirun exits 2; no sanitizer report" report_and_bad_input

echo "asan e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
