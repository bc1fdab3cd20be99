#!/usr/bin/env bash
# bench.sh (make bench): speed through the real training path (mpirun,
# coordinator + workers) on three fixed workloads, with every comparison a
# ratio of runs made back to back in this same run (machines are shared and
# noisy; absolute figures are printed for context):
#   W1 configs/bench-charlstm.yaml  byte LSTM 2x512, unroll 64, batch 32, Adam
#   W2 configs/bench-wordlstm.yaml  Zaremba small: V 10000, 2x200, unroll 20, SGD
#   W3 configs/bench-adding.yaml    tanh RNN 100, T 100, batch 20, SGD
# Per workload: median step time of the slowest worker (steps.jsonl step_ms,
# warm-up steps dropped) and its spread (p10..p90), tokens/s, steps/s,
# GFLOP/s from the exact count of the model's matrix products
# (model_flops, worker/model.h), and that as a fraction of this machine's
# cblas_sgemm peak with as many threads as the job uses in all (2), measured
# here by build/tests/bench_tool. Ratios:
#   clip_overhead    clip global_norm vs none, median step time - 1 (best
#                    rounds); and over the interleaved round pairs, the mean
#                    and standard error of that ratio, and of the update
#                    phase's difference (the workers' own timers) as a
#                    fraction of the step: the clip's own cost, resolved
#                    far finer than whole-step medians on a noisy machine
#   dp_2x1_vs_1x2    W1: 2 workers x 1 BLAS thread vs 1 worker x 2 threads
#                    at the same global batch, tokens/s ratio
#   sharded_vs_replicated   W1 and W2: step time ratio (< 1: sharded faster),
#                    against replicated as messages (sharded sends messages)
#   sparse_embedding_vs_dense  W2: sync.sparse_embedding true vs false (as
#                    messages: the sparse sync is), step
#                    time ratio, and the bytes a step it saves (worker log)
#   overlap_vs_none  W1, as messages (sync.shared_memory off): buckets
#                    during backward vs one reduction after it
#   shared_memory_vs_messages  W1, W2: the default on one node (gradients
#                    added through a shared window) vs messages (buckets)
#   packed_vs_blas   W1, W2: the time loops' products with the recurrent
#                    weights packed (worker.packed_recurrent auto, worker/
#                    rgemm.c) vs OpenBLAS's (off), step time ratio
#   avx512           W1, where the CPU has AVX-512: the same two runs with
#                    OPENBLAS_CORETYPE=Cooperlake (BENCH_AVX512_CORE), whose
#                    own sgemm peak is measured and W1's fraction of it
#   rss_vs_minimum   W1: peak RSS of the largest worker / the analytic minimum
#                    (parameters, gradients, optimizer state, activations)
#   step breakdown   per workload, from each worker's own timers (worker/
#                    steptime.h): the mean of the steps around its median
#                    step, split into compute (forward+backward), sync wait
#                    (the gradient collective after backward), stats (the
#                    statistics collective), update (detector, clip,
#                    optimizer), record (handing the step record to MPI),
#                    other; and the step time over forward+backward alone
#                    (bench_tool step in NP processes at once, each round
#                    right after the workload's runs: best rounds, and
#                    round by round mean +- standard error)
# Each variant runs BENCH_ROUNDS times (default 3), interleaved, best median
# kept. Writes build/bench.json. BENCH_ONLY="W2 W3" runs only those
# workloads (and their variants), without the repro and cluster parts.
# The workloads run with the default sync.reproducible: auto, so W1, W2 and W3
# are reproducible (1 thread, replicated); sharded and the 1 x 2 run are not.
# Then sync.reproducible (repro_bench; alone: BENCH_ONLY=repro): W1, W2, W3
# with 2 workers, step time with it on / off (repro_overhead, - 1), with
# data.micro_batch 0 (one micro-batch of B streams per worker) and B/4 (four;
# what a replay on a quarter of the workers needs; W1 8, W2 and W3 5: these
# run one by one), and at 48 streams per worker, off and with micro_batch 12
# (four micro-batches stacked into one batch: the fast path where OpenBLAS's
# rows do not depend on the row count, multiples of 12 on Haswell-class
# kernels; the worker's log line says which path ran), interleaved rounds.
# Added to build/bench.json as "repro".
# Then the adaptive softmax (softmax_bench; alone: BENCH_ONLY=softmax; data
# from deploy/get-brown.sh, fetched into data/brown if missing):
# configs/brown-word.yaml (V 14115, 2x256 LSTM) on 2 workers with
# model.softmax full, adaptive (cutoffs SOFTMAX_CUTOFFS, default 1000,5000),
# adaptive with sync.sparse_embedding, and that with train.embedding_update
# lazy (Adam on the synced rows only: other numbers), 40 steps each,
# interleaved rounds, all with sync.reproducible false (which the sparse
# sync cannot have; "auto" would turn it on for full and adaptive alone):
# tokens/s and its ratio to full (softmax_speedup,
# _sparse, _sparse_lazy), and each best round's step breakdown; then the
# same wall time: full for SOFTMAX_STEPS steps (default 150), the fastest
# adaptive variant (named in the line and as wall.variant) for as many steps
# as fit the same time at the measured rates, each followed by the test
# split (the run's end evaluation): test perplexity and the training seconds
# of each. Added to build/bench.json as "softmax".
# Then across nodes (cluster_bench; alone: BENCH_ONLY=cluster): 3 network
# namespaces (tests/e2e/netns.sh), coordinator on node 0, one worker (1 BLAS
# thread) on each of nodes 1 and 2, links at 1 Gbit/s (+100 us delay where
# the kernel has sch_netem). W1 and W2: step time with buckets overlapped vs
# one reduction (sync.bucket_kb 0), and the scaling efficiency of 2 nodes vs
# 1 (tokens/s of 2 workers / 2 x tokens/s of 1 worker on one node, same batch
# per worker); W2 also with sync.sparse_embedding (the embedding's rows only).
# Per variant the bound the link sets: 2 workers' allreduce moves the whole
# gradient each way (half reduce-scatter, half all-gather), bytes / 125e6 B/s
# of link time a step, hence efficiency at most T1 / max(T1, link) with
# perfect overlap and T1 / (T1 + link) with none; and the slowest worker's
# breakdown, with how many buckets landed (reduced, all-gathered) while
# backward ran. Added to build/bench.json as "cluster".
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
TMP="$(mktemp -d /tmp/clipd-bench.XXXXXX)"
ROUNDS=${BENCH_ROUNDS:-3}
TOOL=build/tests/bench_tool
NP=2 # workers (and cores) of every run but the 1x2 one

