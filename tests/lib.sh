# tests/lib.sh: shell helpers of the runners of real jobs (tests/e2e/run.sh,
# tests/asan/run.sh, tests/valgrind/run.sh), sourced from the repository
# root: mpirun's environment, the run's temporary directory, one-line
# checks with a pass/fail count, and finding a job's processes.

# mpirun may put more ranks than cores on this machine, and runs as root
# when the tests do (containers, CI).
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# make_tmp NAME: TMP = a new directory /tmp/clipd-NAME.XXXXXX (the caller
# removes it at exit)
make_tmp() { TMP="$(mktemp -d "/tmp/clipd-$1.XXXXXX")" || exit 1; }

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
# check NAME CMD...: the command's exit status decides; on a failure the
# last 20 lines of its output follow (E2E_VERBOSE: the last 5 on a pass).
check() {
    local name="$1"; shift
    if "$@" >"$TMP/out" 2>&1; then
        ok "$name"
        [ -n "${E2E_VERBOSE:-}" ] && sed 's/^/     /' "$TMP/out" | tail -5
    else
        fail "$name"
        sed 's/^/     /' "$TMP/out" | tail -20
    fi
    return 0
}

# job_pids PID NAME: the descendants of PID whose command name is NAME
job_pids() {
    local p
    for p in $(pgrep -P "$1"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
        job_pids "$p" "$2"
    done
}
