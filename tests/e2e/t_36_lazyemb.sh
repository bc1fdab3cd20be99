# train.embedding_update: lazy (with sync.sparse_embedding): only the
# embedding rows synced in a step get their Adam/momentum moments and
# weights updated (TensorFlow's LazyAdam). 2 workers x B=4 end where 1 worker
# x B=8 does (to float rounding) with clipping active; the global norm and
# the clip follow the TF formula as in a dense run; between two consecutive
# checkpoints only the rows of one step's tokens moved (parameters and both
# moments, the rest bit for bit), where dense Adam moves every row it ever
# touched; plain SGD keeps the dense bits; a resume continues bit for bit;
# bad combinations exit 2 naming the key.
LZ=(--set model.vocab=300 --set train.accumulate=2 --set sync.sparse_embedding=true
    --set train.embedding_update=lazy --set clip.max_norm=0.09) # about half the steps clipped

lazy_equiv() {
    local opt="$1"; shift
    run lz1_$opt 1 "${LZ[@]}" --set data.batch_per_worker=8 "$@" || return 1
    run lz2_$opt 2 "${LZ[@]}" --set data.batch_per_worker=4 "$@" || return 1
    jq -s -e 'map(select(.clipped)) | length > 0' "$TMP/lz1_$opt/steps.jsonl" >/dev/null || { echo "clipping never active"; return 1; }
    near_run "$TMP/lz1_$opt" "$TMP/lz2_$opt"
}
check "lazy embedding update, adam: 2 workers x B=4 == 1 worker x B=8 (losses, norms, weights to rounding)" \
    lazy_equiv adam
check "lazy embedding update, momentum 0.9: 2 workers x B=4 == 1 worker x B=8" \
    lazy_equiv mom --set train.optimizer=sgd --set train.momentum=0.9 --set train.lr=0.1

# The norm is the sparse sync's (the sum of the per-tensor squares; the
# embedding's from its rows), the clip the TF formula on it; the first two
# steps equal dense Adam's (every moment starts at zero, so a zero gradient
# moves nothing in step 1); then the numbers part, and the weights differ.
lazy_norm() {
    [ -s "$TMP/lz2_adam/final.safetensors" ] || return 1
    run lz_dense 2 "${LZ[@]}" --set data.batch_per_worker=4 --set train.embedding_update=dense || return 1
    local f='del(.step_ms, .tokens_per_s, .compute_ms, .sync_ms, .time)'
    cmp <(jq -c "$f" "$TMP/lz_dense/steps.jsonl" | head -2) <(jq -c "$f" "$TMP/lz2_adam/steps.jsonl" | head -2) ||
        { echo "steps 1-2 differ from dense"; return 1; }
    jq -s -e 'any(.[]; .clipped) and any(.[]; .clipped | not) and all(.[]; (.clipped == (.grad_norm > 0.09)) and
        ((.clip_coef - (0.09 / ([.grad_norm, 0.09] | max))) | fabs) < 1e-12)' "$TMP/lz2_adam/steps.jsonl" >/dev/null ||
        { echo "clip_coef is not 0.09 / max(grad_norm, 0.09), or clipping always or never active"; return 1; }
    jq -n -e --slurpfile t "$TMP/lz2_adam/tensors.jsonl" --slurpfile s "$TMP/lz2_adam/steps.jsonl" '
        [$t[] | . as $l | ($s[] | select(.seq == $l.seq) | .grad_norm) as $g
         | ([$l.norms[] | . * .] | add | sqrt) as $sum
         | (($l.norms."embed.weight" > 0) and ((($sum - $g) / $g) | fabs) < 1e-5)] | length > 0 and all' >/dev/null ||
        { echo "grad_norm is not the norm of the tensors' norms (embedding included)"; return 1; }
    weights_differ "$TMP/lz_dense/final.safetensors" "$TMP/lz2_adam/final.safetensors" 1e-6
}
check "lazy embedding update: norm and clip as dense (TF formula), steps 1-2 equal dense Adam's, then other weights" lazy_norm

# Consecutive checkpoints (steps 19 and 20): the embedding rows that moved.
rows_moved() { # DIR: "moved_p moved_m moved_v same_sets tokens_per_step"
    /usr/bin/python3 - "$1/checkpoints/step-00000019.safetensors" "$1/checkpoints/step-00000020.safetensors" <<'PY'
import json, struct, sys
import numpy as np
def load(path):
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    h = json.loads(buf[8:8 + n])
    return {k: np.frombuffer(buf[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]], "<f4")
            .reshape(t["shape"]) for k, t in h.items() if k != "__metadata__" and t["dtype"] == "F32"}
