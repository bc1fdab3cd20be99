# Deploy: deploy/clipd-launch (the exact mpirun line, a hostfile, a Slurm
# allocation, bad usage) and the shell logic of deploy/slurm/clipd.sbatch with
# a fake Slurm (environment, scontrol, srun from tests/tools/fake-slurm):
# SIGUSR1 to the batch shell -> checkpoint, exit 0, requeue -> the requeued
# start resumes with --resume latest and ends like an uninterrupted run.
DP_RS=(--set train.steps_per_epoch=400 --set model.hidden=48 --set checkpoint.every_steps=50)
DP_BIN="$PWD/deploy/../build" # as clipd-launch names the binaries
DP_NODE="$(uname -n)"
# A one-node Slurm allocation of 3 tasks on this machine, as sbatch sets it up,
# for env: mpirun's Slurm support reads it (and needs no srun on one node), and
# its 3 slots are all there is (run.sh's oversubscription is turned off).
DP_SLURM=(-u OMPI_MCA_rmaps_base_oversubscribe SLURM_JOB_ID=4242 SLURM_JOBID=4242 SLURM_JOB_NAME=clipd SLURM_SUBMIT_DIR="$PWD"
          SLURM_NTASKS=3 SLURM_NPROCS=3 SLURM_JOB_NUM_NODES=1 SLURM_NNODES=1
          SLURM_JOB_NODELIST="$DP_NODE" SLURM_NODELIST="$DP_NODE" SLURM_TASKS_PER_NODE=3
          SLURM_JOB_CPUS_PER_NODE=3 PATH="$PWD/tests/tools/fake-slurm:$PATH"
          FAKE_SLURM_LOG="$TMP/slurm.calls")
# Outside Slurm even if the tests themselves run inside a Slurm job.
DP_NOSLURM=(env -u SLURM_JOB_ID -u SLURM_JOBID -u SLURM_NTASKS)

dp_printed() { # FILE: the mpirun line clipd-launch printed on stderr into FILE
    sed -n 's/^clipd-launch: mpirun /mpirun /p' "$1"
}

# A fake mpirun that writes its own command line, quoted as clipd-launch
# prints it: what ran must be exactly what was printed.
mkdir -p "$TMP/fake-mpirun"
cat >"$TMP/fake-mpirun/mpirun" <<'EOF'
#!/usr/bin/env bash
{ printf 'mpirun'; printf ' %q' "$@"; printf '\n'; } >"${FAKE_MPIRUN_LOG:?}"
EOF
chmod +x "$TMP/fake-mpirun/mpirun"
printf '# as in deploy/hostfile.example, this machine only\nlocalhost slots=4\n' >"$TMP/hosts"

dp_exact() {
    local root="" want
    [ "$(id -u)" = 0 ] && root=" --allow-run-as-root"
    "${DP_NOSLURM[@]}" PATH="$TMP/fake-mpirun:$PATH" FAKE_MPIRUN_LOG="$TMP/dp_ex.ran" \
        deploy/clipd-launch -n 2 --hostfile "$TMP/hosts" "$TINY" --set "run.dir=$TMP/a dir" \
        --resume latest -- --bind-to none 2>"$TMP/dp_ex.err" || return 1
    want="mpirun$root --hostfile $TMP/hosts --bind-to none -np 1 $DP_BIN/clipd $TINY"
    want+=" --set run.dir=$TMP/a\\ dir --resume latest : -np 2 $DP_BIN/clipd-worker"
    echo "printed: $(dp_printed "$TMP/dp_ex.err")"
    echo "ran:     $(cat "$TMP/dp_ex.ran")"
    echo "wanted:  $want"
    [ "$(dp_printed "$TMP/dp_ex.err")" = "$(cat "$TMP/dp_ex.ran")" ] &&
        [ "$(cat "$TMP/dp_ex.ran")" = "$want" ]
}
check "clipd-launch prints the exact line it runs: --hostfile, --set, --resume, -- mpirun options" dp_exact

