#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: build the libFuzzer harnesses into build/fuzz/
# and run each for SECONDS (default 10) on a copy of its seed corpus in
# tests/fuzz/corpus/<harness>/ (the checked-in corpus is never modified).
# Prints libFuzzer's final stats line per harness; exits non-zero if any
# harness fails to build or finds a crash, leak or timeout (the reproducer is
# kept as build/fuzz/artifacts/<harness>-crash-*, its log beside it).
# Environment: CLANG (default clang), FUZZ_HARNESSES (default: all).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
if ! [[ $secs =~ ^[0-9]+$ ]] || (( secs < 1 )); then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
cc=${CLANG:-clang}
out=build/fuzz
mkdir -p "$out/artifacts"
mpi_cflags=$(mpicc --showme:compile 2>/dev/null || true)
cflags=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
        -g -O1 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -I.)
# shellcheck disable=SC2206
cflags+=($mpi_cflags)

declare -A srcs=(
    [fuzz_cfg]="common/cfg.c common/events.c common/fsutil.c common/hash.c common/utf8.c"
    [fuzz_ckpt]="common/ckpt.c common/ckdir.c common/ckstate.c common/cfg.c common/detstate.c common/events.c worker/detect.c common/hash.c common/utf8.c common/fsutil.c common/log.c"
    [fuzz_text]="common/text.c common/data.c common/cfg.c common/events.c common/rng.c common/fsutil.c common/hash.c common/utf8.c"
    [fuzz_report]="$(ls daemon/report/*.c | grep -v /main.c) daemon/stats.c daemon/records.c common/cfg.c common/events.c common/fsutil.c common/hash.c common/utf8.c"
    [fuzz_proto]="$(echo common/*.c) daemon/metrics.c daemon/records.c daemon/resume.c daemon/runlog.c daemon/stats.c"
    [fuzz_metrics]="daemon/metrics.c common/cfg.c common/events.c common/log.c common/fsutil.c common/hash.c common/utf8.c"
)
declare -A extra=([fuzz_proto]='-DCLIPD_VERSION="fuzz"')
declare -A libs=(
    [fuzz_cfg]="-lyaml -lm"
    [fuzz_ckpt]="-ljansson -lyaml -lm"
    [fuzz_text]="-lyaml -lm"
    [fuzz_report]="-lyaml -ljansson -lm"
    [fuzz_proto]="-Wl,--wrap=log_write -lmicrohttpd -lyaml -ljansson -lm -pthread $(mpicc --showme:link)"
    [fuzz_metrics]="-lmicrohttpd -lyaml -lm -pthread"
)
harnesses=(${FUZZ_HARNESSES:-fuzz_cfg fuzz_ckpt fuzz_text fuzz_report fuzz_proto fuzz_metrics})

for h in "${harnesses[@]}"; do
    # Rebuilt when any source or header of the project's C parts, or this script, is newer.
    if [[ -x $out/$h ]] && [[ -z $(find common daemon worker tests/fuzz -newer "$out/$h" \
            \( -name '*.[ch]' -o -name run.sh \) -print -quit) ]]; then
        echo "== $h is up to date"
        continue
    fi
    echo "== build $h"
    # shellcheck disable=SC2086
    "$cc" "${cflags[@]}" ${extra[$h]:-} -o "$out/$h" "tests/fuzz/$h.c" ${srcs[$h]} ${libs[$h]}
done

# Seeds made from the project's own files and writer rather than committed copies.
"$cc" -std=c11 -D_POSIX_C_SOURCE=200809L -I. -o "$out/mkseeds" tests/fuzz/mkseeds.c \
    common/ckpt.c common/ckdir.c common/hash.c common/utf8.c common/fsutil.c common/log.c common/proto.c common/cfg.c common/events.c worker/detect.c common/detstate.c -lyaml -ljansson -lm
seed_corpus() { # HARNESS DIR
    case "$1" in
        fuzz_cfg) cp configs/*.yaml tests/e2e/tiny.yaml "$2/" ;;
        fuzz_ckpt) "$out/mkseeds" ckpt "$2" ;;
        fuzz_proto) "$out/mkseeds" proto "$2" ;;
        fuzz_report) # steps, events, epochs, tensors, config.yaml joined by NUL bytes, as the harness splits them
            local r=tests/data/report/run
            { cat "$r/steps.jsonl"; printf '\0'; cat "$r/events.jsonl"; printf '\0'
              cat "$r/epochs.jsonl"; printf '\0'; cat "$r/tensors.jsonl"; printf '\0'
              cat "$r/config.yaml"; } >"$2/run.seed"
            cp "$r/steps.jsonl" "$2/steps-only.seed" ;;
    esac
}

work=$(mktemp -d /tmp/clipd-fuzz-corpus-XXXXXX)
trap 'rm -rf -- "$work"' EXIT
failed=()
for h in "${harnesses[@]}"; do
    mkdir -p "$work/$h"
    if [[ -d tests/fuzz/corpus/$h ]]; then cp -R tests/fuzz/corpus/"$h"/. "$work/$h/"; fi
    seed_corpus "$h" "$work/$h"
    log=$out/artifacts/$h.log
    echo "== run $h for ${secs}s"
    rc=0
    dict=()
    if [[ -f tests/fuzz/$h.dict ]]; then dict=(-dict="tests/fuzz/$h.dict"); fi
    "$out/$h" "${dict[@]}" -seed=1 -max_len=65536 -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$h-" "$work/$h" >"$log" 2>&1 || rc=$?
    runs=$(grep -Eo '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    if (( rc != 0 )); then
        failed+=("$h")
        echo "$h: FAILED (exit $rc); log $log"
        grep -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|Test unit written to' "$log" | head -5 || true
    else
        echo "$h: ${stats:-no stats line}"
        echo "$h: ${runs:-?}"
    fi
done
if (( ${#failed[@]} )); then
    echo "fuzz: crashes in: ${failed[*]} (reproducers in $out/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all ${#harnesses[@]} harnesses ran ${secs}s each without a crash"
