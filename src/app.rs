//! Wiring: `build` turns a `Config` into a bound, ready `Application`;
//! `run_until_stopped` serves until the shutdown token fires.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{JwtKeys, PasswordHasher},
    config::Config,
    graphql::{ApiState, build_schema},
    http::{HttpState, router},
    storage,
};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    db: DatabaseConnection,
}

/// Connects and migrates the database, builds the schema and binds the
/// listener (port 0 picks a free port: see `local_addr`).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let db = storage::connect(&config.database_url).await?;
    if config.migrate_on_start {
        storage::migrate(&db).await?;
    }
    let api = ApiState {
        db: db.clone(),
        jwt: Arc::new(JwtKeys::new(
            config.jwt_secret.expose_secret(),
            config.jwt_ttl,
        )),
        hasher: PasswordHasher::per_core(),
    };
    let schema = build_schema(api.clone());
    let router = router(HttpState { schema, api });
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    Ok(Application {
        listener,
        router,
        addr,
        db,
    })
}

/// How long in-flight requests get after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Application {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests
    /// finish for up to `SHUTDOWN_GRACE`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "serving GraphQL on http://{}/graphql", self.addr);
        let server = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });
        tokio::select! {
            result = server => result.context("server task")?.context("serving HTTP")?,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => tracing::warn!("shutdown grace period over; dropping open connections"),
        }
        self.db.close().await.context("closing the database pool")?;
        Ok(())
    }
}
