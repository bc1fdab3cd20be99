#!/usr/bin/env bash
# detbench (`make detbench`): how well the divergence detector catches real
# divergence and how often it cries wolf, through the real path (mpirun, the
# coordinator, workers). Healthy runs: every shipped config, small (--set),
# 3 seeds, several epochs; the configs that need a download train on a
# generated word corpus instead. Faulty runs: the default config with one
# fault injected by the debug.* hooks at a step drawn per seed (seed 1: step
# 1). A fault "must be caught" when it makes the loss at least 2x the clean
# value before the fault (the clean run's, same seed: its median over the 5 steps
# before; at step 1 its first loss) or non-finite; it is caught when an event
# fires within 2 steps of the first such step. Writes build/detbench.json and prints
# the table. DETBENCH_WORKERS (default 1), DETBENCH_SEEDS (default "1 2 3"),
# DETBENCH_CONFIGS (the configs' directory, default configs), DETBENCH_DIR and
# DETBENCH_JSON (where the runs and the results go); CLIPD_BIN picks the
# binaries (deploy/clipd-launch), e.g. an older build for a before/after table.
set -uo pipefail
cd "$(dirname "$0")/../.."
command -v jq >/dev/null || { echo "detbench: jq is required" >&2; exit 1; }
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
OUT="${DETBENCH_DIR:-build/detbench}"
JSON="${DETBENCH_JSON:-build/detbench.json}"
CFG="${DETBENCH_CONFIGS:-configs}"
W="${DETBENCH_WORKERS:-1}"
read -r -a SEEDS <<<"${DETBENCH_SEEDS:-1 2 3}"
# DETBENCH_REANALYSE=1: no jobs, only the table again from the runs in $OUT.
REUSE="${DETBENCH_REANALYSE:-}"
if [ -z "$REUSE" ]; then rm -rf "$OUT" && mkdir -p "$OUT/runs" "$OUT/corpus" || exit 1; fi
T0=$(date +%s)

# A word corpus with structure (an order-1 chain over 400 words, Zipf-like
# successors, sentences of 5-25 words), made here: no download.
gen_words() { # SEED WORDS
    awk -v seed="$1" -v n="$2" 'BEGIN {
        srand(4242); V = 400
        for (i = 0; i < V; i++) for (k = 0; k < 6; k++) nxt[i, k] = int(rand() * rand() * V)
        srand(seed); w = 0; len = 0
        for (i = 0; i < n; i++) {
            r = rand(); k = r < 0.5 ? 0 : r < 0.75 ? 1 : r < 0.87 ? 2 : r < 0.94 ? 3 : r < 0.98 ? 4 : 5
            w = rand() < 0.05 ? int(rand() * V) : nxt[w, k]
            printf "w%d", w; len++
            if (len >= 5 && (rand() < 0.08 || len >= 25)) { printf "\n"; len = 0 } else printf " "
        } }'
}
if [ -z "$REUSE" ]; then
    gen_words 1 120000 >"$OUT/corpus/train.txt"
    gen_words 2 12000 >"$OUT/corpus/valid.txt"
fi
CORPUS=(--set data.path="$OUT/corpus")

COMMON=(--set metrics.listen=off --set checkpoint.every_steps=0 --set log.tensor_norms_every=0)
# NAME|CONFIG|overrides (small models, several epochs)
HEALTHY=(
    "default|$CFG/default.yaml|model.hidden=64 train.epochs=10 train.steps_per_epoch=100 data.valid_batches=2"
    "adding|$CFG/adding.yaml|train.epochs=4 train.steps_per_epoch=150"
    "bench-adding|$CFG/bench-adding.yaml|train.epochs=3 train.steps_per_epoch=100"
    "bench-charlstm|$CFG/bench-charlstm.yaml|model.hidden=128 data.seq_len=32 data.batch_per_worker=8 train.epochs=3 train.steps_per_epoch=60"
    "bench-wordlstm|$CFG/bench-wordlstm.yaml|model.hidden=64 train.epochs=3 train.steps_per_epoch=60"
    "brown-word|$CFG/brown-word.yaml|CORPUS model.vocab=512 model.hidden=64 model.embed=32 data.min_count=1 data.valid_batches=2 train.epochs=5 train.steps_per_epoch=200"
    "charlstm|$CFG/charlstm.yaml|CORPUS model.hidden=128 data.seq_len=32 data.batch_per_worker=8 data.valid_batches=2 train.epochs=3 train.steps_per_epoch=60"
    "zaremba-small|$CFG/zaremba-small.yaml|CORPUS model.hidden=64 data.valid_batches=2 train.epochs=3 train.steps_per_epoch=100"
)
# The faulty runs' base: the default config as above, 2 epochs.
FBASE="model.hidden=64 train.epochs=4 train.steps_per_epoch=100 data.valid_batches=2"
# NAME|overrides (@ is the fault step)|latest fault step drawn
FAULTS=(
    "lr_x10|debug.lr_spike_step=@ debug.lr_spike_scale=10 debug.lr_spike_len=0|350"
    "lr_x100|debug.lr_spike_step=@ debug.lr_spike_scale=100 debug.lr_spike_len=0|350"
    "lr_x1000|debug.lr_spike_step=@ debug.lr_spike_scale=1000 debug.lr_spike_len=0|350"
    "lr_x10_once|debug.lr_spike_step=@ debug.lr_spike_scale=10|350"
    "lr_x100_once|debug.lr_spike_step=@ debug.lr_spike_scale=100|350"
    "lr_x1000_once|debug.lr_spike_step=@ debug.lr_spike_scale=1000|350"
    "random_batch|debug.noise_step=@|350"
    "grad_spike|debug.spike_step=@|350"
    "nan|debug.nan_step=@|350"
    "init_x100|model.init_scale=10|1"
    "lr_ramp|debug.lr_ramp_step=@ debug.lr_ramp_rate=1.15|250"
)

