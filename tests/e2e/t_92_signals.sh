# Stop signals and exit codes through deploy/clipd-launch, with real jobs.
# SIGTERM, SIGINT and SIGHUP to the launcher's pid (what timeout, kill, a
# Kubernetes eviction and a hang-up hit) and Ctrl-C on a real terminal (tmux:
# SIGINT to the whole foreground process group) must all end in a checkpoint
# at the next step, the summary and exit 0; --resume latest then finishes
# exactly like a run that was never stopped. A second stop signal ends the
# job at once (exit 1). A killed rank: exit 1 and one line naming it and the
# signal; mpirun missing: exit 2 and one line on how to install Open MPI.
# worker 0 sleeps 2 ms a step (debug.slow_ms: timing only; the straggler
# events it would cause are off), so a signal lands mid-run on a fast machine
SG=(--set train.steps_per_epoch=400 --set model.hidden=48 --set checkpoint.every_steps=50 --set metrics.listen=off
    --set debug.slow_ms=2 --set watchdog.straggler_window=0)

sg_start() { # NAME [--set ...]: a job in the background; $bg is timeout's pid
    local name="$1"; shift
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$name" "${SG[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
}
sg_launcher() { # the clipd-launch process of the job in $bg: timeout's child (a bash)
    local p
    for _ in $(seq 100); do
        p=$(pgrep -P "$bg")
        [ -n "$p" ] && grep -q clipd-launch "/proc/$p/cmdline" 2>/dev/null && { echo "$p"; return 0; }
        sleep 0.05
    done
    echo "no clipd-launch under $bg" >&2
    return 1
}
# sg_stopped NAME: the job stopped at a checkpoint of its last logged step,
# exit 0 with the summary, and --resume latest ends like the reference run
sg_stopped() {
    local d="$TMP/$1" n
    grep -q "stopped by a signal" "$d.out" || { echo "no summary saying stopped"; tail -5 "$d.err"; return 1; }
    n=$(wc -l <"$d/steps.jsonl")
    [ "$n" -lt 800 ] || { echo "the signal came after the end: tested nothing"; return 1; }
    ls "$d/checkpoints/step-$(printf %08d "$n").safetensors" >/dev/null || return 1
    [ ! -e "$d/final.safetensors" ] || { echo "final weights of a stopped run"; return 1; }
    echo "stopped after step $n"
    run "$1" 2 "${SG[@]}" --resume latest || { tail -5 "$d.err"; return 1; }
    same_run "$TMP/sg_ref" "$d"
}

check "uninterrupted reference run" run_done sg_ref 2 "${SG[@]}"

sg_signal() { # SIGNAL: to the launcher's pid once 120 steps are logged
    local name="sg_${1,,}" l rc
    sg_start "$name"
    l=$(sg_launcher) || return 1
    wait_lines "$TMP/$name/steps.jsonl" 120 || return 1
    kill -"$1" "$l"
    wait "$bg"
    rc=$?
    grep "clipd-launch: SIG$1" "$TMP/$name.err"
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -20 "$TMP/$name.err"; return 1; }
    sg_stopped "$name"
}
for s in TERM INT HUP; do
    check "SIG$s to the launcher's pid: checkpoint at the next step, exit 0; resume == uninterrupted" sg_signal "$s"
done

# A stop while the job starts: held until every rank runs (a rank still
# starting would die of the SIGUSR1 mpirun forwards), then the same stop.
sg_early() {
    local d="$TMP/sg_early" rc
    sg_start sg_early
    for _ in $(seq 600); do grep -q '^clipd-launch: mpirun ' "$d.err" 2>/dev/null && break; sleep 0.01; done
    kill -TERM "$(pgrep -P "$bg")"
    wait "$bg"
    rc=$?
    grep "^clipd-launch: S\|^clipd-launch: the job\|^clipd-launch: stopped" "$d.err"
    [ "$rc" = 0 ] || { echo "exit $rc"; tail -20 "$d.err"; return 1; }
    if grep -q "stopped before the job started" "$d.err"; then
        [ ! -e "$d/steps.jsonl" ] || { echo "it said nothing ran, but a run began"; return 1; }
        return 0
    fi
    grep -q "once the job runs" "$d.err" && grep -q "^clipd-launch: the job runs: SIGUSR1 to mpirun" "$d.err" ||
        { echo "the stop was not held until the job ran"; return 1; }
    sg_stopped sg_early
}
check "SIGTERM to the launcher at once (while the job starts): held until it runs, then the same stop, exit 0" sg_early

# The launcher started in the background of a script (`clipd-launch ... &`,
# as a batch script does): bash starts it with SIGINT ignored, which no trap
# could take; it starts itself again with INT and TERM at their defaults.
sg_bg_int() {
    local d="$TMP/sg_bgint" l rc
    timeout 300 bash -c 'deploy/clipd-launch "$@" & echo $! >"$0.pid"; wait $!' "$d" -n 2 "$TINY" \
        --set run.dir="$d" "${SG[@]}" >"$d.out" 2>"$d.err" &
    bg=$!
    wait_lines "$d/steps.jsonl" 120 || return 1
    l=$(cat "$d.pid")
    grep SigIgn "/proc/$l/status"
    kill -INT "$l"
    wait "$bg"
    rc=$?
    grep "clipd-launch: SIGINT" "$d.err" || { echo "the launcher never saw SIGINT"; return 1; }
    [ "$rc" = 0 ] || { echo "exit $rc"; return 1; }
    sg_stopped sg_bgint
}
check "SIGINT to a launcher started in the background of a script (SIGINT ignored at start): the same stop, exit 0" sg_bg_int

sg_twice() {
    local l rc
    # slow steps (debug.slow_ms: 5 s), so that both signals land before the
    # stop; the second comes 1.2 s after the first (repeats within 1 s are
    # taken for one signal delivered twice)
    sg_start sg_twice --set debug.slow_ms=5000
    l=$(sg_launcher) || return 1
    wait_lines "$TMP/sg_twice/steps.jsonl" 1 || return 1
    kill -TERM "$l"
    sleep 0.3
    kill -TERM "$l" # the same signal twice: ignored
    sleep 0.9
    kill -TERM "$l"
    wait "$bg"
    rc=$?
    grep "clipd-launch: SIGTERM" "$TMP/sg_twice.err"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    grep -q "SIGTERM again: ending the job now" "$TMP/sg_twice.err" || return 1
    [ "$(grep -c "clipd-launch: SIGTERM" "$TMP/sg_twice.err")" = 2 ] || { echo "the repeat within 1 s was not ignored"; return 1; }
}
check "a second SIGTERM to the launcher (1 s after the first) ends the job at once: exit 1; a repeat within 1 s is ignored" sg_twice

# SIGTERM to mpirun's own pid (a plain scancel does this): Open MPI aborts
# the job (TERM to the ranks, KILL 1 s later), which no launcher can change;
# exit 1, and the last checkpoint resumes like the undisturbed run.
sg_mpirun_term() {
    local m rc t0
    sg_start sg_mterm
    wait_lines "$TMP/sg_mterm/steps.jsonl" 1 || return 1
    m=$(job_pids "$bg" mpirun)
    [ -n "$m" ] || { echo "no mpirun"; return 1; }
    wait_lines "$TMP/sg_mterm/steps.jsonl" 120 || return 1
    t0=$SECONDS
    kill -TERM "$m"
    wait "$bg"
    rc=$?
    echo "exit $rc, $((SECONDS - t0)) s after SIGTERM to mpirun; $(wc -l <"$TMP/sg_mterm/steps.jsonl") steps logged"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; tail -20 "$TMP/sg_mterm.err"; return 1; }
    [ ! -e "$TMP/sg_mterm/final.safetensors" ] || { echo "the signal came after the end"; return 1; }
    run sg_mterm 2 "${SG[@]}" --resume latest || { tail -5 "$TMP/sg_mterm.err"; return 1; }
    same_run "$TMP/sg_ref" "$TMP/sg_mterm"
}
check "SIGTERM to mpirun itself: Open MPI's abort, exit 1; --resume latest == uninterrupted" sg_mpirun_term

