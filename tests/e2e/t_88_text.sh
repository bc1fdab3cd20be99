# Text corpora end to end, on small generated files (not a downloaded corpus).
TXT="$TMP/corpus"
mkdir -p "$TXT/dir"
awk 'BEGIN { srand(7); split("the a cat dog sat on mat and ran far away , . big small red", w, " ");
             for (i = 0; i < 30000; i++) printf "%s%s", w[1 + int(rand() * 16)], (i % 11 == 10 ? "\n" : " ") }' \
    >"$TXT/dir/train.txt"
awk 'BEGIN { srand(8); split("the a cat dog sat on mat and ran far away , . big small red", w, " ");
             for (i = 0; i < 6000; i++) printf "%s%s", w[1 + int(rand() * 16)], (i % 11 == 10 ? "\n" : " ") }' \
    >"$TXT/dir/valid.txt"
cat "$TXT/dir/train.txt" "$TXT/dir/valid.txt" >"$TXT/one.txt"
TX=(--set data.source=text --set data.seq_len=10 --set train.steps_per_epoch=40 --set data.valid_batches=4)
WORDS=(--set data.path="$TXT/dir" --set data.tokenizer=words --set model.vocab=32)

text_words() {
    run tw1 1 "${TX[@]}" "${WORDS[@]}" --set data.batch_per_worker=6 || return 1
    run tw2 2 "${TX[@]}" "${WORDS[@]}" --set data.batch_per_worker=3 || return 1
    [ "$(head -2 "$TMP/tw2/vocab.txt" | tr '\n' ' ')" = "<unk> <eos> " ] || return 1
    [ "$(wc -l <"$TMP/tw2/vocab.txt")" = 18 ] || return 1 # 16 words + <unk> + <eos>
    jq -s -e '.[0].loss > .[-1].loss' "$TMP/tw2/steps.jsonl" >/dev/null || return 1
    jq -s -e 'all(.[]; .val_loss != null and .val_ppl > 1)' "$TMP/tw2/epochs.jsonl" >/dev/null || return 1
    build/tests/stcmp "$TMP/tw1/final.safetensors" "$TMP/tw2/final.safetensors" 1e-5
}
check "words from train.txt/valid.txt: vocab with <unk>/<eos>, learns, 2 workers == 1 worker" text_words

text_bytes() {
    run tb 2 "${TX[@]}" --set data.path="$TXT/one.txt" --set data.tokenizer=bytes --set model.vocab=256 \
        --set data.valid_fraction=0.2 || return 1
    jq -s -e 'length == 80 and .[0].tokens == 80' "$TMP/tb/steps.jsonl" >/dev/null
}
check "bytes from one file split by valid_fraction" text_bytes

text_resume() {
    run tr_ref 2 "${TX[@]}" "${WORDS[@]}" || return 1
    run tr_b 2 "${TX[@]}" "${WORDS[@]}" --set train.epochs=1 || return 1
    run tr_b 2 "${TX[@]}" "${WORDS[@]}" --resume latest || return 1
    cmp <(jq -c 'del(.step_ms, .time)' "$TMP/tr_ref/steps.jsonl") <(jq -c 'del(.step_ms, .time)' "$TMP/tr_b/steps.jsonl") &&
        build/tests/stcmp "$TMP/tr_ref/final.safetensors" "$TMP/tr_b/final.safetensors" 0
}
check "text: resume continues bit for bit (vocabulary and cursors kept)" text_resume

printf 'good line\nbad \x00 byte\n' >"$TXT/nul.txt"
printf 'caf\xc3' >"$TXT/cut.txt"
mkdir -p "$TXT/novalid" && cp "$TXT/dir/train.txt" "$TXT/novalid/" && : >"$TXT/novalid/valid.txt"
text_errors() {
    expect_exit 2 "nul.txt:2:5" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/te" "${TX[@]}" --set data.path="$TXT/nul.txt" \
        --set model.vocab=256 || return 1
    expect_exit 2 "cut.txt:1:4" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/te" "${TX[@]}" --set data.path="$TXT/cut.txt" \
        --set model.vocab=256 || return 1
    expect_exit 2 "valid.txt" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/te" "${TX[@]}" "${WORDS[@]}" \
        --set data.path="$TXT/novalid" || return 1
    expect_exit 2 "model.vocab" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/te2" "${TX[@]}" "${WORDS[@]}" \
        --set model.vocab=8 || return 1
    expect_exit 2 "steps_per_epoch" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/te3" "${TX[@]}" "${WORDS[@]}" \
        --set train.steps_per_epoch=100000 || return 1
    expect_exit 2 "data.path" build/clipd --check "$TINY" --set data.source=text
}
check "bad text input: NUL byte, cut UTF-8, empty split, vocabulary too big, too many steps, no path: exit 2" text_errors