declare -A CFG=([W1]=configs/bench-charlstm.yaml [W2]=configs/bench-wordlstm.yaml [W3]=configs/bench-adding.yaml)
declare -A STEPS=([W1]=40 [W2]=120 [W3]=1500)
declare -A WARM=([W1]=5 [W2]=10 [W3]=100)

run() { # WL NAME W [--set ...]: one epoch of the workload into $TMP/NAME
    local wl="$1" name="$2" w="$3"; shift 3
    deploy/clipd-launch -n "$w" "${CFG[$wl]}" --set run.dir="$TMP/$name" --set metrics.listen=off \
        --set train.steps_per_epoch="${STEPS[$wl]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" ||
        { echo "bench run $name failed:"; tail -5 "$TMP/$name.err"; exit 1; }
}
pct() { # WL NAME P: the P quantile of step_ms after warm-up
    jq -s --argjson w "${WARM[$1]}" --argjson p "$3" \
        '.[$w:] | map(.step_ms) | sort | .[(length - 1) * $p | floor]' "$TMP/$2/steps.jsonl"
}
best() { # WL VARIANT: the round with the lowest median, as "NAME MEDIAN"
    local wl="$1" v="$2" i m out=""
    for i in $(seq "$ROUNDS"); do
        m=$(pct "$wl" "${wl}_${v}_$i" 0.5)
        out+="${wl}_${v}_$i $m"$'\n'
    done
    printf '%s' "$out" | sort -g -k2 | head -1
}
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }
mean_se() { # one number a line -> "mean standard-error count"
    awk '{ x[NR] = $1; s += $1 } END { m = s / NR; for (i = 1; i <= NR; i++) v += (x[i] - m) ^ 2
        se = NR > 1 ? sqrt(v / (NR - 1) / NR) : 0; printf "%.6g %.6g %d\n", m, se, NR }'
}
update_ms() { # NAME: the update phase (detector, clip, optimizer) of run NAME, mean over its workers (ms)
    breakdown "$1" | awk '{ s += $17; n++ } END { printf "%.6g", n ? s / n : 0 }'
}
clip_resolution() { # WL: over the interleaved round pairs, clip vs none: step medians' ratio - 1
    # and the update phase's difference as a fraction of the step, each "mean se n"
    local wl="$1" i c n
    for i in $(seq "$ROUNDS"); do
        c=$(pct "$wl" "${wl}_clip_$i" 0.5); n=$(pct "$wl" "${wl}_none_$i" 0.5)
        calc "$c / $n - 1"; echo
    done | mean_se
    for i in $(seq "$ROUNDS"); do
        c=$(pct "$wl" "${wl}_clip_$i" 0.5)
        calc "($(update_ms "${wl}_clip_$i") - $(update_ms "${wl}_none_$i")) / $c"; echo
    done | mean_se
}
bench_json_put() { # KEY JSON: build/bench.json's KEY set to JSON, the rest kept
    mkdir -p build
    [ -s build/bench.json ] || echo '{}' >build/bench.json
    jq --argjson v "$2" ".$1 = \$v" build/bench.json >build/bench.json.tmp && mv build/bench.json.tmp build/bench.json
}
packed_says() { grep -o 'recurrent products [^,]*' "$TMP/$1.err" | head -1 | sed 's/recurrent products //'; } # NAME: worker 0's word on them
rss_kib() { grep -o 'peak RSS [0-9]*' "$TMP/$1.err" | awk '$3 > m { m = $3 } END { print m + 0 }'; }
breakdown() { # NAME: each worker's step breakdown line of run NAME, as "worker[r] step ... ms = ..."
    grep -o 'worker\[[0-9]*\] info: step breakdown.*' "$TMP/$1.err" | sed 's/ info: step breakdown ([^)]*)://'
}
slowest_breakdown() { # NAME: the slowest worker's breakdown line of run NAME
    breakdown "$1" | awk '{ s = $3 + 0; if (s > m) { m = s; l = $0 } } END { print l }'
}
breakdown_json() { # NAME: the slowest worker's breakdown as a JSON object
    slowest_breakdown "$1" | sed 's/;.*//' | # (the buckets that landed during backward follow a ';')
        awk '{ printf "{\"step_ms\":%s,\"compute_ms\":%s,\"sync_wait_ms\":%s,\"stats_ms\":%s,\"update_ms\":%s,\"record_ms\":%s,\"other_ms\":%s}", $3, $7, $11, $14, $17, $20, $23 }'
}

