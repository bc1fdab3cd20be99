# Elastic resume: a checkpoint resumes on another worker count at the same
# global batch (W x data.batch_per_worker = 12 here). The data order and
# schedule are identical to an uninterrupted run; the float sums follow the
# worker split, so losses and weights agree to float rounding (the 1e-5 of
# t_30_equiv, where W workers are compared with 1), not bit for bit.
EL=(--set train.steps_per_epoch=60 --set checkpoint.every_steps=20 --set checkpoint.keep=100
    --set metrics.listen=off)
ck() { printf '%s/checkpoints/step-%08d.safetensors' "$TMP/$1" "$2"; }

elastic() {
    run el_ref 4 "${EL[@]}" --set data.batch_per_worker=3 || return 1
    # 4 x 3 (sharded) for steps 1-40, 2 x 6 (replicated) for 41-80, 3 x 4 (sharded) for 81-120
    run el 4 "${EL[@]}" --set data.batch_per_worker=3 --set sync.mode=sharded --set train.epochs=1 || return 1
    run el 2 "${EL[@]}" --set data.batch_per_worker=6 --resume "$(ck el 40)" || return 1
    grep -q "written by 4 workers x 3; resuming on 2 x 6" "$TMP/el.err" || { cat "$TMP/el.err"; return 1; }
    run el 3 "${EL[@]}" --set data.batch_per_worker=4 --set sync.mode=sharded --resume "$(ck el 80)" || return 1
    grep -q "written by 2 workers x 6; resuming on 3 x 4" "$TMP/el.err" || { cat "$TMP/el.err"; return 1; }
    near_run "$TMP/el_ref" "$TMP/el"
}
check "elastic resume 4 -> 2 -> 3 workers (sharded, replicated, sharded) == uninterrupted 4, to float rounding" elastic

elastic_refused() {
    [ -s "$(ck el_ref 120)" ] || { echo "no reference run"; return 1; }
    cp -r "$TMP/el_ref" "$TMP/el_bad"
    expect_exit 2 "global batch of 12 streams); this job has 2 x 5" $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/el_bad" \
        "${EL[@]}" --set data.batch_per_worker=5 --resume latest || return 1
    [ "$(grep -c "^clipd:" "$TMP/be.err")" = 1 ] || return 1 # one line says why
    same_run "$TMP/el_ref" "$TMP/el_bad" # nothing in the run changed
}
check "resume with another global batch: exit 2 naming both, run untouched" elastic_refused
