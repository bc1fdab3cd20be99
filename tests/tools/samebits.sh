#!/bin/bash
# samebits.sh BUILD OUT: run a fixed set of short jobs with the binaries in
# BUILD and write what they produce to OUT (logs with wall-clock fields
# removed, checkpoint and weight files, clipd-report's outputs, --help and
# --check text, bad-input lines). Two builds give the same behaviour when
# `diff -r OUT1 OUT2` is empty: the check for refactors that must change
# no byte (see docs/ARCHITECTURE.md).
set -u
BUILD=$(cd "$1" && pwd); OUT=$2
here=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
# One fixed run path (paths are in config.yaml and the weights' metadata),
# so concurrent callers take turns.
exec 9> /tmp/samebits.lock; flock 9
tmp=/tmp/samebits.d; rm -rf "$tmp"; mkdir -p "$tmp"; trap 'rm -rf "$tmp"' EXIT
export CLIPD_BIN=$BUILD
L="$here/deploy/clipd-launch"
TK='time|[a-z_]*_ms|tokens_per_s|tokens_per_s_median|seconds|elapsed_s|wall_s|start|end|pid|host'
norm() { # wall-clock fields (times, durations, rates, pids, hosts) set to 1
    sed -E "s/\"($TK)\":(\"[^\"]*\"|[-0-9.e+]+)/\"\1\":1/g" "$1"
}
job() { # job NAME W CONFIG [args...]
    local name=$1 W=$2 cfg=$3; shift 3
    local d="${D:-$tmp/$name}"
    "$L" -n "$W" "$here/$cfg" --set run.dir="$d" --set metrics.listen=off "$@" \
        > "$OUT/$name.stdout" 2> "$OUT/$name.stderr.raw"; echo "exit $?" > "$OUT/$name.exit"
    # stderr: timestamps cut, lines sorted (ranks interleave), sizes and
    # timings dropped; stdout: the throughput column cut
    sed -E 's/^[0-9:.]+ //' "$OUT/$name.stderr.raw" | grep -vE 'clipd-launch: mpirun|Process name|peak RSS|[0-9] ?(ms|s|tokens/s|steps/s)\b' \
        | LC_ALL=C sort > "$OUT/$name.stderr"; rm -f "$OUT/$name.stderr.raw"
    sed -E 's/ +[0-9]+$/ N/; s/[0-9.]+ ?(ms|s)\b/T/g' -i "$OUT/$name.stdout"
    mkdir -p "$OUT/$name"
    for f in "$d"/*.jsonl; do # normalised in place: the report below reads them
        [ -f "$f" ] && { norm "$f" > "$f.n"; mv "$f.n" "$f"; cp "$f" "$OUT/$name/"; }
    done
    [ -f "$d/config.yaml" ] && cp "$d/config.yaml" "$OUT/$name/"
    for f in "$d"/*.safetensors "$d"/checkpoints/*.safetensors; do
        [ -f "$f" ] && cp "$f" "$OUT/$name/$(basename "$f")"
    done
    for fmt in "" --json; do
        "$BUILD/clipd-report" $fmt "$d" > "$OUT/$name/report$fmt.txt" 2>&1; echo "exit $?" >> "$OUT/$name/report$fmt.txt"
    done
    "$BUILD/clipd-report" --svg "$OUT/$name/report.svg" "$d" > /dev/null 2>&1
    cp -r "$d" "$tmp/keep-$name" 2>/dev/null
}
job default 2 configs/default.yaml --set train.epochs=2
D="$tmp/default" job default-resume 2 configs/default.yaml --set train.epochs=3 --resume latest
job gru-sharded 3 configs/default.yaml --set train.epochs=1 --set model.kind=gru --set sync.mode=sharded --set train.optimizer=sgd --set train.momentum=0.9 --set clip.mode=per_tensor
job rnn-adding 2 configs/adding.yaml --set train.epochs=1 --set train.steps_per_epoch=60
# a text corpus that depends on nothing in the tree: words from a fixed LCG
awk 'BEGIN { x = 7; for (l = 0; l < 20000; l++) { n = 3 + l % 9; s = "";
    for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648; s = s (i ? " " : "") "w" int(x / 65536) % 300 }
    print s } }' > "$tmp/corpus.txt"
job char 2 configs/charlstm.yaml --set train.epochs=1 --set train.steps_per_epoch=40 --set model.hidden=64 --set data.batch_per_worker=8 --set data.path="$tmp/corpus.txt"
job words 2 configs/default.yaml --set train.epochs=2 --set train.steps_per_epoch=30 --set data.source=text --set data.tokenizer=words --set model.vocab=400 --set data.path="$tmp/corpus.txt" --set model.embed=64 --set model.hidden=64 --set sync.sparse_embedding=true --set checkpoint.keep_best=true
job tied 1 configs/default.yaml --set train.epochs=1 --set train.steps_per_epoch=20 --set data.source=text --set data.tokenizer=words --set model.vocab=400 --set data.path="$tmp/corpus.txt" --set model.embed=64 --set model.hidden=64 --set model.tie_embeddings=true --set model.dropout=0.2 --set train.accumulate=2 --set train.optimizer=adamw --set train.weight_decay=0.01
job diverge 2 configs/default.yaml --set train.epochs=1 --set train.lr=0.5 --set clip.mode=none --set divergence.action=rollback --set divergence.loss_initial=1.02
job repro 2 configs/default.yaml --set train.epochs=1 --set sync.reproducible=true --set data.micro_batch=2
"$BUILD/clipd" --help > "$OUT/help.txt" 2>&1
"$BUILD/clipd" --check "$here/configs/default.yaml" --set run.dir="$tmp/chk" 2>&1 | sed -E 's/[0-9.]+ GiB available/N GiB available/' > "$OUT/check.txt"; echo "exit ${PIPESTATUS[0]}" >> "$OUT/check.txt"
"$BUILD/clipd" "$here/configs/default.yaml" --set model.hidden=-3 > "$OUT/bad-key.txt" 2>&1; echo "exit $?" >> "$OUT/bad-key.txt"
"$BUILD/clipd-report" --help > "$OUT/report-help.txt" 2>&1
"$BUILD/clipd-report" --html "$OUT/runs.html" "$tmp/keep-default" "$tmp/keep-char" > /dev/null 2>&1
echo "samebits: $(find "$OUT" -type f | wc -l) files in $OUT"
