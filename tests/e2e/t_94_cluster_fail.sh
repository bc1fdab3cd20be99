# Failures across nodes (tests/e2e/netns.sh): a link cut for good and a
# node's ranks killed end the job in bounded time, and the run continues
# with --resume latest, on all nodes or on the ones left.
# shellcheck source=tests/e2e/netns.sh
source tests/e2e/netns.sh
check "a cluster of 3 network namespaces on a bridge (needs root: CI is)" cluster_up

# Needs the watchdog (issue 12 item 3: watchdog.seconds, a `stall` event with
# action abort, exit 1). Without it the job hangs until NS_TIMEOUT.
WD=8
cut_forever() {
    cl_ref || return 1
    NS_TIMEOUT=120 cl_start cl_part --set watchdog.seconds=$WD --set watchdog.warn_seconds=2
    ns_wait_lines "$TMP/cl_part/steps.jsonl" 40 "$bg" || { tail -3 "$TMP/cl_part.err"; return 1; }
    local t0=$SECONDS
    ns_link_down 2 || return 1
    wait "$bg"
    local rc=$? t=$((SECONDS - t0))
    ns_link_up 2 || return 1
    echo "link down for good: exit $rc after $t s (watchdog.seconds=$WD)"
    [ "$rc" = 1 ] || { tail -5 "$TMP/cl_part.err"; return 1; }
    [ "$t" -le $((WD + 20)) ] || return 1
    jq -s -e 'any(.[]; .kind == "stall" and .action == "abort")' "$TMP/cl_part/events.jsonl" >/dev/null ||
        { echo "no stall event with action abort"; return 1; }
    # the last checkpoint stays: the run continues on the healed network
    cl_run cl_part --set watchdog.seconds=$WD --resume latest || { tail -5 "$TMP/cl_part.err"; return 1; }
    same_but_stall "$TMP/cl_one" "$TMP/cl_part"
}
check "node 2's link cut for good: the watchdog ends the job (stall, exit 1) within watchdog.seconds + 20 s; resume == undisturbed" cut_forever

kill_node() {
    cl_ref || return 1
    cl_start cl_kill
    ns_wait_lines "$TMP/cl_kill/steps.jsonl" 60 "$bg" || return 1
    local t0=$SECONDS pids
    pids=$(ns_pids 2 clipd-worker)
    [ -n "$pids" ] || { echo "no clipd-worker on node 2"; return 1; }
    kill -KILL $pids
    wait "$bg"
    local rc=$? t=$((SECONDS - t0))
    echo "$rc" >"$TMP/cl_kill.rc"
    echo "ranks on node 2 killed: exit $rc after $t s"
    [ "$rc" != 0 ] || return 1
    [ "$t" -lt 60 ] || return 1
    # continue on nodes 0 and 1: 2 workers x 8 = the same global batch
    ns_hostfile "$TMP/hf2" 1 2
    ns_launch 2 "$TMP/hf2" "$TINY" --set run.dir="$TMP/cl_kill" "${CL[@]}" --set data.batch_per_worker=8 \
        --resume latest >"$TMP/cl_kill2.out" 2>"$TMP/cl_kill2.err" || { tail -5 "$TMP/cl_kill2.err"; return 1; }
    grep -q "written by 4 workers x 4; resuming on 2 x 8" "$TMP/cl_kill2.err" || return 1
    near_run "$TMP/cl_one" "$TMP/cl_kill"
}
check "node 2's ranks killed (kill -9): the job ends; --resume latest on nodes 0-1 (2 x 8) == undisturbed, to float rounding" kill_node

# Needs issue 12 item 5 (clipd-launch exits 0, 1 or 2; a killed rank is
# exit 1 with one clipd line naming it).
kill_named() {
    [ -s "$TMP/cl_kill.rc" ] || { echo "the kill test did not run"; return 1; }
    grep -h "exited on signal" "$TMP/cl_kill.out" "$TMP/cl_kill.err" # what mpirun said
    [ "$(cat "$TMP/cl_kill.rc")" = 1 ] || { echo "exit $(cat "$TMP/cl_kill.rc"), wanted 1"; return 1; }
    grep -E "^clipd.*rank [0-9]" "$TMP/cl_kill.err" || { tail -5 "$TMP/cl_kill.err"; return 1; }
}
check "the killed ranks: exit 1 and a clipd line naming the rank" kill_named

ns_down
