# model.softmax: adaptive (Grave et al. 2017) on a word corpus with a
# skewed (Zipf-like) word distribution, cutoffs 20,80: 2 workers x B=3 end
# where 1 worker x B=6 does (to float rounding) with clipping active; the
# tail tensors are in the weights and their norms in the global norm; a
# resume continues bit for bit; sparse embedding sync and sync.reproducible
# keep their bits; the test split at the end and --eval equal an
# independent NumPy forward pass (which also checks that the model's
# probabilities over the whole vocabulary sum to 1); bad configs exit 2.
ADT="$TMP/adcorpus"
mkdir -p "$ADT"
awk 'BEGIN { srand(35); for (i = 0; i < 16000; i++) { r = rand(); printf "w%d%s", int(180 * r * r * r), (i % 11 == 10 ? "\n" : " ") } }' \
    >"$ADT/train.txt"
awk 'BEGIN { srand(36); for (i = 0; i < 2400; i++) { r = rand(); printf "w%d%s", int(180 * r * r * r), (i % 11 == 10 ? "\n" : " ") } }' \
    >"$ADT/valid.txt"
awk 'BEGIN { srand(37); for (i = 0; i < 2400; i++) { r = rand(); printf "w%d%s", int(180 * r * r * r), (i % 11 == 10 ? "\n" : " ") } }' \
    >"$ADT/test.txt"
ADA=(--set data.source=text --set data.path="$ADT" --set data.tokenizer=words --set model.vocab=200
     --set model.embed=16 --set model.hidden=16 --set data.seq_len=10 --set data.valid_batches=2
     --set train.steps_per_epoch=12 --set model.softmax=adaptive --set model.softmax_cutoffs=20,80
     --set model.softmax_div=2 --set metrics.listen=off --set clip.max_norm=0.5)

adaptive_equiv() {
    run ad1 1 "${ADA[@]}" --set data.batch_per_worker=6 || return 1
    run ad2 2 "${ADA[@]}" --set data.batch_per_worker=3 || return 1
    jq -s -e 'map(select(.clipped)) | length > 0' "$TMP/ad1/steps.jsonl" >/dev/null || { echo "clipping never active"; return 1; }
    near_run "$TMP/ad1" "$TMP/ad2"
}
check "adaptive softmax: 2 workers x B=3 == 1 worker x B=6 (losses, norms, weights to rounding)" adaptive_equiv

# The tails are tensors of the model: in the weights with their shapes, in
# tensors.jsonl, and in the global norm (sqrt of the sum of the squared
# per-tensor norms is the step's grad_norm).
adaptive_tensors() {
    [ -s "$TMP/ad2/final.safetensors" ] || return 1
    /usr/bin/python3 - "$TMP/ad2/final.safetensors" <<'PY' || return 1
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
shape = {k[6:]: v["shape"] for k, v in h.items() if k.startswith("param.")}
want = {"head.weight": [16, 22], "head.bias": [22], "tail.0.proj": [16, 8], "tail.0.weight": [8, 60],
        "tail.0.bias": [60], "tail.1.proj": [16, 4], "tail.1.weight": [4, 120], "tail.1.bias": [120]}
for k, s in want.items():
    assert shape.get(k) == s, (k, shape.get(k), s)
print("tensors:", sorted(shape))
PY
    jq -n -e --slurpfile t "$TMP/ad2/tensors.jsonl" --slurpfile s "$TMP/ad2/steps.jsonl" '
        [$t[] | . as $l | ($s[] | select(.seq == $l.seq) | .grad_norm) as $g
         | ([$l.norms[] | . * .] | add | sqrt) as $sum
         | (($l.norms | has("tail.1.weight")) and ((($sum - $g) / $g) | fabs) < 1e-5)] | length > 0 and all' >/dev/null ||
        { echo "tail norms missing or not in the global norm"; return 1; }
}
check "adaptive softmax: tail tensors in the weights (shapes), tensors.jsonl and the global norm" adaptive_tensors

check "adaptive softmax: stopped after epoch 1 and resumed == uninterrupted, bit for bit" \
    resumed_same ad2 ad2r 2 "${ADA[@]}" --set data.batch_per_worker=3

adaptive_sparse() {
    [ -s "$TMP/ad2/final.safetensors" ] || return 1
    # against a dense run that is not reproducible either (auto is true for
    # a dense one, which takes its norms another way)
    run ad2d 2 "${ADA[@]}" --set data.batch_per_worker=3 --set sync.reproducible=false || return 1
    run ad2s 2 "${ADA[@]}" --set data.batch_per_worker=3 --set sync.sparse_embedding=true || return 1
    grep -q 'sparse embedding' "$TMP/ad2s.err" || { echo "no rows synced"; return 1; }
    same_run "$TMP/ad2d" "$TMP/ad2s"
}
check "adaptive softmax with sync.sparse_embedding: the dense sync's bits" adaptive_sparse

