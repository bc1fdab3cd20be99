# Hostile inputs (issue 14): special files as config or data, --check doing
# every check a launch does, symlinks planted in the run dir, private data,
# crafted checkpoints and resumes that do not fit. Every case: exit 2, one
# line naming the input, and nothing in the run dir changed.
HT="$TMP/hostile"
mkdir -p "$HT"

# A FIFO nobody writes to: opening it for reading without O_NONBLOCK blocks
# forever. `timeout` turns a hang into exit 124, which fails the check.
mkfifo "$HT/fifo.yaml" "$HT/fifo.txt"
check "--check on a FIFO config: exit 2, not a hang" \
    expect_exit 2 "fifo.yaml: not a regular file" timeout 20 build/clipd --check "$HT/fifo.yaml"
check "--check on /dev/null: the defaults (an empty config)" \
    bash -c 'build/clipd --check /dev/null | grep -q "^  listen:"'
check "a FIFO as data.path: the launch exits 2, not a hang" \
    expect_exit 2 "data.path: cannot read '$HT/fifo.txt': not a regular file" \
    timeout 60 deploy/clipd-launch -n 1 "$TINY" --set run.dir="$HT/fifo_run" --set metrics.listen=off \
    --set data.source=text --set data.path="$HT/fifo.txt" --set model.vocab=256
