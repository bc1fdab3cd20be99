# A NaN in one worker's gradient (fault injected at step 7) is caught by
# every rank: the update is skipped, the event is logged, the weights stay
# finite and training goes on.
nonfinite() {
    run nan 2 --set debug.nan_step=7 || return 1
    local d="$TMP/nan"
    jq -s -e 'length == 1 and .[0].step == 7 and .[0].kind == "nonfinite_grad" and .[0].action == "skip"' "$d/events.jsonl" || return 1
    jq -s -e '.[6].skipped == true and .[6].grad_norm == null and ([.[] | select(.skipped)] | length) == 1' "$d/steps.jsonl" || return 1
    jq -s -e '.[0].skipped_steps == 1' "$d/epochs.jsonl" || return 1
    grep -q "non-finite steps 1" "$d.out" || return 1
    # weights finite (stcmp fails on NaN) and the run went on after the skip
    build/tests/stcmp "$d/final.safetensors" "$d/final.safetensors" 0 || return 1
    jq -s -e 'length == 30 and .[29].skipped == false' "$d/steps.jsonl"
}
check "non-finite gradient: step skipped on all ranks, event logged, weights finite" nonfinite
# The weight comparison itself catches a NaN anywhere in a file.
stcmp_catches_nan() {
    local f="$TMP/nan/final.safetensors" g="$TMP/nan_bad.safetensors" size hdr out
    [ -s "$f" ] || return 1
    size=$(stat -c %s "$f")
    hdr=$(od -An -tu8 -N8 "$f" | tr -d ' ') # the header's length: floats start at 8 + hdr
    for pos in $((size - 4)) $((size - 400)); do
        cp "$f" "$g"
        printf '\x00\x00\xc0\x7f' | dd of="$g" bs=1 seek="$pos" conv=notrunc status=none
        out=$(build/tests/stcmp "$f" "$g" 1)
        [ $? = 1 ] || return 1
        echo "$out"
        [ "$out" = "stcmp: 1 non-finite values, first at $(((pos - 8 - hdr) / 4))" ] || return 1
    done
}
check "stcmp fails on a NaN in the weights, wherever it is" stcmp_catches_nan
