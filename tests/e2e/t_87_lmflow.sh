# The language-model workflow's bookkeeping (issue 16): a wall-clock `time`
# on every JSON line, train.steps_per_epoch: auto (one pass over the train
# split) with seeded epoch offsets, and an epoch that spans a crash and a
# resume: its seconds and tokens/s without the gap, the summary's counts
# from all the logs, and sessions.jsonl marking start, crash, resume, end.
LMT="$TMP/lmcorpus"
mkdir -p "$LMT"
awk 'BEGIN { srand(17); split("the a cat dog sat on mat and ran far away , . big small red", w, " ");
             for (i = 0; i < 12000; i++) printf "%s%s", w[1 + int(rand() * 16)], (i % 9 == 8 ? "\n" : " ") }' \
    >"$LMT/train.txt"
head -c 3000 "$LMT/train.txt" | sed '$d' >"$LMT/valid.txt"
LMW=(--set data.source=text --set data.path="$LMT" --set data.tokenizer=words --set model.vocab=32
     --set data.seq_len=10 --set data.valid_batches=2 --set metrics.listen=off --set train.steps_per_epoch=auto)

# every line of every log ends with "time": Unix seconds with 3 decimals, in order
times_ok() {
    local d="$1" f n
    for f in steps epochs events tensors sessions; do
        [ -f "$d/$f.jsonl" ] || { echo "no $f.jsonl"; return 1; }
        n=$(wc -l <"$d/$f.jsonl")
        [ "$(grep -cE '"time":[0-9]{10}\.[0-9]{3}}$' "$d/$f.jsonl")" = "$n" ] || { echo "$f.jsonl: a line without time"; return 1; }
    done
    jq -s -e --arg now "$(date +%s)" '(.[0].time > ($now | tonumber) - 600) and
        ([.[].time] | . == sort)' "$d/steps.jsonl" >/dev/null || { echo "steps times not recent and ordered"; return 1; }
}

lm_auto() {
    run lma2 2 "${LMW[@]}" --set data.batch_per_worker=3 --set train.epochs=2 || return 1
    run lma1 1 "${LMW[@]}" --set data.batch_per_worker=6 --set train.epochs=2 || return 1
    times_ok "$TMP/lma2" || return 1
    local n L want
    n=$(($(stat -c %s "$TMP/lma2/tokens-train.u32") / 4))
    L=$(((n - 1) / 6)) want=$((L / 10))
    echo "train split $n tokens, 6 streams of $L: auto = $want steps of 10"
    jq -s -e --argjson w "$want" 'length == 2 and all(.[]; .steps == $w)' "$TMP/lma2/epochs.jsonl" >/dev/null ||
        { echo "epochs.jsonl steps differ from $want"; return 1; }
    grep -q "^  steps_per_epoch: $want " "$TMP/lma2/config.yaml" || { echo "config.yaml does not say $want"; return 1; }
    build/clipd --check "$TINY" "${LMW[@]}" --set run.dir="$TMP/lma_check" --set data.batch_per_worker=3 \
        --workers 2 | grep -q "^  steps_per_epoch: $want " || { echo "--check does not resolve auto"; return 1; }
    # shifted epochs are the same on any worker split: 1 x 6 == 2 x 3
    build/tests/stcmp "$TMP/lma1/final.safetensors" "$TMP/lma2/final.safetensors" 1e-5 || return 1
    # auto changes only the count: epoch 1 (offset 0) equals a run given the
    # count; the shifts of later epochs are checked in test_text (layout_shift)
    run lmc 2 "${LMW[@]}" --set data.batch_per_worker=3 --set train.epochs=1 --set train.steps_per_epoch="$want" || return 1
    cmp <(jq -c 'del(.step_ms, .time)' "$TMP/lmc/steps.jsonl") \
        <(jq -c 'select(.epoch == 1) | del(.step_ms, .time)' "$TMP/lma2/steps.jsonl") || { echo "epoch 1 differs"; return 1; }
}
check "text: steps_per_epoch auto = one pass (config.yaml, --check), W-independent, time on every line" lm_auto

lm_auto_bad() {
    expect_exit 2 "train.steps_per_epoch: auto: the train split" build/clipd --check "$TINY" "${LMW[@]}" \
        --set data.seq_len=5000 --set run.dir="$TMP/lmbad" || return 1
    expect_exit 2 "train.steps_per_epoch: expected an integer in \[1, 1000000000\] or auto" \
        build/clipd --check "$TINY" --set train.steps_per_epoch=0
}
check "steps_per_epoch: 0 and an auto that gives no step: exit 2, one line" lm_auto_bad

