#!/usr/bin/env bash
# bench.sh: speed as ratios measured in the same run, through the real
# training path (mpirun, coordinator + workers). Machines are shared and
# noisy, so only ratios of medians taken back to back are reported:
#   clip_overhead   median step time, clip global_norm vs none, minus 1
#   dp_2x1_vs_1x2   2 workers x 1 BLAS thread vs 1 worker x 2 threads,
#                   same global batch: tokens/s ratio
# Writes build/bench.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
TMP="$(mktemp -d /tmp/clipd-bench.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
CFG=configs/default.yaml
STEPS=${BENCH_STEPS:-150}
WARM=10

run() { # NAME W [--set ...]: one epoch of STEPS steps
    local name="$1" w="$2"; shift 2
    deploy/clipd-launch -n "$w" "$CFG" --set run.dir="$TMP/$name" --set train.epochs=1 \
        --set train.steps_per_epoch="$STEPS" "$@" >/dev/null 2>&1
}
median_ms() { jq -s --argjson w $WARM '.[$w:] | map(.step_ms) | sort | .[length/2|floor]' "$TMP/$1/steps.jsonl"; }
tokens() { jq -s '.[0].tokens' "$TMP/$1/steps.jsonl"; }

# Interleave the pairs so drift in machine load hits both sides alike.
for i in 1 2 3; do
    run "clip$i" 2 --set clip.mode=global_norm
    run "none$i" 2 --set clip.mode=none
    run "dp2x1_$i" 2 --set worker.threads=1 --set data.batch_per_worker=16
    run "dp1x2_$i" 1 --set worker.threads=2 --set data.batch_per_worker=32
done
med2() { echo "$(median_ms "${1}1") $(median_ms "${1}2") $(median_ms "${1}3")" |
    awk '{ m = $1; for (i = 2; i <= NF; i++) if ($i < m) m = $i; print m }'; }
clip=$(med2 clip); none=$(med2 none); dp21=$(med2 dp2x1_); dp12=$(med2 dp1x2_)
tok=$(tokens clip1)
overhead=$(awk -v a="$clip" -v b="$none" 'BEGIN { printf "%.4f", a / b - 1 }')
dp=$(awk -v a="$dp21" -v b="$dp12" 'BEGIN { printf "%.4f", b / a }')
tps=$(awk -v t="$tok" -v m="$clip" 'BEGIN { printf "%.0f", t / (m / 1000) }')
printf 'default job, %d steps, median step time (best of 3 interleaved runs):\n' "$STEPS"
printf '  clip global_norm %.3f ms, none %.3f ms: clip overhead %+.1f%%\n' "$clip" "$none" "$(awk -v o="$overhead" 'BEGIN{print o*100}')"
printf '  2 workers x 1 thread %.3f ms, 1 worker x 2 threads %.3f ms (same global batch): 2x1/1x2 throughput %.3f\n' "$dp21" "$dp12" "$dp"
printf '  tokens/s with clipping: %s\n' "$tps"
mkdir -p build
cat >build/bench.json <<JSON
{"workload":"default","steps":$STEPS,"step_ms_clip":$clip,"step_ms_none":$none,"clip_overhead":$overhead,
 "dp_2x1_vs_1x2":$dp,"tokens_per_s":$tps}
JSON
echo "wrote build/bench.json"