# Ctrl-C on a real terminal: tmux runs the launcher in the foreground of a
# shell with job control; send-keys C-c makes the terminal send SIGINT to
# that whole foreground process group.
TMUX_SOCK="clipd-e2e-$$"
sg_tmux_cleanup() {
    tmux -L "$TMUX_SOCK" kill-server 2>/dev/null || true
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$TMUX_SOCK"
}
AT_EXIT+=(sg_tmux_cleanup)
# sg_tmux_launch SESSION RUN_DIR REDIRECTIONS: the job typed into an
# interactive shell in tmux (job control: the launcher is the foreground group)
sg_tmux_launch() {
    command -v tmux >/dev/null || { echo "tmux is not installed (deploy/packages.txt lists it)"; return 1; }
    local root=""
    [ "$(id -u)" = 0 ] && root="OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
    tmux -L "$TMUX_SOCK" new-session -d -s "$1" -x 200 -y 50 "bash --norc -i" || return 1
    tmux -L "$TMUX_SOCK" send-keys -t "$1" \
        "cd $(printf %q "$PWD") && env $root OMPI_MCA_rmaps_base_oversubscribe=1 timeout --foreground 300 deploy/clipd-launch -n 2 $TINY --set run.dir=$2 ${SG[*]} $3" Enter
}
sg_ctrl_c() {
    local d="$TMP/sg_ctrlc"
    sg_tmux_launch ctrlc "$d" ">$d.out 2>$d.err; echo \$? >$d.rc" || return 1
    wait_lines "$d/steps.jsonl" 120 || { tail -5 "$d.err"; return 1; }
    tmux -L "$TMUX_SOCK" send-keys -t ctrlc C-c
    for _ in $(seq 600); do [ -s "$d.rc" ] && break; sleep 0.1; done
    tmux -L "$TMUX_SOCK" kill-session -t ctrlc
    grep "clipd-launch: SIGINT" "$d.err" || { echo "the launcher saw no SIGINT"; return 1; }
    [ "$(cat "$d.rc" 2>/dev/null)" = 0 ] || { echo "exit $(cat "$d.rc" 2>/dev/null)"; tail -20 "$d.err"; return 1; }
    sg_stopped sg_ctrlc
}
check "Ctrl-C on a terminal (tmux): checkpoint at the next step, exit 0; resume == uninterrupted" sg_ctrl_c

