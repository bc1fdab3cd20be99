# Multi-node jobs on one machine (tests/e2e/netns.sh): 3 network namespaces
# on a bridge; mpirun and the coordinator on node 0, 2 workers on each of
# nodes 1 and 2, Open MPI's TCP transport, clipd-launch --net. Results must
# equal a one-node job with the same 4 workers, bit for bit, whatever the
# links do as long as they carry the traffic in the end.
# shellcheck source=tests/e2e/netns.sh
source tests/e2e/netns.sh
check "a cluster of 3 network namespaces on a bridge (needs root: CI is)" cluster_up

three_nodes() {
    cl_ref || return 1 # the one-node reference
    cl_start cl3
    ns_wait_lines "$TMP/cl3/steps.jsonl" 30 "$bg" || return 1
    ns_conns >"$TMP/cl3.conns"
    wait "$bg" || { echo "exit $?"; tail "$TMP/cl3.err"; return 1; }
    # where the ranks ran: the coordinator alone on node 0, workers on 1 and 2
    grep -q "^10.77.0.2 slots=2" "$TMP/hf3" || return 1
    # every connection on the --net network (or loopback), none on the other
    # network the nodes also have, and worker-to-worker traffic across nodes
    awk '$2 !~ /^(10\.77\.0\.|127\.0\.0\.1:)/ || $3 !~ /^(10\.77\.0\.|127\.0\.0\.1:)/ { print "off --net:", $0; bad = 1 } END { exit bad }' "$TMP/cl3.conns" || return 1
    grep -q '^1 10\.77\.0\.2:[0-9]* 10\.77\.0\.3:' "$TMP/cl3.conns" || grep -q '^2 10\.77\.0\.3:[0-9]* 10\.77\.0\.2:' "$TMP/cl3.conns" || { echo "no connection between nodes 1 and 2"; cat "$TMP/cl3.conns"; return 1; }
    same_run "$TMP/cl_one" "$TMP/cl3"
}
check "3 nodes (coordinator | 2 workers | 2 workers) == 1 node with 4 workers, bit for bit; traffic only on --net" three_nodes

bad_net() {
    expect_exit 2 "^clipd-launch: --net '10.77.0.0/33': expected an IPv4 network" \
        $LAUNCH -n 2 --net 10.77.0.0/33 "$TINY" --set run.dir="$TMP/badnet" || return 1
    [ "$(wc -l <"$TMP/be.err")" = 1 ] && [ ! -e "$TMP/badnet" ]
}
check "clipd-launch --net with a bad CIDR: exit 2, one line, nothing started" bad_net

shaped() {
    cl_ref || return 1
    ns_shape 1 20mbit && ns_shape 2 5mbit || return 1
    cl_run cl_tbf || { echo "exit $?"; tail "$TMP/cl_tbf.err"; return 1; }
    local r; r=$(tc -s qdisc show dev "$(ns_veth 2)")
    ns_unshape 1 && ns_unshape 2 || return 1
    echo "$r" | grep -q "tbf" || return 1
    same_run "$TMP/cl_one" "$TMP/cl_tbf"
}
check "links rate-limited to 20 and 5 Mbit/s (tbf): the same results" shaped

# netem's delay and rate, in user space (this kernel has no sch_netem):
# every message between the worker nodes takes 2.5 ms more each way
delayed() {
    cl_ref || return 1
    ns_wire 1 500 50 && ns_wire 2 2000 20 || return 1
    local rtt; rtt=$(ip netns exec "$(ns_name 1)" ping -c 3 -i 0.2 -q 10.77.0.3 | awk -F/ '/^rtt/ { print $5 }')
    cl_run cl_wire; local rc=$?
    ns_unwire 1; ns_unwire 2
    echo "ping node 1 -> node 2 through the wires: $rtt ms average (5 ms added)"
    awk -v r="$rtt" 'BEGIN { exit !(r >= 5) }' || { echo "the delay is not there"; return 1; }
    [ "$rc" = 0 ] || { echo "exit $rc"; tail "$TMP/cl_wire.err"; return 1; }
    same_run "$TMP/cl_one" "$TMP/cl_wire"
}
check "links delayed 0.5 and 2 ms each way at 50 and 20 Mbit/s (netwire): the same results" delayed

cut_restore() {
    cl_ref || return 1
    cl_start cl_cut
    ns_wait_lines "$TMP/cl_cut/steps.jsonl" 40 "$bg" || return 1
    ns_link_down 2 && sleep 3 && ns_link_up 2 || return 1
    local n; n=$(wc -l <"$TMP/cl_cut/steps.jsonl")
    wait "$bg" || { echo "exit $?"; tail "$TMP/cl_cut.err"; return 1; }
    [ "$n" -lt 300 ] || { echo "the job ended before the link came back"; return 1; }
    same_but_stall "$TMP/cl_one" "$TMP/cl_cut"
}
check "node 2's link cut for 3 s, then restored: the job completes == undisturbed" cut_restore

# Needs the watchdog (watchdog.seconds, watchdog.warn_seconds; issue 12
# item 3): a healed partition shorter than the limit is a `stall` warning.
cut_warn() {
    cl_start cl_warn --set watchdog.warn_seconds=1 --set watchdog.seconds=60
    ns_wait_lines "$TMP/cl_warn/steps.jsonl" 40 "$bg" || { tail -3 "$TMP/cl_warn.err"; return 1; }
    ns_link_down 2 && sleep 4 && ns_link_up 2 || return 1
    wait "$bg" || { echo "exit $?"; tail "$TMP/cl_warn.err"; return 1; }
    jq -s -e 'any(.[]; .kind == "stall" and .action != "abort")' "$TMP/cl_warn/events.jsonl" >/dev/null ||
        { echo "no stall warning in events.jsonl"; return 1; }
    same_but_stall "$TMP/cl_one" "$TMP/cl_warn"
}
check "a 4 s cut with watchdog.warn_seconds=1: a stall warning, exit 0, same results" cut_warn

ns_down
