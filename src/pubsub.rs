//! Status events: every committed status change, to every instance.
//!
//! Each instance holds one subscription (a Redis Pub/Sub channel, or
//! nothing in embedded mode) and fans events out in process through a tokio
//! broadcast channel; `subscribe` hands out receivers of that channel.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use redis::{Client, aio::ConnectionManager};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::wire;

/// One status change of one notification, after its commit, in the
/// payload format this release publishes.
pub type StatusEvent = wire::StatusEventV1;

/// Events buffered per receiver before a slow one starts missing some.
const FANOUT_CAPACITY: usize = 4096;

#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, event: &StatusEvent) -> anyhow::Result<()>;
    /// Every event published from now on, by any instance.
    fn subscribe(&self) -> broadcast::Receiver<StatusEvent>;
}

/// Embedded mode: this process is the only publisher.
pub struct InProcessEventBus {
    fanout: broadcast::Sender<StatusEvent>,
}

impl Default for InProcessEventBus {
    fn default() -> Self {
        Self {
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
        }
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessEventBus {
    async fn publish(&self, event: &StatusEvent) -> anyhow::Result<()> {
        // No receiver is not an error: nobody is listening.
        let _ = self.fanout.send(event.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.fanout.subscribe()
    }
}

/// Services mode: `PUBLISH` to one channel; one background subscriber per
/// instance feeds the local fan-out, reconnecting when Redis goes away.
pub struct RedisEventBus {
    manager: ConnectionManager,
    channel: String,
    fanout: broadcast::Sender<StatusEvent>,
}

impl RedisEventBus {
    pub fn new(
        client: Client,
        manager: ConnectionManager,
        channel: String,
        shutdown: CancellationToken,
    ) -> Self {
        let fanout = broadcast::channel(FANOUT_CAPACITY).0;
        tokio::spawn(subscriber(
            client,
            channel.clone(),
            fanout.clone(),
            shutdown,
        ));
        Self {
            manager,
            channel,
            fanout,
        }
    }
}

#[async_trait::async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, event: &StatusEvent) -> anyhow::Result<()> {
        let payload = wire::encode(event)?;
        let mut conn = self.manager.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .context("PUBLISH")?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.fanout.subscribe()
    }
}

async fn subscriber(
    client: Client,
    channel: String,
    fanout: broadcast::Sender<StatusEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let run = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            tracing::debug!(channel, "subscribed to status events");
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = match msg.get_payload() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable status event");
                        continue;
                    }
                };
                match wire::decode::<StatusEvent>(&payload) {
                    Ok(Some(event)) => {
                        let _ = fanout.send(event);
                    }
                    // Published by a release with another payload format
                    // (a rolling deploy): not ours to read.
                    Ok(None) => tracing::debug!("status event of another format version skipped"),
                    Err(e) => tracing::warn!(error = %e, "malformed status event"),
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = run => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "status event subscription lost; reconnecting");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