# shellcheck source=tests/e2e/netns.sh
source tests/e2e/netns.sh
AT_EXIT=()
trap 'for c in ${AT_EXIT[@]+"${AT_EXIT[@]}"}; do $c; done; rm -rf "$TMP"' EXIT
cl_bench_run() { # WL NAME W HOSTFILE [--set ...]: one epoch of the workload on the cluster
    local wl="$1" name="$2" w="$3" hf="$4"; shift 4
    ns_launch "$w" "$hf" "${CFG[$wl]}" --set run.dir="$TMP/$name" --set metrics.listen=off \
        --set train.steps_per_epoch="${STEPS[$wl]}" --set worker.threads=1 "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" ||
        { echo "bench run $name failed:"; tail -5 "$TMP/$name.err"; exit 1; }
}
# cl_bound BYTES T1: the link's share of a step, "LINK_MS PERFECT NONE": BYTES
# each way at 1 Gbit/s (125e6 B/s), and the scaling efficiency it allows
# with perfect overlap (T1 / max(T1, link)) and with none (T1 / (T1 + link))
cl_bound() {
    awk -v b="$1" -v t="$2" 'BEGIN { l = b / 125e6 * 1000; printf "%.6g %.6g %.6g\n", l, t / (l > t ? l : t), t / (t + l) }'
}
cluster_bench() {
    local delay=100us wl i one two ov lone eff js="{" params bytes b sname sp spb
    ns_need && ns_up 3 || exit 1
    ns_hostfile "$TMP/hf2" 1 1 1
    ns_hostfile "$TMP/hf1" 1 1
    for k in 1 2; do
        ns_shape "$k" 1gbit "$delay" >/dev/null 2>&1 || {
            [ -z "$delay" ] || echo "no sch_netem in this kernel: links at 1 Gbit/s (tbf) without the 100 us delay"
            delay=""; ns_shape "$k" 1gbit || exit 1; }
    done
    for i in $(seq "$ROUNDS"); do
        for wl in W1 W2; do
            cl_bench_run "$wl" "${wl}_cl_overlap_$i" 2 "$TMP/hf2"
            cl_bench_run "$wl" "${wl}_cl_one_$i" 2 "$TMP/hf2" --set sync.bucket_kb=0
            cl_bench_run "$wl" "${wl}_cl_lone_$i" 1 "$TMP/hf1"
        done
        cl_bench_run W2 "W2_cl_sparse_$i" 2 "$TMP/hf2" --set sync.sparse_embedding=true
    done
    for wl in W1 W2; do
        read -r name two < <(best "$wl" cl_overlap)
        read -r oname one < <(best "$wl" cl_one)
        read -r _ lone < <(best "$wl" cl_lone)
        ov=$(calc "$two / $one"); eff=$(calc "$lone / $two") # same tokens per worker and step
        # 2 workers: a perfect allreduce moves the whole gradient each way
        # (reduce-scatter and all-gather, half each)
        params=$(jq .params <<<"$($TOOL model "${CFG[$wl]}" 2)"); bytes=$((params * 4))
        read -r link bp bn < <(cl_bound "$bytes" "$lone")
        printf '%s across 2 nodes at 1 Gbit/s%s: step %.2f ms with buckets overlapped, %.2f ms with one reduction: ratio %.3f; 1 worker on 1 node %.2f ms: scaling efficiency 2 nodes vs 1 %.3f\n' \
            "$wl" "${delay:+, $delay}" "$two" "$one" "$ov" "$lone" "$eff"
        printf '   bound: %.1f MB of gradient each way a step = %.1f ms of link; efficiency at most %.3f with perfect overlap, %.3f with none\n' \
            "$(calc "$bytes / 1e6")" "$link" "$bp" "$bn"
        printf '   breakdown (ms), overlapped: %s\n   one reduction: %s\n' "$(slowest_breakdown "$name")" "$(slowest_breakdown "$oname")"
        [ "$wl" = W1 ] || js+=","
        js+="\"$wl\":{\"step_ms_overlap\":$two,\"step_ms_one_reduction\":$one,\"overlap_vs_none\":$ov,\"step_ms_1node\":$lone,\"scaling_efficiency_2v1\":$eff"
        js+=",\"grad_bytes_each_way\":$bytes,\"link_ms\":$link,\"efficiency_bound_overlap\":$bp,\"efficiency_bound_none\":$bn"
        js+=",\"step_breakdown_overlap\":$(breakdown_json "$name"),\"step_breakdown_one\":$(breakdown_json "$oname")"
        if [ "$wl" = W2 ]; then # the embedding's rows only: its dense bytes out, the rows' in
            read -r sname sp < <(best W2 cl_sparse)
            b=$(grep -o 'received [0-9]* bytes a step for embed.weight instead of [0-9]*' "$TMP/$sname.err" | head -1)
            spb=$(awk -v p="$bytes" '{ printf "%.0f", p - $10 + $2 }' <<<"$b")
            read -r link bp bn < <(cl_bound "$spb" "$lone")
            printf '   sync.sparse_embedding: step %.2f ms, scaling efficiency %.3f; %.1f MB each way = %.1f ms of link: at most %.3f with perfect overlap, %.3f with none\n   breakdown (ms): %s\n' \
                "$sp" "$(calc "$lone / $sp")" "$(calc "$spb / 1e6")" "$link" "$bp" "$bn" "$(slowest_breakdown "$sname")"
            js+=",\"sparse\":{\"step_ms\":$sp,\"scaling_efficiency_2v1\":$(calc "$lone / $sp"),\"bytes_each_way\":$spb,\"link_ms\":$link,\"efficiency_bound_overlap\":$bp,\"efficiency_bound_none\":$bn,\"step_breakdown\":$(breakdown_json "$sname")}"
        fi
        js+="}"
    done
    js+=",\"link_rate\":\"1gbit\",\"link_delay_us\":$([ -n "$delay" ] && echo 100 || echo 0),\"nodes\":2,\"rounds\":$ROUNDS}"
    bench_json_put cluster "$js"
    ns_down
    echo "wrote build/bench.json (cluster)"
}
if [ "${BENCH_ONLY:-}" = cluster ]; then cluster_bench; exit 0; fi

