//! Status events and inbox hints: every committed change, to every instance.
//!
//! Each instance holds one subscription (two Redis Pub/Sub channels, or
//! nothing in embedded mode) and fans events out in process through tokio
//! broadcast channels; `subscribe` and `subscribe_inbox` hand out receivers.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use redis::{Client, aio::ConnectionManager};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::wire::{self, InboxHintV1};

/// One status change of one notification, after its commit, in the
/// payload format this release publishes.
pub type StatusEvent = wire::StatusEventV1;

/// Events buffered per receiver before a slow one starts missing some.
const FANOUT_CAPACITY: usize = 4096;

/// What an instance's inbox feed brings.
#[derive(Debug, Clone)]
pub enum InboxFeed {
    /// A hint published after a commit (shared, not copied per receiver).
    Hint(Arc<InboxHintV1>),
    /// The feed was interrupted (the Redis subscription reconnected): hints
    /// may have been lost, so every follower re-reads the log.
    Resume,
}

#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, event: &StatusEvent) -> anyhow::Result<()>;
    /// Every event published from now on, by any instance.
    fn subscribe(&self) -> broadcast::Receiver<StatusEvent>;
    /// Publishes an inbox hint; call only after the commit that wrote it.
    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()>;
    /// Every inbox hint published from now on, by any instance.
    fn subscribe_inbox(&self) -> broadcast::Receiver<InboxFeed>;
}

/// Embedded mode: this process is the only publisher.
pub struct InProcessEventBus {
    fanout: broadcast::Sender<StatusEvent>,
    inbox: broadcast::Sender<InboxFeed>,
}

impl Default for InProcessEventBus {
    fn default() -> Self {
        Self {
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
            inbox: broadcast::channel(FANOUT_CAPACITY).0,
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

    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()> {
        let _ = self.inbox.send(InboxFeed::Hint(Arc::new(hint.clone())));
        Ok(())
    }

    fn subscribe_inbox(&self) -> broadcast::Receiver<InboxFeed> {
        self.inbox.subscribe()
    }
}

/// Services mode: `PUBLISH` to two channels (status events, inbox hints);
/// one background subscriber per instance feeds the local fan-outs,
/// reconnecting when Redis goes away.
pub struct RedisEventBus {
    manager: ConnectionManager,
    channels: Channels,
    fanout: broadcast::Sender<StatusEvent>,
    inbox: broadcast::Sender<InboxFeed>,
}

/// The Pub/Sub channel names (from the key builder).
#[derive(Clone)]
pub struct Channels {
    pub status: String,
    pub inbox: String,
}

impl RedisEventBus {
    pub fn new(
        client: Client,
        manager: ConnectionManager,
        channels: Channels,
        shutdown: CancellationToken,
    ) -> Self {
        let fanout = broadcast::channel(FANOUT_CAPACITY).0;
        let inbox = broadcast::channel(FANOUT_CAPACITY).0;
        tokio::spawn(subscriber(
            client,
            channels.clone(),
            (fanout.clone(), inbox.clone()),
            shutdown,
        ));
        Self {
            manager,
            channels,
            fanout,
            inbox,
        }
    }

    async fn publish_to(&self, channel: &str, payload: String) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .context("PUBLISH")?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, event: &StatusEvent) -> anyhow::Result<()> {
        self.publish_to(&self.channels.status, wire::encode(event)?)
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.fanout.subscribe()
    }

    async fn publish_inbox(&self, hint: &InboxHintV1) -> anyhow::Result<()> {
        self.publish_to(&self.channels.inbox, wire::encode(hint)?)
            .await
    }

    fn subscribe_inbox(&self) -> broadcast::Receiver<InboxFeed> {
        self.inbox.subscribe()
    }
}

/// Hands one received payload to its fan-out.
fn dispatch(
    channels: &Channels,
    (fanout, inbox): &(broadcast::Sender<StatusEvent>, broadcast::Sender<InboxFeed>),
    channel: &str,
    payload: &str,
) {
    // Of another format version: published by another release during a
    // rolling deploy, not ours to read (an inbox follower repairs the gap).
    let unreadable =
        |e: &dyn std::fmt::Display| tracing::warn!(channel, error = %e, "malformed event");
    if channel == channels.inbox {
        match wire::decode::<InboxHintV1>(payload) {
            Ok(Some(hint)) => {
                let _ = inbox.send(InboxFeed::Hint(Arc::new(hint)));
            }
            Ok(None) => tracing::debug!("inbox hint of another format version skipped"),
            Err(e) => unreadable(&e),
        }
    } else {
        match wire::decode::<StatusEvent>(payload) {
            Ok(Some(event)) => {
                let _ = fanout.send(event);
            }
            Ok(None) => tracing::debug!("status event of another format version skipped"),
            Err(e) => unreadable(&e),
        }
    }
}

async fn subscriber(
    client: Client,
    channels: Channels,
    fanouts: (broadcast::Sender<StatusEvent>, broadcast::Sender<InboxFeed>),
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let run = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub
                .subscribe(&[channels.status.as_str(), channels.inbox.as_str()])
                .await?;
            tracing::debug!(channels.status, channels.inbox, "subscribed to events");
            // Hints published while the subscription was down are lost:
            // every inbox follower re-reads its log now.
            let _ = fanouts.1.send(InboxFeed::Resume);
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = match msg.get_payload() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable event");
                        continue;
                    }
                };
                dispatch(&channels, &fanouts, msg.get_channel_name(), &payload);
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
