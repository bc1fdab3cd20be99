# Clip modes, the vanilla RNN and the adding problem run end to end.
mode_none() {
    run none 2 --set clip.mode=none || return 1
    jq -s -e 'all(.[]; .clipped == false and .clip_coef == 1)' "$TMP/none/steps.jsonl" >/dev/null
}
check "clip.mode none: nothing clipped, coefficient 1" mode_none
# The clip actually applied: with a bound nothing reaches, per_tensor, value
# and global_norm leave exactly the weights of none; a bound that bites
# changes them.
same_as_none() {
    local name="$1" expect="$2"; shift 2
    run "$name" 2 "$@" || return 1
    if [ "$expect" = 0 ]; then build/tests/stcmp "$TMP/none/final.safetensors" "$TMP/$name/final.safetensors" 0
    else weights_differ "$TMP/none/final.safetensors" "$TMP/$name/final.safetensors" 0; fi
}
check "per_tensor with an unreachable bound == none, bit for bit" same_as_none pt_big 0 --set clip.mode=per_tensor --set clip.max_norm=1e30
check "value with an unreachable bound == none, bit for bit" same_as_none val_big 0 --set clip.mode=value --set clip.clip_value=1e30
check "global_norm with an unreachable bound == none, bit for bit" same_as_none gn_big 0 --set clip.mode=global_norm --set clip.max_norm=1e30
check "per_tensor with a biting bound changes the weights" same_as_none pt_small 1 --set clip.mode=per_tensor --set clip.max_norm=0.05
check "value with a biting bound changes the weights" same_as_none val_small 1 --set clip.mode=value --set clip.clip_value=0.01
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

gru() {
    run gru1 1 --set model.kind=gru --set data.batch_per_worker=6 || return 1
    run gru3 3 --set model.kind=gru --set data.batch_per_worker=2 || return 1
    jq -s -e '.[0].loss > .[-1].loss' "$TMP/gru3/steps.jsonl" >/dev/null || return 1
    build/tests/stcmp "$TMP/gru1/final.safetensors" "$TMP/gru3/final.safetensors" 1e-5 || return 1
    build/clipd-report "$TMP/gru3" >/dev/null
}
check "GRU learns, and 3 workers x 2 == 1 worker x 6" gru

dropout() {
    run dr1 1 --set model.dropout=0.3 --set data.batch_per_worker=6 || return 1
    run dr2 2 --set model.dropout=0.3 --set data.batch_per_worker=3 || return 1
    build/tests/stcmp "$TMP/dr1/final.safetensors" "$TMP/dr2/final.safetensors" 1e-5 || return 1
    run dr0 2 --set data.batch_per_worker=3 || return 1
    weights_differ "$TMP/dr0/final.safetensors" "$TMP/dr2/final.safetensors" 1e-5 # dropout changes training
}
check "model.dropout: masks follow the global stream, so 2 workers == 1 worker" dropout