adaptive_repro() {
    run ad_rp1 1 "${ADA[@]}" --set data.batch_per_worker=6 --set sync.reproducible=true --set data.micro_batch=3 || return 1
    run ad_rp2 2 "${ADA[@]}" --set data.batch_per_worker=3 --set sync.reproducible=true --set data.micro_batch=3 || return 1
    same_run "$TMP/ad_rp1" "$TMP/ad_rp2"
}
check "adaptive softmax with sync.reproducible: 1 worker == 2 workers, bit for bit" adaptive_repro

# Evaluation reports the adaptive model's exact log-likelihood: the test
# split at the end of the run and --eval against NumPy (float64).
adaptive_eval() {
    local d="$TMP/ad2" ref got
    [ -s "$d/eval.jsonl" ] || return 1
    grep -q "sync.reproducible auto: true" "$TMP/ad2.err" || { echo "ad2 did not run reproducible"; return 1; }
    end_eval_matches_numpy "$d" "$d/final.safetensors" || return 1
    end_eval_matches_numpy "$TMP/ad2d" "$TMP/ad2d/final.safetensors" || return 1 # not reproducible
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${ADA[@]}" --set data.batch_per_worker=6 \
        --eval "$d/final.safetensors" --split valid >"$TMP/ad_eval.out" 2>"$TMP/ad_eval.err" || return 1
    got=$(grep '^{"at":"eval"' "$TMP/ad_eval.out") || { echo "--eval printed no JSON"; return 1; }
    ref=$(/usr/bin/python3 tests/tools/lm_eval.py "$d/final.safetensors" "$d/tokens-valid.u32" 6 10) || return 1
    echo "--eval final, valid split: clipd $got, NumPy $ref"
    near "$(jq .loss <<<"$got")" "$(jq .loss <<<"$ref")" && [ "$(jq .tokens <<<"$got")" = "$(jq .tokens <<<"$ref")" ] || return 1
    # the full-softmax config cannot read the adaptive weights: exit 2 naming the tensor
    expect_exit 2 "param.head.weight" $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${ADA[@]}" --set data.batch_per_worker=6 \
        --set model.softmax=full --eval "$d/final.safetensors" >/dev/null || return 1
    echo "end of run: $(jq -c 'select(.at == "end") | {loss, tokens}' "$d/eval.jsonl") == NumPy; --eval valid == NumPy"
}
check "adaptive softmax: test split at the end and --eval == NumPy (normalised over the vocabulary)" adaptive_eval

# Bad configs: one line naming the key, exit 2, under mpirun and --check.
check "model.softmax adaptive with data.source markov: exit 2 naming the key" \
    expect_exit 2 "model.softmax: adaptive needs data.source text with data.tokenizer words" \
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/ad_bad1" --set model.softmax=adaptive
check "model.softmax adaptive with bytes: exit 2 naming the key (--check)" \
    expect_exit 2 "got data.source text with bytes" \
    build/clipd --check "$TINY" "${ADA[@]}" --set run.dir="$TMP/ad_bad2" --set data.tokenizer=bytes --set model.vocab=256
check "model.softmax_cutoffs beyond model.vocab: exit 2 naming the key" \
    expect_exit 2 "model.softmax_cutoffs: expected each cutoff below model.vocab (e.g. 2000,10000), got '20,300' (model.vocab 200)" \
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/ad_bad3" "${ADA[@]}" --set model.softmax_cutoffs=20,300
check "model.softmax_cutoffs not ascending: exit 2 naming the key" \
    expect_exit 2 "model.softmax_cutoffs: expected cutoffs strictly ascending" \
    build/clipd --check "$TINY" "${ADA[@]}" --set run.dir="$TMP/ad_bad4" --set model.softmax_cutoffs=80,20
check "model.softmax_cutoffs malformed: exit 2 naming the key" \
    expect_exit 2 "model.softmax_cutoffs: expected word ids (digits) separated by commas" \
    build/clipd --check "$TINY" --set run.dir="$TMP/ad_bad5" --set model.softmax_cutoffs=many
check "model.softmax adaptive with model.tie_embeddings: exit 2 naming both keys" \
    expect_exit 2 "model.softmax: adaptive with model.tie_embeddings" \
    build/clipd --check "$TINY" "${ADA[@]}" --set run.dir="$TMP/ad_bad6" --set model.tie_embeddings=true
