//! A TCP relay to Redis that a test can cut, as a network partition would:
//! point an instance's `REDIS_URL` at [`Relay::url`] and only that
//! instance loses Redis.

use std::time::Duration;

use tokio::{net::TcpStream, sync::watch};

use crate::helpers::{TestApp, redis_url};

/// What the relay does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Relayed connections are dropped, new ones refused (accepted and
    /// closed at once).
    Refusing,
    /// Relayed connections are dropped, new ones accepted and left without
    /// a word until the relay is restored, then relayed: packets delayed,
    /// not lost, as when a partition heals.
    BlackHole,
}

pub struct Relay {
    port: u16,
    link: watch::Sender<Link>,
    /// Counts [`Relay::freeze`] calls.
    freezes: watch::Sender<u64>,
}

impl Relay {
    pub async fn to_redis() -> Self {
        let url = url::Url::parse(&redis_url()).expect("redis url");
        let target = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(6379)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (link, watching) = watch::channel(Link::Up);
        let (freezes, frozen) = watch::channel(0);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let link = watching.clone();
                let frozen = frozen.clone();
                let now = *link.borrow();
                match now {
                    Link::Refusing => drop(client),
                    Link::Up | Link::BlackHole => {
                        tokio::spawn(relay(client, target.clone(), link, frozen));
                    }
                }
            }
        });
        Self {
            port,
            link,
            freezes,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.link.send_replace(Link::Refusing);
    }

    /// Drops every relayed connection; new ones hang until [`restore`].
    ///
    /// [`restore`]: Self::restore
    pub fn black_hole(&self) {
        self.link.send_replace(Link::BlackHole);
    }

    /// Every relayed connection goes silent for good without closing (a
    /// dropped NAT entry, a half-open socket); new connections are relayed.
    pub fn freeze(&self) {
        self.freezes.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.link.send_replace(Link::Up);
    }
}

/// Relays `client` to `target` while the link is up; a connection taken
/// while black-holed waits for the link first.
async fn relay(
    mut client: TcpStream,
    target: String,
    mut link: watch::Receiver<Link>,
    mut frozen: watch::Receiver<u64>,
) {
    if link.wait_for(|l| *l == Link::Up).await.is_err() {
        return;
    }
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&target)).await
    else {
        return;
    };
    frozen.mark_unchanged();
    let mut hold = link.clone();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = async { drop(link.wait_for(|l| *l != Link::Up).await) } => {}
        Ok(()) = frozen.changed() => {
            // Both sockets stay open, and nothing moves, until the relay goes.
            while hold.changed().await.is_ok() {}
        }
    }
}

/// A second instance of `app` without a worker whose every Redis
/// connection goes through a relay the test can cut, freeze or restore.
pub async fn sibling_through_relay(app: &TestApp) -> (Relay, TestApp) {
    let relay = Relay::to_redis().await;
    let relayed = relay.url();
    let sibling = app
        .spawn_sibling(|c| {
            c.worker = None;
            if let Some(r) = c.redis.as_mut() {
                r.url = secrecy::SecretString::from(relayed);
            }
        })
        .await;
    (relay, sibling)
}
