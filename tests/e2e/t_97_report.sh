# build/clipd-report end to end: a real tiny job with an injected gradient
# spike and rollback, then the text, --json and --svg outputs checked against
# the job's own logs (jq, xmllint); a crashed run's cut last line, a run still
# being written, directories that are not runs, and crafted hostile files.
REPORT=build/clipd-report
RP=(--set metrics.listen=off --set train.steps_per_epoch=60 --set checkpoint.every_steps=20
    --set divergence.window=20 --set divergence.warmup=20 --set debug.spike_step=45
    --set divergence.action=rollback --set log.tensor_norms_every=5)

report_job() {
    run rp 2 "${RP[@]}" || return 1
    jq -s -e 'any(.[]; .action == "rollback")' "$TMP/rp/events.jsonl" >/dev/null
}
check "report: a tiny job with a rollback to report on" report_job

report_text() {
    local d="$TMP/rp"
    $REPORT "$d" >"$TMP/rp.txt" || return 1
    cat "$TMP/rp.txt"
    # the epoch table's (epoch, clip_rate) rows are epochs.jsonl's, to 3 decimals
    jq -r '"\(.epoch) \(.clip_rate)"' "$d/epochs.jsonl" | awk '{ printf "%d %.3f\n", $1, $2 }' >"$TMP/rp.want"
    awk '$1 == "epoch" && $2 == "steps" { t = 1; next }
         t && $1 ~ /^[0-9]+$/ && !/in progress/ { print $1, $5; next } { t = 0 }' "$TMP/rp.txt" >"$TMP/rp.got"
    diff "$TMP/rp.want" "$TMP/rp.got" || return 1
    [ -s "$TMP/rp.got" ] || return 1
    grep -q "^steps *$(wc -l <"$d/steps.jsonl") executed, 120 distinct (1..120), 1 rollback" "$TMP/rp.txt" &&
        grep -q "grad_norm_spike *1  step 45 (rollback to 40)" "$TMP/rp.txt" &&
        grep -q "max_norm 0.15 (config.yaml)" "$TMP/rp.txt" &&
        grep -q "^  layers\|^  head\|^  embed" "$TMP/rp.txt"
}
check "report text: epochs and clip rates as in epochs.jsonl, steps, rollback, threshold, tensors" report_text

# Nearest-rank percentiles of the finite pre-clip norms, as the report and
# epochs.jsonl compute them.
JQ_PCT='def pct(q): (map(select(.grad_norm != null and .loss != null) | .grad_norm) | sort) as $v
    | $v[([(q * ($v | length)) | ceil, 1] | max) - 1];'

