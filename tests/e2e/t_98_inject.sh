# Fault injection, end to end, with real mpirun jobs: SIGKILL of a worker or
# of the coordinator at random steps, a crash inside a checkpoint write (the
# debug.ckpt_crash_* hook), a disk that fills up (a small tmpfs), a run or
# checkpoint directory that is or becomes read-only, data files that vanish,
# shrink or cannot be read, and a log file removed under a running job.
# The outcome asked of every case: the job ends (within seconds, never a
# hang) or goes on as its policy says, with one clear error; no file that
# `--resume latest` would take is corrupt; and the resumed run ends with the
# same weights, bit for bit, as a run that was never disturbed.
# Random cases print their seed: FI_SEEDS="7 8" reruns chosen seeds. A job
# killed at a random step is made slow enough (worker 0 sleeps 15 ms a step,
# debug.slow_ms: timing only; the straggler events it would cause are off in
# every run) that the kill lands while it still runs, however fast the machine.
FI=(--set train.steps_per_epoch=300 --set model.hidden=32 --set data.seq_len=32 --set checkpoint.every_steps=25
    --set metrics.listen=off --set watchdog.straggler_window=0)
read -ra FI_SEEDS <<<"${FI_SEEDS:-1 2 3}"

fi_wait_grep() { # FILE PATTERN [N]: until N lines (default 1) of FILE match (at most 60 s)
    local i
    for i in $(seq 3000); do
        [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "${3:-1}" ] && return 0
        sleep 0.02
    done
    echo "$1: fewer than ${3:-1} lines matching '$2' after 60 s"
    return 1
}
# fi_start NAME ARGS...: a job in the background (pid in $bg), run.dir $TMP/NAME
fi_start() {
    local name="$1"; shift
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$name" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
}
fi_rank_pid() { # NAME RANK: pid of the job's process NAME with MPI world rank RANK
    local p
    for p in $(job_pids "$bg" "$1"); do
        if grep -qxz "OMPI_COMM_WORLD_RANK=$2" "/proc/$p/environ" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no $1 of world rank $2 in the job"
    return 1
}
fi_ended() { # T0: the job in $bg ended non-zero within 30 s of T0 (a hang fails by timeout)
    wait "$bg"
    local rc=$? took=$((SECONDS - $1))
    echo "job ended with exit $rc, $took s after the fault"
    [ "$rc" != 0 ] || { echo "a job hit by the fault exited 0"; return 1; }
    [ "$took" -lt 30 ] || { echo "it took $took s to end"; return 1; }
}
fi_no_tmp() { # DIR...: no temporary file of an interrupted write left
    local left
    left=$(find "$@" -maxdepth 1 -name '.*.tmp.*' 2>/dev/null)
    [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}
fi_lines_whole() { # DIR: every line of the four logs is a whole JSON object
    local f
    for f in steps epochs events tensors; do
        [ ! -s "$1/$f.jsonl" ] || jq -e . "$1/$f.jsonl" >/dev/null || { echo "$f.jsonl: a torn line"; return 1; }
        [ ! -s "$1/$f.jsonl" ] || [ "$(tail -c 1 "$1/$f.jsonl" | od -An -c | tr -d ' ')" = '\n' ] ||
            { echo "$f.jsonl: does not end with a newline"; return 1; }
    done
}
fi_ckpt_data() { # FILE: the tensor bytes of a safetensors file (after the header)
    local n
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1"
}
fi_step_file() { printf '%s/step-%08d.safetensors' "$1" "$2"; }

check "reference run, never disturbed" run_done fi_ref 2 "${FI[@]}"

# ---- SIGKILL at random steps -------------------------------------------------

# fi_kill SEED worker|coordinator: kill it with SIGKILL once the log reaches
# a random step; the job must end in seconds with no process left, and
# --resume latest must then finish exactly like the reference run.
fi_kill() {
    local seed="$1" what="$2" at rank name pid pids t0 n p
    RANDOM="$seed"
    at=$(((RANDOM * 32768 + RANDOM) % 400 + 30))
    if [ "$what" = worker ]; then name=clipd-worker rank=$((1 + (RANDOM >> 5) % 2)); else name=clipd rank=0; fi
    local d="fi_k${what:0:1}$seed"
    fi_start "$d" "${FI[@]}" --set debug.slow_ms=15
    wait_lines "$TMP/$d/steps.jsonl" 1 || return 1
    pid=$(fi_rank_pid "$name" "$rank") || return 1
    pids=$(job_pids "$bg" clipd-worker; job_pids "$bg" clipd)
    wait_lines "$TMP/$d/steps.jsonl" "$at" || return 1
    t0=$SECONDS
    kill -KILL "$pid"
    fi_ended "$t0" || return 1
    n=$(wc -l <"$TMP/$d/steps.jsonl")
    echo "seed $seed: SIGKILL to $name (world rank $rank) at step >= $at; steps.jsonl had $n lines"
    [ ! -e "$TMP/$d/final.safetensors" ] || { echo "the kill came after the run finished: tested nothing"; return 1; }
    for p in $pids; do # gone, or a zombie (dead, waiting for an init that reaps it)
        if [ -e "/proc/$p" ] && [ "$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
            echo "process $p ($(cat "/proc/$p/comm" 2>/dev/null)) of the job outlived it"; return 1
        fi
    done
    run "$d" 2 "${FI[@]}" --resume latest || { tail -5 "$TMP/$d.err"; return 1; }
    grep -o 'resuming from .*' "$TMP/$d.err"
    fi_no_tmp "$TMP/$d" "$TMP/$d/checkpoints" && same_run "$TMP/fi_ref" "$TMP/$d"
}
for s in "${FI_SEEDS[@]}"; do
    check "SIGKILL of a random worker at a random step (seed $s): ends in seconds; resume == undisturbed" fi_kill "$s" worker
    check "SIGKILL of the coordinator at a random step (seed $s): ends in seconds; resume == undisturbed" fi_kill "$s" coordinator
done

# ---- a crash inside a checkpoint write ----------------------------------------

# fi_crash SEED AT: worker 0 kills itself (SIGKILL) writing the checkpoint of
# a random step, at AT. The checkpoint before stays the one latest takes;
# a temporary file is removed at the next start, and a complete file the
# logs do not reach is set aside; the resumed run == the reference.
fi_crash() {
    local seed="$1" at="$2" step prev d ck t0 tmpf
    RANDOM="$seed"
    step=$((25 * (2 + (RANDOM * 32768 + RANDOM) % 20)))
    prev=$((step - 25))
    d="fi_c${at}_$seed" ck="$TMP/fi_c${at}_$seed/checkpoints"
    t0=$SECONDS
    fi_start "$d" "${FI[@]}" --set debug.ckpt_crash_step="$step" --set debug.ckpt_crash_at="$at"
    fi_ended "$t0" || return 1
    echo "seed $seed: worker 0 killed $at of the checkpoint at step $step"
    grep -q "exited on signal 9" "$TMP/$d.err" || { echo "not killed by the hook"; return 1; }
    [ "$(wc -l <"$TMP/$d/steps.jsonl")" -lt "$step" ] || { echo "steps.jsonl reaches step $step"; return 1; }
    tmpf=$(find "$ck" -name ".step-$(printf %08d "$step").safetensors.tmp.*")
    case "$at" in
        after_rename)
            [ -z "$tmpf" ] && [ -f "$(fi_step_file "$ck" "$step")" ] || { echo "no renamed checkpoint"; return 1; } ;;
        *)
            [ -n "$tmpf" ] && [ ! -e "$(fi_step_file "$ck" "$step")" ] || { echo "no temporary file"; return 1; }
            if [ "$at" = during_write ] && [ "$(stat -c %s "$tmpf")" -ge "$(stat -c %s "$(fi_step_file "$ck" "$prev")")" ]; then
                echo "the temporary file is not partial"; return 1
            fi ;;
    esac
    run "$d" 2 "${FI[@]}" --resume latest || { tail -5 "$TMP/$d.err"; return 1; }
    grep -o 'resuming from .*' "$TMP/$d.err"
    # the previous checkpoint is the one taken, unless the job ended before
    # its coordinator logged that step (then it is skipped for that reason only)
    grep -q "resuming from $(fi_step_file "$ck" "$prev")" "$TMP/$d.err" ||
        grep -q "skipping $(fi_step_file "$ck" "$prev"): .*the logs end at" "$TMP/$d.err" ||
        { echo "did not resume from step $prev"; return 1; }
    if grep "skipping" "$TMP/$d.err" | grep -v "the logs end at"; then echo "a corrupt checkpoint"; return 1; fi
    case "$at" in
        after_rename)
            grep -q "skipping $(fi_step_file "$ck" "$step"): .*the logs end at" "$TMP/$d.err" &&
                grep -q "set aside $(fi_step_file "$ck" "$step")" "$TMP/$d.err" || return 1 ;;
        *)
            grep -q "removed $tmpf (a temporary file left by an interrupted write)" "$TMP/$d.err" ||
                { echo "the temporary file was not removed, or not said so"; return 1; } ;;
    esac
    fi_no_tmp "$TMP/$d" "$ck" && same_run "$TMP/fi_ref" "$TMP/$d"
}
for at in during_write before_rename after_rename; do
    check "killed $at in a checkpoint write: the previous one loads, leftovers cleaned; resume == undisturbed" \
        fi_crash "${FI_SEEDS[0]}" "$at"