SMCFG=configs/brown-word.yaml
WARM[SM]=5
softmax_run() { # NAME STEPS DATA [--set ...]: one epoch of brown-word into $TMP/NAME
    local name="$1" steps="$2" data="$3"; shift 3
    deploy/clipd-launch -n "$NP" "$SMCFG" --set run.dir="$TMP/$name" --set metrics.listen=off \
        --set train.epochs=1 --set train.steps_per_epoch="$steps" --set data.path="$data" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" || { echo "bench run $name failed:"; tail -5 "$TMP/$name.err"; exit 1; }
}
softmax_bench() {
    local i full ada sp lz tok fsteps asteps fsec asec fppl appl js v best_ms name n
    local nt="$TMP/brown-notest" AD=(--set model.softmax=adaptive --set model.softmax_cutoffs="${SOFTMAX_CUTOFFS:-1000,5000}")
    local SP=(--set sync.sparse_embedding=true) LZ=(--set sync.sparse_embedding=true --set train.embedding_update=lazy)
    local R=(--set data.valid_batches=0 --set sync.reproducible=false) # like for like: the sparse sync has none
    fsteps=${SOFTMAX_STEPS:-150}
    [ -s data/brown/test.txt ] || deploy/get-brown.sh data/brown ||
        { echo "softmax bench: no data/brown and deploy/get-brown.sh failed"; exit 1; }
    mkdir -p "$nt" && ln -sf "$PWD/data/brown/train.txt" "$PWD/data/brown/valid.txt" "$nt/" # no test.txt: no end evaluation
    for i in $(seq "$ROUNDS"); do
        softmax_run "SM_full_$i" 40 "$nt" "${R[@]}"
        softmax_run "SM_ada_$i" 40 "$nt" "${R[@]}" "${AD[@]}"
        softmax_run "SM_adasp_$i" 40 "$nt" "${R[@]}" "${AD[@]}" "${SP[@]}"
        softmax_run "SM_adalz_$i" 40 "$nt" "${R[@]}" "${AD[@]}" "${LZ[@]}"
    done
    read -r _ full < <(best SM full)
    read -r _ ada < <(best SM ada)
    read -r _ sp < <(best SM adasp)
    read -r _ lz < <(best SM adalz)
    tok=$(jq -s '.[0].tokens * 1000' "$TMP/SM_full_1/steps.jsonl") # tokens per step, per s at 1 ms
    printf 'brown-word, 2 workers: softmax full %.1f ms/step (%.0f tokens/s), adaptive (cutoffs %s) %.1f ms (%.0f tokens/s): %.2fx; with sync.sparse_embedding %.1f ms (%.0f tokens/s): %.2fx; and train.embedding_update lazy %.1f ms (%.0f tokens/s): %.2fx\n' \
        "$full" "$(calc "$tok / $full")" "${SOFTMAX_CUTOFFS:-1000,5000}" "$ada" "$(calc "$tok / $ada")" \
        "$(calc "$full / $ada")" "$sp" "$(calc "$tok / $sp")" "$(calc "$full / $sp")" \
        "$lz" "$(calc "$tok / $lz")" "$(calc "$full / $lz")"
    for v in full ada adasp adalz; do # where the best round's median step goes, by the workers' own timers
        read -r name _ < <(best SM "$v")
        grep -o 'worker\[[0-9]*\] info: step breakdown.*' "$TMP/$name.err" | sed "s/ info: step breakdown ([^)]*)://; s/^/  $v /"
    done
    # The same wall time: full for fsteps steps, the fastest adaptive variant
    # for the steps that fit the same time (ties go to the dense update).
    read -r v best_ms < <(printf 'ada %s\nadasp %s\nadalz %s\n' "$ada" "$sp" "$lz" | sort -s -g -k2 | head -1)
    local -A VNAME=([ada]="adaptive" [adasp]="adaptive + sparse embedding" [adalz]="adaptive + sparse embedding + lazy")
    local -a VARGS=("${AD[@]}")
    [ "$v" = adasp ] && VARGS+=("${SP[@]}")
    [ "$v" = adalz ] && VARGS+=("${LZ[@]}")
    asteps=$(awk -v f="$fsteps" -v a="$full" -v b="$best_ms" 'BEGIN { n = int(f * a / b); print (n > 1305 ? 1305 : n) }')
    softmax_run SM_wall_full "$fsteps" data/brown "${R[@]}" # seconds: training only
    softmax_run SM_wall_ada "$asteps" data/brown "${R[@]}" "${VARGS[@]}"
    fsec=$(jq -s '.[-1].seconds' "$TMP/SM_wall_full/epochs.jsonl"); asec=$(jq -s '.[-1].seconds' "$TMP/SM_wall_ada/epochs.jsonl")
    fppl=$(jq -s 'map(select(.at == "end"))[0].ppl' "$TMP/SM_wall_full/eval.jsonl")
    appl=$(jq -s 'map(select(.at == "end"))[0].ppl' "$TMP/SM_wall_ada/eval.jsonl")
    n=${VNAME[$v]}
    printf 'same wall time: full %d steps in %.1f s: test perplexity %.1f; %s (the fastest) %d steps in %.1f s: test perplexity %.1f (ratio %.3f)\n' \
        "$fsteps" "$fsec" "$fppl" "$n" "$asteps" "$asec" "$appl" "$(calc "$appl / $fppl")"
    js="{\"config\":\"$SMCFG\",\"cutoffs\":\"${SOFTMAX_CUTOFFS:-1000,5000}\",\"step_ms_full\":$full,\"step_ms_adaptive\":$ada,\"step_ms_adaptive_sparse\":$sp,\"step_ms_adaptive_sparse_lazy\":$lz"
    js+=",\"tokens_per_s_full\":$(calc "$tok / $full"),\"tokens_per_s_adaptive\":$(calc "$tok / $ada"),\"tokens_per_s_adaptive_sparse\":$(calc "$tok / $sp"),\"tokens_per_s_adaptive_sparse_lazy\":$(calc "$tok / $lz")"
    js+=",\"softmax_speedup\":$(calc "$full / $ada"),\"softmax_speedup_sparse\":$(calc "$full / $sp"),\"softmax_speedup_sparse_lazy\":$(calc "$full / $lz")"
    js+=",\"wall\":{\"variant\":\"$n\",\"steps_full\":$fsteps,\"seconds_full\":$fsec,\"test_ppl_full\":$fppl,\"steps_adaptive\":$asteps,\"seconds_adaptive\":$asec,\"test_ppl_adaptive\":$appl},\"rounds\":$ROUNDS}"
    bench_json_put softmax "$js"
    echo "wrote build/bench.json (softmax)"
}
if [ "${BENCH_ONLY:-}" = softmax ]; then softmax_bench; exit 0; fi
WLS=${BENCH_ONLY:-W1 W2 W3}
[ "${BENCH_ONLY:-}" = repro ] || for wl in $WLS; do [ -n "${CFG[$wl]:-}" ] || { echo "BENCH_ONLY: unknown workload '$wl' (W1, W2, W3, repro, softmax or cluster)"; exit 2; }; done
has() { [[ " $WLS " == *" $1 "* ]]; }
declare -A BATCH=([W1]=32 [W2]=20 [W3]=20) # data.batch_per_worker of each workload
repro_bench() {
    local wl i off on q js="{"
    for i in $(seq "$ROUNDS"); do
        for wl in W1 W2 W3; do
            run "$wl" "${wl}_roff_$i" "$NP" --set sync.reproducible=false
            run "$wl" "${wl}_ron_$i" "$NP" --set sync.reproducible=true
            run "$wl" "${wl}_rq_$i" "$NP" --set sync.reproducible=true --set data.micro_batch=$((BATCH[$wl] / 4))
            run "$wl" "${wl}_r48off_$i" "$NP" --set data.batch_per_worker=48 --set sync.reproducible=false
            run "$wl" "${wl}_r48on_$i" "$NP" --set data.batch_per_worker=48 --set sync.reproducible=true \
                --set data.micro_batch=12
        done
    done
    for wl in W1 W2 W3; do
        read -r _ off < <(best "$wl" roff)
        read -r _ on < <(best "$wl" ron)
        read -r _ q < <(best "$wl" rq)
        read -r _ off48 < <(best "$wl" r48off)
        read -r name48 on48 < <(best "$wl" r48on)
        path=$(grep -q 'stacked into one batch' "$TMP/$name48.err" && echo stacked || echo "one by one")
        printf '%s sync.reproducible: step %.2f ms off, %.2f ms on (micro_batch B): repro_overhead %+.2f%%; %.2f ms with micro_batch B/4: %+.2f%%; batch 48: %.2f ms off, %.2f ms with micro_batch 12 (%s): %+.2f%%\n' \
            "$wl" "$off" "$on" "$(calc "($on / $off - 1) * 100")" "$q" "$(calc "($q / $off - 1) * 100")" \
            "$off48" "$on48" "$path" "$(calc "($on48 / $off48 - 1) * 100")"
        [ "$wl" = W1 ] || js+=","
        js+="\"$wl\":{\"step_ms_off\":$off,\"step_ms_on\":$on,\"repro_overhead\":$(calc "$on / $off - 1"),\"step_ms_on_micro_quarter\":$q,\"repro_overhead_micro_quarter\":$(calc "$q / $off - 1")"
        js+=",\"step_ms_off_b48\":$off48,\"step_ms_on_b48_micro12\":$on48,\"repro_overhead_b48_micro12\":$(calc "$on48 / $off48 - 1"),\"b48_micro12_path\":\"$path\"}"
    done
    js+="}"
    bench_json_put repro "$js"
    echo "wrote build/bench.json (repro)"
}
if [ "${BENCH_ONLY:-}" = repro ]; then repro_bench; exit 0; fi

