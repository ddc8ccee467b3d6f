#!/usr/bin/env bash
# The README's dashboard picture, made again: a Prometheus (Debian's
# `prometheus` package; .ci/promtool installs it) scrapes Herald's metrics
# listener every second while bench/run.sh runs its default phases and then
# its live phases (bench/run.sh passes HERALD_METRICS_BIND on to Herald), and
# render_dashboard.py draws the dashboard's own queries over that window.
# Needs what bench/run.sh needs, and `pip install matplotlib`.
#
#   cargo build --release -p herald -p herald-bench   # first, so that the window holds the bench only
#   deploy/tools/bench-dashboard.sh [assets/dashboard.png]
#
# BENCH_DB, BENCH_PORT, SINK_PORT as for bench/run.sh; METRICS_PORT (9464)
# and PROMETHEUS_PORT (9091) for the two listeners this adds; DEFAULT_ARGS and
# LIVE_ARGS for the two bench runs; PROMETHEUS_DATA keeps Prometheus' data in
# that folder (to draw again: run `prometheus --storage.tsdb.path` on it and
# render_dashboard.py with the start and end this prints).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-assets/dashboard.png}
metrics_port=${METRICS_PORT:-9464}
prometheus_port=${PROMETHEUS_PORT:-9091}
default_args=${DEFAULT_ARGS:---duration 10 --concurrency 32 --notifications 5000 --scheduled 0}
live_args=${LIVE_ARGS:---live-only --duration 10 --rate 500}

.ci/promtool >/dev/null
python3 -c 'import matplotlib' 2>/dev/null || { echo "matplotlib missing: pip install matplotlib" >&2; exit 1; }
work=$(mktemp -d)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: herald
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="${PROMETHEUS_DATA:-$work/data}" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
prometheus=$!
trap 'kill $prometheus 2>/dev/null || true; wait $prometheus 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$prometheus_port/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done

start=$(date +%s)
# shellcheck disable=SC2086 # the arguments are words
HERALD_METRICS_BIND="127.0.0.1:$metrics_port" bench/run.sh $default_args
# shellcheck disable=SC2086
HERALD_METRICS_BIND="127.0.0.1:$metrics_port" bench/run.sh $live_args
sleep 2 # the last scrape
end=$(date +%s)
echo "bench window: --start $start --end $end"

python3 deploy/tools/render_dashboard.py --prometheus "http://127.0.0.1:$prometheus_port" \
  --start "$start" --end "$end" --scrape-interval 1 --out "$out" \
  --caption "Drawn by deploy/tools/render_dashboard.py from the dashboard's own PromQL queries, run against a Prometheus that scraped Herald every second during bench/run.sh ($default_args, then $live_args), $(date -u +%Y-%m-%d) at $(git rev-parse --short HEAD). Not a Grafana screenshot."
