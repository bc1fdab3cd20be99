# Exactness details (issue 15): the final checkpoint carries the training
# streams' hidden state (validation puts it back), and config_hash covers
# only the keys that can change a number.
RQ=(--set metrics.listen=off --set checkpoint.every_steps=0)
# final_ck DIR: the checkpoint written at the end of the run in DIR
final_ck() { ls "$1"/checkpoints/step-*.safetensors | tail -1; }
# meta FILE KEY: a header metadata value
meta() { /usr/bin/python3 -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
print(json.loads(b[8:8 + n])["__metadata__"][sys.argv[2]])' "$1" "$2"; }
# same_tensors A B PREFIX: the tensors whose names start with PREFIX are equal bit for bit
same_tensors() { /usr/bin/python3 -c '
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()
            if k.startswith(sys.argv[3])}
a, b = load(sys.argv[1]), load(sys.argv[2])
if not a or sorted(a) != sorted(b): sys.exit("tensor names differ or none: %s %s" % (sorted(a), sorted(b)))
bad = [k for k in a if a[k] != b[k]]
print("%d tensors %s*, differing: %s" % (len(a), sys.argv[3], bad or "none"))
sys.exit(1 if bad else 0)' "$1" "$2" "$3"; }

hidden_is_training() {
    run hv_on 2 "${RQ[@]}" --set data.valid_batches=4 || return 1
    run hv_off 2 "${RQ[@]}" --set data.valid_batches=0 || return 1
    cmp <(strip_t "$TMP/hv_on/steps.jsonl") <(strip_t "$TMP/hv_off/steps.jsonl") || return 1
    same_tensors "$(final_ck "$TMP/hv_on")" "$(final_ck "$TMP/hv_off")" state. || return 1
    same_tensors "$(final_ck "$TMP/hv_on")" "$(final_ck "$TMP/hv_off")" param.
}
check "final checkpoint: the carried hidden state is training's, whether validation ran or not" hidden_is_training

hash_numbers_only() {
    [ -s "$TMP/hv_on/final.safetensors" ] || { echo "no run"; return 1; }
    run hh_b 2 "${RQ[@]}" --set data.valid_batches=4 --set run.name=other --set sync.bucket_kb=1 \
        --set sync.shared_memory=off --set log.tensor_norms_every=3 --set checkpoint.keep=9 || return 1
    local a b c
    a=$(meta "$TMP/hv_on/final.safetensors" config_hash) b=$(meta "$TMP/hh_b/final.safetensors" config_hash)
    echo "config_hash $a (run A) $b (run B: other dir, name, buckets, messages, logging)"
    [ "$a" = "$b" ] && [ "$(meta "$(final_ck "$TMP/hv_on")" config_hash)" = "$a" ] || return 1
    c=$(meta "$TMP/hv_off/final.safetensors" config_hash) # data.valid_batches changes numbers
    [ "$c" != "$a" ]
}
check "config_hash: the same training in another dir, name, bucket size, sync transport and logging has the same hash" hash_numbers_only

# sync.reproducible: W = 1, 2, 3, 4, 6 workers (oversubscribed) at the same
# global batch give the same bytes: logs (but timings) and the tensors section
# of every checkpoint and of final.safetensors (the headers say world_size,
# batch_per_worker). Both paths of worker/repro.c: micro-batches of 1 stream
# in a global batch of 12 run one by one (a row of a product of 1 row has
# other bits than in a product of several: the probe falls back); of 12
# streams in a global batch of 144 they stack into one batch per worker (the
# probe passes on Haswell-class OpenBLAS kernels; the check fails if not).
# tensors FILE: the bytes after the safetensors header
tensors() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
# same_bits REF DIR: steps, epochs, events, tensors.jsonl (but timings) and every tensors section
same_bits() {
    local f c
    for f in steps epochs events tensors; do
        cmp <(strip_t "$1/$f.jsonl") <(strip_t "$2/$f.jsonl") || { echo "$f.jsonl differs"; return 1; }
    done
    cmp <(tensors "$1/final.safetensors") <(tensors "$2/final.safetensors") || return 1
    local n=0
    for c in "$1"/checkpoints/step-*.safetensors; do
        cmp <(tensors "$c") <(tensors "$2/checkpoints/${c##*/}") || return 1
        n=$((n + 1))
    done
    [ "$n" -ge 2 ] || { echo "only $n checkpoints"; return 1; }
}
REPRO=(--set metrics.listen=off --set sync.reproducible=true --set data.micro_batch=1
       --set checkpoint.every_steps=10 --set checkpoint.keep=100)
# over_w NAME [--set ...]: the run at W = 1, 2, 3, 4, 6, each compared with
# W = 1; global batch $GB (default 12), micro-batches of $MB (default 1),
# which must take the path $PATH_SAYS (default: one by one, as with
# OpenBLAS's Haswell kernels, whose rows of 1 to 8 differ; with other
# kernels the probe may find every row the same and stack: then either)
over_w() {
    local name="$1" w gb=${GB:-12} says=${PATH_SAYS:-"run one by one"}; shift
    for w in 1 2 3 4 6; do
        run "${name}_$w" "$w" "${REPRO[@]}" --set data.batch_per_worker=$((gb / w)) \
            ${MB:+--set data.micro_batch="$MB"} "$@" || { tail -3 "$TMP/${name}_$w.err"; return 1; }
        if [ -z "${PATH_SAYS:-}" ] && ! grep -qi 'OpenBLAS core Haswell)' "$TMP/${name}_1.err"; then
            says="(run one by one|stacked into one batch of [0-9]+ \(probed: each row)"
        fi
        grep -Eq "sync.reproducible: .*$says" "$TMP/${name}_$w.err" ||
            { echo "W=$w: the micro-batches did not take the path '$says':"; grep 'sync.reproducible' "$TMP/${name}_$w.err"; return 1; }
        [ "$w" = 1 ] && continue
        same_bits "$TMP/${name}_1" "$TMP/${name}_$w" || { echo "W=$w differs from W=1"; return 1; }
    done
    echo "$(wc -l <"$TMP/${name}_1/steps.jsonl") steps, W = 1, 2, 3, 4, 6 ($says): identical bytes"
}
# stacked CMD...: CMD with micro-batches of 12 in a global batch of 144, stacked
stacked() { GB=144 MB=12 PATH_SAYS="stacked into one batch" "$@"; }
check "reproducible: LSTM, Adam, global norm, replicated: W = 1,2,3,4,6 byte-identical" over_w rl
check "reproducible: GRU, SGD momentum, per-tensor clip, sharded, dropout 0.3: byte-identical" \
    over_w rg --set model.kind=gru --set train.optimizer=sgd --set train.momentum=0.9 \
    --set train.lr=0.3 --set clip.mode=per_tensor --set sync.mode=sharded --set model.dropout=0.3
check "reproducible: RNN, AdamW, clip by value, accumulate 2, bucket 1 KiB: byte-identical" \
    over_w rr --set model.kind=rnn --set train.optimizer=adamw --set train.weight_decay=0.1 \
    --set clip.mode=value --set clip.clip_value=0.01 --set train.accumulate=2 --set sync.bucket_kb=1
check "reproducible: adding problem (RNN), SGD, no clipping, sharded: byte-identical" \
    over_w ra --set data.source=adding --set model.kind=rnn --set data.seq_len=12 \
    --set train.optimizer=sgd --set train.lr=0.05 --set clip.mode=none --set sync.mode=sharded
check "reproducible: NaN and spike injected, rollback: byte-identical" \
    over_w rn --set debug.nan_step=5 --set debug.spike_step=17 --set divergence.grad_norm_spike.action=rollback \
    --set divergence.rollback_skip_batches=2

check "reproducible, stacked micro-batches of 12: LSTM, Adam, dropout 0.2, accumulate 2: byte-identical" \
    stacked over_w sl --set model.dropout=0.2 --set train.accumulate=2
check "reproducible, stacked: GRU, SGD momentum, per-tensor clip, sharded, bucket 1 KiB: byte-identical" \
    stacked over_w sg --set model.kind=gru --set train.optimizer=sgd --set train.momentum=0.9 \
    --set train.lr=0.3 --set clip.mode=per_tensor --set sync.mode=sharded --set sync.bucket_kb=1
check "reproducible, stacked: tied embeddings (embed 16), AdamW, clip by value: byte-identical" \
    stacked over_w st --set model.embed=16 --set model.tie_embeddings=true \
    --set train.optimizer=adamw --set train.weight_decay=0.1 --set clip.mode=value --set clip.clip_value=0.01
check "reproducible, stacked: adding problem (RNN), SGD, no clipping: byte-identical" \
    stacked over_w sa --set data.source=adding --set model.kind=rnn --set data.seq_len=12 \
    --set train.optimizer=sgd --set train.lr=0.05 --set clip.mode=none
# Recurrent weights of >= 65536 floats (LSTM hidden 128: wh (128, 512); GRU
# hidden 160: (160, 480)) are packed for the time loops' products on 1
# BLAS thread where the CPU runs a kernel of the width OpenBLAS's own
# kernels have (worker/rgemm.c): AVX2 and FMA for its Haswell or Zen
# cores, AVX-512 for SkylakeX, Cooperlake, SapphireRapids. The start line
# says which ran, and must say packed there. packed NAME HIDDEN CMD...: CMD
# (runs NAME_W) at HIDDEN.
packed() {
    local name="$1" hidden="$2" line want="by OpenBLAS"; shift 2
    "$@" --set model.hidden="$hidden" || return 1
    line=$(grep -o 'OpenBLAS core [A-Za-z0-9]*), recurrent products [^,]*' "$TMP/${name}_1.err")
    if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -Eqi 'core (Haswell|Zen)\)' <<<"$line"; then
        want="with wh packed (AVX2 kernel)"
    elif grep -qw avx512f /proc/cpuinfo && grep -Eqi 'core (SkylakeX|Cooperlake|SapphireRapids)\)' <<<"$line"; then
        want="with wh packed (AVX-512 kernel)"
    fi
    grep -qF "recurrent products $want" <<<"$line" || { echo "expected '$want': $line"; return 1; }
}
check "reproducible, recurrent weights packed (LSTM hidden 128), Adam: byte-identical" packed rp 128 over_w rp
check "reproducible, stacked, recurrent weights packed (GRU hidden 160), SGD: byte-identical" \
    packed sp 160 stacked over_w sp --set model.kind=gru --set train.optimizer=sgd --set train.lr=0.3
# The same LSTM with worker.packed_recurrent off: OpenBLAS's products, the
# start line says so, and (where packing ran above) other bits than packed
packed_off() {
    run po 2 "${REPRO[@]}" --set data.batch_per_worker=6 --set model.hidden=128 \
        --set worker.packed_recurrent=off || { tail -3 "$TMP/po.err"; return 1; }
    grep -q 'recurrent products by OpenBLAS' "$TMP/po.err" || { grep 'recurrent products' "$TMP/po.err"; return 1; }
    [ -s "$TMP/rp_2.err" ] || { echo "no run rp_2 to compare with"; return 1; }
    grep -q 'recurrent products with wh packed' "$TMP/rp_2.err" || return 0
    if same_bits "$TMP/rp_2" "$TMP/po" >/dev/null 2>&1; then echo "packed and OpenBLAS gave the same bits"; return 1; fi
}
check "worker.packed_recurrent off: OpenBLAS's products, other bits" packed_off
# The negative control: without sync.reproducible the same comparison fails
# (the float sums follow the worker split).
not_reproducible() {
    local NR=(--set metrics.listen=off --set checkpoint.every_steps=10 --set sync.reproducible=false --set data.micro_batch=4)
    run nr_1 1 "${NR[@]}" --set data.batch_per_worker=12 || return 1
    run nr_3 3 "${NR[@]}" --set data.batch_per_worker=4 || return 1
    if same_bits "$TMP/nr_1" "$TMP/nr_3"; then echo "W=1 and W=3 agree without sync.reproducible"; return 1; fi
    echo "as expected, W=1 and W=3 differ without sync.reproducible"
}
check "negative control: sync.reproducible false, W = 1 vs 3 differ (the comparison can fail)" not_reproducible

# The default, sync.reproducible auto: true with 1 BLAS thread per worker,
# replicated and a dense embedding, one micro-batch of B streams per worker;
# a 4-worker run of the default config equals 1 worker at the same global
# batch given data.micro_batch: 3 (its B), byte for byte. Off, and saying
# why, with worker.threads 2; config.yaml records what ran.
default_auto() {
    local D=(--set metrics.listen=off --set checkpoint.every_steps=10 --set checkpoint.keep=100)
    run da_4 4 "${D[@]}" --set data.batch_per_worker=3 || return 1
    grep -q "sync.reproducible auto: true, one micro-batch of 3 streams per worker" "$TMP/da_4.err" ||
        { echo "no auto line:"; grep reproducible "$TMP/da_4.err"; return 1; }
    grep -q "^  reproducible: true" "$TMP/da_4/config.yaml" || { echo "config.yaml does not say true"; return 1; }
    run da_1 1 "${D[@]}" --set data.batch_per_worker=12 --set data.micro_batch=3 || return 1
    same_bits "$TMP/da_4" "$TMP/da_1" || { echo "the default run on 4 workers != 1 worker with micro_batch 3"; return 1; }
    run da_t 1 "${D[@]}" --set data.batch_per_worker=12 --set worker.threads=2 || return 1
    grep -q "sync.reproducible auto: false, for worker.threads > 1" "$TMP/da_t.err" || { grep reproducible "$TMP/da_t.err"; return 1; }
    ! grep -q "1 BLAS thread per worker, not worker.threads" "$TMP/da_t.err" || { echo "auto false still forced 1 thread"; return 1; }
    grep -q "^  reproducible: false" "$TMP/da_t/config.yaml" || { echo "config.yaml does not say false"; return 1; }
    echo "default: 4 workers == 1 worker (micro_batch 3) byte for byte; worker.threads 2: off"
}
check "sync.reproducible auto (the default): a 4-worker run replays on 1 worker byte for byte; off with 2 threads" default_auto

micro_not_divisor() {
    expect_exit 2 "data.micro_batch (4) must divide data.batch_per_worker (6)" \
        $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/md" --set metrics.listen=off \
        --set sync.reproducible=true --set data.batch_per_worker=6 --set data.micro_batch=4
}
check "data.micro_batch that does not divide the batch per worker: exit 2 naming both" micro_not_divisor

# Replay at another scale: a 4-worker run diverges (a gradient spike injected
# at step 27, rolled back); its checkpoint of step 20, resumed on 1 worker,
# reaches the same event at the same step with the same values, and the rest
# of the run is byte-identical too.
replay_divergence() {
    local DV=(--set debug.spike_step=27 --set divergence.grad_norm_spike.action=rollback
              --set divergence.rollback_skip_batches=2)
    run rp4 4 "${REPRO[@]}" --set data.batch_per_worker=3 "${DV[@]}" || return 1
    jq -e -s 'map(select(.kind == "grad_norm_spike" and .step == 27)) | length == 1' "$TMP/rp4/events.jsonl" >/dev/null ||
        { echo "no grad_norm_spike at step 27 in the 4-worker run"; cat "$TMP/rp4/events.jsonl"; return 1; }
    mkdir -p "$TMP/rp1/checkpoints"
    cp "$TMP/rp4/checkpoints/step-00000020.safetensors" "$TMP/rp1/checkpoints/"
    run rp1 1 "${REPRO[@]}" --set data.batch_per_worker=12 "${DV[@]}" \
        --resume "$TMP/rp1/checkpoints/step-00000020.safetensors" || { tail -3 "$TMP/rp1.err"; return 1; }
    grep -q "written by 4 workers x 3; resuming on 1 x 12" "$TMP/rp1.err" || { cat "$TMP/rp1.err"; return 1; }
    # the replay's logs start at step 21: the 4-worker run's from there on
    [ "$(jq -s 'map(select(.seq > 20)) | length' "$TMP/rp1/steps.jsonl")" -ge 10 ] || { echo "too few replayed steps"; return 1; }
    cmp <(jq -c 'select(.seq > 20) | del(.time)' "$TMP/rp4/events.jsonl") <(jq -c 'select(.seq > 20) | del(.time)' "$TMP/rp1/events.jsonl") ||
        { echo "the event differs"; return 1; }
    cmp <(strip_t "$TMP/rp4/steps.jsonl" | jq -c 'select(.seq > 20)') \
        <(strip_t "$TMP/rp1/steps.jsonl" | jq -c 'select(.seq > 20)') || { echo "steps differ"; return 1; }
    cmp <(tensors "$TMP/rp4/final.safetensors") <(tensors "$TMP/rp1/final.safetensors") || return 1
    jq -c 'select(.kind == "grad_norm_spike") | {step, value, threshold, action}' "$TMP/rp1/events.jsonl"
}
check "replay: a 4-worker checkpoint resumed on 1 worker reaches the same divergence event, same step and values" replay_divergence

# OpenBLAS splits a product differently with 2 threads than with 1, which
# changes its bits (measured: 4e-6 apart after 30 steps of a 2x128 LSTM):
# reproducible runs use 1 BLAS thread per worker, and say so.
one_thread() {
    local R=("${REPRO[@]}" --set data.micro_batch=4 --set model.hidden=128 --set model.embed=64)
    run th_1 1 "${R[@]}" --set data.batch_per_worker=8 --set worker.threads=2 || return 1
    grep -q "sync.reproducible: 1 BLAS thread per worker, not worker.threads 2" "$TMP/th_1.err" || return 1
    run th_2 2 "${R[@]}" --set data.batch_per_worker=4 || return 1
    same_bits "$TMP/th_1" "$TMP/th_2"
}
check "reproducible with worker.threads 2: 1 BLAS thread, 1 worker == 2 workers byte for byte" one_thread
