# Hostile inputs (issue 14): special files as config or data, --check doing
# every check a launch does, symlinks planted in the run dir, private data,
# crafted checkpoints and resumes that do not fit. Every case: exit 2, one
# line naming the input, and nothing in the run dir changed.
HT="$TMP/hostile"
mkdir -p "$HT"

# A FIFO nobody writes to: opening it for reading without O_NONBLOCK blocks
# forever. `timeout` turns a hang into exit 124, which fails the check.
mkfifo "$HT/fifo.yaml" "$HT/fifo.txt"
check "--check on a FIFO config: exit 2, not a hang" \
    expect_exit 2 "fifo.yaml: not a regular file" timeout 20 build/clipd --check "$HT/fifo.yaml"
check "--check on /dev/null: the defaults (an empty config)" \
    bash -c 'build/clipd --check /dev/null | grep -q "^  listen:"'
check "a FIFO as data.path: the launch exits 2, not a hang" \
    expect_exit 2 "data.path: cannot read '$HT/fifo.txt': not a regular file" \
    timeout 60 deploy/clipd-launch -n 1 "$TINY" --set run.dir="$HT/fifo_run" --set metrics.listen=off \
    --set data.source=text --set data.path="$HT/fifo.txt" --set model.vocab=256

# Files derived from the data (vocab.txt, tokens-*.u32) are no more readable
# than the data itself: a 0600 corpus gives 0600 files, whatever the umask.
private_data() {
    awk 'BEGIN { for (i = 0; i < 4000; i++) printf "w%d%s", i % 13, (i % 9 == 8 ? "\n" : " ") }' >"$HT/private.txt"
    chmod 600 "$HT/private.txt"
    (umask 022 && $LAUNCH -n 1 "$TINY" --set run.dir="$HT/priv" --set metrics.listen=off --set train.epochs=1 \
        --set train.steps_per_epoch=3 --set data.source=text --set data.tokenizer=words --set model.vocab=16 \
        --set data.path="$HT/private.txt" --set data.valid_batches=0 >"$HT/priv.out" 2>&1) || { cat "$HT/priv.out"; return 1; }
    local f m bad=0
    for f in vocab.txt tokens-train.u32 tokens-valid.u32; do
        m=$(stat -c %a "$HT/priv/$f") || return 1
        echo "$f: $m"
        [ "$m" = 600 ] || bad=1
    done
    return $bad
}
check "vocab.txt and tokens-*.u32 of a 0600 corpus are 0600" private_data

# Symlinks planted in the run dir as a log or config.yaml are never
# followed: the start fails (exit 2) or replaces the link, and the target
# keeps its bytes.
planted_link() { # NAME: plant run.dir/NAME -> a victim file, start a run
    local d="$HT/link_$1"
    mkdir -p "$d"
    echo "precious" >"$HT/victim_$1"
    ln -s "$HT/victim_$1" "$d/$1"
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" --set metrics.listen=off --set train.epochs=1 \
        --set train.steps_per_epoch=3 >"$d.out" 2>&1
    local rc=$?
    echo "exit $rc"; tail -3 "$d.out"
    [ "$(cat "$HT/victim_$1")" = precious ] || { echo "the target of $1 was overwritten"; return 1; }
    # either refused, naming the file, or the link itself replaced by a regular file
    if [ "$rc" = 2 ]; then grep -q "$1" "$d.out"; else [ "$rc" = 0 ] && [ ! -L "$d/$1" ]; fi
}
for f in steps.jsonl events.jsonl config.yaml; do
    check "a symlink planted as run.dir/$f is not followed" planted_link "$f"
done
planted_on_resume() { # a symlink or FIFO planted as a log before a resume: refused before anything changes
    local d="$HT/plant_res"
    rm -rf "$d" && cp -a "$CKB" "$d" || return 1
    rm "$d/$1" && if [ "$2" = fifo ]; then mkfifo "$d/$1"; else ln -s "$HT/victim_steps.jsonl" "$d/$1"; fi
    fingerprint "$d" >"$d.before"
    expect_exit 2 "run.dir: '$d/$1' is .*refused" timeout 60 deploy/clipd-launch -n 1 "$TINY" --set run.dir="$d" \
        --set metrics.listen=off --set checkpoint.every_steps=5 --set checkpoint.keep=10 \
        --resume "$d/checkpoints/step-00000010.safetensors" || return 1
    fingerprint "$d" | diff "$d.before" - || { echo "the run dir changed"; return 1; }
}