# run NAME CONFIG OVERRIDES: one job into $OUT/runs/NAME; its exit code in NAME.rc
run() {
    local name="$1" cfg="$2" sets=() kv
    [ -n "$REUSE" ] && return 0
    for kv in $3; do
        if [ "$kv" = CORPUS ]; then sets+=("${CORPUS[@]}"); else sets+=(--set "$kv"); fi
    done
    timeout 600 deploy/clipd-launch -n "$W" "$cfg" --set run.dir="$OUT/runs/$name" "${COMMON[@]}" \
        "${sets[@]}" >"$OUT/runs/$name.out" 2>"$OUT/runs/$name.err"
    echo $? >"$OUT/runs/$name.rc"
}

# Healthy: false alarms are events that would act (everything but the clip
# notices clip_inactive and clip_saturation).
healthy_json() { # NAME CONFIG SEED
    local d="$OUT/runs/$1"
    jq -cn --arg cfg "$2" --argjson seed "$3" --argjson rc "$(cat "$d.rc")" \
        --slurpfile s "$d/steps.jsonl" --slurpfile e "$d/events.jsonl" '
        ($s | length) as $n
        | ($e | map(select(.kind != "clip_inactive" and .kind != "clip_saturation"))) as $fa
        | {config: $cfg, seed: $seed, rc: $rc, steps: $n, false_alarms: ($fa | length),
           per_1000: (if $n > 0 then ($fa | length) * 1000 / $n else null end),
           alarms: [$fa[] | {step, kind, value, threshold}],
           clip_notices: ($e | map(select(.kind == "clip_inactive" or .kind == "clip_saturation")) | length)}'
}