a, b = load(sys.argv[1]), load(sys.argv[2])
moved = [set(np.nonzero((a[k + "embed.weight"] != b[k + "embed.weight"]).any(axis=1))[0])
         for k in ("param.", "opt.m.", "opt.v.")]
print(len(moved[0]), len(moved[1]), len(moved[2]), int(moved[0] == moved[1] == moved[2]))
PY
}
lazy_rows() {
    local ck=(--set checkpoint.every_steps=1 --set checkpoint.keep=100 --set train.epochs=2) lz dn
    run lz_rows 2 "${LZ[@]}" "${ck[@]}" || return 1
    run lz_rows_dense 2 "${LZ[@]}" "${ck[@]}" --set train.embedding_update=dense || return 1
    lz=$(rows_moved "$TMP/lz_rows") && dn=$(rows_moved "$TMP/lz_rows_dense") || return 1
    echo "embedding rows moved from step 19 to 20 (param, m, v, same rows): lazy $lz; dense $dn; 128 tokens a step"
    read -r p m v same <<<"$lz"
    [ "$p" -gt 0 ] && [ "$p" -le 128 ] && [ "$same" = 1 ] || { echo "lazy: not just the rows of one step's tokens"; return 1; }
    read -r p m v same <<<"$dn"
    [ "$m" -gt 128 ] || { echo "dense Adam moved no more rows than one step's tokens"; return 1; }
}
check "lazy embedding update: one step moves only its tokens' rows (weights, m, v; the rest bit for bit); dense moves all" lazy_rows

lazy_sgd() {
    local s=(--set train.optimizer=sgd --set train.lr=0.5)
    run lz_sgd 2 "${LZ[@]}" "${s[@]}" || return 1
    run lz_sgd_dense 2 "${LZ[@]}" "${s[@]}" --set train.embedding_update=dense || return 1
    same_run "$TMP/lz_sgd_dense" "$TMP/lz_sgd"
}
check "lazy embedding update, plain SGD: the dense update's bits (a zero gradient moves nothing)" lazy_sgd

check "lazy embedding update: resumed after epoch 1 continues bit for bit (adam, 2 workers)" \
    resumed_same lz2_adam lz_resume 2 "${LZ[@]}" --set data.batch_per_worker=4
check "lazy embedding update: resumed after epoch 1 continues bit for bit (momentum, 1 worker)" \
    resumed_same lz1_mom lz_resume_mom 1 "${LZ[@]}" --set data.batch_per_worker=8 \
    --set train.optimizer=sgd --set train.momentum=0.9 --set train.lr=0.1

# Bad combinations: exit 2, one line naming the key.
lazy_bad() {
    local rc=0
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/lz_bad" --set train.embedding_update=lazy "$@" \
        >"$TMP/lz_bad.out" 2>"$TMP/lz_bad.err" || rc=$?
    [ "$rc" = 2 ] && [ "$(grep -c '^clipd: .*train.embedding_update' "$TMP/lz_bad.err")" = 1 ] &&
        [ ! -e "$TMP/lz_bad/steps.jsonl" ] || { echo "rc $rc"; cat "$TMP/lz_bad.err"; return 1; }
    grep '^clipd: .*train.embedding_update' "$TMP/lz_bad.err"
}
check "train.embedding_update: lazy without sync.sparse_embedding: exit 2 naming the key" lazy_bad
check "train.embedding_update: lazy with sync.mode sharded: exit 2 naming the key" \
    lazy_bad --set sync.mode=sharded --set sync.sparse_embedding=true
check "train.embedding_update: lazy with adamw weight decay: exit 2 naming the key" \
    lazy_bad --set sync.sparse_embedding=true --set train.optimizer=adamw --set train.weight_decay=0.01
check "train.embedding_update: lazy with momentum and L2 weight decay: exit 2 naming the key" \
    lazy_bad --set sync.sparse_embedding=true --set train.optimizer=sgd --set train.momentum=0.9 \
    --set train.weight_decay=0.01
check "train.embedding_update: an unknown value: exit 2 naming the key" \
    lazy_bad --set train.embedding_update=sparse
