#!/usr/bin/env bash
# make monitoring (part of make test): deploy/monitoring/ checked with the
# real tools: promtool check rules and promtool test rules (synthetic series,
# each alert firing and quiet), the Grafana dashboard's JSON and every one of
# its PromQL expressions (parsed by promtool as recording rules), and every
# metric named in either file is one the coordinator serves. A missing tool
# fails it.
set -uo pipefail
cd "$(dirname "$0")/.."
M=deploy/monitoring
TMP="$(mktemp -d /tmp/clipd-monitoring.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
fail=0
for t in promtool jq; do command -v "$t" >/dev/null || { echo "FAIL $t missing (deploy/packages.txt)"; exit 1; }; done
promtool check rules "$M/clipd-alerts.yml" || fail=1
(cd "$M" && promtool test rules clipd-alerts.test.yml) || fail=1
jq -e '.uid == "clipd-training" and (.panels | length) >= 10 and all(.panels[]; (.targets | length) >= 1)' \
    "$M/clipd-dashboard.json" >/dev/null || { echo "FAIL dashboard JSON"; fail=1; }
{
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    jq -r '.panels[].targets[].expr, .annotations.list[].expr' "$M/clipd-dashboard.json" | sed 's/\$instance/.*/g' |
        awk '{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "      - record: dashboard:expr%d\n        expr: \"%s\"\n", NR, $0 }'
} >"$TMP/dash-rules.yml"
promtool check rules "$TMP/dash-rules.yml" || { echo "FAIL a dashboard expression does not parse"; fail=1; }
# the metric names used exist in what the coordinator serves
served=$(grep -o 'clipd_[a-z_]*' daemon/metrics.c | sort -u)
for name in $(cat "$M/clipd-alerts.yml" "$M/clipd-dashboard.json" | grep -o 'clipd_[a-z_]*' | sort -u); do
    base=${name%_bucket}
    case "$base" in clipd_worker_compute_seconds|clipd_worker_sync_seconds|clipd_worker_step_seconds) base=clipd_worker_ ;; esac
    grep -qx "$base" <<<"$served" || { echo "FAIL $name is not a metric clipd serves (daemon/metrics.c)"; fail=1; }
done
[ "$fail" = 0 ] && echo "monitoring: rules, rule tests, dashboard: ok"
exit "$fail"
