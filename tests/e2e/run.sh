#!/usr/bin/env bash
# End-to-end tests: real mpirun jobs (coordinator + 1, 2, 3 workers,
# oversubscribed on a 2-core machine), real files, checked with jq and
# build/tests/stcmp. Prints one line per check and `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
TMP="$(mktemp -d /tmp/clipd-e2e.XXXXXX)"
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
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
# check NAME CMD...: the command's exit status decides.
check() {
    local name="$1"; shift
    if "$@" >"$TMP/out" 2>&1; then ok "$name"; [ -n "${E2E_VERBOSE:-}" ] && sed 's/^/     /' "$TMP/out" | tail -5; else fail "$name"; sed 's/^/     /' "$TMP/out" | tail -20; fi
}
# run DIR W [--set ...]: train the tiny config into $TMP/DIR with W workers.
run() {
    local dir="$TMP/$1" w="$2"; shift 2
    $LAUNCH -n "$w" "$TINY" --set run.dir="$dir" "$@" >"$dir.out" 2>"$dir.err"
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

job_pids() { # PID NAME: the descendants of PID whose command name is NAME
    local p
    for p in $(pgrep -P "$1"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
        job_pids "$p" "$2"
    done
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
