#!/usr/bin/env bash
# detbench (`make detbench`): how well the divergence detector catches real
# divergence and how often it cries wolf, through the real path (mpirun, the
# coordinator, workers). Healthy runs: every shipped config, small (--set),
# 3 seeds, several epochs; the configs that need a download train on a
# generated word corpus instead. Faulty runs: the default config with one
# fault injected by the debug.* hooks at a step drawn per seed (seed 1: step
# 1). A fault "must be caught" when it makes the loss at least 2x the clean
# run's loss at the same step (same seed) or non-finite; it is caught when an
# event fires within 2 steps of that. Writes build/detbench.json and prints
# the table. DETBENCH_WORKERS (default 1), DETBENCH_SEEDS (default "1 2 3").
set -uo pipefail
cd "$(dirname "$0")/../.."
command -v jq >/dev/null || { echo "detbench: jq is required" >&2; exit 1; }
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
OUT=build/detbench
W="${DETBENCH_WORKERS:-1}"
read -r -a SEEDS <<<"${DETBENCH_SEEDS:-1 2 3}"
rm -rf "$OUT" && mkdir -p "$OUT/runs" "$OUT/corpus" || exit 1
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
gen_words 1 120000 >"$OUT/corpus/train.txt"
gen_words 2 12000 >"$OUT/corpus/valid.txt"
CORPUS=(--set data.path="$OUT/corpus")

COMMON=(--set metrics.listen=off --set checkpoint.every_steps=0 --set log.tensor_norms_every=0)
# NAME|CONFIG|overrides (small models, several epochs)
HEALTHY=(
    "default|configs/default.yaml|model.hidden=64 train.epochs=6 train.steps_per_epoch=100 data.valid_batches=2"
    "adding|configs/adding.yaml|train.epochs=4 train.steps_per_epoch=150 data.valid_batches=2"
    "bench-adding|configs/bench-adding.yaml|train.epochs=3 train.steps_per_epoch=100"
    "bench-charlstm|configs/bench-charlstm.yaml|model.hidden=128 data.seq_len=32 data.batch_per_worker=8 train.epochs=3 train.steps_per_epoch=60"
    "bench-wordlstm|configs/bench-wordlstm.yaml|model.hidden=64 train.epochs=3 train.steps_per_epoch=60"
    "brown-word|configs/brown-word.yaml|CORPUS model.vocab=512 model.hidden=64 model.embed=32 data.min_count=1 data.valid_batches=2 train.epochs=4 train.steps_per_epoch=100"
    "charlstm|configs/charlstm.yaml|CORPUS model.hidden=128 data.seq_len=32 data.batch_per_worker=8 data.valid_batches=2 train.epochs=3 train.steps_per_epoch=60"
    "zaremba-small|configs/zaremba-small.yaml|CORPUS model.hidden=64 data.valid_batches=2 train.epochs=3 train.steps_per_epoch=100"
)
# The faulty runs' base: the default config as above, 2 epochs.
FBASE="model.hidden=64 train.epochs=2 train.steps_per_epoch=100 data.valid_batches=2"
FSTEPS=200
# NAME|overrides (@ is the fault step)|latest fault step drawn
FAULTS=(
    "lr_x10|debug.lr_spike_step=@ debug.lr_spike_scale=10 debug.lr_spike_len=0|150"
    "lr_x100|debug.lr_spike_step=@ debug.lr_spike_scale=100 debug.lr_spike_len=0|150"
    "lr_x1000|debug.lr_spike_step=@ debug.lr_spike_scale=1000 debug.lr_spike_len=0|150"
    "lr_x10_once|debug.lr_spike_step=@ debug.lr_spike_scale=10|150"
    "lr_x100_once|debug.lr_spike_step=@ debug.lr_spike_scale=100|150"
    "lr_x1000_once|debug.lr_spike_step=@ debug.lr_spike_scale=1000|150"
    "random_batch|debug.noise_step=@|150"
    "grad_spike|debug.spike_step=@|150"
    "nan|debug.nan_step=@|150"
    "init_x100|model.init_scale=10|1"
    "lr_ramp|debug.lr_ramp_step=@ debug.lr_ramp_rate=1.15|100"
)

