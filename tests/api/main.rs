//! Herald's integration tests: the real server on port 0, a real HTTP client.
//! Most run embedded (SQLite, in-process services) and in services mode
//! (Postgres, Redis) with `both_backends!`; the delivery and cache tests run
//! on the whole matrix, SQLite with Redis and Postgres in process too
//! (`helpers::Backend`, `on_every_backend!`).
//!
//! Postgres comes from `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), Redis from `TEST_REDIS_URL`.
//! Without them those variants print a loud skip notice, unless
//! `HERALD_REQUIRE_SERVICES=1` (as in CI), where they fail.

mod accounts;
mod apikeys;
mod app_fields;
mod cli;
mod cors;
mod delivery;
mod fanout;
mod group_commit;
mod helpers;
mod http;
mod idempotency;
mod inbox;
mod inbox_cache;
mod inbox_events;
mod leaks;
mod limits;
mod logout;
mod metrics;
mod migration10;
mod migration11;
mod migration8;
mod migration9;
mod notifications;
mod outage;
mod persisted;
mod preferences;
mod queue;
mod ratelimits;
mod recipients;
mod relay;
mod resilience;
mod responses;
mod retention;
mod scheduling;
mod smtp_sink;
mod smtp_tls;
mod subscriptions;
mod tokens;
mod traces;
mod webhooks;
mod webhooks_delivery;
mod ws_client;