# Crash inside epoch 1 (worker 0 killed in the checkpoint of step 60), 3 s
# down, resume: the epoch's seconds leave the gap out, tokens/s is tokens /
# seconds, the summary counts every event in the files.
lm_crash() {
    local d="$TMP/lmk" a=(--set train.steps_per_epoch=100 --set train.epochs=2 --set checkpoint.every_steps=20
                          --set debug.spike_step=30 --set metrics.listen=off)
    run lmk 2 "${a[@]}" --set debug.ckpt_crash_step=60 && { echo "the hook did not crash the job"; return 1; }
    sleep 3
    run lmk 2 "${a[@]}" --resume latest || return 1
    cat "$d.out"
    jq -s -e '[.[].kind] == ["start", "crash", "resume", "end"]' "$d/sessions.jsonl" >/dev/null ||
        { cat "$d/sessions.jsonl"; echo "sessions.jsonl"; return 1; }
    jq -s -e '.[1].step == 59 and .[2].step == 40 and .[3].how == "done"' "$d/sessions.jsonl" >/dev/null ||
        { echo "crash/resume steps"; return 1; }
    grep -q "^sessions: start at step 0, crash at step 59, resume at step 40, end at step 200" "$d.out" ||
        { echo "summary does not mark them"; return 1; }
    # epoch 1's wall span includes the 3 s down; its seconds must not
    local span secs
    span=$(jq -s '[.[] | select(.epoch == 1)] | (.[-1].time - .[0].time)' "$d/steps.jsonl")
    secs=$(jq -s '.[0].seconds' "$d/epochs.jsonl")
    echo "epoch 1: seconds $secs, wall span of its steps $span (3 s down in between)"
    jq -n -e --argjson s "$secs" --argjson w "$span" '$s > 0 and $s < $w - 2.5' >/dev/null || return 1
    jq -s -e '.[0] | (.tokens_per_s * .seconds - 6400) as $d | ($d * $d) < (.tokens_per_s * 0.0005 + 1) * (.tokens_per_s * 0.0005 + 1)' "$d/epochs.jsonl" >/dev/null ||
        { echo "tokens_per_s is not the epoch's tokens over its seconds"; return 1; }
    local logged
    logged=$(jq -s '[.[] | select(.kind != "checkpoint_failed" and .kind != "log_write_failed")] | length' "$d/events.jsonl")
    grep -q "^events $logged:" "$d.out" || { echo "summary events differ from the $logged in events.jsonl"; return 1; }
    [ "$logged" -ge 2 ] || { echo "too few events to tell ($logged)"; return 1; }
    times_ok "$d" || return 1
    # clipd-report: text, --json and the SVG mark them too
    build/clipd-report "$d" | grep -q "^sessions   start at step 0, crash at step 59, resume at step 40, end at step 200 (done)$" ||
        { echo "clipd-report does not mark them"; return 1; }
    build/clipd-report --json "$d" | jq -e '[.sessions[] | [.kind, .step]] == [["start", 0], ["crash", 59], ["resume", 40], ["end", 200]]' \
        >/dev/null || { echo "clipd-report --json"; return 1; }
    build/clipd-report "$d" --svg "$TMP/lmk.svg" >/dev/null && xmllint --noout "$TMP/lmk.svg" || return 1
    [ "$(grep -c 'class="resume"' "$TMP/lmk.svg")" = 1 ] && grep -q ">crash, resume at step 40<" "$TMP/lmk.svg" ||
        { echo "the SVG does not mark the resume"; return 1; }
}
check "crash and resume inside an epoch: true seconds and tokens/s, all events counted, sessions marked" lm_crash

