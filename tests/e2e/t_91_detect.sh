# The divergence detector end to end: each fault class that the debug.* hooks
# inject fires its event with the configured action, from step 1 where the
# fault is there from step 1; clip events come on a change only; a NaN in any
# tensor is blamed on that tensor (events.jsonl and clipd-report).

lr_step1_rollback() {
    # lr x1000 from step 1: the loss of step 2 is far worse than a uniform guess
    run dt_lr 2 --set debug.lr_spike_step=1 --set debug.lr_spike_len=0 --set divergence.action=rollback || return 1
    local d="$TMP/dt_lr"
    jq -c 'select(.kind == "loss_spike")' "$d/events.jsonl" | head -2
    jq -s -e '.[0].kind == "loss_spike" and .[0].step == 2 and .[0].check == "uniform" and
        .[0].action == "rollback" and .[0].rollback_to == 0 and .[0].value > .[0].threshold and
        ((.[0].baseline - (16 | log)) | length) < 1e-12 and .[0].spread == 0' "$d/events.jsonl" >/dev/null || return 1
    grep -q "rollbacks 1," "$d.out" && [ -s "$d/final.safetensors" ] # the hooks stop after a rollback
}
check "lr x1000 from step 1: loss_spike (uniform) at step 2, rolled back, run completes" lr_step1_rollback

lr_once_skip() {
    run dt_once 2 --set debug.lr_spike_step=12 --set divergence.loss_spike.action=skip \
        --set divergence.grad_norm_spike.action=skip || return 1
    local d="$TMP/dt_once"
    jq -c 'select(.kind != "clip_inactive" and .kind != "clip_saturation") | {step, kind, check, action}' "$d/events.jsonl" | head -3
    jq -s -e 'map(select(.kind == "loss_spike" or .kind == "grad_norm_spike")) | length >= 1 and
        .[0].step == 13 and all(.[]; .action == "skip")' "$d/events.jsonl" >/dev/null || return 1
    jq -s -e '.[12].skipped' "$d/steps.jsonl" >/dev/null # step 13's update was not applied
}
check "lr x1000 for one step: a spike at the next step, that update skipped" lr_once_skip

init_abort() {
    run dt_init 2 --set model.init_scale=10 --set divergence.action=abort
    local rc=$? d="$TMP/dt_init"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    jq -s -e '.[0].step == 1 and .[0].kind == "loss_spike" and .[0].check == "uniform" and
        .[0].action == "abort"' "$d/events.jsonl" >/dev/null || return 1
    [ "$(wc -l <"$d/steps.jsonl")" = 1 ] && [ ! -e "$d/final.safetensors" ]
}
check "an exploding init (scale 10): loss_spike at step 1, abort, exit 1" init_abort

grad_spike_skip() {
    run dt_gs 2 --set debug.spike_step=5 --set divergence.action=skip || return 1
    local d="$TMP/dt_gs"
    jq -s -e 'map(select(.kind == "grad_norm_spike")) | length == 1 and .[0].step == 5 and
        .[0].check == "clip_limit" and .[0].baseline == 0.15 and .[0].threshold == 15 and
        .[0].action == "skip"' "$d/events.jsonl" >/dev/null || return 1
    jq -s -e '.[4].skipped and ([.[] | select(.skipped)] | length) == 1' "$d/steps.jsonl" >/dev/null
}
check "a gradient spike x1e4 at step 5: grad_norm_spike (clip_limit) before any history, skipped" grad_spike_skip

noise_ramp() {
    # a batch of random tokens once the model has learned (a chain with one successor per
    # symbol: learned within a few dozen steps), and a learning rate that ramps up
    run dt_noise 2 --set train.epochs=3 --set data.markov_branch=1 --set debug.noise_step=40 \
        --set divergence.loss_spike.action=skip || return 1
    jq -s -e 'any(.[]; .kind == "loss_spike" and .step == 40 and .action == "skip")' \
        "$TMP/dt_noise/events.jsonl" >/dev/null || { jq -c 'select(.step >= 38 and .step <= 41)' "$TMP/dt_noise/steps.jsonl"; return 1; }
    run dt_ramp 2 --set train.epochs=3 --set debug.lr_ramp_step=10 --set debug.lr_ramp_rate=1.5 \
        --set divergence.action=rollback || return 1
    jq -s -e 'map(select(.kind == "loss_spike" or .kind == "grad_norm_spike")) | length >= 1 and
        .[0].action == "rollback" and .[0].step > 10' "$TMP/dt_ramp/events.jsonl" >/dev/null
}
check "a random batch: loss_spike at that step, skipped; a slow lr ramp: caught and rolled back" noise_ramp

