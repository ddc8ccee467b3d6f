#!/usr/bin/env bash
# Runs herald-bench against a release build of Herald on Postgres + Redis,
# delivering to Postfix's smtp-sink, with smtp-source as the worker baseline.
# Needs: Postgres and Redis on 127.0.0.1 (as in CI), `apt-get install postfix`.
# Usage: bench/run.sh [--before-after] [herald-bench flags...]   (--live-only for
# the live path, --inbox-only for the inbox's API phases, --flood-only for the
# login flood, --app-only for application sends).
# --before-after runs the bench twice, each on a fresh database and a fresh
# Herald: first as issue 13 found it (BENCH_BEFORE's settings, and the status
# indexes as they were before migration 11), then as it is; then prints both
# runs' headline figures side by side with their ratios.
# BENCH_DB, BENCH_PORT, SINK_PORT and METRICS_PORT let two runs share the
# machine. BENCH_PG_STAT_STATEMENTS=1 adds pg_stat_statements to Postgres's
# shared_preload_libraries and restarts Postgres if it is not loaded yet (for
# SQL statements per notification; without it the bench counts transactions).
# BENCH_BEFORE_BIN runs the before run on another herald binary (one built
# from an earlier commit); with BENCH_BEFORE= and BENCH_BEFORE_SQL= (empty)
# the two runs differ only in the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=${BENCH_DB:-herald_bench}
sink_port=${SINK_PORT:-2525}
port=${BENCH_PORT:-8000}
metrics_port=${METRICS_PORT:-9464}
# Settings that issue 13's changes turned on; unknown variables are ignored.
before_env=${BENCH_BEFORE-HERALD_SEND_BATCH=1 HERALD_WORKER_BATCH=1 HERALD_RESPONSE_CACHE=off}
before_bin=${BENCH_BEFORE_BIN:-target/release/herald}
herald_bin=target/release/herald
# The status indexes as migration 11 found them (full, not partial).
before_sql=${BENCH_BEFORE_SQL-"
DROP INDEX IF EXISTS notifications_status_due_idx, notifications_status_send_at_idx, notifications_status_expires_at_idx;
CREATE INDEX notifications_status_due_idx ON notifications (status, next_attempt_at);
CREATE INDEX notifications_status_send_at_idx ON notifications (status, send_at);
CREATE INDEX notifications_status_expires_at_idx ON notifications (status, expires_at);
ALTER TABLE notifications RESET (fillfactor);"}
before_after=
if [ "${1:-}" = --before-after ]; then before_after=1; shift; fi

command -v smtp-sink >/dev/null || { echo "smtp-sink missing: apt-get install postfix" >&2; exit 1; }
cargo build --release -p herald -p herald-bench

if [ "${BENCH_PG_STAT_STATEMENTS:-}" = 1 ] &&
  ! psql "$admin" -Atc "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
  psql "$admin" -qc "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
fi

smtp-sink -u nobody "127.0.0.1:$sink_port" 2000 &
sink=$!
herald=
prefix=
stop_herald() {
  # Herald is waited for before its keys go: it writes while shutting down.
  if [ -n "$herald" ]; then kill "$herald" 2>/dev/null || true; wait "$herald" 2>/dev/null || true; fi
  if [ -n "$prefix" ]; then .ci/redis-forget "$prefix" || true; fi
  herald= prefix=
}
tmp=$(mktemp -d)
trap 'stop_herald; kill $sink 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_ready() {
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return; sleep 0.2; done
  echo "Herald did not become ready" >&2; exit 1
}

# The resident memory of `herald serve` with nothing configured (SQLite, the
# in-process queue, cache and bus; worker included), idle 3 s after it is ready.
embedded_rss() {
  env -i PATH="$PATH" HERALD_DATA_DIR="$tmp/embedded" HERALD_BIND=127.0.0.1:$port RUST_LOG=warn \
    target/release/herald serve >&2 &
  herald=$!
  wait_ready
  sleep 3
  awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$herald/status"
  stop_herald
}

# One run: a fresh database and Herald (with the extra settings in $1, the
# SQL in $2 run after its migrations), then herald-bench with the rest.
run() {
  local extra=$1 sql=$2
  shift 2
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  prefix="bench-$(date +%s):"
  # shellcheck disable=SC2086 # $extra is a list of NAME=value words.
  env $extra DATABASE_URL="${admin%/*}/$db" REDIS_URL=redis://127.0.0.1:6379 HERALD_REDIS_PREFIX="$prefix" \
  SMTP_URL="smtp://127.0.0.1:$sink_port" JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
  HERALD_SEND_PER_MINUTE=100000000 HERALD_SEND_BURST=10000000 HERALD_WS_MAX_SOCKETS_PER_USER=1000000 \
  HERALD_REGISTER_PER_IP=1000000 HERALD_LOGIN_FAILURES_PER_IP=1000000 HERALD_APP_SEND_PER_SECOND=1000000 HERALD_APP_SEND_BURST=10000000 \
  HERALD_METRICS_BIND=127.0.0.1:$metrics_port \
  RUST_LOG=${BENCH_RUST_LOG:-warn} HERALD_BIND=127.0.0.1:$port "$herald_bin" serve &
  herald=$!
  wait_ready
  if [ -n "$sql" ]; then psql "${admin%/*}/$db" -qc "$sql"; fi
  DATABASE_URL="${admin%/*}/$db" HERALD_REDIS_PREFIX="$prefix" \
    target/release/herald-bench --url "http://127.0.0.1:$port/graphql" --smtp-sink "127.0.0.1:$sink_port" \
    --pid "$herald" --metrics-url "http://127.0.0.1:$metrics_port/metrics" "$@"
  stop_herald
}

if [ -z "$before_after" ]; then
  printf 'herald serve, embedded defaults, idle after start: %s MiB RSS\n\n' "$(embedded_rss)"
  run "" "" "$@"
  exit
fi

embedded=$(embedded_rss)
echo "## Before: $before_env, full status indexes"
herald_bin=$before_bin run "$before_env" "$before_sql" --summary "$tmp/before.tsv" "$@"
echo "## After"
run "" "" --summary "$tmp/after.tsv" "$@"
echo "## Before and after (after / before)"
echo
echo "| figure | before | after | after / before |"
echo "|---|---:|---:|---:|"
awk -F'\t' 'NR == FNR { before[$1] = $2; next }
  ($1 in before) { printf "| %s | %.3g | %.3g | %s |\n", $1, before[$1], $2,
    (before[$1] == 0 ? "–" : sprintf("%.2fx", $2 / before[$1])) }' "$tmp/before.tsv" "$tmp/after.tsv"
echo
echo "herald serve, embedded defaults, idle after start: $embedded MiB RSS"