# checkpoint.keep_best: best.safetensors holds the epoch with the lowest
# validation loss (its metadata says which), whatever checkpoint.keep rotated
# out; a resume keeps comparing against it. A rising lr makes a late epoch worse.
lm_best() {
    local d="$TMP/lmb" a=("${LMW[@]}" --set data.batch_per_worker=3 --set train.steps_per_epoch=40
                           --set checkpoint.keep_best=true --set checkpoint.keep=1 --set checkpoint.every_steps=40
                           --set train.lr=0.02 --set debug.lr_ramp_step=150 --set debug.lr_ramp_rate=1.1)
    run lmb 2 "${a[@]}" --set train.epochs=3 || return 1
    run lmb 2 "${a[@]}" --set train.epochs=5 --resume latest || return 1
    jq -c '[.epoch, .val_loss]' "$d/epochs.jsonl"
    local want got
    want=$(jq -s -c 'min_by(.val_loss) | [.epoch, .val_loss]' "$d/epochs.jsonl")
    got=$(/usr/bin/python3 -c 'import json, struct, sys
b = open(sys.argv[1], "rb").read(); m = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
print(json.dumps([int(m["epoch"]), float(m["val_loss"])], separators=(",", ":")))' "$d/best.safetensors") || return 1
    echo "best: epochs.jsonl $want, best.safetensors $got"
    [ "$want" = "$got" ] || return 1
    jq -s -e 'min_by(.val_loss).epoch < 5' "$d/epochs.jsonl" >/dev/null || { echo "the last epoch is the best: no test"; return 1; }
    [ "$(ls "$d/checkpoints" | grep -c 'safetensors$')" = 1 ] || { echo "keep 1 not applied"; return 1; }
}
check "checkpoint.keep_best: best.safetensors is the lowest val loss, across a resume, never rotated out" lm_best

# Evaluation: with a test.txt the run ends with the test split evaluated on
# best.safetensors (eval.jsonl, the summary); clipd --eval does any weights
# on any split. Both against an independent NumPy forward pass (float64).
lm_eval() {
    local d="$TMP/lme" ref got
    cp -r "$LMT" "$TMP/lmtest"
    tail -c 4000 "$LMT/train.txt" | sed '1d' >"$TMP/lmtest/test.txt"
    local a=("${LMW[@]}" --set data.path="$TMP/lmtest" --set data.batch_per_worker=3 --set checkpoint.keep_best=true
             --set train.lr=0.004) # not lmk's 0.01: the --html test tells their lr lines apart
    run lme 2 "${a[@]}" --set train.epochs=3 || return 1
    grep -E "^test loss [0-9.]+ nats/token, perplexity [0-9.]+, over [0-9]+ tokens of the test split; weights: best.safetensors" \
        "$d.out" || { echo "no test line in the summary"; return 1; }
    jq -e 'select(.at == "end") | .split == "test" and (.weights | endswith("best.safetensors")) and .loss_unit == "nats/token"
           and ((.ppl | log) - .loss | . * . < 1e-20)' "$d/eval.jsonl" >/dev/null || return 1
    end_eval_matches_numpy "$d" "$d/best.safetensors" || return 1
    # --eval: the final weights on the valid split, 1 worker x 6 streams (the same layout)
    $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${a[@]}" --set data.batch_per_worker=6 \
        --eval "$d/final.safetensors" --split valid >"$TMP/lme_eval.out" 2>"$TMP/lme_eval.err" || return 1
    got=$(grep '^{"at":"eval"' "$TMP/lme_eval.out") || { echo "--eval printed no JSON"; return 1; }
    [ "$(tail -1 "$d/eval.jsonl")" = "$got" ] || { echo "eval.jsonl differs from stdout"; return 1; }
    ref=$(/usr/bin/python3 tests/tools/lm_eval.py "$d/final.safetensors" "$d/tokens-valid.u32" 6 10) || return 1
    echo "--eval final, valid split: clipd $got, NumPy $ref"
    near "$(jq .loss <<<"$got")" "$(jq .loss <<<"$ref")" && [ "$(jq .tokens <<<"$got")" = "$(jq .tokens <<<"$ref")" ] || return 1
    jq -e '.split == "valid" and .workers == 1 and .step == 666' <<<"$got" >/dev/null || return 1
    # bad input: exit 2, one line
    expect_exit 2 "nothere: cannot open" $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${a[@]}" --eval "$d/nothere" || return 1
    expect_exit 2 "tensor 'param.head.weight' has another dtype or shape, model.\* needs F32 \[8, 32\]" \
        $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${a[@]}" --set model.hidden=8 --eval "$d/final.safetensors" || return 1
    expect_exit 2 "--split test: data.path '$LMT' has no test.txt" \
        $LAUNCH -n 1 "$TINY" --set run.dir="$d" "${a[@]}" --set data.path="$LMT" --eval "$d/final.safetensors" || return 1
    expect_exit 2 "--split train: expected test or valid" build/clipd "$TINY" --eval "$d/final.safetensors" --split train
}
check "test split at the end (best weights) and clipd --eval: loss, perplexity, tokens == NumPy; bad input exit 2" lm_eval

# clipd-report --html: two runs (the crashed-and-resumed markov run, the text
# run) on one self-contained page, rendered by a real headless browser
# (Debian's chromium); the screenshot's pixels show each panel drew both runs.
lm_html() {
    local h="$TMP/two.html" png="$TMP/two.png"
    command -v chromium >/dev/null || { echo "chromium is missing (deploy/packages.txt)"; return 1; }
    build/clipd-report --html "$h" "$TMP/lmk" "$TMP/lme" | grep -q "^html: wrote $h (2 runs)$" || return 1
    ! grep -qi "<script\|<link\|<img\|@import\|url(" "$h" || { echo "not self-contained"; return 1; }
    [ "$(grep -o 'https\?://[^"]*' "$h" | sort -u)" = "http://www.w3.org/2000/svg" ] || { echo "a URL other than the SVG namespace"; return 1; }
    grep -q "$TMP/lmk): 200 steps, 2 epochs" "$h" && grep -q "$TMP/lme): 666 steps, 3 epochs" "$h" || { echo "legend"; return 1; }
    grep -q "<title>crash, resume at step 40</title>" "$h" && grep -q "<title>grad_norm_spike at step 30</title>" "$h" ||
        { echo "resume or event not marked"; return 1; }
    grep -q ">nats / token<" "$h" || { echo "unit"; return 1; }
    local height
    height=$(grep -o '<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="[0-9]*"' "$h" | grep -o '[0-9]*"$' | tr -d '"')
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
        --window-size=1100,"$height" --screenshot="$png" "file://$h" >"$TMP/chromium.log" 2>&1 ||
        { tail -5 "$TMP/chromium.log"; return 1; }
    # panels at 200 + 270 i: plot area from +40, 200 px high; the shares' bars below the sixth
    local rects=() i top
    for i in 0 1 2 3 4 5; do top=$((200 + 270 * i + 40)); rects+=("91,$((top + 1)),1049,$((top + 199))"); done
    rects+=("246,$((200 + 270 * 6 + 40)),1050,$((200 + 270 * 6 + 240))")
    /usr/bin/python3 tests/tools/png_colors.py "$png" "${rects[@]}" -- 0072B2 D55E00 >"$TMP/px.json" || return 1
    cat "$TMP/px.json"
    # lines (panels 0, 2-5) cover at least 200 px per run, the perplexity dots 20, the share bars 100
    head -1 "$TMP/px.json" | jq -e 'length == 7 and ([.[] | [.["0072B2"], .["D55E00"]] | min] as $m |
        $m[0] >= 200 and $m[1] >= 20 and $m[2] >= 200 and $m[3] >= 200 and $m[4] >= 200 and $m[5] >= 200 and $m[6] >= 100)' \
        >/dev/null || { echo "a panel lacks a run's pixels"; return 1; }
    tail -1 "$TMP/px.json" | jq -e --argjson h "$height" '.width == 1100 and .height == $h' >/dev/null
}
check "clipd-report --html: two runs overlaid, self-contained; chromium screenshot shows every panel drew both" lm_html