# The same with the output piped into tee: Ctrl-C kills tee first, so every
# later write of the launcher meets a closed pipe. It must still pass the
# stop on (SIGPIPE ignored) and the job end at a checkpoint, not run on
# with nobody attached. (The launcher's exit status is not seen: the
# interactive shell drops the rest of a command line whose last process
# died of SIGINT.)
sg_ctrl_c_tee() {
    local d="$TMP/sg_ctee" n left=""
    sg_tmux_launch ctee "$d" "2>&1 | tee $d.log >/dev/null" || return 1
    wait_lines "$d/steps.jsonl" 120 || { tail -5 "$d.log"; return 1; }
    tmux -L "$TMUX_SOCK" send-keys -t ctee C-c
    for _ in $(seq 300); do # the launcher, mpirun, the coordinator: gone within 30 s
        left=$(pgrep -f -- "run.dir=$d( |\$)" || true)
        [ -n "$left" ] || break
        sleep 0.1
    done
    tmux -L "$TMUX_SOCK" kill-session -t ctee
    [ -z "$left" ] || { echo "still running with nobody attached: $left"; kill -KILL $left; return 1; }
    n=$(wc -l <"$d/steps.jsonl")
    [ "$n" -lt 800 ] || { echo "the signal came after the end: tested nothing"; return 1; }
    ls "$d/checkpoints/step-$(printf %08d "$n").safetensors" >/dev/null || { echo "no checkpoint at the last step $n"; return 1; }
    [ ! -e "$d/final.safetensors" ] || { echo "final weights of a stopped run"; return 1; }
    echo "stopped after step $n"
    run sg_ctee 2 "${SG[@]}" --resume latest || { tail -5 "$d.err"; return 1; }
    same_run "$TMP/sg_ref" "$d"
}
check "Ctrl-C on a terminal with the output piped into tee: the stop still reaches the job, checkpoint at the last step; resume == uninterrupted" sg_ctrl_c_tee

sg_killed_rank() {
    local rc
    sg_start sg_kr
    wait_lines "$TMP/sg_kr/steps.jsonl" 50 || return 1
    sig_job KILL clipd-worker || return 1 # both workers: mpirun names the first it saw
    wait "$bg"
    rc=$?
    grep "^clipd-launch: rank" "$TMP/sg_kr.err"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    [ "$(grep -c "^clipd-launch: rank [12] (worker [01] on [^ ]*) was killed by signal 9 (Killed): the job ended, exit 1" "$TMP/sg_kr.err")" = 1 ]
}
check "a worker killed (SIGKILL): exit 1, one line naming the rank and the signal" sg_killed_rank

sg_no_mpirun() {
    local dir="$TMP/nompi" c
    mkdir -p "$dir"
    # the launcher's own tools, without mpirun
    for c in bash dirname id nproc mktemp setsid awk cat rm env; do ln -sf "$(type -P "$c")" "$dir/$c"; done
    expect_exit 2 "mpirun not found on PATH: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin" \
        env PATH="$dir" "$(type -P bash)" deploy/clipd-launch -n 2 "$TINY" || return 1
    [ "$(wc -l <"$TMP/be.err")" = 1 ] || { echo "more than one line"; return 1; }
}
check "mpirun missing from PATH: exit 2, one line saying how to install Open MPI" sg_no_mpirun

sg_bad_config() {
    expect_exit 2 "nosuch.yaml: cannot open" $LAUNCH -n 2 "$TMP/nosuch.yaml"
}
check "bad input: the launcher passes exit 2 on" sg_bad_config
