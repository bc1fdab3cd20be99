# AdamW and gradient accumulation end to end.
adamw() {
    run aw_adam 2 --set train.optimizer=adam || return 1
    run aw_0 2 --set train.optimizer=adamw --set train.weight_decay=0 || return 1
    run aw_1 2 --set train.optimizer=adamw --set train.weight_decay=0.5 || return 1
    build/tests/stcmp "$TMP/aw_adam/final.safetensors" "$TMP/aw_0/final.safetensors" 0 || return 1 # no decay: Adam exactly
    weights_differ "$TMP/aw_adam/final.safetensors" "$TMP/aw_1/final.safetensors" 1e-5 # decay changes the weights
}
check "adamw without weight decay is Adam bit for bit; with it the weights differ" adamw

accumulate() {
    run acc1 1 --set data.batch_per_worker=6 --set train.accumulate=2 --set train.optimizer=sgd --set train.momentum=0.5 || return 1
    run acc2 2 --set data.batch_per_worker=3 --set train.accumulate=2 --set train.optimizer=sgd --set train.momentum=0.5 || return 1
    jq -s -e 'all(.[]; .tokens == 96) and length == 30' "$TMP/acc2/steps.jsonl" >/dev/null || return 1
    # clipped once on the accumulated gradient: the TF formula holds on the logged norm
    jq -s -e 'any(.[]; .clipped) and all(.[]; (.clipped == (.grad_norm > 0.15)) and
        ((.clip_coef - (0.15 / ([.grad_norm, 0.15] | max))) | fabs) < 1e-12)' "$TMP/acc2/steps.jsonl" >/dev/null || return 1
    build/tests/stcmp "$TMP/acc1/final.safetensors" "$TMP/acc2/final.safetensors" 1e-5 || return 1
    run acc0 2 --set data.batch_per_worker=3 --set train.optimizer=sgd --set train.momentum=0.5 || return 1
    weights_differ "$TMP/acc2/final.safetensors" "$TMP/acc0/final.safetensors" 1e-5 # accumulating changes the step
}
check "train.accumulate=2: 2 workers == 1 worker at the same global batch, clip once on the sum" accumulate
