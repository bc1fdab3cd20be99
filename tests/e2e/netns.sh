# netns.sh: a cluster of "nodes" on one machine for the multi-node tests,
# sourced by tests/e2e/t_94_cluster*.sh (after run.sh) and tests/bench/bench.sh.
# Each node is a network namespace with its own UTS name and Open MPI
# session directory; all are joined by one bridge in the root namespace
# through veth pairs (node K: 10.77.0.K+1/24 on eth0); a second bridge
# joins them on 10.88.0.0/24 (eth1), a network the jobs must not use. Traffic stays
# inside these namespaces: the bridge has no address in the root namespace.
# mpirun runs in node 0; a launch agent (plm_rsh_agent) starts the remote
# orted with `ip netns exec` instead of ssh. Names carry this shell's pid,
# so two runs never collide; ns_down removes everything, and ns_up puts it
# on AT_EXIT (run.sh) so it goes however the run ends.
NS_NET=10.77.0.0/24
NS_P="cN$$"            # prefix of every name: namespaces, bridge, veths (<= 15 chars)
NS_BR="${NS_P}br"
NS_N=0                 # nodes up
NS_DIR=""              # agent, hostfiles, session directories

ns_name() { echo "${NS_P}n$1"; }      # NODE: its namespace
ns_ip() { echo "10.77.0.$(($1 + 1))"; } # NODE: its address
ns_veth() { echo "${NS_P}v$1"; }      # NODE: the root side of its link

# ns_need: this machine can make namespaces (CI runs as root); else the
# caller's check fails with the reason.
ns_need() {
    local t="${NS_P}probe"
    ip netns add "$t" || { echo "ip netns add failed: the multi-node tests need root and iproute2"; return 1; }
    ip netns del "$t"
}

# ns_up N: N nodes on one bridge. Returns non-zero (saying why) if any part fails.
ns_up() {
    local n="$1" k ns
    NS_DIR="$TMP/netns"
    mkdir -p "$NS_DIR"
    AT_EXIT+=(ns_down)
    ip link add "$NS_BR" type bridge || return 1
    ip link set "$NS_BR" up || return 1
    ip link add "${NS_BR}2" type bridge || return 1
    ip link set "${NS_BR}2" up || return 1
    for k in $(seq 0 $((n - 1))); do
        ns=$(ns_name "$k")
        ip netns add "$ns" || return 1
        NS_N=$((k + 1))
        ip link add "$(ns_veth "$k")" type veth peer name eth0 netns "$ns" || return 1
        ip link set "$(ns_veth "$k")" master "$NS_BR" up || return 1
        ip -n "$ns" addr add "$(ns_ip "$k")/24" dev eth0 || return 1
        # a second network (eth1 on bridge 2), which --net must leave unused
        ip link add "${NS_P}w$k" type veth peer name eth1 netns "$ns" || return 1
        ip link set "${NS_P}w$k" master "${NS_BR}2" up || return 1
        ip -n "$ns" addr add "10.88.0.$((k + 1))/24" dev eth1 || return 1
        ip -n "$ns" link set eth1 up || return 1
        ip -n "$ns" link set eth0 up || return 1
        ip -n "$ns" link set lo up || return 1
        mkdir -p "$NS_DIR/tmp$k"
    done
    ns_agent >"$NS_DIR/agent" && chmod +x "$NS_DIR/agent"
}

