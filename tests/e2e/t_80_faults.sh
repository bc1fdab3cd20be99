# A log that cannot be written (here steps.jsonl is /dev/full): one clear
# error, training finishes with the other logs and the weights intact, and
# the exit code says something went wrong.
log_disk_full() {
    local d="$TMP/full"
    mkdir -p "$d" && ln -sf /dev/full "$d/steps.jsonl"
    run full 2
    local rc=$?
    [ "$rc" != 0 ] || { echo "exit 0 despite lost log lines"; return 1; }
    grep -q "cannot write $d/steps.jsonl: No space left on device" "$d.err" || return 1
    [ "$(grep -c 'cannot write' "$d.err")" = 1 ] || { echo "error not said once"; return 1; }
    jq -s -e 'length == 2' "$d/epochs.jsonl" >/dev/null || return 1
    build/tests/stcmp "$d/final.safetensors" "$d/final.safetensors" 0
}
check "log write failure (disk full): said once, run completes, exit non-zero" log_disk_full
