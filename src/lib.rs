//! Herald: a notification center server.
//!
//! `main.rs` parses the command line and calls into `app`; everything else is
//! a library so integration tests can start the real server on port 0.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod cors;
pub mod directory;
pub mod domain;
pub mod error;
pub mod follow;
pub mod graphiql;
pub mod graphql;
pub mod group_commit;
pub mod http;
pub mod inbox;
pub mod keys;
pub mod mailer;
pub mod metrics;
pub mod notify;
pub mod preferences;
pub mod pubsub;
pub mod queue;
pub mod ratelimit;
pub mod responses;
mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod webhooks;
pub mod wire;
pub mod worker;
pub mod ws;