# The launch agent Open MPI runs instead of ssh: `agent [-x] HOST COMMAND...`.
# HOST is a node's address; the command runs in that node's namespace,
# under its own host name and session directory, like ssh's remote shell.
ns_agent() {
    cat <<AGENT
#!/usr/bin/env bash
while [ "\${1#-}" != "\$1" ]; do shift; done
host="\$1"; shift
k=\$(( \${host##*.} - 1 ))
export OMPI_MCA_orte_tmpdir_base="$NS_DIR/tmp\$k"
exec ip netns exec "${NS_P}n\$k" unshare --uts /bin/sh -c "hostname \$host && \$*"
AGENT
}

# ns_hostfile FILE SLOTS...: a hostfile with SLOTS[k] slots on node k
ns_hostfile() {
    local f="$1" k=0 s; shift
    : >"$f"
    for s in "$@"; do echo "$(ns_ip "$k") slots=$s" >>"$f"; k=$((k + 1)); done
}

# ns_mpi_opts: the mpirun options for this cluster (after clipd-launch's --)
ns_mpi_opts() {
    echo --mca plm_rsh_agent "$NS_DIR/agent" --mca btl tcp,self --mca plm_rsh_no_tree_spawn 1
}

# ns_launch W HOSTFILE CONFIG [ARGS...]: clipd-launch in node 0 (where
# mpirun and the coordinator run), on the cluster's network only; killed
# after NS_TIMEOUT seconds (default 300) so that a hung job fails its check
ns_launch() {
    local w="$1" hf="$2"; shift 2
    ns_exec 0 timeout -k 10 "${NS_TIMEOUT:-300}" deploy/clipd-launch -n "$w" --hostfile "$hf" --net "$NS_NET" "$@" \
        -- $(ns_mpi_opts)
}

# ns_exec NODE CMD...: CMD in node NODE's namespace, as that host
ns_exec() {
    local k="$1"; shift
    OMPI_MCA_orte_tmpdir_base="$NS_DIR/tmp$k" ip netns exec "$(ns_name "$k")" \
        unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$(ns_ip "$k")" "$@"
}

# ns_wait_lines FILE N PID: until FILE has N lines, or the job PID has
# ended (it says why), at most 60 s
ns_wait_lines() {
    local _i
    for _i in $(seq 3000); do
        [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        kill -0 "$3" 2>/dev/null || { wait "$3"; echo "the job ended (exit $?) before $1 had $2 lines"; return 1; }
        sleep 0.02
    done
    echo "$1: fewer than $2 lines after 60 s"
    return 1
}

# ns_conns: every established TCP connection in the nodes, "NODE LOCAL PEER"
ns_conns() {
    local k
    for k in $(seq 0 $((NS_N - 1))); do
        ip netns exec "$(ns_name "$k")" ss -Htn state established | awk -v k="$k" '{ print k, $3, $4 }'
    done
}

# ns_shape NODE RATE [DELAY]: limit the node's link to RATE (tc units, e.g.
# 10mbit) both ways, on each end of its veth: a token bucket (tbf); with
# DELAY (e.g. 100us) netem's delay and rate instead, which needs a kernel
# with sch_netem (fails saying so otherwise)
ns_shape() {
    local k="$1" rate="$2" d="${3:-}" q=(tbf rate "$2" burst 64kb latency 100ms)
    [ -z "$d" ] || q=(netem delay "$d" rate "$rate" limit 10000)
    tc qdisc replace dev "$(ns_veth "$k")" root "${q[@]}" &&
        tc -n "$(ns_name "$k")" qdisc replace dev eth0 root "${q[@]}" ||
        { echo "tc ${q[*]} failed on node $k's link${d:+ (is sch_netem in this kernel?)}"; return 1; }
}

# ns_wire NODE DELAY_US RATE_MBIT: put a user-space link (build/tests/netwire:
# one-way delay and rate, what netem would do; this machine's kernel has no
# sch_netem) into node NODE's path: its veth goes onto a bridge of its own,
# joined to the main bridge through netwire's two TAP devices. Cutting the
# link (ns_link_down) still cuts it.
NS_WIRES=()
ns_wire() {
    local k="$1" x="${NS_P}x$1" a="${NS_P}a$1" b="${NS_P}b$1"
    [ -x build/tests/netwire ] || { echo "build/tests/netwire not built (make build/tests/netwire)"; return 1; }
    build/tests/netwire "$a" "$b" "$2" "$3" &
    NS_WIRES[$k]=$!
    for _ in $(seq 100); do ip link show "$b" >/dev/null 2>&1 && break; sleep 0.05; done
    ip link add "$x" type bridge && ip link set "$x" up &&
        ip link set "$(ns_veth "$k")" nomaster && ip link set "$(ns_veth "$k")" master "$x" &&
        ip link set "$a" master "$x" up && ip link set "$b" master "$NS_BR" up ||
        { echo "cannot put netwire into node $k's link"; return 1; }
}
# ns_unwire NODE: the node's veth back on the main bridge, netwire gone
ns_unwire() {
    local k="$1"
    [ -n "${NS_WIRES[$k]:-}" ] || return 0
    kill "${NS_WIRES[$k]}" 2>/dev/null; wait "${NS_WIRES[$k]}" 2>/dev/null
    NS_WIRES[$k]=""
    ip link del "${NS_P}x$k" 2>/dev/null
    ip link set "$(ns_veth "$k")" master "$NS_BR"
}

# ns_unshape NODE: the node's link at full speed again
ns_unshape() {
    tc qdisc del dev "$(ns_veth "$1")" root && tc -n "$(ns_name "$1")" qdisc del dev eth0 root
}

# ns_link_down NODE / ns_link_up NODE: cut or restore a node's link
ns_link_down() { ip link set "$(ns_veth "$1")" down; }
ns_link_up() { ip link set "$(ns_veth "$1")" up; }

# ns_kill NODE: SIGKILL every process in a node's namespace
ns_kill() {
    local p; p=$(ip netns pids "$(ns_name "$1")")
    [ -n "$p" ] || { echo "no process in node $1"; return 1; }
    kill -KILL $p
}

# ns_down: kill what still runs in the nodes, delete namespaces (and with
# them their veths and qdiscs), the bridge and the root-side veths
ns_down() {
    local k ns p
    for k in $(seq 0 $((NS_N - 1))); do
        ns=$(ns_name "$k")
        p=$(ip netns pids "$ns" 2>/dev/null) || true
        [ -z "$p" ] || kill -KILL $p 2>/dev/null || true
    done
    # (|| true: under make bench's set -e, a second call from the exit trap,
    # with the links already gone, must not turn the exit status into 1)
    for k in $(seq 0 $((NS_N - 1))); do
        ns_unwire "$k" 2>/dev/null || true
        ip link del "$(ns_veth "$k")" 2>/dev/null || true
        ip link del "${NS_P}w$k" 2>/dev/null || true
        ip netns del "$(ns_name "$k")" 2>/dev/null || true
    done
    ip link del "$NS_BR" 2>/dev/null || true
    ip link del "${NS_BR}2" 2>/dev/null || true
    NS_N=0
    return 0
}

# For the t_94_cluster tests (after run.sh): the tiny job with 4 workers on
# 3 nodes (coordinator alone on node 0, 2 workers on each of nodes 1 and 2).
CL=(--set train.steps_per_epoch=150 --set checkpoint.every_steps=20 --set metrics.listen=off)

cluster_up() { ns_need && ns_up 3 && ns_hostfile "$TMP/hf3" 1 2 2; }
# cl_run DIR [ARGS...]: the tiny job with 4 workers on the 3 nodes, in $TMP/DIR
cl_run() {
    local d="$1"; shift
    ns_launch 4 "$TMP/hf3" "$TINY" --set run.dir="$TMP/$d" "${CL[@]}" "$@" >"$TMP/$d.out" 2>"$TMP/$d.err"
}
# cl_start DIR [ARGS...]: the same in the background, pid in $bg
cl_start() {
    local d="$1"; shift
    ns_launch 4 "$TMP/hf3" "$TINY" --set run.dir="$TMP/$d" "${CL[@]}" "$@" >"$TMP/$d.out" 2>"$TMP/$d.err" &
    bg=$!
}
# same_but_stall A B: same_run, but `stall` events (a healed partition's
# warning, if the watchdog logs one) are not compared
same_but_stall() {
    local f
    for f in "$1" "$2"; do
        jq -c 'select(.kind != "stall") | del(.time)' "$f/events.jsonl" >"$f/events.nostall" || return 1
    done
    cmp "$1/events.nostall" "$2/events.nostall" || return 1
    mkdir -p "$TMP/sbs_a" "$TMP/sbs_b"
    for f in steps epochs tensors; do cp "$1/$f.jsonl" "$TMP/sbs_a/"; cp "$2/$f.jsonl" "$TMP/sbs_b/"; done
    cp "$1/final.safetensors" "$TMP/sbs_a/"; cp "$2/final.safetensors" "$TMP/sbs_b/"
    : >"$TMP/sbs_a/events.jsonl"; : >"$TMP/sbs_b/events.jsonl"
    same_run "$TMP/sbs_a" "$TMP/sbs_b"
}

# cl_ref: the one-node reference of the same job (4 workers), once per run
cl_ref() { [ -s "$TMP/cl_one/final.safetensors" ] || run cl_one 4 "${CL[@]}"; }
# ns_pids NODE NAME: the processes called NAME in a node
ns_pids() {
    local p
    for p in $(ip netns pids "$(ns_name "$1")"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
    done
}
