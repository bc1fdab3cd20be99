# Clip modes, the vanilla RNN and the adding problem run end to end.
mode_none() {
    run none 2 --set clip.mode=none || return 1
    jq -s -e 'all(.[]; .clipped == false and .clip_coef == 1)' "$TMP/none/steps.jsonl" >/dev/null
}
check "clip.mode none: nothing clipped, coefficient 1" mode_none
mode_per_tensor() {
    run pt 2 --set clip.mode=per_tensor --set clip.max_norm=0.05 || return 1
    # per-tensor clipping fires on a tensor even when the global norm is larger than each part
    jq -s -e 'any(.[]; .clipped) and all(.[]; .clip_coef <= 1 and .clip_coef > 0)' "$TMP/pt/steps.jsonl" >/dev/null
}
check "clip.mode per_tensor runs and clips" mode_per_tensor
mode_value() {
    run val 2 --set clip.mode=value --set clip.clip_value=0.01 || return 1
    jq -s -e 'any(.[]; .clipped)' "$TMP/val/steps.jsonl" >/dev/null
}
check "clip.mode value runs and clamps" mode_value
rnn_sgd() {
    run rnn 3 --set model.kind=rnn --set train.optimizer=sgd --set train.lr=0.5 || return 1
    jq -s -e '.[0].loss > .[-1].loss' "$TMP/rnn/steps.jsonl" >/dev/null
}
check "vanilla RNN with SGD learns (W=3)" rnn_sgd
adding() {
    $LAUNCH -n 2 configs/adding.yaml --set run.dir="$TMP/add" --set train.epochs=1 --set train.steps_per_epoch=40 >"$TMP/add.out" 2>&1 || return 1
    jq -s -e 'length == 40 and all(.[]; .loss != null) and any(.[]; .clipped)' "$TMP/add/steps.jsonl" >/dev/null
}
check "adding problem (configs/adding.yaml) runs and clips" adding
