# netns.sh: a cluster of "nodes" on one machine for the multi-node tests,
# sourced by tests/e2e/t_94_cluster*.sh (after run.sh) and tests/bench/bench.sh.
# Each node is a network namespace with its own UTS name and Open MPI
# session directory; all are joined by one bridge in the root namespace
# through veth pairs (node K: 10.77.0.K+1/24 on its eth0). Traffic stays
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
    for k in $(seq 0 $((n - 1))); do
        ns=$(ns_name "$k")
        ip netns add "$ns" || return 1
        NS_N=$((k + 1))
        ip link add "$(ns_veth "$k")" type veth peer name eth0 netns "$ns" || return 1
        ip link set "$(ns_veth "$k")" master "$NS_BR" up || return 1
        ip -n "$ns" addr add "$(ns_ip "$k")/24" dev eth0 || return 1
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
# mpirun and the coordinator run), on the cluster's network only
ns_launch() {
    local w="$1" hf="$2"; shift 2
    ns_exec 0 timeout 300 deploy/clipd-launch -n "$w" --hostfile "$hf" --net "$NS_NET" "$@" \
        -- $(ns_mpi_opts)
}

# ns_exec NODE CMD...: CMD in node NODE's namespace, as that host
ns_exec() {
    local k="$1"; shift
    OMPI_MCA_orte_tmpdir_base="$NS_DIR/tmp$k" ip netns exec "$(ns_name "$k")" \
        unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$(ns_ip "$k")" "$@"
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
        p=$(ip netns pids "$ns" 2>/dev/null)
        [ -z "$p" ] || kill -KILL $p 2>/dev/null
    done
    for k in $(seq 0 $((NS_N - 1))); do
        ip link del "$(ns_veth "$k")" 2>/dev/null
        ip netns del "$(ns_name "$k")" 2>/dev/null
    done
    ip link del "$NS_BR" 2>/dev/null
    NS_N=0
    return 0
}