fault_json() { # NAME FAULT SEED STEP REF
    local d="$OUT/runs/$1" ref="$OUT/runs/$5"
    jq -cn --arg fault "$2" --argjson seed "$3" --argjson at "$4" --argjson rc "$(cat "$d.rc")" \
        --slurpfile s "$d/steps.jsonl" --slurpfile e "$d/events.jsonl" --slurpfile r "$ref/steps.jsonl" '
        ([$r[] | select(if $at == 1 then .step == 1 else .step >= $at - 5 and .step < $at end) | .loss]
           | sort | .[length / 2 | floor]) as $before
        | ([$s[] | select(.step >= $at and (.loss == null or .grad_norm == null or .loss >= 2 * $before))][0]) as $x
        | ([$e[] | select(.step >= $at and .kind != "clip_inactive" and .kind != "clip_saturation")][0]) as $ev
        | ([$e[] | select(.step < $at and .kind != "clip_inactive" and .kind != "clip_saturation")] | length) as $early
        | {fault: $fault, seed: $seed, rc: $rc, at: $at, loss_before: $before,
           loss_2x_step: ($x.step // null), must: ($x != null),
           detected: ($ev != null), event_step: ($ev.step // null), kind: ($ev.kind // null),
           action: ($ev.action // null), check: ($ev.check // null),
           delay: (if $ev then $ev.step - $at else null end),
           delay_after_2x: (if $ev and $x then $ev.step - $x.step else null end),
           alarms_before: $early}
        | .ok = ((.must | not) or (.detected and .delay_after_2x <= 2))'
}

: >"$OUT/healthy.jsonl"
for h in "${HEALTHY[@]}"; do
    IFS='|' read -r name cfg sets <<<"$h"
    for seed in "${SEEDS[@]}"; do
        run "h-$name-$seed" "$cfg" "$sets run.seed=$seed"
        healthy_json "h-$name-$seed" "$name" "$seed" >>"$OUT/healthy.jsonl"
        echo "healthy $name seed $seed: $(jq -r '"\(.steps) steps, \(.false_alarms) false alarms (exit \(.rc))"' <(tail -1 "$OUT/healthy.jsonl"))"
    done
done

: >"$OUT/faults.jsonl"
for seed in "${SEEDS[@]}"; do
    run "ref-$seed" "$CFG/default.yaml" "$FBASE run.seed=$seed"
    fi=0
    for f in "${FAULTS[@]}"; do
        IFS='|' read -r name sets last <<<"$f"
        fi=$((fi + 1))
        if [ "$seed" = 1 ] || [ "$last" = 1 ]; then at=1
        else at=$(awk -v s="$seed" -v i="$fi" -v m="$last" 'BEGIN { srand(s * 1000 + i); print 2 + int(rand() * (m - 1)) }'); fi
        run "f-$name-$seed" "$CFG/default.yaml" "$FBASE run.seed=$seed ${sets//@/$at}"
        fault_json "f-$name-$seed" "$name" "$seed" "$at" "ref-$seed" >>"$OUT/faults.jsonl"
        echo "fault $name seed $seed at $at: $(jq -r '"detected \(.detected) at \(.event_step) (\(.kind)), loss 2x at \(.loss_2x_step), ok \(.ok)"' <(tail -1 "$OUT/faults.jsonl"))"
    done
done
[ "$(wc -l <"$OUT/faults.jsonl")" -gt 0 ] || { echo "detbench: no fault results" >&2; exit 1; }

jq -n --slurpfile h "$OUT/healthy.jsonl" --slurpfile f "$OUT/faults.jsonl" --argjson secs $(( $(date +%s) - T0 )) \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" --argjson w "$W" '
    {commit: $commit, workers: $w, seconds: $secs, healthy: $h, faults: $f,
     summary: {healthy_runs: ($h | length), healthy_steps: ($h | map(.steps) | add),
               false_alarms: ($h | map(.false_alarms) | add),
               false_alarms_per_1000: (($h | map(.false_alarms) | add) * 1000 / ($h | map(.steps) | add)),
               fault_runs: ($f | length), must_catch: ($f | map(select(.must)) | length),
               caught_in_2: ($f | map(select(.must and .ok)) | length),
               detected_any: ($f | map(select(.detected)) | length)}}' >"$JSON" || exit 1

echo
echo "== healthy runs: false alarms (events that would act: all but clip_inactive/clip_saturation)"
PAD='def pad($n): tostring | . + " " * ([$n - length, 1] | max);'
jq -r "$PAD"'"\("config" | pad(16))\("seed" | pad(6))\("steps" | pad(7))\("alarms" | pad(8))\("per_1000" | pad(10))kind@step",
       (.healthy[] | "\(.config | pad(16))\(.seed | pad(6))\(.steps | pad(7))\(.false_alarms | pad(8))\(.per_1000 * 100 | round / 100 | pad(10))\([.alarms[] | "\(.kind)@\(.step)"] | join(" "))")' "$JSON"
echo
echo "== faults (default config): the first divergence event at or after the fault step"
jq -r "$PAD"'"\("fault" | pad(15))\("seed" | pad(6))\("at" | pad(5))\("loss2x" | pad(8))\("event" | pad(7))\("kind/check" | pad(28))\("action" | pad(9))\("delay" | pad(7))target",
       (.faults[] | "\(.fault | pad(15))\(.seed | pad(6))\(.at | pad(5))\(.loss_2x_step // "-" | pad(8))\(.event_step // "-" | pad(7))\((if .kind then "\(.kind)/\(.check // "-")" else "missed" end) | pad(28))\(.action // "-" | pad(9))\(.delay // "-" | pad(7))\(if .must | not then "(no 2x)" elif .ok then "ok" else "FAIL" end)")' "$JSON"
jq -r '.summary | "\nsummary: healthy \(.healthy_runs) runs, \(.healthy_steps) steps, \(.false_alarms) false alarms (\(.false_alarms_per_1000 * 1000 | round / 1000) per 1000 steps); faults \(.fault_runs) runs, \(.must_catch) made the loss >= 2x or non-finite, \(.caught_in_2) of them caught within 2 steps; \(.detected_any) runs with an event"' "$JSON"
echo "detbench: $(( $(date +%s) - T0 )) s; $JSON"