report_json() {
    local d="$TMP/rp" j="$TMP/rp.json"
    $REPORT "$d" --json >"$j" || return 1
    jq -e . "$j" >/dev/null || return 1
    jq -s -e --slurpfile r "$j" "$JQ_PCT"' $r[0] as $r |
        $r.steps_executed == length and $r.steps_distinct == (map(.step) | unique | length) and
        $r.grad_norm.p50 == pct(0.5) and $r.grad_norm.p90 == pct(0.9) and $r.grad_norm.p99 == pct(0.99) and
        $r.grad_norm.max == (map(.grad_norm // empty) | max) and
        $r.clipped_steps == (map(select(.clipped)) | length) and
        $r.skipped_steps == (map(select(.skipped)) | length) and $r.rollbacks == 1' \
        "$d/steps.jsonl" >/dev/null || { echo "steps disagree"; return 1; }
    jq -s -e --slurpfile r "$j" '$r[0] as $r |
        ($r.epochs | map([.epoch, .clip_rate, .val_loss, .steps])) == map([.epoch, .clip_rate, .val_loss, .steps]) and
        $r.val_loss_best == (map(.val_loss) | min) and $r.val_loss_final == .[-1].val_loss' \
        "$d/epochs.jsonl" >/dev/null || { echo "epochs disagree"; return 1; }
    jq -s -e --slurpfile r "$j" '$r[0] as $r |
        (map(select(.kind == "grad_norm_spike"))[0].tensor_norms | max_by(.norm).tensor) as $top |
        $r.events_total == length and
        ($r.events_by_kind | map_values(.count)) == (group_by(.kind) | map({key: .[0].kind, value: length}) | from_entries) and
        ($r.events | map(select(.kind == "grad_norm_spike"))[0] | .top_tensor == $top and .rollback_to == 40)' \
        "$d/events.jsonl" >/dev/null || { echo "events disagree"; return 1; }
    # tensors: each tensor's mean share of the squared norm over the finite rows
    jq -s -e --slurpfile r "$j" '$r[0] as $r |
        [.[] | .norms | select(all(.[]; . != null)) | (map_values(. * .) | add) as $s | select($s > 0)
             | map_values(. * . / $s)] as $rows
        | ($rows | map(to_entries) | flatten | group_by(.key)
                 | map({tensor: .[0].key, share: (map(.value) | add / ($rows | length))}) | sort_by(-.share)) as $want
        | $r.tensors.samples == ($rows | length) and $r.tensors.top[0].tensor == $want[0].tensor and
          ($r.tensors.top | length) == ([$want | length, 5] | min) and
          all(range($r.tensors.top | length); ($r.tensors.top[.].share - $want[.].share | fabs) < 1e-12)' \
        "$d/tensors.jsonl" >/dev/null || { echo "tensor shares disagree"; return 1; }
}
check "report --json: parses, and its percentiles, counts, epochs, events and tensor shares match the logs" report_json

report_svg() {
    local d="$TMP/rp" s="$TMP/rp.svg"
    $REPORT "$d" --svg "$s" >/dev/null || return 1
    xmllint --noout "$s" || return 1
    [ "$(stat -c %s "$s")" -lt 1000000 ] || { echo "SVG over 1 MB"; return 1; }
    local paths
    paths=$(xmllint --xpath 'count(//*[local-name()="path"])' "$s")
    [ "$paths" -ge 8 ] || { echo "$paths paths"; return 1; }
    for pat in '>Loss<' '>Pre-clip global gradient norm<' '>Clip rate<' 'by tensor<' \
        'train, per step' 'validation, end of epoch' 'clip threshold 0.15' 'stroke-dasharray="8 5"' \
        'clipped, last' 'grad_norm_spike @45' 'steps re-run after a rollback' 'step (executed steps' \
        '>epoch 1<' 'clipd run '; do
        grep -qF -- "$pat" "$s" || { echo "SVG lacks: $pat"; return 1; }
    done
}
check "report --svg: xmllint parses it; panels, series, threshold line, event and labels present; < 1 MB" report_svg

report_partial() {
    local d="$TMP/rp" c="$TMP/rp_cut"
    mkdir -p "$c" && cp "$d"/*.jsonl "$d/config.yaml" "$c/" || return 1
    head -c $(($(stat -c %s "$d/steps.jsonl") - 40)) "$d/steps.jsonl" >"$c/steps.jsonl" # cut mid-line
    $REPORT "$c" >"$TMP/cut.txt" || return 1
    grep -q "note: ignored a partial last line in steps.jsonl" "$TMP/cut.txt" &&
        grep -q "^steps *$(($(wc -l <"$d/steps.jsonl") - 1)) executed" "$TMP/cut.txt" &&
        $REPORT "$c" --json | jq -e '.notes | any(test("partial last line in steps.jsonl"))' >/dev/null &&
        $REPORT "$c" --svg "$TMP/cut.svg" >/dev/null && xmllint --noout "$TMP/cut.svg"
}
check "report on a crashed run's cut last line: reports, and says it skipped the partial line" report_partial

report_live() {
    # a longer job, reported on every 0.2 s while it writes its logs
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/rp_live" --set metrics.listen=off \
        --set train.steps_per_epoch=1500 >"$TMP/rp_live.out" 2>&1 &
    local pid=$! n=0 bad=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ -e "$TMP/rp_live/steps.jsonl" ]; then
            $REPORT "$TMP/rp_live" --json >"$TMP/live.json" 2>"$TMP/live.err" && jq -e . "$TMP/live.json" >/dev/null ||
                { bad=1; cat "$TMP/live.err"; }
            n=$((n + 1))
        fi
        sleep 0.2
    done
    wait "$pid" || return 1
    echo "$n reports during the run"
    [ "$bad" = 0 ] && [ "$n" -ge 1 ] && $REPORT "$TMP/rp_live" >/dev/null
}
check "report on a run still being written: every read exits 0 with valid JSON" report_live

report_errors() {
    mkdir -p "$TMP/notarun" "$TMP/rp_bad" "$TMP/rp_empty" || return 1
    echo "hello" >"$TMP/notarun/notes.txt"
    expect_exit 2 "notarun/steps.jsonl: no such file" $REPORT "$TMP/notarun" || return 1
    expect_exit 2 "nosuchdir: No such file or directory" $REPORT "$TMP/nosuchdir" || return 1
    cp "$TMP/rp"/*.jsonl "$TMP/rp_bad/"
    sed -i '10s/.*/{"step":10,"epoch":1,"loss":2.7,/' "$TMP/rp_bad/steps.jsonl"
    expect_exit 2 "rp_bad/steps.jsonl:10:" $REPORT "$TMP/rp_bad" || return 1
    cp "$TMP/rp/steps.jsonl" "$TMP/rp_bad/steps.jsonl"
    sed -i '1s/"kind":"[a-z_]*"/"kind":7/' "$TMP/rp_bad/events.jsonl"
    expect_exit 2 "rp_bad/events.jsonl:1: kind: expected a string" $REPORT "$TMP/rp_bad" --json || return 1
    expect_exit 2 "max-norm" $REPORT "$TMP/rp" --max-norm -1 || return 1
    : >"$TMP/rp_empty/steps.jsonl"
    $REPORT "$TMP/rp_empty" | grep -q "no steps yet" && $REPORT "$TMP/rp_empty" --json | jq -e '.steps_executed == 0' >/dev/null
}
check "report errors: not a run, no dir, malformed middle lines (file:line), bad option: exit 2; empty run: exit 0" report_errors

report_hostile() {
    # crafted files: markup and a cut multi-byte character in kinds and tensor
    # names, invalid UTF-8 and unknown keys in config.yaml, seq past 2^53, tensors.jsonl going
    # back, a full stdout
    local d="$TMP/rp_hostile" k30=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    mkdir -p "$d" || return 1
    printf '%s\n' '{"seq":1,"step":1,"epoch":1,"loss":2,"grad_norm":1}' \
        '{"seq":2,"step":2,"epoch":1,"loss":2,"grad_norm":1}' \
        '{"seq":3,"step":1,"epoch":1,"loss":2,"grad_norm":1}' >"$d/steps.jsonl"
    printf '%s\n' '{"seq":2,"step":2,"kind":"a&b<i>","rollback_to":0,"tensor_norms":[{"tensor":"w<&>","norm":3}]}' \
        '{"seq":3,"step":1,"kind":"'$k30'\u00e9"}' >"$d/events.jsonl"
    printf '%s\n' '{"seq":1,"norms":{"t<1>&":1,"u\"":2}}' >"$d/tensors.jsonl"
    # config.yaml goes through the config loader: bytes that are not UTF-8, a
    # name with markup: exit 2 naming file, line and column; unknown keys: a note
    printf 'run:\n  name: r&d <x> \xff\n' >"$d/config.yaml"
    expect_exit 2 "rp_hostile/config.yaml:2:" $REPORT "$d" || return 1
    printf 'run:\n  name: "r&d <x>"\n' >"$d/config.yaml"
    expect_exit 2 "rp_hostile/config.yaml:2:9: run.name:" $REPORT "$d" --json || return 1
    printf 'run:\n  name: hostile\nnewer:\n  key: {a: [1]}\n' >"$d/config.yaml"
    $REPORT "$d" | grep -qF "rp_hostile/config.yaml:3:1: newer: 1 key unknown to this clipd-report skipped" ||
        { echo "no note on the unknown section"; return 1; }
    $REPORT "$d" --json | jq -e --arg k "$k30" '.events_by_kind | has($k) and has("a&b<i>")' >/dev/null ||
        { echo "--json lacks the kinds"; return 1; }
    $REPORT "$d" --svg "$TMP/hostile.svg" >/dev/null && xmllint --noout "$TMP/hostile.svg" || return 1
    grep -qF 'a&amp;b&lt;i&gt; @2' "$TMP/hostile.svg" || { echo "label not escaped"; return 1; }
    $REPORT "$d" >/dev/full 2>"$TMP/full.err"; [ $? = 1 ] && grep -q "writing standard output" "$TMP/full.err" ||
        { echo "text to a full stdout: not exit 1"; return 1; }
    $REPORT "$d" --json >/dev/full 2>/dev/null; [ $? = 1 ] || { echo "--json to a full stdout: not exit 1"; return 1; }
    printf '%s\n' '{"seq":5,"norms":{"a":1}}' '{"seq":4,"norms":{"a":1}}' >"$d/tensors.jsonl"
    expect_exit 2 "rp_hostile/tensors.jsonl:2: seq: 4 does not follow 5" $REPORT "$d" --svg "$TMP/hostile.svg" || return 1
    rm "$d/tensors.jsonl"
    printf '%s\n' '{"seq":9007199254740993,"step":1,"epoch":1,"loss":2,"grad_norm":1}' >"$d/steps.jsonl"
    expect_exit 2 "rp_hostile/steps.jsonl:1: seq: 9007199254740993 out of range" $REPORT "$d" --svg "$TMP/hostile.svg"
}
check "report on hostile files: escaped SVG (xmllint), UTF-8 kept whole in --json, bad config.yaml and seq refused, unknown config keys noted, full stdout: exit 1" report_hostile