dp_hostfile() {
    # 3 workers + the coordinator = 4 ranks on this machine: the hostfile's
    # 4 slots allow it without --oversubscribe (which the launcher must not add)
    "${DP_NOSLURM[@]}" -u OMPI_MCA_rmaps_base_oversubscribe $LAUNCH -n 3 --hostfile "$TMP/hosts" \
        "$TINY" --set run.dir="$TMP/dp_hf" >"$TMP/dp_hf.out" 2>"$TMP/dp_hf.err" || { cat "$TMP/dp_hf.err"; return 1; }
    dp_printed "$TMP/dp_hf.err"
    dp_printed "$TMP/dp_hf.err" | grep -q -- "--hostfile $TMP/hosts -np 1 " || return 1
    ! grep -q -- --oversubscribe "$TMP/dp_hf.err" || return 1
    grep -q "done: 2 of 2 epochs, step 30, 3 workers" "$TMP/dp_hf.out" &&
        [ -s "$TMP/dp_hf/final.safetensors" ]
}
check "clipd-launch --hostfile (localhost slots=4): a real run of 3 workers, no --oversubscribe" dp_hostfile

dp_slurm() {
    : >"$TMP/slurm.calls"
    env "${DP_SLURM[@]}" $LAUNCH "$TINY" --set run.dir="$TMP/dp_sl" >"$TMP/dp_sl.out" 2>"$TMP/dp_sl.err" ||
        { cat "$TMP/dp_sl.err"; return 1; }
    dp_printed "$TMP/dp_sl.err"
    dp_printed "$TMP/dp_sl.err" | grep -q -- " : -np 2 $DP_BIN/clipd-worker\$" || return 1
    ! grep -q -- --oversubscribe "$TMP/dp_sl.err" || return 1
    grep -q "done: 2 of 2 epochs, step 30, 2 workers" "$TMP/dp_sl.out" || return 1
    [ ! -s "$TMP/slurm.calls" ] || { echo "unexpected:"; cat "$TMP/slurm.calls"; return 1; }
    # and -n still wins inside an allocation
    env "${DP_SLURM[@]}" SLURM_NTASKS=9 PATH="$TMP/fake-mpirun:$PATH" FAKE_MPIRUN_LOG="$TMP/dp_sl.ran" \
        deploy/clipd-launch "$TINY" 2>/dev/null || return 1
    grep -q -- " : -np 8 $DP_BIN/clipd-worker\$" "$TMP/dp_sl.ran" || return 1
    env "${DP_SLURM[@]}" SLURM_NTASKS=9 PATH="$TMP/fake-mpirun:$PATH" FAKE_MPIRUN_LOG="$TMP/dp_sl.ran" \
        deploy/clipd-launch -n 3 "$TINY" 2>/dev/null || return 1
    grep -q -- " : -np 3 $DP_BIN/clipd-worker\$" "$TMP/dp_sl.ran" || return 1
    # mpirun, not the launcher, places the ranks: 4 do not fit in 3 tasks
    ! env "${DP_SLURM[@]}" $LAUNCH -n 3 "$TINY" --set run.dir="$TMP/dp_sl4" >"$TMP/dp_sl4.out" 2>&1 &&
        grep -q "not enough slots" "$TMP/dp_sl4.out"
}
check "clipd-launch in a Slurm allocation (SLURM_NTASKS=3): 2 workers by default, a real run, no srun" dp_slurm

dp_one_line() { # CODE PATTERN CMD...: expect_exit, and stderr is that one line
    expect_exit "$@" || return 1
    [ "$(wc -l <"$TMP/be.err")" = 1 ] || { echo "more than one line"; return 1; }
}
dp_bad() {
    local L=("${DP_NOSLURM[@]}" deploy/clipd-launch)
    dp_one_line 2 "unknown option '--bogus'" "${L[@]}" -n 2 --bogus "$TINY" || return 1
    dp_one_line 2 "positive number of workers, got '0'" "${L[@]}" -n 0 "$TINY" || return 1
    dp_one_line 2 "positive number of workers, got 'two'" "${L[@]}" -n two "$TINY" || return 1
    dp_one_line 2 "-n needs a value" "${L[@]}" "$TINY" -n || return 1
    dp_one_line 2 "is required outside a Slurm allocation" "${L[@]}" "$TINY" || return 1
    dp_one_line 2 "missing CONFIG" "${L[@]}" -n 2 || return 1
    dp_one_line 2 "unexpected argument 'b.yaml'" "${L[@]}" -n 2 a.yaml b.yaml || return 1
    dp_one_line 2 "--hostfile '$TMP/none': no such readable file" "${L[@]}" -n 2 --hostfile "$TMP/none" "$TINY" || return 1
    dp_one_line 2 "has 1 task(s): clipd needs at least 2" env "${DP_SLURM[@]}" SLURM_NTASKS=1 deploy/clipd-launch "$TINY" || return 1
    dp_one_line 2 "SLURM_NTASKS is not set" env "${DP_SLURM[@]}" env -u SLURM_NTASKS deploy/clipd-launch "$TINY"
}
check "clipd-launch bad usage: exit 2 and one line saying what is wrong" dp_bad