# run NAME CONFIG OVERRIDES: one job into $OUT/runs/NAME; its exit code in NAME.rc
run() {
    local name="$1" cfg="$2" sets=() kv
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
    jq -n --arg cfg "$2" --argjson seed "$3" --argjson rc "$(cat "$d.rc")" \
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
    jq -n --arg fault "$2" --argjson seed "$3" --argjson at "$4" --argjson rc "$(cat "$d.rc")" \
        --slurpfile s "$d/steps.jsonl" --slurpfile e "$d/events.jsonl" --slurpfile r "$ref/steps.jsonl" '
        ($r | map({key: (.step | tostring), value: .loss}) | from_entries) as $clean
        | ([$s[] | select(.step >= $at and (.loss == null or
              ($clean[.step | tostring] != null and .loss >= 2 * $clean[.step | tostring])))][0]) as $x
        | ([$e[] | select(.step >= $at)][0]) as $ev
        | ([$e[] | select(.step < $at and .kind != "clip_inactive" and .kind != "clip_saturation")] | length) as $early
        | {fault: $fault, seed: $seed, rc: $rc, at: $at,
           loss_2x_step: ($x.step // null), must: ($x != null),
           detected: ($ev != null), event_step: ($ev.step // null), kind: ($ev.kind // null),
           action: ($ev.action // null),
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
    run "ref-$seed" configs/default.yaml "$FBASE run.seed=$seed"
    fi=0
    for f in "${FAULTS[@]}"; do
        IFS='|' read -r name sets last <<<"$f"
        fi=$((fi + 1))
        if [ "$seed" = 1 ] || [ "$last" = 1 ]; then at=1
        else at=$(awk -v s="$seed" -v i="$fi" -v m="$last" 'BEGIN { srand(s * 1000 + i); print 2 + int(rand() * (m - 1)) }'); fi
        run "f-$name-$seed" configs/default.yaml "$FBASE run.seed=$seed ${sets//@/$at}"
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
               detected_any: ($f | map(select(.detected)) | length)}}' >build/detbench.json || exit 1

echo
echo "== healthy runs: false alarms (events that would act) per 1000 steps"
jq -r '"\("config" | .[0:16] | . + " " * (16 - length)) seed  steps  alarms  per_1000  kinds@step",
       (.healthy[] | "\(.config + " " * (16 - (.config | length))) \(.seed)     \(.steps)    \(.false_alarms)       \(.per_1000 * 10 | round / 10)      \([.alarms[] | "\(.kind)@\(.step)"] | join(" "))")' build/detbench.json
echo
echo "== faults (default config): first event at or after the fault step"
jq -r '"fault          seed  at  loss2x  event  kind              action    delay  ok",
       (.faults[] | "\(.fault + " " * (14 - (.fault | length))) \(.seed)   \(.at)   \(.loss_2x_step // "-")   \(.event_step // "-")   \((.kind // "missed") + " " * (16 - ((.kind // "missed") | length)))  \(.action // "-")   \(.delay // "-")   \(if .ok then "ok" else "FAIL" end)")' build/detbench.json
jq -r '.summary | "\nsummary: healthy \(.healthy_runs) runs, \(.healthy_steps) steps, \(.false_alarms) false alarms (\(.false_alarms_per_1000 * 1000 | round / 1000) per 1000 steps); faults \(.fault_runs) runs, \(.must_catch) made the loss >= 2x or non-finite, \(.caught_in_2) of them caught within 2 steps; \(.detected_any) runs with any event"' build/detbench.json
echo "detbench: $(( $(date +%s) - T0 )) s; build/detbench.json"
