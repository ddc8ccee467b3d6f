#!/usr/bin/env bash
# Runs herald-bench against a release build of Herald on Postgres + Redis,
# delivering to Postfix's smtp-sink, with smtp-source as the worker baseline.
# Needs: Postgres and Redis on 127.0.0.1 (as in CI), `apt-get install postfix`.
# Usage: bench/run.sh [herald-bench flags...]   (--live-only for the live path,
# --inbox-only for the inbox's API phases, --app-only for application sends).
# BENCH_DB, BENCH_PORT and SINK_PORT let two runs share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=${BENCH_DB:-herald_bench}
sink_port=${SINK_PORT:-2525}
port=${BENCH_PORT:-8000}
prefix="bench-$(date +%s):"

command -v smtp-sink >/dev/null || { echo "smtp-sink missing: apt-get install postfix" >&2; exit 1; }
cargo build --release -p herald -p herald-bench
psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"

smtp-sink -u nobody "127.0.0.1:$sink_port" 2000 &
sink=$!
DATABASE_URL="${admin%/*}/$db" REDIS_URL=redis://127.0.0.1:6379 HERALD_REDIS_PREFIX="$prefix" \
SMTP_URL="smtp://127.0.0.1:$sink_port" JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
HERALD_SEND_PER_MINUTE=100000000 HERALD_SEND_BURST=10000000 HERALD_WS_MAX_SOCKETS_PER_USER=1000000 \
HERALD_REGISTER_PER_IP=1000000 HERALD_APP_SEND_PER_SECOND=1000000 HERALD_APP_SEND_BURST=10000000 \
RUST_LOG=warn HERALD_BIND=127.0.0.1:$port target/release/herald serve &
herald=$!
# Herald is waited for before its keys go: it writes while shutting down.
trap 'kill $herald $sink 2>/dev/null || true; wait $herald 2>/dev/null || true; .ci/redis-forget "$prefix" || true' EXIT
for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:$port/readyz >/dev/null 2>&1 && break; sleep 0.2; done

DATABASE_URL="${admin%/*}/$db" HERALD_REDIS_PREFIX="$prefix" \
  target/release/herald-bench --url "http://127.0.0.1:$port/graphql" --smtp-sink "127.0.0.1:$sink_port" --pid "$herald" "$@"
