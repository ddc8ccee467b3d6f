//! The HTTP side of a webhook delivery: one POST of the stored body, signed
//! for this attempt, to an address vetted at delivery time.
//!
//! - SSRF: the host is resolved here (`VettingResolver`), and loopback,
//!   private, link-local, CGNAT, unspecified, multicast and broadcast
//!   addresses (and their IPv4-mapped forms) are refused unless private
//!   targets are allowed. reqwest connects only to the addresses the
//!   resolver returned, so a second DNS answer cannot slip in between the
//!   check and the connection. IP-literal URLs are checked the same way.
//! - No redirects are followed, no proxy is used, an attempt takes at most
//!   the timeout, and at most `MAX_RESPONSE_BYTES` of the answer are read
//!   before the connection is dropped.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::signing;

/// The most of a receiver's answer that is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// Anything else: a non-2xx answer, a timeout, a refused connection,
    /// a name that does not resolve, a refused address.
    Failed { error: String },
}

/// One delivery attempt's message.
#[derive(Debug)]
pub struct Message<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    /// `msg_<outbox row id>`: the same on every attempt.
    pub msg_id: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    pub body: &'a [u8],
}

/// Sends webhooks; one per worker (its connection pool is shared).
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(VettingResolver { allow_private }))
            .build()?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// POSTs `message.body`, signed, and reads at most
    /// `MAX_RESPONSE_BYTES` of the answer.
    pub async fn send(&self, message: &Message<'_>) -> Sent {
        match self.try_send(message).await {
            Ok(sent) => sent,
            Err(error) => Sent::Failed { error },
        }
    }

    async fn try_send(&self, message: &Message<'_>) -> Result<Sent, String> {
        let url = super::parse_url(message.url)?;
        // reqwest does not resolve an IP literal: vet it here.
        if let Some(ip) = literal_ip(&url)
            && !self.allow_private
            && let Some(range) = refused_range(ip)
        {
            return Err(refusal(&ip.to_string(), ip, range));
        }
        let signature = signing::sign(
            message.secret,
            message.msg_id,
            message.timestamp,
            message.body,
        )
        .map_err(|e| format!("{e:#}"))?;
        let mut response = self
            .client
            .post(url)
            .header("webhook-id", message.msg_id)
            .header("webhook-timestamp", message.timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.body.to_vec())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        // Read a little of the answer (a receiver may explain a refusal),
        // never more than the cap; dropping the response closes the
        // connection when the rest is unread.
        let mut read = 0usize;
        let mut excerpt = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES.saturating_sub(read);
                    let take = chunk.len().min(room);
                    if excerpt.len() < 200 {
                        excerpt.extend_from_slice(&chunk[..take.min(200 - excerpt.len())]);
                    }
                    read += take;
                    if read >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // The status is what counts; an answer cut short still
                // answered.
                Err(_) => break,
            }
        }
        drop(response);
        if status.is_success() {
            return Ok(Sent::Delivered {
                status: status.as_u16(),
            });
        }
        let excerpt = String::from_utf8_lossy(&excerpt);
        let excerpt = excerpt.trim();
        Ok(Sent::Failed {
            error: if excerpt.is_empty() {
                format!("the endpoint answered {status}")
            } else {
                format!("the endpoint answered {status}: {excerpt}")
            },
        })
    }
}

/// The URL's host when it is an IP address.
fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

fn refusal(host: &str, ip: IpAddr, range: &str) -> String {
    format!(
        "refused: {host} is {ip}, a {range} address (SSRF protection; HERALD_WEBHOOK_ALLOW_PRIVATE=true allows it)"
    )
}

/// reqwest's error with its causes, e.g. "error sending request …: client
/// error (Connect): tcp connect error: Connection refused".
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out waiting for the endpoint".to_owned();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The range an address must not be reached in, if it is in one.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            refused_v6(v6)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible (`::a.b.c.d`), deprecated but routable by some stacks.
        refused_v4(v4)
    } else {
        None
    }
}

/// Resolves with the system resolver, then keeps only addresses outside
/// the refused ranges: what reqwest connects to.
struct VettingResolver {
    allow_private: bool,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("resolving {host}: {e}"))?
                .collect();
            if allow_private {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut allowed = Vec::new();
            let mut refused = None;
            for addr in found {
                match refused_range(addr.ip()) {
                    Some(range) => {
                        refused.get_or_insert((addr.ip(), range));
                    }
                    None => allowed.push(addr),
                }
            }
            if allowed.is_empty() {
                return Err(match refused {
                    Some((ip, range)) => refusal(&host, ip, range),
                    None => format!("resolving {host}: no address"),
                }
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_ranges_are_refused() {
        for refused in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = refused.parse().expect("an address");
            assert!(refused_range(ip).is_some(), "{refused} allowed");
        }
        for allowed in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = allowed.parse().expect("an address");
            assert_eq!(refused_range(ip), None, "{allowed} refused");
        }
    }

    #[tokio::test]
    async fn a_literal_or_resolved_private_address_is_refused_before_connecting() {
        let sender = Sender::new(Duration::from_secs(2), false).expect("client");
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost:9/hook",
        ] {
            let sent = sender
                .send(&Message {
                    url,
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    msg_id: "msg_1",
                    timestamp: 1,
                    body: b"{}",
                })
                .await;
            match sent {
                Sent::Failed { error } => {
                    assert!(
                        error.contains("HERALD_WEBHOOK_ALLOW_PRIVATE"),
                        "{url}: {error}"
                    );
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
