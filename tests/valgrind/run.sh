#!/usr/bin/env bash
# tests/valgrind/run.sh [BIN_DIR]: one real mpirun job, the coordinator and
# both workers under valgrind memcheck (leaks, invalid accesses, use of
# uninitialised values: what ASan does not see): 2 epochs of 30 steps with
# checkpoints, a NaN step skipped, a gradient spike rolled back, metrics
# served. Suppressions: Open MPI's own file and tests/valgrind/openmpi.supp
# (Open MPI's libraries only). Passes when the job exits 0 and every
# process's log says "ERROR SUMMARY: 0 errors"; prints those lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build}
command -v valgrind >/dev/null || { echo "valgrind: not installed (apt-get install valgrind)" >&2; exit 1; }
source tests/lib.sh # mpirun's environment, make_tmp
make_tmp valgrind
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/log"
supp=()
for f in /usr/share/openmpi/openmpi-valgrind.supp tests/valgrind/openmpi.supp; do
    [ -f "$f" ] && supp+=(--suppressions="$f")
done
vg=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --num-callers=40 --track-origins=yes "${supp[@]}"
    --log-file="$TMP/log/vg.%p")
t0=$(date +%s)
timeout 600 mpirun -np 1 "${vg[@]}" "$bin/clipd" tests/e2e/tiny.yaml --set run.dir="$TMP/run" \
    --set train.steps_per_epoch=30 --set checkpoint.every_steps=10 --set divergence.window=10 \
    --set divergence.warmup=10 --set debug.nan_step=5 --set debug.spike_step=25 \
    --set divergence.action=rollback \
    : -np 2 "${vg[@]}" "$bin/clipd-worker" >"$TMP/out" 2>"$TMP/err"
rc=$?
echo "valgrind job: exit $rc in $(( $(date +%s) - t0 )) s"
ok=1
n=0
for f in "$TMP"/log/vg.*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    grep -h 'ERROR SUMMARY' "$f"
    grep -q 'ERROR SUMMARY: 0 errors' "$f" || { ok=0; grep -v '^==[0-9]*== *$' "$f" | sed -n '/HEAP SUMMARY/q;p' | tail -n +8 | head -60; }
done
[ "$n" = 3 ] || { echo "valgrind: $n process logs, wanted 3"; ok=0; }
[ "$rc" = 0 ] || { echo "valgrind: the job exited $rc"; tail -5 "$TMP/err"; ok=0; }
grep -q "non-finite steps 1, rollbacks 1" "$TMP/out" || { echo "valgrind: the job did not skip and roll back"; tail -3 "$TMP/out"; ok=0; }
[ "$ok" = 1 ] && echo "valgrind: 0 errors in the coordinator and 2 workers" && exit 0
exit 1
