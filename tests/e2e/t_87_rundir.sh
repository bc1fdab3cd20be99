# Run directories: a fresh start (no --resume) into a run.dir that holds a
# run (a log with a line, a checkpoint, final weights) is refused with exit 2
# and one line naming --resume latest and run.overwrite, before anything in
# it changes; `clipd --check` says the same. With run.overwrite: true the old
# logs, checkpoints (also those set aside) and weights are replaced, other
# files stay, and the run equals one in an empty directory.
RD=(--set metrics.listen=off --set checkpoint.every_steps=4)

rd_sums() { # DIR: checksums of everything in it
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 md5sum)
}

check "a run to start into" run_done rd 2 "${RD[@]}"
check "reference run in an empty directory" run_done rd_ref 2 "${RD[@]}" --set checkpoint.every_steps=10

rd_refused() {
    local before
    before=$(rd_sums "$TMP/rd")
    expect_exit 2 "run.dir: $TMP/rd holds a run (.*): continue it with --resume latest, or replace it with run.overwrite: true" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/rd" "${RD[@]}" || return 1
    [ "$(grep -c '^clipd:' "$TMP/be.err")" = 1 ] || { echo "not one clipd line"; return 1; }
    [ "$before" = "$(rd_sums "$TMP/rd")" ] || { echo "the refused start changed the run dir"; return 1; }
    expect_exit 2 "holds a run .*--resume latest.*run.overwrite: true" build/clipd --check "$TINY" --set run.dir="$TMP/rd" || return 1
    # --check with --resume, or with overwrite, passes
    build/clipd --check "$TINY" --set run.dir="$TMP/rd" --resume latest >/dev/null &&
        build/clipd --check "$TINY" --set run.dir="$TMP/rd" --set run.overwrite=true >/dev/null
}
check "a fresh start into a run: exit 2, one line naming --resume latest and run.overwrite; nothing changed; --check says so" rd_refused

rd_ckpt_only() { # the logs gone, a checkpoint left (also one set aside): still a run
    mkdir -p "$TMP/rd_ck/checkpoints"
    cp "$TMP/rd/checkpoints/step-00000030.safetensors" "$TMP/rd_ck/checkpoints/step-00000008.safetensors.abandoned"
    expect_exit 2 "holds a run (.*step-00000008.safetensors.abandoned)" build/clipd --check "$TINY" --set run.dir="$TMP/rd_ck"
}
check "a run dir holding only a checkpoint set aside is a run too" rd_ckpt_only

rd_overwrite() {
    local ck
    echo "mine" >"$TMP/rd/notes.txt"
    mv "$TMP/rd/checkpoints/step-00000028.safetensors" "$TMP/rd/checkpoints/step-00000028.safetensors.abandoned"
    run rd 2 "${RD[@]}" --set checkpoint.every_steps=10 --set run.overwrite=true || { tail -5 "$TMP/rd.err"; return 1; }
    grep "run.overwrite" "$TMP/rd.err"
    ck=$(cd "$TMP/rd/checkpoints" && ls)
    echo "checkpoints now: $(echo $ck)"
    [ "$(echo $ck)" = "step-00000010.safetensors step-00000020.safetensors step-00000030.safetensors" ] ||
        { echo "old checkpoints left"; return 1; }
    [ "$(cat "$TMP/rd/notes.txt")" = mine ] || { echo "a file that is not clipd's was touched"; return 1; }
    same_run "$TMP/rd_ref" "$TMP/rd"
}
check "run.overwrite: true: old checkpoints (also set aside) go, other files stay; == a run in an empty dir" rd_overwrite