done
check "killed before_rename (seed ${FI_SEEDS[1]:-2}): same" fi_crash "${FI_SEEDS[1]:-2}" before_rename

fi_crash_key() {
    expect_exit 2 "debug.ckpt_crash_at: expected one of during_write, before_rename, after_rename" \
        build/clipd --check "$TINY" --set debug.ckpt_crash_at=sometime
}
check "debug.ckpt_crash_at: an unknown point is exit 2 naming the choices" fi_crash_key

# ---- a disk that fills up -----------------------------------------------------

# Small tmpfs file systems stand in for a full disk. A test that cannot mount
# one fails, saying so: it must not pass without having filled a disk.
FI_MNT=()
fi_mount() { # DIR SIZE: a fresh tmpfs of SIZE at DIR
    mkdir -p "$1" || return 1
    if ! mount -t tmpfs -o "size=$2" tmpfs "$1"; then
        echo "FAULT INJECTION NOT POSSIBLE: cannot mount a tmpfs at $1 (needs root and CAP_SYS_ADMIN): the disk-full and read-only cases did not run"
        return 1
    fi
    FI_MNT+=("$1")
}
fi_umount_all() { # newest first: a bind mount may sit on a tmpfs
    local i
    for ((i = ${#FI_MNT[@]} - 1; i >= 0; i--)); do
        if mountpoint -q "${FI_MNT[i]}"; then umount "${FI_MNT[i]}" || umount -l "${FI_MNT[i]}"; fi
    done
    FI_MNT=()
}
AT_EXIT+=(fi_umount_all)
fi_fill() { # DIR: fill its file system to the last byte
    head -c 1G /dev/zero >"$1/.filler" 2>/dev/null
    [ "$(df --output=avail "$1" | tail -1 | tr -d ' ')" = 0 ] || { echo "$1 not full"; return 1; }
}
fi_pause() { sig_job STOP clipd-worker; }
fi_resume_job() { sig_job CONT clipd-worker; }
fi_metric() { # PORT NAME: a counter's value from the job's endpoint (3 tries: CI is loaded)
    local i v
    for i in 1 2 3; do
        v=$(curl -s --max-time 10 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }')
        [ -n "$v" ] && break
        echo "no $2 from port $1 (try $i)" >&2
    done
    echo "$v"
}
fi_port() { # NAME: the metrics port the job logged
    fi_wait_grep "$TMP/$1.err" 'metrics: http://127.0.0.1:' >/dev/null || return 1
    grep -o 'metrics: http://127.0.0.1:[0-9]*' "$TMP/$1.err" | grep -o '[0-9]*$'
}
FD=(--set train.steps_per_epoch=300 --set checkpoint.every_steps=25 --set data.seq_len=32 # slow enough to pause mid-run
    --set debug.slow_ms=5 --set watchdog.straggler_window=0)
check "reference run for the small-disk cases" run_done fi_dref 2 "${FD[@]}" --set metrics.listen=off

# The whole run directory on a disk that fills up mid-run, default policy
# (checkpoint.on_failure: abort): the job stops at the first checkpoint it
# cannot write, exit 1, saying why; no torn log line, no partial checkpoint;
# once there is room, --resume latest == the undisturbed run.
fi_full_abort() {
    local m="$TMP/fi_mnt_a" d t0
    fi_mount "$m" 2m || return 1
    d="$m/run"
    $LAUNCH -n 2 "$TINY" --set run.dir="$d" "${FD[@]}" --set metrics.listen=off >"$TMP/fi_fa.out" 2>"$TMP/fi_fa.err" &
    bg=$!
    wait_lines "$d/steps.jsonl" 60 || return 1
    fi_pause || return 1
    fi_fill "$m" || { fi_resume_job; return 1; }
    t0=$SECONDS
    fi_resume_job
    fi_ended "$t0" || return 1
    grep -q "checkpoint failed: .*No space left on device; checkpoint.on_failure is abort: stopping" "$TMP/fi_fa.err" ||
        { grep -i "error\|fail\|abort" "$TMP/fi_fa.err" | head -5; return 1; }
    grep -q "aborted" "$TMP/fi_fa.out" && grep -q "checkpoint failures 1" "$TMP/fi_fa.out" || return 1
    fi_no_tmp "$d" "$d/checkpoints" && fi_lines_whole "$d" || return 1
    rm "$m/.filler"
    $LAUNCH -n 2 "$TINY" --set run.dir="$d" "${FD[@]}" --set metrics.listen=off --resume latest >"$TMP/fi_fa2.out" 2>"$TMP/fi_fa2.err" ||
        { tail -5 "$TMP/fi_fa2.err"; return 1; }
    grep -o 'resuming from .*' "$TMP/fi_fa2.err"
    # every checkpoint there is whole: latest skipped none as corrupt
    if grep "skipping" "$TMP/fi_fa2.err" | grep -v "the logs end at"; then return 1; fi
    same_run "$TMP/fi_dref" "$d"
}
check "disk full mid-run (run.dir on a tmpfs), on_failure abort: exit 1, last checkpoint intact, logs whole; resume == undisturbed" fi_full_abort

# Only the checkpoint disk fills (run.dir elsewhere, so the logs keep the
# events), checkpoint.on_failure: continue: every failure is an event and a
# metric, training goes on untouched, and once there is room again the
# checkpoints and the final weights are those of the undisturbed run.
fi_full_continue() {
    local m="$TMP/fi_mnt_c" d="$TMP/fi_fc" port n
    fi_mount "$m" 1m || return 1
    fi_start fi_fc "${FD[@]}" --set checkpoint.dir="$m/ck" --set checkpoint.on_failure=continue \
        --set metrics.listen=127.0.0.1:0
    port=$(fi_port fi_fc) || return 1
    wait_lines "$d/steps.jsonl" 60 || return 1
    fi_pause || return 1
    fi_fill "$m" || { fi_resume_job; return 1; }
    fi_resume_job
    fi_wait_grep "$d/events.jsonl" '"kind":"checkpoint_failed"' 2 || return 1
    fi_pause || return 1
    n=$(fi_metric "$port" clipd_checkpoint_failures_total)
    echo "clipd_checkpoint_failures_total $n while the disk is full"
    rm "$m/.filler"
    fi_resume_job
    wait "$bg"
    local rc=$?
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1 (checkpoints failed)"; return 1; }
    [ -n "$n" ] && [ "$n" -ge 2 ] || return 1
    jq -s -e 'map(select(.kind == "checkpoint_failed")) | length >= 2 and all(.[]; .action == "continue"
        and (.error | test("No space left on device")))' "$d/events.jsonl" >/dev/null || { cat "$d/events.jsonl"; return 1; }
    grep -q "checkpoint.on_failure is continue: training goes on" "$TMP/fi_fc.err" || return 1
    fi_no_tmp "$m/ck" || return 1
    cmp <(strip_t "$TMP/fi_dref/steps.jsonl") <(strip_t "$d/steps.jsonl") || return 1
    cmp <(fi_ckpt_data "$TMP/fi_dref/checkpoints/step-00000600.safetensors") \
        <(fi_ckpt_data "$m/ck/step-00000600.safetensors") || { echo "last checkpoint differs"; return 1; }
    build/tests/stcmp "$TMP/fi_dref/final.safetensors" "$d/final.safetensors" 0
}
check "checkpoint disk full mid-run, on_failure continue: events + metric, training untouched; room again: == undisturbed" fi_full_continue

# The log disk fills (checkpoints elsewhere): lost lines are counted and said
# once per file, the other lines stay whole, training goes on untouched.
fi_full_logs() {
    local m="$TMP/fi_mnt_l" d port n
    fi_mount "$m" 1m || return 1
    d="$m/run"
    $LAUNCH -n 2 "$TINY" --set run.dir="$d" "${FD[@]}" --set checkpoint.dir="$TMP/fi_fl_ck" \
        --set metrics.listen=127.0.0.1:0 >"$TMP/fi_fl.out" 2>"$TMP/fi_fl.err" &
    bg=$!
    port=$(fi_port fi_fl) || return 1
    wait_lines "$d/steps.jsonl" 60 || return 1
    fi_pause || return 1
    fi_fill "$m" || { fi_resume_job; return 1; }
    fi_resume_job
    fi_wait_grep "$TMP/fi_fl.err" "cannot write $d/steps.jsonl: No space left on device" || return 1
    fi_pause || return 1
    n=$(fi_metric "$port" clipd_log_write_errors_total)
    echo "clipd_log_write_errors_total $n while the disk is full"
    rm "$m/.filler"
    fi_resume_job
    wait "$bg"
    local rc=$?
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1 (log lines lost)"; return 1; }
    [ -n "$n" ] && [ "$n" -ge 1 ] || return 1
    [ "$(grep -c "cannot write $d/steps.jsonl" "$TMP/fi_fl.err")" = 1 ] || { echo "not said once"; return 1; }
    fi_lines_whole "$d" || return 1
    # lines were lost, none repeated or reordered, and the run reached its end
    jq -s -e 'map(.seq) as $s | ($s | length) < 600 and $s == ($s | unique) and $s[-1] == 600' "$d/steps.jsonl" >/dev/null || return 1
    build/tests/stcmp "$TMP/fi_dref/final.safetensors" "$d/final.safetensors" 0
}
check "log disk full mid-run: said once per file, counted, no torn line; training untouched (== undisturbed)" fi_full_logs

# ---- read-only directories ------------------------------------------------------

fi_ro_start() {
    local m="$TMP/fi_mnt_r"
    fi_mount "$m" 1m || return 1
    mkdir -p "$m/old" && mount -o remount,ro "$m" || { echo "cannot remount $m read-only"; return 1; }
    expect_exit 2 "run.dir: cannot write in '$m/old': Read-only file system" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$m/old" || return 1
    expect_exit 2 "run.dir: cannot create '$m/new': Read-only file system" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$m/new" || return 1
    expect_exit 2 "checkpoint.dir: cannot write in '$m/old': Read-only file system" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/fi_ro_run" --set checkpoint.dir="$m/old"
}
check "read-only run.dir or checkpoint.dir at start: exit 2 naming the directory" fi_ro_start

# The checkpoint directory turns read-only mid-run (a read-only bind mount
# over it): like a full disk, the default policy stops the job at the next
# checkpoint; the checkpoints there stay intact and resume == undisturbed.
fi_ro_mid() {
    local d="$TMP/fi_rm" ck t0 ok=""
    ck="$d/checkpoints"
    fi_start fi_rm "${FD[@]}" --set metrics.listen=off
    wait_lines "$d/steps.jsonl" 60 || return 1
    fi_pause || return 1
    if mount --bind "$ck" "$ck"; then
        FI_MNT+=("$ck")
        mount -o remount,bind,ro "$ck" && ok=1
    fi
    [ -n "$ok" ] || { echo "FAULT INJECTION NOT POSSIBLE: cannot bind-mount $ck read-only"; fi_resume_job; return 1; }
    t0=$SECONDS
    fi_resume_job
    fi_ended "$t0" || return 1
    grep -q "checkpoint failed: .*Read-only file system; checkpoint.on_failure is abort" "$TMP/fi_rm.err" ||
        { grep -i "error\|fail\|abort" "$TMP/fi_rm.err" | head -5; return 1; }
    jq -s -e 'any(.[]; .kind == "checkpoint_failed" and .action == "abort" and (.error | test("Read-only")))' \
        "$d/events.jsonl" >/dev/null || return 1
    umount "$ck" || return 1
    # a write caught by the change could not even delete its temporary file:
    # the next start does
    run fi_rm 2 "${FD[@]}" --set metrics.listen=off --resume latest || return 1
    fi_no_tmp "$ck" && same_run "$TMP/fi_dref" "$d"
}
check "checkpoint.dir read-only mid-run: abort at the next checkpoint with an event; resume == undisturbed" fi_ro_mid

# ---- data files ---------------------------------------------------------------

FI_TXT="$TMP/fi_corpus"
mkdir -p "$FI_TXT"
awk 'BEGIN { srand(9); split("the a cat dog sat on mat and ran far away , . big small red", w, " ");
             for (i = 0; i < 40000; i++) printf "%s%s", w[1 + int(rand() * 16)], (i % 11 == 10 ? "\n" : " ") }' \
    >"$FI_TXT/one.txt"
FW=(--set data.source=text --set data.path="$FI_TXT/one.txt" --set data.tokenizer=words --set model.vocab=32
    --set data.seq_len=10 --set train.steps_per_epoch=200 --set data.valid_batches=2
    --set checkpoint.every_steps=20 --set metrics.listen=off)
FB=(--set data.source=text --set data.tokenizer=bytes --set model.vocab=256 --set data.seq_len=10
    --set train.steps_per_epoch=200 --set data.valid_batches=2 --set checkpoint.every_steps=20 --set metrics.listen=off)

# The token file workers map is cut to nothing under the running job: the
# worker that reads it next says which file, the job ends, the checkpoints
# are intact, and the next start rebuilds the tokens from the text.
fi_tokens_cut() {
    local d="$TMP/fi_tc" t0
    run fi_wref 2 "${FW[@]}" || return 1
    fi_start fi_tc "${FW[@]}" --set debug.slow_ms=5 --set watchdog.straggler_window=0 # still running at the cut
    wait_lines "$d/steps.jsonl" 50 || return 1
    t0=$SECONDS
    : >"$d/tokens-train.u32"
    fi_ended "$t0" || return 1
    grep -q "clipd-worker: bus error reading $d/tokens-train.u32: the file shrank" "$TMP/fi_tc.err" || return 1
    fi_no_tmp "$d" "$d/checkpoints" || return 1
    run fi_tc 2 "${FW[@]}" --resume latest || return 1
    same_run "$TMP/fi_wref" "$d"
}
check "words: the token file truncated under a running job: one line naming it, the job ends; resume == undisturbed" fi_tokens_cut

# data.path deleted under a running job: the workers hold it mapped, so the
# run ends as if nothing happened; a later start says the file is missing,
# exit 2, and changes nothing in the run directory.
fi_data_gone() {
    local d="$TMP/fi_dg" before
    cp "$FI_TXT/one.txt" "$TMP/fi_gone.txt"
    run fi_bref 2 "${FB[@]}" --set data.path="$FI_TXT/one.txt" || return 1
    fi_start fi_dg "${FB[@]}" --set data.path="$TMP/fi_gone.txt"
    wait_lines "$d/steps.jsonl" 50 || return 1
    rm "$TMP/fi_gone.txt"
    wait "$bg" || { echo "exit $? after the data file was deleted"; return 1; }
    build/tests/stcmp "$TMP/fi_bref/final.safetensors" "$d/final.safetensors" 0 || return 1
    # resuming from the oldest checkpoint kept would set aside the newer ones
    # and cut the logs back: a start that fails on its data must do neither
    before=$(cd "$d" && find . -type f | sort | xargs md5sum)
    expect_exit 2 "data.path: cannot read '$TMP/fi_gone.txt': No such file or directory" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$d" "${FB[@]}" --set data.path="$TMP/fi_gone.txt" \
        --resume "$(find "$d/checkpoints" -name 'step-*.safetensors' | sort | head -1)" || return 1
    [ "$before" = "$(cd "$d" && find . -type f | sort | xargs md5sum)" ] || { echo "the failed start changed the run directory"; return 1; }
}
check "bytes: data.path deleted mid-run: the run completes (== undisturbed); the next start: exit 2 naming it, nothing changed" fi_data_gone

# A data file that cannot be read at start (mode 000; root keeps its
# permissions here because setpriv drops CAP_DAC_OVERRIDE).
fi_data_unreadable() {
    command -v setpriv >/dev/null || { echo "setpriv (util-linux) missing: cannot drop root's file access"; return 1; }
    cp "$FI_TXT/one.txt" "$TMP/fi_locked.txt" && chmod 000 "$TMP/fi_locked.txt"
    local drop=(setpriv --bounding-set "-dac_override,-dac_read_search" --inh-caps "-dac_override,-dac_read_search")
    "${drop[@]}" head -c1 "$TMP/fi_locked.txt" >/dev/null 2>&1 && { echo "the file is still readable: nothing tested"; return 1; }
    expect_exit 2 "data.path: cannot read '$TMP/fi_locked.txt': Permission denied" \
        "${drop[@]}" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/fi_lk" "${FB[@]}" --set data.path="$TMP/fi_locked.txt"
}
check "a data file unreadable at start: exit 2 with one line naming it" fi_data_unreadable

# ---- a log file removed under a running job ----------------------------------

fi_log_removed() {
    local d="$TMP/fi_lr"
    fi_start fi_lr "${FI[@]}" --set train.steps_per_epoch=1000
    wait_lines "$d/steps.jsonl" 100 || return 1
    rm "$d/steps.jsonl"
    sig_job HUP clipd || return 1
    wait "$bg" || { echo "exit $?"; return 1; }
    grep -q "SIGHUP: log files reopened" "$TMP/fi_lr.err" || return 1
    # the new file: whole lines, steps in order up to the end
    jq -s -e 'length > 0 and (map(.seq) as $s | $s == ($s | sort) and $s[-1] == 2000
        and ($s[-1] - $s[0] + 1) == length)' "$d/steps.jsonl" >/dev/null
}
check "steps.jsonl removed under a running job, SIGHUP: a new file with every later step, exit 0" fi_log_removed

fi_umount_all