# Start-up clean-up removes only temporaries clipd's own naming proves it
# wrote (a dot, the final name, .tmp.clipd-RUN_NAME.PID); a user's files that
# merely look like temporaries stay.
own_temps_only() {
    local d="$HT/stale" ck="$HT/stale/checkpoints" f
    mkdir -p "$ck"
    local keep=("$d/notes.u32.tmp.1" "$d/vocab.txt.tmp.old" "$d/.mine.tmp.2" "$d/x.jsonl.cut.3"
                "$ck/.step-1.tmp.4" "$ck/.step-00000001.safetensors.tmp.5"
                "$d/.vocab.txt.tmp.clipd-other.6" "$d/.steps.jsonl.tmp.clipd-tiny.x7")
    local gone=("$d/.vocab.txt.tmp.clipd-tiny.8" "$d/.steps.jsonl.tmp.clipd-tiny.9"
                "$ck/.step-00000002.safetensors.tmp.clipd-tiny.10" "$d/.final.safetensors.tmp.clipd-tiny.11")
    for f in "${keep[@]}" "${gone[@]}"; do echo x >"$f"; done
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" --set metrics.listen=off --set train.epochs=1 \
        --set train.steps_per_epoch=3 >"$d.out" 2>&1 || { cat "$d.out"; return 1; }
    for f in "${keep[@]}"; do [ -f "$f" ] || { echo "deleted a file clipd did not write: $f"; return 1; }; done
    for f in "${gone[@]}"; do [ ! -e "$f" ] || { echo "left its own stale temporary: $f"; return 1; }; done
}
check "start-up clean-up deletes only this run's own temporaries" own_temps_only

# --check runs every check a launch runs before it changes anything (one
# shared function), writing nothing: what the launch refuses, it refuses.
check "--check: a data.path that does not exist" \
    expect_exit 2 "data.path: cannot read '$HT/nope.txt'" build/clipd --check "$TINY" --set data.source=text \
    --set data.path="$HT/nope.txt" --set model.vocab=256
check "--check: bytes tokenizer with model.vocab < 256" \
    expect_exit 2 "model.vocab 100 must be >= 256" build/clipd --check "$TINY" --set data.source=text \
    --set data.path="$HT/private.txt" --set model.vocab=100
check "--check: run.dir=/dev/null" \
    expect_exit 2 "run.dir: '/dev/null' is not a directory" build/clipd --check "$TINY" --set run.dir=/dev/null
check "--check: checkpoint.dir under a file" \
    expect_exit 2 "checkpoint.dir: .*private.txt" build/clipd --check "$TINY" --set checkpoint.dir="$HT/private.txt/ck"
check "--check --resume of a file that does not exist" \
    expect_exit 2 "/nonexistent" build/clipd --check "$TINY" --resume /nonexistent
check "--check: a model this machine cannot hold (2 x 13000 LSTM, about 40 GB a worker)" \
    expect_exit 2 "memory: .*GiB" build/clipd --check "$TINY" --set model.hidden=13000
check "--check --workers W: the data checked for W workers' streams" \
    expect_exit 2 "data.seq_len 8 is longer than a stream .* 4096 workers x 4 streams" build/clipd --check "$TINY" \
    --set data.source=text --set data.path="$HT/private.txt" --set model.vocab=256 --workers 4096
check_writes_nothing() {
    build/clipd --check "$TINY" --set run.dir="$HT/chk/run" --set data.source=text --set data.tokenizer=words \
        --set data.path="$HT/private.txt" --set model.vocab=16 --set data.valid_batches=0 \
        --set train.steps_per_epoch=3 >/dev/null || return 1
    [ ! -e "$HT/chk" ] || { echo "--check created files:"; find "$HT/chk"; return 1; }
}
check "--check on a words corpus writes nothing (no run dir, vocab or token files)" check_writes_nothing
too_big_launch() {
    expect_exit 2 "memory: " $LAUNCH -n 3 "$TINY" --set run.dir="$HT/big" --set metrics.listen=off \
        --set model.hidden=13000 || return 1
    [ ! -e "$HT/big" ] || { echo "the refused start wrote:"; find "$HT/big"; return 1; }
}
check "a model too big for this machine is refused at start, before anything is written" too_big_launch

