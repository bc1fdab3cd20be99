# model.tie_embeddings: the head's weight is the embedding matrix (E = H).
# The checkpoint and final weights have no head.weight; 2 workers x B=3 end
# where 1 worker x B=6 does (to float rounding), with clipping active; a
# resume continues bit for bit; embed != hidden is refused (exit 2).
TIE=(--set model.tie_embeddings=true --set model.embed=16 --set train.optimizer=adam)
tied_equiv() {
    run tie1 1 "${TIE[@]}" --set data.batch_per_worker=6 || return 1
    run tie2 2 "${TIE[@]}" --set data.batch_per_worker=3 || return 1
    jq -s -e 'map(select(.clipped)) | length > 0' "$TMP/tie1/steps.jsonl" >/dev/null || { echo "clipping never active"; return 1; }
    /usr/bin/python3 - "$TMP/tie1/final.safetensors" <<'PY' || return 1
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = set(json.loads(f.read(n))) - {"__metadata__"}
assert "param.embed.weight" in names and "param.head.bias" in names, names
assert "param.head.weight" not in names, "tied model has a head.weight"
print("tensors:", sorted(names))
PY
    paste -d' ' <(jq .loss "$TMP/tie1/steps.jsonl") <(jq .loss "$TMP/tie2/steps.jsonl") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) bad = 1 } END { exit bad }' || { echo "losses differ"; return 1; }
    build/tests/stcmp "$TMP/tie1/final.safetensors" "$TMP/tie2/final.safetensors" 1e-5
}
check "tied embeddings: 2 workers x B=3 == 1 worker x B=6; no head.weight tensor" tied_equiv
check "tied embeddings: stopped after epoch 1 and resumed == uninterrupted, bit for bit" \
    resumed_same tie2 tie2r 2 "${TIE[@]}" --set data.batch_per_worker=3
check "model.tie_embeddings with embed != hidden: exit 2 naming the key" \
    expect_exit 2 "model.tie_embeddings" $LAUNCH -n 1 "$TINY" --set run.dir="$TMP/tie_bad" --set model.tie_embeddings=true
