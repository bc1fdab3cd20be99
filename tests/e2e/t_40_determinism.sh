# Determinism: the same config and seed twice give identical steps.jsonl in
# every field but the timing ones, identical epochs (but timing) and
# byte-identical weights; another seed gives other numbers.
strip_timing() { jq -c 'del(.step_ms, .tokens_per_s, .seconds, .time)' "$1"; }
same_twice() {
    run det_a 2 || return 1
    run det_b 2 || return 1
    cmp <(strip_timing "$TMP/det_a/steps.jsonl") <(strip_timing "$TMP/det_b/steps.jsonl") || return 1
    cmp <(strip_timing "$TMP/det_a/epochs.jsonl") <(strip_timing "$TMP/det_b/epochs.jsonl") || return 1
    # tensors bit for bit (the header's config hash covers run.dir, which differs)
    build/tests/stcmp "$TMP/det_a/final.safetensors" "$TMP/det_b/final.safetensors" 0
}
check "same config and seed twice: identical steps, epochs and weights" same_twice
other_seed() {
    [ -s "$TMP/det_a/steps.jsonl" ] || { echo "no baseline"; return 1; }
    run det_c 2 --set run.seed=4 || return 1
    ! cmp -s <(strip_timing "$TMP/det_a/steps.jsonl") <(strip_timing "$TMP/det_c/steps.jsonl")
}
check "another seed gives another run" other_seed
