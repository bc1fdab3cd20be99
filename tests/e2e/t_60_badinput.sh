# Bad input: one clear line naming the file and line:col or field, exit 2,
# under mpirun as well as with --check.
printf 'run:\n  name: x\nmodel:\n  hidden: many\n' >"$TMP/badtype.yaml"
printf 'model:\n  hiden: 3\n' >"$TMP/badkey.yaml"
printf 'model:\n  layers: 99\n' >"$TMP/badrange.yaml"
printf 'model: [1, 2\n' >"$TMP/badyaml.yaml"
check "--check: wrong type names file:line:col"     expect_exit 2 "badtype.yaml:4:11: model.hidden" build/clipd --check "$TMP/badtype.yaml"
check "--check: unknown key names file:line:col"    expect_exit 2 "badkey.yaml:2:3:.*hiden" build/clipd --check "$TMP/badkey.yaml"
check "--check: out of range names the range"       expect_exit 2 "badrange.yaml:2:11: model.layers.*16" build/clipd --check "$TMP/badrange.yaml"
check "--check: malformed YAML names file:line"     expect_exit 2 "badyaml.yaml:[0-9]*:[0-9]*:" build/clipd --check "$TMP/badyaml.yaml"
check "--check: missing file"                        expect_exit 2 "nope.yaml" build/clipd --check "$TMP/nope.yaml"
check "--check: bad --set names the argument"       expect_exit 2 "set train.lr=fast" build/clipd --check "$TINY" --set train.lr=fast
check "command line: unknown option"                expect_exit 2 "unknown option" build/clipd --frobnicate "$TINY"
check "command line: missing config"                expect_exit 2 "missing CONFIG" build/clipd
check "worker given a config of its own"            expect_exit 2 "unexpected argument" build/clipd-worker "$TINY"
check "mpirun job with a bad config: every rank exits, exit 2" \
    expect_exit 2 "badtype.yaml:4:11: model.hidden" $LAUNCH -n 2 "$TMP/badtype.yaml"
check "mpirun job with a bad --set: exit 2"         expect_exit 2 "model.layers" $LAUNCH -n 2 "$TINY" --set model.layers=0
check "coordinator without workers: exit 2"         expect_exit 2 "no workers" mpirun -np 1 build/clipd "$TINY"
check "unwritable run.dir: exit 2 naming run.dir"   expect_exit 2 "run.dir" $LAUNCH -n 1 "$TINY" --set run.dir=/proc/clipd/x
good_check() {
    build/clipd --check "$TINY" --set model.hidden=24 >"$TMP/eff.yaml" || return 1
    grep -q "hidden: 24" "$TMP/eff.yaml" && build/clipd --check "$TMP/eff.yaml" >/dev/null
}
check "--check prints an effective config that loads again" good_check
# --check checks the data too: a config whose corpus is not downloaded
# (brown-word, zaremba-small) fails naming data.path, the others pass.
all_configs() {
    local f
    for f in configs/*.yaml; do
        # run.dir aside: a `make run` before the tests leaves runs/default, which --check refuses
        if build/clipd --check "$f" --set run.dir="$TMP/cfgchk-run" >/dev/null 2>"$TMP/cfgchk.err"; then continue; fi
        grep -q "data.path: cannot read 'data/" "$TMP/cfgchk.err" || { echo "$f:"; cat "$TMP/cfgchk.err"; return 1; }
    done
}
check "every shipped config passes --check (or names its data not downloaded)" all_configs
check "--help and --version exit 0" bash -c 'build/clipd --help | grep -q usage && build/clipd --version | grep -q clipd && build/clipd-worker --version | grep -q clipd-worker'
check "--help answers before a later bad option or a missing CONFIG (exit 0)" \
    bash -c 'build/clipd --help --frobnicate | grep -q usage && [ "$(build/clipd --version --split q)" = "clipd $(build/clipd --version | cut -d" " -f2)" ]'
check "command line: bad --split, --workers, a value missing (exit 2, named)" bash -c '
    build/clipd --split q x 2>&1 | grep -q "split q: expected test or valid"; [ "${PIPESTATUS[0]}" = 2 ] || exit 1
    build/clipd --workers 0 x 2>&1 | grep -q "workers needs a count"; [ "${PIPESTATUS[0]}" = 2 ] || exit 1
    build/clipd x --set 2>&1 | grep -q "set needs a value"; [ "${PIPESTATUS[0]}" = 2 ]'
# Inside an mpirun job, help, version and --check release the workers
# instead of leaving them waiting in MPI_Init.
# job_prints WANT_FILE CMD...: exit 0, and stdout is WANT_FILE's text exactly
job_prints() {
    local want="$1"; shift
    "$@" >"$TMP/jp.out" 2>"$TMP/jp.err" || { echo "exit $?"; tail -5 "$TMP/jp.err"; return 1; }
    cmp "$want" "$TMP/jp.out" || { echo "stdout differs from $want:"; head -5 "$TMP/jp.out"; return 1; }
}
build/clipd --version >"$TMP/version.txt"
build/clipd --check "$TINY" >"$TMP/check.txt" 2>/dev/null
check "mpirun job with --version ends (exit 0), the version printed once" \
    job_prints "$TMP/version.txt" timeout 120 mpirun -np 1 build/clipd --version : -np 2 build/clipd-worker
check "mpirun job with --check ends (exit 0), the effective config printed once" \
    job_prints "$TMP/check.txt" timeout 120 mpirun -np 1 build/clipd --check "$TINY" : -np 2 build/clipd-worker
check "mpirun job with a bad --check ends (exit 2)" expect_exit 2 "model.layers" timeout 120 mpirun -np 1 build/clipd --check "$TINY" --set model.layers=0 : -np 2 build/clipd-worker
worker_arg_in_job() {
    timeout 120 mpirun -np 1 build/clipd "$TINY" --set run.dir="$TMP/wa" : -np 2 build/clipd-worker "$TINY" 2>"$TMP/wa.err"
    local rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] || { echo "exit $rc"; return 1; } # failed, and did not hang
    grep -qF "clipd-worker: unexpected argument '$TINY' (the config comes from the coordinator)" "$TMP/wa.err" ||
        { head -5 "$TMP/wa.err"; return 1; }
}
check "mpirun job with an argument to the worker fails without hanging, naming the argument" worker_arg_in_job