peak=$($TOOL peak "$NP"); peak1=$($TOOL peak 1)
# Where the CPU has AVX-512 and OpenBLAS has kernels for it, W1 also runs
# with OPENBLAS_CORETYPE=$AVX512 (its own peak measured the same way)
AVX512=""
if grep -qw avx512f /proc/cpuinfo; then AVX512=${BENCH_AVX512_CORE:-Cooperlake}; fi

floor_round() { # WL I: forward+backward alone, in NP processes at once as the workers run (the
    # same cores, caches and memory bandwidth), the slowest one's median, into $TMP/WL_floor_I
    local k pids=()
    for k in $(seq "$NP"); do $TOOL step "${CFG[$1]}" 20 1 >"$TMP/$1_floor_$2.$k" & pids+=($!); done
    wait "${pids[@]}"
    cat "$TMP/$1_floor_$2".* | sort -g | tail -1 >"$TMP/$1_floor_$2"
}
for i in $(seq "$ROUNDS"); do
    for wl in $WLS; do
        run "$wl" "${wl}_clip_$i" "$NP"
        run "$wl" "${wl}_none_$i" "$NP" --set clip.mode=none
        floor_round "$wl" "$i"
    done
    if has W1; then
        run W1 "W1_dp12_$i" 1 --set worker.threads=2 --set data.batch_per_worker=64 # W1: 32 per worker x 2
        run W1 "W1_shard_$i" "$NP" --set sync.mode=sharded
        run W1 "W1_msg_$i" "$NP" --set sync.shared_memory=off
        run W1 "W1_onebucket_$i" "$NP" --set sync.bucket_kb=0 --set sync.shared_memory=off
        run W1 "W1_blas_$i" "$NP" --set worker.packed_recurrent=off
        if [ -n "$AVX512" ]; then # OpenBLAS's AVX-512 kernels: the AVX-512 packed products vs OpenBLAS's
            OPENBLAS_CORETYPE=$AVX512 run W1 "W1_z_$i" "$NP"
            OPENBLAS_CORETYPE=$AVX512 run W1 "W1_zblas_$i" "$NP" --set worker.packed_recurrent=off
        fi
    fi
    if has W2; then
        run W2 "W2_msg_$i" "$NP" --set sync.shared_memory=off
        run W2 "W2_shard_$i" "$NP" --set sync.mode=sharded
        run W2 "W2_sparse_$i" "$NP" --set sync.sparse_embedding=true
        run W2 "W2_blas_$i" "$NP" --set worker.packed_recurrent=off
    fi