clip_changes() {
    run dt_inact 2 --set train.epochs=3 --set clip.max_norm=1e9 || return 1
    jq -s -e 'map(select(.kind == "clip_inactive")) | length == 1 and .[0].step == 15 and .[0].check == "epoch"' \
        "$TMP/dt_inact/events.jsonl" >/dev/null || return 1
    jq -s -e 'length == 3 and all(.[]; .clip_state == "inactive")' "$TMP/dt_inact/epochs.jsonl" >/dev/null || return 1
    build/clipd-report "$TMP/dt_inact" | grep -q " inactive " || return 1
    run dt_inact_all 2 --set train.epochs=3 --set clip.max_norm=1e9 --set divergence.clip_events=always || return 1
    jq -s -e 'map(select(.kind == "clip_inactive")) | length == 3' "$TMP/dt_inact_all/events.jsonl" >/dev/null || return 1
    run dt_sat 2 --set train.epochs=3 --set clip.max_norm=1e-6 --set divergence.window=10 || return 1
    jq -s -e 'map(select(.kind == "clip_saturation")) | length == 1 and .[0].step == 10' "$TMP/dt_sat/events.jsonl" >/dev/null || return 1
    jq -s -e 'all(.[]; .clip_state == "saturated")' "$TMP/dt_sat/epochs.jsonl" >/dev/null || return 1
    run dt_off 2 --set train.epochs=3 --set clip.max_norm=1e9 --set divergence.clip_events=off || return 1
    [ ! -s "$TMP/dt_off/events.jsonl" ]
}
check "clip_inactive and clip_saturation on a change only (always: every epoch, off: none); clip_state per epoch" clip_changes

nan_each_tensor() {
    local names t bad=0
    # the tiny model's tensors, in flat-buffer order (as tensors.jsonl names them)
    run dt_names 1 --set train.epochs=1 --set train.steps_per_epoch=1 --set log.tensor_norms_every=1 || return 1
    names=$(jq -r '.norms | keys_unsorted[]' "$TMP/dt_names/tensors.jsonl")
    [ "$(wc -w <<<"$names")" = 9 ] || { echo "tensors: $names"; return 1; }
    for t in $names; do
        run "dt_nan_$t" 2 --set train.epochs=1 --set train.steps_per_epoch=4 --set debug.nan_step=3 \
            --set debug.nan_tensor="$t" || return 1
        local d="$TMP/dt_nan_$t"
        jq -s -e --arg t "$t" 'map(select(.kind == "nonfinite_grad")) | length == 1 and .[0].step == 3 and
            .[0].tensor_norms[0].tensor == $t and .[0].tensor_norms[0].norm == null and
            ([.[0].tensor_norms[1:][] | .norm != null] | all)' "$d/events.jsonl" >/dev/null ||
            { echo "events.jsonl does not blame $t"; bad=1; }
        build/clipd-report "$d" | grep -q "step 3 nonfinite_grad: $t not finite" ||
            { echo "clipd-report does not blame $t:"; build/clipd-report "$d" | grep -A2 "at events"; bad=1; }
    done
    echo "NaN injected into each of: $names"
    return $bad
}
check "a NaN injected into each tensor in turn is blamed on that tensor (events.jsonl, clipd-report)" nan_each_tensor

bad_detector_keys() {
    expect_exit 2 "divergence.warmup (200) must be <= divergence.window (100)" \
        build/clipd --check "$TINY" --set divergence.warmup=200 || return 1
    expect_exit 2 "debug.nan_tensor: no tensor 'layers.5.wx' in this model" \
        build/clipd --check "$TINY" --set debug.nan_tensor=layers.5.wx || return 1
    expect_exit 2 "divergence.clip_events" build/clipd --check "$TINY" --set divergence.clip_events=sometimes || return 1
    expect_exit 2 "divergence.val_rel" build/clipd --check "$TINY" --set divergence.val_rel=-1
}
check "bad detector keys: exit 2 with one line naming the key" bad_detector_keys
