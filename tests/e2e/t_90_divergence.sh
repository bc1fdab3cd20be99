# Divergence detection and the policies, end to end. The debug.* test hooks
# inject the fault: debug.spike_step multiplies every worker's gradient of
# that step by 1e4; debug.lr_spike_step applies one update with lr x 1000;
# debug.drift_step perturbs one replica's weights.
DV=(--set train.steps_per_epoch=60 --set checkpoint.every_steps=20 --set divergence.window=20
    --set divergence.warmup=20)

rollback_recovers() {
    run dv_rb 2 "${DV[@]}" --set debug.spike_step=45 --set divergence.action=rollback || return 1
    local d="$TMP/dv_rb"
    jq -c 'select(.kind == "grad_norm_spike")' "$d/events.jsonl"
    # the event: at step 45, rolled back to the checkpoint at 40, values and
    # thresholds given, the largest per-tensor norm first
    jq -s -e 'map(select(.kind == "grad_norm_spike")) | length == 1 and .[0].step == 45 and
        .[0].action == "rollback" and .[0].rollback_to == 40 and .[0].value > .[0].threshold and
        (.[0].tensor_norms | length) == 9 and .[0].tensor_norms[0].norm >= .[0].tensor_norms[1].norm' \
        "$d/events.jsonl" >/dev/null || return 1
    # after the rollback: steps 41.. again with lr halved: 45 lines, then 41..120
    jq -s -e '.[44].step == 45 and .[44].skipped and .[45].step == 41 and .[45].lr == .[44].lr / 2
        and length == 125 and .[-1].step == 120' "$d/steps.jsonl" >/dev/null || return 1
    grep -q "rollbacks 1" "$d.out" && build/tests/stcmp "$d/final.safetensors" "$d/final.safetensors" 0
}
check "grad_norm_spike with action rollback: event, restore to last checkpoint, lr x0.5, run completes" rollback_recovers

skip_step() {
    run dv_skip 2 "${DV[@]}" --set debug.spike_step=45 --set divergence.action=skip || return 1
    jq -s -e '.[44].skipped and ([.[] | select(.skipped)] | length) == 1 and length == 120' \
        "$TMP/dv_skip/steps.jsonl" >/dev/null || return 1
    jq -s -e 'any(.[]; .kind == "grad_norm_spike" and .action == "skip")' "$TMP/dv_skip/events.jsonl" >/dev/null
}
check "grad_norm_spike with action skip: that update not applied on any rank" skip_step

abort_run() {
    run dv_abort 2 "${DV[@]}" --set debug.spike_step=45 --set divergence.action=abort
    local rc=$?
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    jq -s -e 'any(.[]; .kind == "grad_norm_spike" and .action == "abort")' "$TMP/dv_abort/events.jsonl" >/dev/null || return 1
    [ ! -e "$TMP/dv_abort/final.safetensors" ] || { echo "final weights written by an aborted run"; return 1; }
    ls "$TMP/dv_abort/checkpoints/step-00000040.safetensors" >/dev/null # the last good checkpoint stays
}
check "action abort: exit 1, final event, last good checkpoint kept, no final weights" abort_run

loss_spike() {
    run dv_loss 2 "${DV[@]}" --set debug.lr_spike_step=45 --set divergence.loss_spike.action=rollback || return 1
    jq -c 'select(.kind == "loss_spike")' "$TMP/dv_loss/events.jsonl" | head -2
    jq -s -e 'any(.[]; .kind == "loss_spike" and .action == "rollback" and .step > 45 and .value > .threshold)' \
        "$TMP/dv_loss/events.jsonl" >/dev/null
}
check "an absurd learning rate for one step: loss_spike fires after it and rolls back" loss_spike

max_rollbacks() {
    run dv_max 2 "${DV[@]}" --set debug.spike_step=45 --set divergence.action=rollback \
        --set divergence.max_rollbacks=0
    [ $? = 1 ] && jq -s -e 'any(.[]; .kind == "grad_norm_spike" and .action == "abort")' "$TMP/dv_max/events.jsonl" >/dev/null
}
check "rollbacks beyond divergence.max_rollbacks abort" max_rollbacks

drift() {
    run dv_drift 2 "${DV[@]}" --set debug.drift_step=33 --set divergence.drift_check_every=5
    local rc=$?
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    jq -s -e 'map(select(.kind == "replica_drift")) | length == 1 and .[0].step == 35 and .[0].action == "abort"' \
        "$TMP/dv_drift/events.jsonl" >/dev/null
}
check "replica_drift: a perturbed replica is caught at the next check and aborts" drift

final_drift() {
    # no checks during the run: only the final weights' hashes disagree. The
    # event carries the last step's seq (not -1), so clipd-report reads the run.
    run dv_fdrift 2 "${DV[@]}" --set debug.drift_step=33 --set divergence.drift_check_every=0
    local rc=$? d="$TMP/dv_fdrift"
    [ "$rc" = 1 ] || { echo "exit $rc, wanted 1"; return 1; }
    jq -s -e --argjson last "$(jq -s -c '.[-1] | [.seq, .step]' "$d/steps.jsonl")" \
        'map(select(.kind == "replica_drift")) | length == 1 and .[0].what == "final_params" and
         [.[0].seq, .[0].step] == $last' "$d/events.jsonl" >/dev/null || { cat "$d/events.jsonl"; return 1; }
    build/clipd-report "$d" >"$d.report" || { echo "clipd-report fails"; return 1; }
    grep -q "replica_drift" "$d.report" || { echo "clipd-report does not list the event"; return 1; }
}
check "replica_drift at the end (final weights differ): an event clipd-report reads" final_drift

clip_kinds() {
    # on a change only (divergence.clip_events: change): clipping stopped, clipping saturates
    run dv_inactive 2 --set clip.max_norm=1e9 || return 1
    jq -s -e 'map(select(.kind == "clip_inactive")) | length == 1 and all(.[]; .action == "log")' \
        "$TMP/dv_inactive/events.jsonl" >/dev/null || return 1
    run dv_sat 2 --set clip.max_norm=1e-6 --set divergence.window=10 || return 1
    jq -s -e 'map(select(.kind == "clip_saturation")) | length == 1 and all(.[]; .value > .threshold)' \
        "$TMP/dv_sat/events.jsonl" >/dev/null
}
check "clip_inactive when clipping stops for an epoch; clip_saturation when every step starts clipping" clip_kinds

healthy_quiet() {
    run dv_quiet 2 --set train.steps_per_epoch=100 --set divergence.window=20 --set divergence.warmup=20 || return 1
    jq -s -e 'map(select(.kind != "clip_saturation")) | length == 0' "$TMP/dv_quiet/events.jsonl" >/dev/null
}
check "a healthy run fires no spike or non-finite event" healthy_quiet

early_stop() {
    # lr 1e-30 leaves every float weight as it was, so the validation loss
    # never improves after the first epoch: early stopping after the second
    run dv_early 2 --set train.epochs=5 --set train.lr=1e-30 --set train.early_stop=1 || return 1
    grep -q "stopped early" "$TMP/dv_early.out" || return 1
    jq -s -e 'length == 2 and .[0].val_loss == .[1].val_loss' "$TMP/dv_early/epochs.jsonl" >/dev/null &&
        [ -s "$TMP/dv_early/final.safetensors" ]
}
check "train.early_stop: no better validation loss for N epochs stops the run cleanly" early_stop
