# A log that is not a regular file (here steps.jsonl a symlink to
# /dev/full, as this test once simulated a full disk) is refused at start:
# exit 2 naming it, nothing written through it. Logs that cannot be written
# mid-run (a real full disk, a tmpfs) are t_98's "log disk full mid-run".
log_not_a_file() {
    local d="$TMP/full"
    mkdir -p "$d" && ln -sf /dev/full "$d/steps.jsonl"
    run full 2
    local rc=$?
    [ "$rc" = 2 ] || { echo "exit $rc, wanted 2"; return 1; }
    grep -q "run.dir: '$d/steps.jsonl' is a symbolic link, not a file clipd wrote: refused" "$d.err" || return 1
    [ -L "$d/steps.jsonl" ] && [ ! -e "$d/epochs.jsonl" ]
}
check "a log planted as a symlink (to /dev/full): exit 2 naming it, nothing written" log_not_a_file
