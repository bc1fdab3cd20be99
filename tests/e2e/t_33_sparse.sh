# sync.sparse_embedding: the embedding gradient synced as the rows of the
# batch's tokens (or-ed flags, all-gathered rows added in rank order) must
# give the same bits as the dense sync: gradient, norm, every log line and
# the final weights, for SGD, momentum and Adam (whose dense update of the
# untouched rows stays as it is), 1 to 3 workers, with accumulation.
# Vocabulary 300 > the 64 tokens of a step, so most rows are not sent.
# sync.reproducible false: the default (auto) is false for the sparse runs
# and would be true for the dense ones, whose norms it sums another way.
SP=(--set model.vocab=300 --set train.accumulate=2 --set checkpoint.every_steps=0 --set sync.reproducible=false)
sparse_same() {
    local w="$1" opt="$2" extra="${3:-}" t="$1_$2${3:+_x}"
    run sp_dense_$t "$w" "${SP[@]}" --set train.optimizer="$opt" $extra || return 1
    run sp_rows_$t "$w" "${SP[@]}" --set train.optimizer="$opt" $extra --set sync.sparse_embedding=true || return 1
    local line
    line=$(grep -o 'sparse embedding: [0-9.]* of 300 rows' "$TMP/sp_rows_$t.err" | head -1)
    echo "$line"
    awk '{ exit !($3 > 0 && $3 < 300) }' <<<"$line" || { echo "no rows, or every row, sent"; return 1; }
    ! grep -q 'sparse embedding' "$TMP/sp_dense_$t.err" || { echo "dense run synced rows"; return 1; }
    same_run "$TMP/sp_dense_$t" "$TMP/sp_rows_$t"
}
for w in 1 2 3; do
    check "sparse embedding sync, $w worker(s), sgd: same bits as dense (logs, norms, weights)" sparse_same "$w" sgd
done
check "sparse embedding sync, 3 workers, momentum + weight decay: same bits as dense" \
    sparse_same 3 sgd "--set train.momentum=0.9 --set train.weight_decay=0.01"
check "sparse embedding sync, 2 workers, adam, 1 KiB buckets: same bits as dense" \
    sparse_same 2 adam "--set sync.bucket_kb=1"
# A NaN injected into an embedding row no token touched still reaches the norm.
sparse_nan() {
    run sp_nan 2 "${SP[@]}" --set sync.sparse_embedding=true --set debug.nan_step=3 \
        --set debug.nan_tensor=embed.weight --set train.epochs=1 || return 1
    jq -se 'map(select(.step == 3 and .skipped and .grad_norm == null)) | length == 1' "$TMP/sp_nan/steps.jsonl" >/dev/null
}
check "sparse embedding sync: a NaN in an untouched embedding row is still seen (step skipped)" sparse_nan
# Bad combinations: exit 2, one line naming the key.
sparse_bad() {
    local rc=0
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/sp_bad" "$@" --set sync.sparse_embedding=true \
        >"$TMP/sp_bad.out" 2>"$TMP/sp_bad.err" || rc=$?
    [ "$rc" = 2 ] && grep -q 'sync.sparse_embedding' "$TMP/sp_bad.err" || { echo "rc $rc"; cat "$TMP/sp_bad.err"; return 1; }
}
check "sync.sparse_embedding with sync.mode sharded: exit 2 naming the key" sparse_bad --set sync.mode=sharded
check "sync.sparse_embedding on the adding problem (no embedding): exit 2 naming the key" \
    sparse_bad --set data.source=adding --set model.kind=rnn
check "sync.sparse_embedding with model.tie_embeddings (a dense embedding gradient): exit 2 naming the key" \
    sparse_bad --set model.tie_embeddings=true --set model.embed=16
check "sync.sparse_embedding with sync.reproducible: exit 2 naming the key" \
    sparse_bad --set sync.reproducible=true
