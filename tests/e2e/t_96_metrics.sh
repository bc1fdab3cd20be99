# The live HTTP endpoint, with real HTTP clients against a real job: the
# Prometheus exposition (checked by promtool, scraped by a real Prometheus
# server where Debian's package is installed), /status, /healthz with a
# stalled job, and hostile clients that must not stall training.
metrics_job() { # start a long job serving metrics on the default (a free port); sets $mport, $mbg
    $LAUNCH -n 2 "$TINY" --set run.dir="$TMP/met" --set train.steps_per_epoch=200000 \
        --set metrics.stall_seconds=2 --set checkpoint.every_steps=0 >"$TMP/met.out" 2>"$TMP/met.err" &
    mbg=$!
    for _ in $(seq 300); do
        mport=$(grep -o 'metrics: http://127.0.0.1:[0-9]*' "$TMP/met.err" | grep -o '[0-9]*$')
        [ -n "$mport" ] && break
        sleep 0.1
    done
    [ -n "$mport" ] || return 1
    # the address the log names is in RUN_DIR/metrics.addr
    echo "logged port $mport; metrics.addr: $(cat "$TMP/met/metrics.addr")"
    [ "$(cat "$TMP/met/metrics.addr")" = "127.0.0.1:$mport" ]
}
get() { curl -s --max-time 5 "http://127.0.0.1:$mport$1"; }
steps_now() { get /metrics | awk '$1 == "clipd_steps_total" { print $2 }'; }

check "a job serves metrics on a free port (the default 127.0.0.1:0), logged and in RUN_DIR/metrics.addr" metrics_job

exposition() {
    get /metrics >"$TMP/m1.txt" || return 1
    grep -q '^clipd_grad_norm_preclip_bucket{le="+Inf"}' "$TMP/m1.txt" || return 1
    grep -q '^clipd_divergence_events_total{kind="loss_spike"}' "$TMP/m1.txt" || return 1
    grep -q '^clipd_worker_step_seconds{worker="1"}' "$TMP/m1.txt" || return 1
    grep -q '^clipd_watchdog_events_total{kind="stall"} 0$' "$TMP/m1.txt" || return 1
    grep -q '^clipd_watchdog_events_total{kind="straggler"} 0$' "$TMP/m1.txt" || return 1
    [ "$(awk '$1 == "clipd_steps_total" { print ($2 > 0) }' "$TMP/m1.txt")" = 1 ] || return 1
    command -v promtool >/dev/null || { echo "promtool missing (deploy/packages.txt: prometheus)"; return 1; }
    promtool check metrics <"$TMP/m1.txt"
}
check "GET /metrics: Prometheus text format (promtool check metrics), counters moving" exposition

status() {
    get /status | jq -e '.run == "tiny" and .world_size == 2 and .state == "training" and .step > 0
        and (.uptime_s | type) == "number" and (.config_hash | length) == 16'
}
check "GET /status: JSON with run, world size, step, uptime, config hash" status

health() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/healthz")" = 200 ] || return 1
    sig_job STOP clipd-worker "$mbg" || return 1
    sleep 3.5
    local code; code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$mport/healthz")
    sig_job CONT clipd-worker "$mbg"
    [ "$code" = 503 ] || { echo "stalled job answered $code"; return 1; }
    sleep 0.5
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/healthz")" = 200 ]
}
check "GET /healthz: 200 while steps arrive, 503 once stalled past metrics.stall_seconds, 200 again" health

not_found() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/../../etc/passwd")" = 404 ] &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$mport/metrics")" = 405 ]
}
check "other paths 404, other methods 405; nothing reads files" not_found

