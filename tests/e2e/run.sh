#!/usr/bin/env bash
# End-to-end tests: real mpirun jobs (coordinator + 1, 2, 3 workers,
# oversubscribed on a 2-core machine), real files, checked with jq and
# build/tests/stcmp. Prints one line per check and `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/lib.sh # mpirun's environment, make_tmp, check, ok, fail, job_pids
make_tmp e2e
# Test files add cleanup commands (e.g. unmounting what they mounted) to
# AT_EXIT; they run before $TMP is removed, however the run ends.
AT_EXIT=()
at_exit() {
    local c
    for c in ${AT_EXIT[@]+"${AT_EXIT[@]}"}; do $c; done
    rm -rf "$TMP"
}
trap at_exit EXIT
TINY=tests/e2e/tiny.yaml
LAUNCH="timeout 300 deploy/clipd-launch" # a hung job fails its check, not CI
# run DIR W [--set ...]: train the tiny config into $TMP/DIR with W workers.
run() {
    local dir="$TMP/$1" w="$2"; shift 2
    $LAUNCH -n "$w" "$TINY" --set run.dir="$dir" "$@" >"$dir.out" 2>"$dir.err"
}
# run_done DIR W [--set ...]: run, and it ended as a whole run does: exit 0,
# the summary's "done: E of E epochs, step N, W workers" with N the last
# step of steps.jsonl, its final weights named and written, no replica
# mismatch.
run_done() {
    local dir="$TMP/$1" w="$2" last
    run "$@"
    local rc=$?
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -5 "$dir.err"; return 1; }
    last=$(tail -n 1 "$dir/steps.jsonl" | jq -e .step) || { echo "no steps in $dir/steps.jsonl"; return 1; }
    grep -Eq "^clipd: run '[^']+' done: ([0-9]+) of \1 epochs, step $last, $w workers," "$dir.out" ||
        { echo "no summary 'done: E of E epochs, step $last, $w workers'"; tail -12 "$dir.out"; return 1; }
    grep -qx "weights: $dir/final.safetensors" "$dir.out" && [ -s "$dir/final.safetensors" ] ||
        { echo "final weights not named or not written"; return 1; }
    grep -q "replica mismatches 0," "$dir.out" || { echo "replica mismatch"; grep "replica mismatches" "$dir.out"; return 1; }
}
# Any job that hangs fails its check after 5 minutes instead of stalling CI.
MPIRUN_BIN="$(type -P mpirun)"
mpirun() { timeout 300 "$MPIRUN_BIN" "$@"; }

# expect_exit CODE PATTERN CMD...: exit code and a line matching PATTERN on stderr
expect_exit() { # CODE PATTERN CMD...: exit code and a line matching PATTERN on stderr
    local code="$1" pat="$2"; shift 2
    "$@" >"$TMP/be.out" 2>"$TMP/be.err"
    local rc=$?
    cat "$TMP/be.err"
    [ "$rc" = "$code" ] || { echo "exit $rc, wanted $code"; return 1; }
    grep -q -- "$pat" "$TMP/be.err"
}

