# Exactness: W workers with batch B end with the same parameters as one
# worker with batch W*B (to float rounding), with clipping active.
equiv() {
    local opt="$1" w="$2" b="$3"
    local base="eq1_$opt" other="eq${w}_$opt"
    [ -s "$TMP/$base/final.safetensors" ] || run "$base" 1 --set data.batch_per_worker=$((w * b)) --set train.optimizer="$opt" --set train.momentum=0.5 || return 1
    run "$other" "$w" --set data.batch_per_worker="$b" --set train.optimizer="$opt" --set train.momentum=0.5 || return 1
    jq -s -e 'map(select(.clipped)) | length > 0' "$TMP/$base/steps.jsonl" >/dev/null || { echo "clipping never active"; return 1; }
    # same losses and norms step by step, to float rounding
    paste -d' ' <(jq .loss "$TMP/$base/steps.jsonl") <(jq .loss "$TMP/$other/steps.jsonl") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) bad = 1 } END { exit bad }' || { echo "losses differ"; return 1; }
    build/tests/stcmp "$TMP/$base/final.safetensors" "$TMP/$other/final.safetensors" 1e-5
}
for opt in sgd adam; do
    check "equivalence $opt: 2 workers x B=3 == 1 worker x B=6" equiv "$opt" 2 3
    check "equivalence $opt: 3 workers x B=2 == 1 worker x B=6" equiv "$opt" 3 2
done
# The check must be able to fail: a different global batch gives different weights.
differs() {
    [ -s "$TMP/eq1_sgd/final.safetensors" ] || { echo "no baseline"; return 1; }
    run eqdiff 2 --set data.batch_per_worker=2 --set train.optimizer=sgd --set train.momentum=0.5 || return 1
    weights_differ "$TMP/eq1_sgd/final.safetensors" "$TMP/eqdiff/final.safetensors" 1e-5
}
check "equivalence check detects a different global batch" differs
