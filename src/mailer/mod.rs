//! Turning a notification into an email and handing it to a transport:
//! SMTP (`SMTP_URL`, lettre's pooled async transport) or `.eml` files in
//! `<data dir>/outbox/` (embedded mode).
//!
//! Every message carries a `Message-ID` derived from the notification id, so
//! a receiver can drop the copy that an at-least-once redelivery may send.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use entity::notification;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::PoolConfig,
};
use secrecy::{ExposeSecret as _, SecretString};

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Why a message was not sent, by what should happen next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later: 4xx replies, connection failures, timeouts.
    #[error("{0}")]
    Transient(String),
    /// Will never work: 5xx replies, an unusable recipient address.
    #[error("{0}")]
    Permanent(String),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// The right-hand side of every Message-ID.
    id_domain: String,
    timeout: Duration,
}

pub struct MailerConfig {
    pub smtp_url: Option<SecretString>,
    pub from: String,
    pub timeout: Duration,
    /// Where `.eml` files go when there is no SMTP URL.
    pub outbox: PathBuf,
    /// SMTP connections kept open at most.
    pub pool_size: u32,
}

impl Mailer {
    /// Builds the transport; call inside the runtime (the SMTP pool spawns a
    /// task).
    pub fn new(config: MailerConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("SMTP_FROM {:?} is not a mailbox", config.from))?;
        let id_domain = from.email.domain().to_owned();
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp(smtp_transport(
                url.expose_secret(),
                config.timeout,
                config.pool_size,
            )?),
            None => {
                std::fs::create_dir_all(&config.outbox)
                    .with_context(|| format!("creating {}", config.outbox.display()))?;
                Transport::File(AsyncFileTransport::new(&config.outbox))
            }
        };
        Ok(Self {
            transport,
            from,
            id_domain,
            timeout: config.timeout,
        })
    }

    pub fn message_id(&self, notification_id: i64) -> String {
        format!("<notification-{notification_id}@{}>", self.id_domain)
    }

    /// Sends `notification` to `to`, within the send timeout.
    pub async fn send(
        &self,
        notification: &notification::Model,
        to: &str,
    ) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("invalid recipient {to:?}: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(notification.title.clone())
            .message_id(Some(self.message_id(notification.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(notification.content.clone())
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        let sent = tokio::time::timeout(self.timeout, async {
            match &self.transport {
                Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(classify),
                Transport::File(file) => file
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| SendError::Transient(format!("writing the .eml file: {e}"))),
            }
        })
        .await;
        match sent {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!(
                "no answer from the mail server within {} s",
                self.timeout.as_secs_f32()
            ))),
        }
    }
}

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let text = match e.status() {
        Some(code) => format!("SMTP {code}: {e}"),
        None => format!("SMTP: {e}"),
    };
    if e.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// `smtp://host:port` (plain), `smtp://…?tls=starttls` (or `required`,
/// `opportunistic`), `smtps://…` (implicit TLS); `user:password@` for AUTH.
fn smtp_transport(
    url: &str,
    timeout: Duration,
    pool_size: u32,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let mut parsed = url::Url::parse(url).context("SMTP_URL is not a URL")?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "tls" && v == "starttls" {
                "required".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(parsed.as_str())
        .context("SMTP_URL: use smtp://host:port, smtp://host?tls=starttls or smtps://host")?;
    Ok(builder
        .timeout(Some(timeout))
        .pool_config(
            PoolConfig::new()
                .max_size(pool_size.max(1))
                // Below the usual server idle limits (Postfix: 300 s).
                .idle_timeout(Duration::from_secs(30)),
        )
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn smtp_urls_of_every_documented_form_build() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://user:p%40ss@mail.example.com:587?tls=starttls",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://user:pass@mail.example.com",
        ] {
            assert!(
                smtp_transport(url, Duration::from_secs(5), 4).is_ok(),
                "{url}"
            );
        }
        assert!(smtp_transport("http://example.com", Duration::from_secs(5), 4).is_err());
        assert!(smtp_transport("smtp://h?tls=bogus", Duration::from_secs(5), 4).is_err());
    }

    #[tokio::test]
    async fn the_message_id_is_stable_per_notification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mailer = Mailer::new(MailerConfig {
            smtp_url: None,
            from: "Herald <herald@example.org>".into(),
            timeout: Duration::from_secs(5),
            outbox: dir.path().join("outbox"),
            pool_size: 1,
        })
        .expect("mailer");
        assert_eq!(mailer.message_id(42), "<notification-42@example.org>");
        assert_eq!(mailer.message_id(42), mailer.message_id(42));
    }
}