# The batch script, run as Slurm would run it (bash, in the submit directory,
# with the job's environment) but under timeout, so a hang fails the check.
dp_sbatch() { # NAME [ENV=VALUE ...]: in the background; $bg is timeout, $dp_sb the batch shell
    local name="$1"; shift
    timeout -k 10 300 env "${DP_SLURM[@]}" CLIPD_CONFIG="$TINY" CLIPD_RUN_DIR="$TMP/dp_sb" "$@" \
        bash deploy/slurm/clipd.sbatch "${DP_RS[@]}" ${DP_EXTRA[@]+"${DP_EXTRA[@]}"} >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
}
dp_sbatch_shell() { # the batch shell: timeout's child, running bash
    local p
    for p in $(pgrep -P "$bg"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = bash ] && { echo "$p"; return 0; }
    done
    echo "no batch shell under timeout (pid $bg)" >&2
    return 1
}

check "uninterrupted reference run for the sbatch tests" run_done dp_ref 2 "${DP_RS[@]}"

dp_sbatch_signal() { # SIGNAL RUN_DIR: once RUN_DIR has 120 steps, SIGNAL to the batch shell
    local sh
    for _ in $(seq 100); do sh=$(dp_sbatch_shell 2>/dev/null) && break; sleep 0.05; done
    [ -n "$sh" ] || { dp_sbatch_shell; return 1; }
    wait_lines "$2/steps.jsonl" 120 || return 1
    kill -"$1" "$sh" # only the batch shell, as --signal=B:USR1 does
}

dp_sb_stop() {
    : >"$TMP/slurm.calls"
    dp_sbatch dp_sb1
    dp_sbatch_signal USR1 "$TMP/dp_sb" || return 1
    wait "$bg" || { echo "batch script exited $?"; cat "$TMP/dp_sb1.err"; return 1; }
    cat "$TMP/dp_sb1.err"
    grep -q "starting fresh" "$TMP/dp_sb1.err" || return 1
    dp_printed "$TMP/dp_sb1.err" | grep -q -- " --set run.dir=$TMP/dp_sb --set train.steps_per_epoch" || return 1
    ! dp_printed "$TMP/dp_sb1.err" | grep -q -- --resume || { echo "first start resumed"; return 1; }
    grep -q "stopped by a signal" "$TMP/dp_sb1.out" || return 1
    local n; n=$(wc -l <"$TMP/dp_sb/steps.jsonl")
    [ "$n" -lt 800 ] || { echo "the signal came after the end"; return 1; }
    ls "$TMP/dp_sb/checkpoints/step-$(printf %08d "$n").safetensors" || return 1
    [ ! -e "$TMP/dp_sb/final.safetensors" ] || return 1
    [ "$(cat "$TMP/slurm.calls")" = "scontrol requeue 4242" ] || { cat "$TMP/slurm.calls"; return 1; }
}
check "sbatch script, 1st start: no --resume; SIGUSR1 to the batch shell -> checkpoint, exit 0, scontrol requeue" dp_sb_stop

