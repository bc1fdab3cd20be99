# Security posture: the metrics endpoint listens on loopback unless told
# otherwise (and says so when it is not), no request reads a file or runs a
# command, and the deploy scripts pass shellcheck with no finding and never
# use eval.
SC_RUN=(--set train.steps_per_epoch=200000 --set checkpoint.every_steps=0)

sc_listen_addrs() { # PID PORT: the addresses PID listens on at TCP PORT, from /proc (no ss needed)
    local inodes hexport
    inodes=$(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n')
    hexport=$(printf '%04X' "$2")
    # /proc/net/tcp: sl local_address rem_address st ... inode; LISTEN is 0A
    awk -v port="$hexport" -v inodes="$inodes" '
        BEGIN { n = split(inodes, a, "\n"); for (i = 1; i <= n; i++) if (a[i] != "") mine[a[i]] = 1 }
        $4 == "0A" && ($10 in mine) { split($2, la, ":"); if (la[2] == port) print la[1] }' \
        /proc/net/tcp /proc/net/tcp6 |
        while read -r hex; do # little-endian IPv4 (tcp6 rows are printed raw)
            if [ ${#hex} = 8 ]; then
                printf '%d.%d.%d.%d\n' "0x${hex:6:2}" "0x${hex:4:2}" "0x${hex:2:2}" "0x${hex:0:2}"
            else
                echo "$hex"
            fi
        done
}
# sc_job NAME ARGS...: a long job in the background ($bg); waits until it says
# where it serves metrics; sets $sport and $spid (the coordinator)
sc_job() {
    local name="$1"; shift
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/$name" "${SC_RUN[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    bg=$!
    for _ in $(seq 300); do
        sport=$(grep -o 'metrics: http://[0-9.]*:[0-9]*' "$TMP/$name.err" | grep -o '[0-9]*$')
        [ -n "$sport" ] && break
        grep -q "cannot serve" "$TMP/$name.err" && return 2
        sleep 0.1
    done
    [ -n "$sport" ] || { echo "$name: no metrics line in 30 s"; return 1; }
    spid=$(job_pids "$bg" clipd)
    [ -n "$spid" ]
}
sc_stop() { sig_job USR1 mpirun && wait "$bg"; }

default_loopback() {
    build/clipd --check /dev/null >"$TMP/sc_defaults" || return 1
    grep -q '^  listen: "127.0.0.1:0" ' "$TMP/sc_defaults" || { echo "the default is not loopback"; return 1; }
    local addrs
    sc_job sc_def || return 1
    addrs=$(sc_listen_addrs "$spid" "$sport")
    echo "coordinator $spid listens on port $sport at: $addrs"
    grep -q "info: metrics: http://127.0.0.1:$sport/metrics$" "$TMP/sc_def.err" || { sc_stop; return 1; }
    [ "$addrs" = 127.0.0.1 ] || { sc_stop; return 1; }
}
check "metrics listen on 127.0.0.1 by default (the socket, read from /proc/net/tcp)" default_loopback

# Every request path and query the handler might mistake for a file or a
# command: nothing but the three endpoints answers, no file's content comes
# back, and a command in the request leaves no trace.
hostile_paths() {
    local base="http://127.0.0.1:$sport" canary="$TMP/sc_canary" p code bad=0 body
    for p in '/../../etc/passwd' '/metrics/../../../etc/passwd' '/%2e%2e/%2e%2e/etc/passwd' \
             '/..%2f..%2f..%2fetc%2fpasswd' '//etc/passwd' '/etc/passwd' '/proc/self/environ' \
             '/metrics/' '/metrics.txt' '/METRICS' "/\$(touch%20$canary)" "/%60touch%20$canary%60" \
             "/;touch%20$canary" '/status/../../etc/shadow' '/%00' '/index.html' '/.git/config'; do
        code=$(curl -s --path-as-is -o "$TMP/sc_body" -w '%{http_code}' --max-time 5 "$base$p")
        body=$(head -c 200 "$TMP/sc_body" | tr '\n' ' ')
        echo "GET $p -> $code $body"
        [ "$code" = 404 ] || bad=1
    done
    for p in "/metrics?x=\$(touch%20$canary)" "/metrics?x=%60touch%20$canary%60" '/metrics?file=/etc/passwd' \
             "/status?x=;touch%20$canary" '/healthz?../../etc/passwd'; do
        code=$(curl -s --path-as-is -o "$TMP/sc_body" -w '%{http_code}' --max-time 5 "$base$p")
        echo "GET $p -> $code (the query is ignored)"
        case "$code" in 200|503) ;; *) bad=1 ;; esac
        if grep -q -e 'root:' -e 'uid=' "$TMP/sc_body"; then echo "a file or command output came back"; bad=1; fi
    done
    # a raw request line without a leading slash, and other methods
    code=$(exec 3<>"/dev/tcp/127.0.0.1/$sport" && printf 'GET ../../etc/passwd HTTP/1.0\r\n\r\n' >&3 &&
           timeout 5 head -1 <&3 | tr -d '\r')
    echo "raw 'GET ../../etc/passwd' -> $code"
    case "$code" in *" 404 "*|*" 400 "*) ;; *) bad=1 ;; esac
    for p in PUT DELETE TRACE OPTIONS; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$p" "$base/metrics")
        echo "$p /metrics -> $code"
        [ "$code" = 405 ] || bad=1
    done
    [ ! -e "$canary" ] || { echo "a command in a request ran: $canary exists"; bad=1; }
    return "$bad"
}
check "hostile paths (.., %2e%2e, //, \$(...), backticks, queries): 404 or the endpoint itself, no file read, no command run" hostile_paths
check "the default-port job stops cleanly" sc_stop

elsewhere_logged() {
    sc_job sc_any --set metrics.listen=0.0.0.0:0 || return 1
    local addrs; addrs=$(sc_listen_addrs "$spid" "$sport")
    echo "coordinator $spid listens on port $sport at: $addrs"
    grep "metrics: http" "$TMP/sc_any.err"
    sc_stop || return 1
    [ "$addrs" = 0.0.0.0 ] &&
        grep -q "warn: metrics: http://0.0.0.0:$sport/metrics (not loopback: reachable from other hosts)" "$TMP/sc_any.err"
}
check "metrics.listen on another address: bound there, and a start-up warning says it is reachable from other hosts" elsewhere_logged

# The deploy scripts (and CI's) quote every variable and never eval: shellcheck
# finds nothing at all (style included); this file and t_98 nothing at
# warning level ($LAUNCH is split on purpose, as everywhere in tests/e2e).
deploy_shellcheck() {
    command -v shellcheck >/dev/null || { echo "shellcheck is not installed (deploy/packages.txt lists it): nothing checked"; return 1; }
    shellcheck --version | sed -n 2p
    shellcheck -s bash deploy/*.sh deploy/clipd-launch deploy/slurm/*.sbatch .ci/run || return 1
    shellcheck -s bash -S warning tests/e2e/t_98_inject.sh tests/e2e/t_99_security.sh || return 1
    # the builtin, as a word not preceded by a dash (clipd-launch passes clipd's --eval option on)
    if grep -nE '(^|[^-[:alnum:]_])eval([^[:alnum:]_]|$)' deploy/*.sh deploy/clipd-launch deploy/slurm/*.sbatch .ci/run; then
        echo "eval in a deploy script"; return 1
    fi
}
check "shellcheck: deploy/ and .ci/run without a finding, no eval" deploy_shellcheck
