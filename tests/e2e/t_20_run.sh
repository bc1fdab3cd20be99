# A real run: the logs parse and agree with each other.
logs_consistent() {
    local d="$1" w="$2" epochs=2 steps=15 maxnorm=0.15
    # every line parses, one line per step, numbered 1..N, epochs 1..E
    jq -e . "$d/steps.jsonl" "$d/epochs.jsonl" >/dev/null || return 1
    [ -f "$d/events.jsonl" ] && [ ! -s "$d/events.jsonl" ] || { echo "events not empty"; return 1; }
    jq -s -e --argjson n $((epochs * steps)) 'length == $n and (map(.step) == [range(1; $n + 1)])' "$d/steps.jsonl" >/dev/null || { echo "step numbering"; return 1; }
    jq -s -e --argjson e $epochs 'map(.epoch) == [range(1; $e + 1)]' "$d/epochs.jsonl" >/dev/null || { echo "epoch numbering"; return 1; }
    # every field is present with the right type
    jq -s -e 'all(.[]; (.loss|type)=="number" and (.grad_norm|type)=="number" and (.clip_coef|type)=="number"
        and (.clipped|type)=="boolean" and (.skipped|type)=="boolean" and (.lr|type)=="number"
        and (.tokens|type)=="number" and (.step_ms|type)=="number")' "$d/steps.jsonl" >/dev/null || { echo "step fields"; return 1; }
    # tokens per step = W * B * T
    jq -s -e --argjson t $((w * 4 * 8)) 'all(.[]; .tokens == $t)' "$d/steps.jsonl" >/dev/null || { echo "tokens"; return 1; }
    # TF clip_by_global_norm: clipped iff norm > max_norm, coef = max/max(norm, max)
    jq -s -e --argjson m $maxnorm 'all(.[]; (.clipped == (.grad_norm > $m)) and
        ((.clip_coef - ($m / ([.grad_norm, $m] | max))) | fabs) < 1e-12)' "$d/steps.jsonl" >/dev/null || { echo "clip formula"; return 1; }
    # the run clipped some steps and not others, so the check above bit
    jq -s -e '(map(select(.clipped)) | length) as $c | $c > 0 and $c < length' "$d/steps.jsonl" >/dev/null || { echo "clipping never or always active"; return 1; }
    # epochs.jsonl: clip_rate = fraction of clipped steps, train_loss = mean step loss
    jq -s -e --slurpfile ep "$d/epochs.jsonl" '
        group_by(.epoch) | to_entries | all(.[];
          .value as $s | $ep[.key] as $e |
          ($e.steps == ($s|length)) and
          ((($s | map(select(.clipped)) | length) / ($s|length)) == $e.clip_rate) and
          (((($s | map(.loss) | add) / ($s|length)) - $e.train_loss) | fabs) < 1e-9 and
          ($e.grad_norm_max == ($s | map(.grad_norm) | max)))' "$d/steps.jsonl" >/dev/null || { echo "epochs vs steps"; return 1; }
    # the loss fell
    jq -s -e '.[0].loss > .[-1].loss' "$d/steps.jsonl" >/dev/null || { echo "loss did not fall"; return 1; }
    [ -s "$d/final.safetensors" ] || { echo "no final weights"; return 1; }
    grep -q "replica mismatches 0" "$d.out" || { echo "replica mismatch"; return 1; }
}
for w in 2 3; do
    check "run W=$w exits 0: the summary says done, final weights written" run_done "run$w" "$w"
    check "run W=$w: JSON lines parse and agree (clip rate, TF formula, losses)" logs_consistent "$TMP/run$w" "$w"
done

# The coordinator waits without spinning: its CPU time is a small part of the wall time.
coordinator_idle() {
    local line cpu wall
    run idle 2 --set model.hidden=64 --set train.steps_per_epoch=100 || return 1
    line="$(grep -o 'coordinator cpu [0-9.]* s over [0-9.]* s' "$TMP/idle.out")" || { echo "no cpu line"; return 1; }
    cpu="$(echo "$line" | awk '{print $3}')"; wall="$(echo "$line" | awk '{print $6}')"
    echo "$line"
    awk -v c="$cpu" -v w="$wall" 'BEGIN { exit !(c < 0.25 * w) }'
}
check "coordinator does not spin (cpu < 25% of wall)" coordinator_idle
