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