# strip_t FILE: a JSON-lines log without its timings
strip_t() { jq -c 'del(.step_ms, .tokens_per_s, .seconds, .compute_ms, .sync_ms, .time)' "$1"; }
# same_run DIR_A DIR_B: identical logs (but timings) and final weights, bit for bit
same_run() {
    cmp <(strip_t "$1/steps.jsonl") <(strip_t "$2/steps.jsonl") || { echo "steps.jsonl differs"; return 1; }
    cmp <(strip_t "$1/epochs.jsonl") <(strip_t "$2/epochs.jsonl") || { echo "epochs.jsonl differs"; return 1; }
    cmp <(strip_t "$1/events.jsonl") <(strip_t "$2/events.jsonl") || return 1
    cmp <(strip_t "$1/tensors.jsonl") <(strip_t "$2/tensors.jsonl") || return 1
    build/tests/stcmp "$1/final.safetensors" "$2/final.safetensors" 0
}
# near A B: numbers A and B within 1e-5 of B (relative)
near() {
    jq -n -e --argjson a "$1" --argjson b "$2" '($a - $b) * ($a - $b) <= 1e-10 * $b * $b' >/dev/null ||
        { echo "$1 != $2"; return 1; }
}
# resumed_same REF NAME W ARGS...: NAME run for epoch 1 only, then resumed
# with --resume latest, equals the uninterrupted run REF bit for bit
resumed_same() {
    local ref="$1" name="$2" w="$3"; shift 3
    [ -s "$TMP/$ref/final.safetensors" ] || return 1
    run "$name" "$w" "$@" --set train.epochs=1 || return 1
    run "$name" "$w" "$@" --resume latest || return 1
    same_run "$TMP/$ref" "$TMP/$name"
}
# end_eval_matches_numpy DIR WEIGHTS: the end-of-run test split in
# DIR/eval.jsonl equals tests/tools/lm_eval.py's loss (near) and token count
end_eval_matches_numpy() {
    local ref got
    ref=$(/usr/bin/python3 tests/tools/lm_eval.py "$2" "$1/tokens-test.u32" 6 10) || return 1
    got=$(jq -c 'select(.at == "end") | {loss, tokens}' "$1/eval.jsonl")
    echo "end of run, test split: clipd $got, NumPy $ref"
    near "$(jq .loss <<<"$got")" "$(jq .loss <<<"$ref")" && [ "$(jq .tokens <<<"$got")" = "$(jq .tokens <<<"$ref")" ]
}
# weights_differ A B TOL: the same tensors, and some weight farther apart
# than TOL (stcmp's exit 1 alone also means another tensor table or a NaN)
weights_differ() {
    local out rc
    out=$(build/tests/stcmp "$1" "$2" "$3" 2>&1)
    rc=$?
    echo "$out"
    [ "$rc" = 1 ] || { echo "stcmp exit $rc, wanted 1: weights within $3"; return 1; }
    echo "$out" | grep -q "^stcmp: [0-9]* floats, max abs diff .* (tol [^)]*)$" ||
        { echo "not a comparison of the same tensors"; return 1; }
}
# near_run REF DIR: the same steps, epochs, tokens and lr, losses and norms
# within 1e-5 (relative), final weights within 1e-5 of the largest
near_run() {
    local f='[.seq, .step, .epoch, .tokens, .lr, .skipped]'
    cmp <(jq -c "$f" "$1/steps.jsonl") <(jq -c "$f" "$2/steps.jsonl") || { echo "data order or schedule differs"; return 1; }
    paste -d' ' <(jq '.loss, .grad_norm' "$1/steps.jsonl") <(jq '.loss, .grad_norm' "$2/steps.jsonl") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 > 0 ? $1 : 1); if (r > w) w = r }
             END { printf "worst relative difference of loss and grad_norm %.3g (tol 1e-5)\n", w; exit w > 1e-5 }' || return 1
    build/tests/stcmp "$1/final.safetensors" "$2/final.safetensors" 1e-5
}

# wait_lines FILE N: until FILE has N lines (at most 60 s; says so if not)
wait_lines() {
    local _i
    for _i in $(seq 3000); do
        [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.02
    done
    echo "$1: fewer than $2 lines after 60 s"
    return 1
}

# sig_job SIGNAL NAME [ROOT]: signal the processes called NAME of this test's
# background job (ROOT, default $bg), never other jobs on the machine
sig_job() {
    local pids; pids=$(job_pids "${3:-$bg}" "$2")
    [ -n "$pids" ] || { echo "no $2 in the job"; return 1; }
    kill -"$1" $pids
}

# all_gone SECONDS PID...: every PID ends (or is a zombie, dead and waiting
# for init to reap it) within SECONDS; says which did not, and kills it
all_gone() {
    local limit="$1" p; shift
    for p in "$@"; do
        for _ in $(seq $((limit * 10))); do
            [ -e "/proc/$p" ] && [ "$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null)" != Z ] || break
            sleep 0.1
        done
        if [ -e "/proc/$p" ] && [ "$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
            echo "process $p ($(cat "/proc/$p/comm" 2>/dev/null)) still runs after $limit s"
            kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
            return 1
        fi
    done
}

# Arguments, if any, pick test files by name: bash tests/e2e/run.sh t_90 t_95
pick=("$@")
for f in tests/e2e/t_*.sh; do
    if [ ${#pick[@]} -gt 0 ]; then
        hit=0
        for p in "${pick[@]}"; do case "$f" in *"$p"*) hit=1 ;; esac; done
        [ "$hit" = 1 ] || continue
    fi
    # shellcheck source=/dev/null
    source "$f"
done

echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