done

# The peak again after the runs; the higher of the two counts (load from
# elsewhere only ever lowers it).
peak=$(printf '%s\n%s\n' "$peak" "$($TOOL peak "$NP")" | sort -g | tail -1)
peak1=$(printf '%s\n%s\n' "$peak1" "$($TOOL peak 1)" | sort -g | tail -1)
printf 'cblas_sgemm peak (build/tests/bench_tool peak): %s GFLOP/s with %d threads, %s with 1\n' "$peak" "$NP" "$peak1"
json="{\"sgemm_peak_gflops\":$peak,\"sgemm_peak_gflops_1thread\":$peak1,\"threads\":$NP,\"rounds\":$ROUNDS"
for wl in $WLS; do
    read -r name clip < <(best "$wl" clip)
    read -r _ none < <(best "$wl" none)
    model=$($TOOL model "${CFG[$wl]}" "$NP")
    flops=$(jq .flops_per_step <<<"$model"); tokens=$(jq .tokens_per_step <<<"$model")
    p10=$(pct "$wl" "$name" 0.1); p90=$(pct "$wl" "$name" 0.9)
    floor=$(for i in $(seq "$ROUNDS"); do cat "$TMP/${wl}_floor_$i"; done | sort -g | head -1) # best round
    read -r fm fse _ < <(for i in $(seq "$ROUNDS"); do calc "$(pct "$wl" "${wl}_clip_$i" 0.5) / $(cat "$TMP/${wl}_floor_$i")"; echo; done | mean_se)
    tps=$(calc "$tokens / ($clip / 1000)"); sps=$(calc "1000 / $clip")
    gf=$(calc "$flops / ($clip / 1000) / 1e9"); frac=$(calc "$gf / $peak")
    ov=$(calc "$clip / $none - 1")
    printf '%s %s: step %.2f ms median (p10 %.2f, p90 %.2f), %.0f tokens/s, %.1f steps/s, %.1f GFLOP/s = %.3f of sgemm peak; clip overhead %+.2f%% (none: %.2f ms); forward+backward alone %.2f ms\n' \
        "$wl" "${CFG[$wl]}" "$clip" "$p10" "$p90" "$tps" "$sps" "$gf" "$frac" "$(calc "$ov * 100")" "$none" "$floor"
    json+=",\"$wl\":{\"config\":\"${CFG[$wl]}\",\"step_ms\":$clip,\"step_ms_p10\":$p10,\"step_ms_p90\":$p90,\"tokens_per_s\":$tps,\"steps_per_s\":$sps,\"flops_per_step\":$flops,\"gflops\":$gf,\"peak_fraction\":$frac,\"clip_overhead\":$ov,\"step_ms_clip_none\":$none,\"compute_only_ms\":$floor"
    { read -r om ose on; read -r um use _; } < <(clip_resolution "$wl")
    printf '   clip overhead over %d interleaved round pairs (mean, +- its standard error): step medians %+.2f%% +- %.2f%%; the update phase (detector, clip, optimizer; the workers'"'"' own timers, clip minus none) %+.3f%% +- %.3f%% of the step\n' \
        "$on" "$(calc "$om * 100")" "$(calc "$ose * 100")" "$(calc "$um * 100")" "$(calc "$use * 100")"
    json+=",\"clip_overhead_rounds\":{\"pairs\":$on,\"step_mean\":$om,\"step_se\":$ose,\"update_phase_mean\":$um,\"update_phase_se\":$use}"
    bd=$(breakdown_json "$name")
    printf '   step / forward+backward alone: %.3f (best rounds; round by round %.3f +- %.3f); step breakdown by the workers'"'"' own timers (ms):\n' "$(calc "$clip / $floor")" "$fm" "$fse"
    breakdown "$name" | sed 's/^/     /'
    json+=",\"step_vs_compute_only\":$(calc "$clip / $floor"),\"step_vs_compute_only_rounds\":{\"mean\":$fm,\"se\":$fse},\"step_breakdown\":${bd:-null}"
    if [ "$wl" != W3 ]; then # sharded and sparse send messages: against replicated as messages
        read -r _ shard < <(best "$wl" shard)
        read -r _ msgs < <(best "$wl" msg) # replicated, buckets, sync.shared_memory off
        json+=",\"sharded_vs_replicated\":$(calc "$shard / $msgs")"
        printf '   sharded %.2f ms vs replicated as messages %.2f ms: ratio %.3f\n' "$shard" "$msgs" "$(calc "$shard / $msgs")"
    fi
    if [ "$wl" = W2 ]; then
        read -r sname sparse < <(best W2 sparse)
        printf '   shared memory (the default on one node) %.2f ms vs messages %.2f ms: step ratio %.3f\n' "$clip" "$msgs" "$(calc "$clip / $msgs")"
        json+=",\"shared_memory_vs_messages\":$(calc "$clip / $msgs")"
        sline=$(grep -o 'sparse embedding: .*' "$TMP/$sname.err" | head -1)
        saved=$(awk '{ print $(NF - 1) }' <<<"$sline")
        printf '   sync.sparse_embedding %.2f ms vs dense as messages %.2f ms: step ratio %.3f; %s\n' "$sparse" "$msgs" "$(calc "$sparse / $msgs")" "$sline"
        json+=",\"sparse_embedding_vs_dense\":$(calc "$sparse / $msgs"),\"sparse_embedding_bytes_saved_per_step\":${saved:-null}"
    fi
    if [ "$wl" = W1 ]; then
        read -r _ dp12 < <(best W1 dp12)
        read -r _ one < <(best W1 onebucket)
        dp=$(calc "$dp12 / $clip") # same tokens per step: tokens/s ratio = inverse time ratio
        rss=$(rss_kib "$name")
        min=$(jq .min_bytes_per_rank <<<"$model")
        rr=$(calc "$rss * 1024 / $min")
        printf '   2 workers x 1 thread vs 1 worker x 2 threads (same global batch; 2 threads: OpenBLAS'"'"'s recurrent products): throughput ratio %.3f (%.2f vs %.2f ms)\n' "$dp" "$clip" "$dp12"
        printf '   shared memory (the default on one node) vs messages in buckets: step time ratio %.3f (%.2f vs %.2f ms)\n' "$(calc "$clip / $msgs")" "$clip" "$msgs"
        printf '   messages: gradient buckets during backward vs one reduction after it: step time ratio %.3f\n' "$(calc "$msgs / $one")"
        printf '   peak RSS %.1f MiB per worker vs analytic minimum %.1f MiB: %.3f\n' "$(calc "$rss / 1024")" "$(calc "$min / 1048576")" "$rr"
        json+=",\"dp_2x1_vs_1x2\":$dp,\"overlap_vs_none\":$(calc "$msgs / $one"),\"shared_memory_vs_messages\":$(calc "$clip / $msgs"),\"rss_kib\":$rss,\"min_bytes_per_rank\":$min,\"rss_vs_minimum\":$rr"
        top_dp=$dp; top_rr=$rr
    fi
    if [ "$wl" != W3 ]; then # W3's wh (100 x 100) is below the packing threshold
        read -r _ blas < <(best "$wl" blas)
        printf '   recurrent products packed (%s) vs by OpenBLAS (worker.packed_recurrent off): step time ratio %.3f (%.2f vs %.2f ms)\n' \
            "$(packed_says "$name")" "$(calc "$clip / $blas")" "$clip" "$blas"
        json+=",\"packed_vs_blas\":$(calc "$clip / $blas"),\"step_ms_blas\":$blas"
    fi
    if [ "$wl" = W1 ] && [ -n "$AVX512" ]; then
        read -r zname z < <(best W1 z)
        if ! grep -qi "OpenBLAS core $AVX512)" "$TMP/$zname.err"; then
            echo "   (OPENBLAS_CORETYPE=$AVX512 did not take: $(grep -o 'OpenBLAS core [^)]*' "$TMP/$zname.err" | head -1); no AVX-512 figures)"
            AVX512=""
        fi
    fi
    if [ "$wl" = W1 ] && [ -n "$AVX512" ]; then
        read -r _ zb < <(best W1 zblas)
        zpeak=$(OPENBLAS_CORETYPE=$AVX512 $TOOL peak "$NP")
        zgf=$(calc "$flops / ($z / 1000) / 1e9")
        printf '   with OpenBLAS'"'"'s AVX-512 kernels (OPENBLAS_CORETYPE=%s, sgemm peak %s GFLOP/s with %d threads): step %.2f ms = %.3f of that peak, recurrent products %s; by OpenBLAS %.2f ms: ratio %.3f\n' \
            "$AVX512" "$zpeak" "$NP" "$z" "$(calc "$zgf / $zpeak")" \
            "$(packed_says "$zname")" "$zb" "$(calc "$z / $zb")"
        json+=",\"avx512\":{\"coretype\":\"$AVX512\",\"sgemm_peak_gflops\":$zpeak,\"step_ms\":$z,\"peak_fraction\":$(calc "$zgf / $zpeak"),\"step_ms_blas\":$zb,\"packed_vs_blas\":$(calc "$z / $zb")}"
    fi
    json+="}"
done
json+=",\"dp_2x1_vs_1x2\":${top_dp:-null},\"rss_vs_minimum\":${top_rr:-null}}"
mkdir -p build
jq . <<<"$json" >build/bench.json
echo "wrote build/bench.json"
if [ -z "${BENCH_ONLY:-}" ]; then
    repro_bench
    softmax_bench
    cluster_bench
fi