dp_sb_requeued() {
    [ -d "$TMP/dp_sb/checkpoints" ] || { echo "needs the check before"; return 1; }
    : >"$TMP/slurm.calls"
    dp_sbatch dp_sb2 SLURM_RESTART_COUNT=1
    wait "$bg" || { echo "batch script exited $?"; cat "$TMP/dp_sb2.err"; return 1; }
    cat "$TMP/dp_sb2.err"
    dp_printed "$TMP/dp_sb2.err" | grep -q -- " --resume latest " || return 1
    grep -q "run finished" "$TMP/dp_sb2.err" || return 1
    [ ! -s "$TMP/slurm.calls" ] || { echo "requeued a finished run:"; cat "$TMP/slurm.calls"; return 1; }
    cmp <(strip_t "$TMP/dp_ref/steps.jsonl") <(strip_t "$TMP/dp_sb/steps.jsonl") || return 1
    cmp <(strip_t "$TMP/dp_ref/epochs.jsonl") <(strip_t "$TMP/dp_sb/epochs.jsonl") || return 1
    build/tests/stcmp "$TMP/dp_ref/final.safetensors" "$TMP/dp_sb/final.safetensors" 0
}
check "sbatch script, requeued start: --resume latest, finishes, no requeue; == uninterrupted run" dp_sb_requeued

# CLIPD_GLOBAL_BATCH: stopped on 2 workers x 4, requeued onto an allocation
# of 2 tasks (1 worker): the start passes data.batch_per_worker=8 and resumes
# elastically, the same data order and schedule as the uninterrupted run.
# 250 steps: W=1 and W=2 drift apart from float rounding (2e-6 of the loss
# at step 300, 2% at 800 on this model), elastic or not. Worker 0 sleeps
# 2 ms a step (timing only) so the signal lands mid-run.
DP_EL=(--set train.epochs=1 --set train.steps_per_epoch=250 --set debug.slow_ms=2 --set watchdog.straggler_window=0)
dp_sb_elastic() {
    run dp_eref 2 "${DP_RS[@]}" "${DP_EL[@]}" || return 1
    : >"$TMP/slurm.calls"
    DP_EXTRA=("${DP_EL[@]}")
    dp_sbatch dp_sbe1 CLIPD_RUN_DIR="$TMP/dp_sbe" CLIPD_GLOBAL_BATCH=8
    dp_sbatch_signal USR1 "$TMP/dp_sbe" || return 1
    wait "$bg" || { echo "batch script exited $?"; cat "$TMP/dp_sbe1.err"; return 1; }
    dp_printed "$TMP/dp_sbe1.err" | grep -q -- "--set data.batch_per_worker=4 " || return 1
    [ "$(cat "$TMP/slurm.calls")" = "scontrol requeue 4242" ] || { cat "$TMP/slurm.calls"; return 1; }
    dp_sbatch dp_sbe2 CLIPD_RUN_DIR="$TMP/dp_sbe" CLIPD_GLOBAL_BATCH=8 SLURM_NTASKS=2 SLURM_NPROCS=2 \
        SLURM_TASKS_PER_NODE=2 SLURM_RESTART_COUNT=1
    DP_EXTRA=()
    wait "$bg" || { echo "requeued start exited $?"; cat "$TMP/dp_sbe2.err"; return 1; }
    dp_printed "$TMP/dp_sbe2.err" | grep -q -- "--set data.batch_per_worker=8 .*--resume latest" || return 1
    grep -q "written by 2 workers x 4; resuming on 1 x 8" "$TMP/dp_sbe2.err" || return 1
    near_run "$TMP/dp_eref" "$TMP/dp_sbe" || return 1
    expect_exit 2 "CLIPD_GLOBAL_BATCH=9 is not a multiple of this start's 2 workers" \
        env "${DP_SLURM[@]}" CLIPD_CONFIG="$TINY" CLIPD_RUN_DIR="$TMP/dp_sbe_bad" CLIPD_GLOBAL_BATCH=9 \
        bash deploy/slurm/clipd.sbatch
}
check "sbatch script, CLIPD_GLOBAL_BATCH: requeued onto 1 worker resumes at 1 x 8 (== uninterrupted to float rounding); 9 on 2 workers: exit 2" dp_sb_elastic