# Crafted checkpoints (edited, both checksums recomputed by
# tests/tools/ckcraft.py) and checkpoints of another config: the start
# refuses them with exit 2 naming the key or tensor and its bound, before
# anything in the run changes (no checkpoint set aside, no log cut), and
# `--resume latest` still finds the newest checkpoint afterwards.
CRAFT="/usr/bin/python3 tests/tools/ckcraft.py"
CKB="$HT/ckbase"
$LAUNCH -n 1 "$TINY" --set run.dir="$CKB" --set metrics.listen=off --set checkpoint.every_steps=5 \
    --set checkpoint.keep=10 >"$CKB.out" 2>&1 || { echo "base run failed"; cat "$CKB.out"; }
fingerprint() { (cd "$1" && find . -printf '%p %s\n' | sort && find . -type f -exec md5sum {} + | sort); }
# refused NAME PATTERN CKPT_EDITS... [-- --set ...]: step 10 crafted, resumed from
refused() {
    local name="$1" pat="$2" d="$HT/cr_$1" sets=() edits=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do edits+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift && sets=("$@")
    rm -rf "$d" && cp -a "$CKB" "$d" || return 1
    local ck="$d/checkpoints/step-00000010.safetensors"
    if [ ${#edits[@]} -gt 0 ]; then $CRAFT "$ck" "$ck" "${edits[@]}" || return 1; fi
    fingerprint "$d" >"$d.before"
    expect_exit 2 "$pat" timeout 120 deploy/clipd-launch -n 1 "$TINY" --set run.dir="$d" \
        --set metrics.listen=off --set checkpoint.every_steps=5 --set checkpoint.keep=10 \
        ${sets[@]+"${sets[@]}"} --resume "$ck" || return 1
    fingerprint "$d" | diff "$d.before" - || { echo "the run dir changed"; return 1; }
    # the newest checkpoint is still what latest takes
    build/clipd --check "$TINY" --set run.dir="$d" --resume latest >"$d.latest" 2>&1
    grep -q "resuming from .*step-00000030" "$d.latest" || { echo "--resume latest does not find step 30 any more"; return 1; }
}
# The tiny config: markov V=16, order 2 (256 contexts), LSTM 2x16, Adam, 1 worker x 4 streams.
check "crafted: last token = vocab"           refused last16 "data.streams.*stream 0: last token 16 out of range, must be < model.vocab 16" "data.streams[5]=16"
check "crafted: last token 1e9"               refused last1e9 "data.streams.*last token 1000000000" "data.streams[11]=1000000000"
check "crafted: Markov context 2^32-1"        refused ctxmax "data.streams.*Markov context 4294967295 out of range, must be < 256" "data.streams[4]=4294967295"
check "crafted: Markov context 300"           refused ctx300 "data.streams.*stream 1: Markov context 300" "data.streams[10]=300"
check "crafted: RNG state all zero"           refused rng0 "data.streams.*RNG state" "data.streams[0]=0" "data.streams[1]=0" "data.streams[2]=0" "data.streams[3]=0"
check "crafted: lr_scale 1e30"                refused lr1e30 "__metadata__.lr_scale 1e+30 out of range (0, 1\]" "meta:lr_scale=0x1.93e5939a08ceap+99"
check "crafted: negative Adam second moment"  refused vneg "opt.v.head.weight': element 3 is -1, must be finite and >= 0" "opt.v.head.weight[3]=-1"
check "crafted: NaN parameter"                refused pnan "param.layers.0.wh': element 7 is nan, must be finite" "param.layers.0.wh[7]=nan"
check "crafted: infinite cell state"          refused cinf "state.c.1': element 2 is inf, must be finite" "state.c.1[2]=inf"
check "crafted: hidden state 2"               refused h2 "state.h.0': element 0 is 2, must be in \[-1, 1\]" "state.h.0[0]=2"
check "crafted: epoch_step 2^32+1"            refused epbig "epoch_step 4294967297" "meta:epoch_step=4294967297"
check "crafted: epoch 2^31"                   refused ep31 "__metadata__.epoch 2147483648" "meta:epoch=2147483648"
check "crafted: sched plateau scale 5"        refused sched "__metadata__.sched: plateau scale" "meta:sched=inf,5,0,0"
check "another optimizer (adam -> sgd)"       refused sgd "tensor 'opt.m.head.weight' that this config does not use" -- --set train.optimizer=sgd
check "another optimizer (adam -> sgd momentum)" refused mom "tensor 'opt.v.head.weight' that this config does not use" -- --set train.optimizer=sgd --set train.momentum=0.9
check "another divergence.window"             refused win "detect.state': .*divergence.window 50" -- --set divergence.window=50
check "another data.seq_len inside an epoch"  refused seqlen "__metadata__.seq_len 8, the config's data.seq_len is 4" -- --set data.seq_len=4
check "another model.hidden"                  refused hid "tensor 'param.head.weight': F32 \[16, 16\], this config needs F32 \[24, 16\]" -- --set model.hidden=24
check "another global batch"                  refused gb "written by 1 workers x data.batch_per_worker 4 (.*global batch of 4 streams); this job has 1 x 5" -- --set data.batch_per_worker=5

check "a symlink planted as steps.jsonl before a resume: exit 2, nothing set aside" planted_on_resume steps.jsonl link
check "a FIFO planted as events.jsonl before a resume: exit 2, not a hang" planted_on_resume events.jsonl fifo

seq_len_at_epoch_end() {
    local d="$HT/seq_end"
    rm -rf "$d" && cp -a "$CKB" "$d" || return 1
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" --set metrics.listen=off --set data.seq_len=4 \
        --resume "$d/checkpoints/step-00000015.safetensors" >"$d.out" 2>&1 || { tail -5 "$d.out"; return 1; }
    jq -s -e 'length == 30 and .[29].tokens == 16' "$d/steps.jsonl" >/dev/null
}
check "another data.seq_len at an epoch's end resumes (the next epoch restarts the streams)" seq_len_at_epoch_end

# The coordinator's memory under slow HTTP clients is bounded and returned:
# each connection may hold at most the 16 kB libmicrohttpd gives it (its
# memory pool is mapped per connection and unmapped when it closes; up to
# 4096 connections: at most about 70 MB), and rounds of 300 slow clients do
# not make it grow round over round. Measured from /proc (VmRSS), with
# tests/tools/slowclients.py sending 30 kB of headers 1 kB at a time.
slow_clients_bounded() {
    local d="$HT/slow" port pid _ rounds
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" --set metrics.listen=127.0.0.1:0 --set train.epochs=1000 \
        --set train.steps_per_epoch=2000 --set checkpoint.every_steps=0 >"$d.out" 2>"$d.err" &
    bg=$!
    for _ in $(seq 300); do
        port=$(grep -o 'metrics: http://[0-9.]*:[0-9]*' "$d.err" | grep -o '[0-9]*$')
        [ -n "$port" ] && break
        sleep 0.1
    done
    pid=$(job_pids "$bg" clipd)
    [ -n "$port" ] && [ -n "$pid" ] || { echo "no job serving metrics"; sig_job TERM mpirun; wait "$bg"; return 1; }
    rounds=$(python3 tests/tools/slowclients.py "$port" "$pid" 6 300)
    sig_job USR1 mpirun; wait "$bg"
    echo "$rounds"
    # peak - before <= 300 x 24 kB; after - before <= 512 kB each round;
    # the last round ends within 1 MB of where the second ended
    jq -s -e '(all(.[]; .peak - .before <= 7200 and .after - .before <= 512 and .fds == .fds0))
              and (.[5].after - .[1].after <= 1024)' <<<"$rounds" >/dev/null
}
check "300 slow metrics clients: at most 16 kB each, returned on close, no growth over 6 rounds" slow_clients_bounded