hostile() {
    local before during after ok=0 i
    before=$(steps_now)
    # 1000 slowloris connections: half a request each, held open
    for i in $(seq 1000); do
        { exec 3<>"/dev/tcp/127.0.0.1/$mport" && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n' >&3 && sleep 4; } 2>/dev/null &
    done
    sleep 1
    # while they hang on: an oversized header, 50 requests at once, and a scrape
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 -H "X-Big: $(head -c 100000 /dev/zero | tr '\0' a)" \
        "http://127.0.0.1:$mport/metrics" >"$TMP/big.code"
    for i in $(seq 50); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 "http://127.0.0.1:$mport/metrics" >"$TMP/par.$i" &
    done
    during=$(steps_now)
    sleep 4
    for i in $(seq 50); do [ "$(cat "$TMP/par.$i" 2>/dev/null)" = 200 ] && ok=$((ok + 1)); done
    after=$(steps_now)
    echo "oversized header: HTTP $(cat "$TMP/big.code"); 50 parallel: $ok answered 200; steps $before -> $during (under attack) -> $after"
    [ -n "$during" ] && [ "$during" -gt "$before" ] && [ "$after" -gt "$during" ] && [ "$ok" = 50 ] &&
        [ -n "$(cat "$TMP/big.code")" ] && [ "$(cat "$TMP/big.code")" != 200 ] && [ "$(cat "$TMP/big.code")" != 000 ]
}
check "hostile clients (1000 slowloris, 100 kB header, 50 at once): endpoint answers during, training goes on" hostile

port_taken() {
    run taken 2 --set metrics.listen="127.0.0.1:$mport" || return 1
    grep -q "cannot serve on 127.0.0.1:$mport" "$TMP/taken.err"
}
check "a port another job serves on: a clear warning, training without metrics, not a shared port" port_taken

second_job() { # two jobs on one node with the default: each serves on its own port
    run second 2 || return 1
    local p2; p2=$(grep -o 'metrics: http://127.0.0.1:[0-9]*' "$TMP/second.err" | grep -o '[0-9]*$')
    echo "first job on port $mport, second on ${p2:-none}"
    [ -n "$p2" ] && [ "$p2" != "$mport" ] && ! grep -q "cannot serve" "$TMP/second.err" || return 1
    [ ! -e "$TMP/second/metrics.addr" ] || { echo "metrics.addr left after the end"; return 1; }
}
check "a second job on the node with the default metrics.listen: its own free port, no warning" second_job

prometheus_scrapes() {
    command -v prometheus >/dev/null || { echo "prometheus missing (deploy/packages.txt)"; return 1; }
    local pport ppid="" ok=1 try
    cat >"$TMP/prom.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs: [{job_name: clipd, static_configs: [{targets: ["127.0.0.1:$mport"]}]}]
YML
    # A random port may be taken: a server that exits at once is started
    # again on another (at most 3 times), its log shown if all fail.
    for try in 1 2 3; do
        pport=$((20000 + RANDOM % 20000))
        rm -rf "$TMP/promdata"
        prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/promdata" \
            --web.listen-address="127.0.0.1:$pport" >"$TMP/prom.log" 2>&1 &
        ppid=$!
        for _ in $(seq 60); do
            sleep 0.5
            kill -0 "$ppid" 2>/dev/null || break
            curl -s "http://127.0.0.1:$pport/api/v1/query?query=clipd_steps_total" >"$TMP/q.json" 2>/dev/null || continue
            if jq -e '.status == "success" and (.data.result[0].value[1] | tonumber) > 0' "$TMP/q.json" >/dev/null 2>&1; then ok=0; break; fi
        done
        if kill -0 "$ppid" 2>/dev/null; then kill "$ppid"; wait "$ppid" 2>/dev/null; break; fi
        wait "$ppid" 2>/dev/null
        echo "prometheus (try $try, port $pport) exited early:"; tail -3 "$TMP/prom.log"
    done
    jq -c '.data.result[0]' "$TMP/q.json" 2>/dev/null
    return $ok
}
check "a real Prometheus server scrapes clipd_steps_total" prometheus_scrapes

stop_metrics_job() { sig_job USR1 mpirun "$mbg" && wait "$mbg" && [ ! -e "$TMP/met/metrics.addr" ]; }
check "the metrics job stops cleanly on SIGUSR1" stop_metrics_job

bad_listen() { expect_exit 2 "metrics.listen" build/clipd --check "$TINY" --set metrics.listen=localhost; }
check "metrics.listen that is not HOST:PORT or off: exit 2" bad_listen