# The config puts checkpoints outside the run dir and CLIPD_CKPT_DIR is not
# set: the script finds them where clipd writes them (clipd --check) and the
# requeued start resumes; before, it found none and started over with
# run.overwrite, deleting them.
dp_sb_ckdir() {
    : >"$TMP/slurm.calls"
    DP_EXTRA=(--set checkpoint.dir="$TMP/dp_sbc_ck")
    dp_sbatch dp_sbc1 CLIPD_RUN_DIR="$TMP/dp_sbc"
    dp_sbatch_signal USR1 "$TMP/dp_sbc" || return 1
    wait "$bg" || { echo "batch script exited $?"; cat "$TMP/dp_sbc1.err"; return 1; }
    ls "$TMP/dp_sbc_ck"/step-*.safetensors >/dev/null || return 1
    dp_sbatch dp_sbc2 CLIPD_RUN_DIR="$TMP/dp_sbc" SLURM_RESTART_COUNT=1
    DP_EXTRA=()
    wait "$bg" || { echo "requeued start exited $?"; cat "$TMP/dp_sbc2.err"; return 1; }
    grep "clipd.sbatch" "$TMP/dp_sbc2.err"
    grep -q "resuming from the latest checkpoint in $TMP/dp_sbc_ck" "$TMP/dp_sbc2.err" || return 1
    ! dp_printed "$TMP/dp_sbc2.err" | grep -q run.overwrite || { echo "started over"; return 1; }
    cmp <(strip_t "$TMP/dp_ref/steps.jsonl") <(strip_t "$TMP/dp_sbc/steps.jsonl") || return 1
    build/tests/stcmp "$TMP/dp_ref/final.safetensors" "$TMP/dp_sbc/final.safetensors" 0
}
check "sbatch script, checkpoint.dir outside the run dir (CLIPD_CKPT_DIR unset): the requeued start finds and resumes them == uninterrupted" dp_sb_ckdir

dp_sb_term() {
    : >"$TMP/slurm.calls"
    dp_sbatch dp_sbt CLIPD_RUN_DIR="$TMP/dp_sbt"
    dp_sbatch_signal TERM "$TMP/dp_sbt" || return 1
    wait "$bg" || { echo "batch script exited $?"; cat "$TMP/dp_sbt.err"; return 1; }
    cat "$TMP/dp_sbt.err"
    grep -q "stopped by a signal" "$TMP/dp_sbt.out" || return 1
    local n; n=$(wc -l <"$TMP/dp_sbt/steps.jsonl")
    ls "$TMP/dp_sbt/checkpoints/step-$(printf %08d "$n").safetensors" || return 1
    [ ! -s "$TMP/slurm.calls" ] || { echo "requeued after SIGTERM:"; cat "$TMP/slurm.calls"; return 1; }
}
check "sbatch script, SIGTERM to the batch shell (scancel): checkpoint, exit 0, no requeue" dp_sb_term

# A failed start (here a worker stopped: the watchdog ends the job, exit 1)
# with a checkpoint is requeued; the requeued start resumes and finishes
# like the uninterrupted run.
dp_sb_fail() {
    local w rc
    : >"$TMP/slurm.calls"
    # 10 ms a step (debug.slow_ms, timing only): still running when a worker is stopped
    DP_EXTRA=(--set watchdog.seconds=4 --set watchdog.warn_seconds=1 --set debug.slow_ms=10)
    dp_sbatch dp_sbf CLIPD_RUN_DIR="$TMP/dp_sbf"
    DP_EXTRA=()
    wait_lines "$TMP/dp_sbf/steps.jsonl" 120 || return 1
    w=$(job_pids "$bg" clipd-worker | tail -1)
    [ -n "$w" ] || { echo "no worker"; return 1; }
    kill -STOP "$w"
    wait "$bg"
    rc=$?
    cat "$TMP/dp_sbf.err" | grep -e "clipd.sbatch" -e "watchdog"
    [ "$rc" = 1 ] || { echo "batch script exited $rc, wanted 1"; return 1; }
    grep -q "clipd failed (exit 1: .*requeueing job 4242" "$TMP/dp_sbf.err" || return 1
    [ "$(cat "$TMP/slurm.calls")" = "scontrol requeue 4242" ] || { cat "$TMP/slurm.calls"; return 1; }
    : >"$TMP/slurm.calls"
    dp_sbatch dp_sbf2 CLIPD_RUN_DIR="$TMP/dp_sbf" SLURM_RESTART_COUNT=1
    wait "$bg" || { echo "requeued start exited $?"; cat "$TMP/dp_sbf2.err"; return 1; }
    dp_printed "$TMP/dp_sbf2.err" | grep -q -- " --resume latest " || return 1
    [ ! -s "$TMP/slurm.calls" ] || { echo "requeued a finished run:"; cat "$TMP/slurm.calls"; return 1; }
    cmp <(strip_t "$TMP/dp_ref/steps.jsonl") <(strip_t "$TMP/dp_sbf/steps.jsonl") || return 1
    build/tests/stcmp "$TMP/dp_ref/final.safetensors" "$TMP/dp_sbf/final.safetensors" 0
}
check "sbatch script: a stalled start (watchdog, exit 1) is requeued; the requeued start resumes == uninterrupted" dp_sb_fail