# /status of a job whose steps stopped coming (a worker sleeps 3 s a step,
# metrics.stall_seconds 1) says "stalled" with the idle time, as /healthz does.
lm_status_stalled() {
    local d="$TMP/lmst" addr st i
    $LAUNCH -n 2 "$TINY" --set run.dir="$d" --set metrics.listen=127.0.0.1:0 --set metrics.stall_seconds=1 \
        --set debug.slow_ms=3000 --set train.epochs=1 --set train.steps_per_epoch=3 >"$d.out" 2>"$d.err" &
    local pid=$!
    for i in $(seq 100); do [ -s "$d/metrics.addr" ] && break; sleep 0.1; done
    addr=$(cat "$d/metrics.addr" 2>/dev/null)
    for i in $(seq 50); do
        st=$(curl -s "http://$addr/status") && jq -e '.state == "stalled" and .idle_s > 1' <<<"$st" >/dev/null && break
        st=""; sleep 0.2
    done
    wait "$pid" || { echo "the job failed"; return 1; }
    echo "status: $st"
    [ -n "$st" ]
}
check "/status says stalled (with idle_s) when no step came for metrics.stall_seconds" lm_status_stalled

# The adding task's loss is a squared error, and the SVG and the page say so.
lm_units() {
    local d="$TMP/lmadd"
    $LAUNCH -n 1 configs/adding.yaml --set run.dir="$d" --set metrics.listen=off --set train.epochs=1 \
        --set train.steps_per_epoch=10 --set model.hidden=8 >"$d.out" 2>"$d.err" || return 1
    build/clipd-report "$d" --svg "$TMP/lmadd.svg" >/dev/null && grep -q ">loss (squared error)<" "$TMP/lmadd.svg" || return 1
    ! grep -q "nats/token" "$TMP/lmadd.svg" || return 1
    build/clipd-report --html "$TMP/lmadd.html" "$d" >/dev/null && grep -q ">squared error<" "$TMP/lmadd.html" &&
        ! grep -q "nats" "$TMP/lmadd.html"
}
check "adding task: the SVG and --html label its loss squared error, not nats/token" lm_units