dp_sb_outside() {
    expect_exit 2 "not inside a Slurm job" "${DP_NOSLURM[@]}" bash deploy/slurm/clipd.sbatch
}
check "sbatch script outside Slurm: exit 2 saying so" dp_sb_outside

dp_static() {
    local f
    for f in deploy/clipd-launch deploy/slurm/clipd.sbatch deploy/setup-debian.sh; do
        bash -n "$f" || return 1
    done
    for f in "--signal=B:USR1@120" "--requeue" "--open-mode=append"; do
        grep -q "^#SBATCH $f\$" deploy/slurm/clipd.sbatch || { echo "no #SBATCH $f"; return 1; }
    done
    # the container installs the packages by running setup-debian.sh itself
    grep -q '^RUN bash /tmp/setup-debian.sh' deploy/Dockerfile || { echo "Dockerfile does not run setup-debian.sh"; return 1; }
    # the k8s launcher runs clipd-launch (its TERM handling: a pod eviction
    # checkpoints) with the operator's hostfile, and waits long enough for it
    grep -q 'exec /opt/clipd/deploy/clipd-launch -n [0-9]* --hostfile /etc/mpi/hostfile configs/.*"\$@"' deploy/k8s/mpijob.yaml &&
        grep -q 'terminationGracePeriodSeconds: [0-9]*' deploy/k8s/mpijob.yaml
}
check "deploy files: scripts parse, sbatch directives, Dockerfile and MPIJob consistent" dp_static

# Thread placement on one node: no core binding (Open MPI would pin a small
# job's ranks to one core each, so 1 worker x 2 BLAS threads would share
# one core), and workers x threads never above the cores.
dp_placement() {
    local all; all=$(cat /sys/fs/cgroup/cpuset.cpus.effective 2>/dev/null || true)
    # 2 ms a step (debug.slow_ms: timing only): still running when looked at
    $LAUNCH -n 1 "$TINY" --set run.dir="$TMP/dp_pl" --set worker.threads=2 --set debug.slow_ms=2 \
        --set train.steps_per_epoch=3000 --set metrics.listen=off >"$TMP/dp_pl.out" 2>"$TMP/dp_pl.err" &
    bg=$!
    local pid="" i
    for i in $(seq 100); do pid=$(job_pids "$bg" clipd-worker); [ -n "$pid" ] && break; sleep 0.1; done
    [ -n "$pid" ] || { echo "no worker"; return 1; }
    sleep 1
    local allowed; allowed=$(awk '/^Cpus_allowed_list/ { print $2 }' "/proc/$pid/status")
    local mine; mine=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
    kill -TERM "$bg" 2>/dev/null; wait "$bg"
    echo "worker may run on CPUs $allowed; this shell on $mine (cgroup ${all:-?})"
    grep -q -- "--bind-to none" "$TMP/dp_pl.err" || { echo "no --bind-to none"; return 1; }
    [ "$allowed" = "$mine" ] || return 1
    grep -q "2 BLAS threads each" "$TMP/dp_pl.err" || { echo "not 2 threads"; return 1; }
    # 3 workers x 2 threads on $(nproc) cores: lowered, with a warning
    $LAUNCH -n 3 "$TINY" --set run.dir="$TMP/dp_pl3" --set worker.threads=2 --set metrics.listen=off \
        >/dev/null 2>"$TMP/dp_pl3.err" || return 1
    grep -q "worker.threads 2 x 3 workers on this node > $(nproc) cores: using 1 BLAS thread each" "$TMP/dp_pl3.err"
}
check "clipd-launch on one node: no core binding (1 worker x 2 threads may use every core); threads lowered when workers x threads > cores" dp_placement
