//! Turning a notification into an email and handing it to a transport:
//! SMTP (`SMTP_URL`, lettre's pooled async transport) or `.eml` files in
//! `<data dir>/outbox/` (embedded mode).
//!
//! The mailer knows emails (`Email`), not notifications: the worker builds
//! one from a notification and its recipient. Every message carries a
//! `Message-ID` derived from the email's seed (the notification id), so a
//! receiver can drop the copy that an at-least-once redelivery may send.

mod smtp;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use lettre::{
    AsyncFileTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use secrecy::{ExposeSecret as _, SecretString};

pub use smtp::{PoolSize, SmtpPool, SmtpTarget, TlsMode};

pub enum Transport {
    Smtp(smtp::SmtpPool),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// One email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// Makes the `Message-ID`: the same seed, the same id, on every copy.
    pub id_seed: i64,
}

/// Whose fault a failed send is, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The mail server could not be reached or would not talk: refused or
    /// timed-out connections, no greeting, a failed TLS handshake or login,
    /// `421`. Not the message's fault.
    Unreachable,
    /// This message is refused for now (4xx after MAIL, RCPT or DATA), or
    /// was not answered in time; worth another attempt later.
    Transient,
    /// Will never work: 5xx replies, an unusable recipient address.
    Permanent,
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub fault: Fault,
    /// What the notification's `lastError` says, which its owner reads:
    /// the mail server's reply (code and text), or a fixed phrase; never an
    /// internal error's text (hosts, certificates, paths, io errors).
    pub message: String,
    /// What went wrong, in full: for the log.
    pub cause: String,
    /// Whether the mail server replied (an SMTP reply code): only a reply
    /// shows that it is there; a timeout or a broken connection does not.
    pub replied: bool,
}

impl SendError {
    /// The mail server replied `reply` (its code and text): the owner sees
    /// it as it is.
    pub fn reply(fault: Fault, reply: String) -> Self {
        Self {
            fault,
            cause: reply.clone(),
            message: reply,
            replied: true,
        }
    }

    /// No reply: the owner sees `phrase`, the log `cause`.
    pub fn no_reply(fault: Fault, phrase: &str, cause: impl std::fmt::Display) -> Self {
        Self {
            fault,
            message: phrase.to_owned(),
            cause: cause.to_string(),
            replied: false,
        }
    }
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
    /// CA certificates (PEM) trusted for the server's certificate too.
    pub smtp_ca_file: Option<PathBuf>,
    pub from: String,
    pub timeout: Duration,
    /// Where `.eml` files go when there is no SMTP URL.
    pub outbox: PathBuf,
    /// SMTP connections kept open at most.
    pub pool_size: usize,
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
            Some(url) => {
                let mut target = SmtpTarget::parse(url.expose_secret())?;
                if let Some(path) = &config.smtp_ca_file {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("reading SMTP_CA_FILE {}", path.display()))?;
                    target = target.trust(&pem)?;
                }
                Transport::Smtp(smtp::SmtpPool::new(
                    target,
                    config.timeout,
                    config.pool_size,
                ))
            }
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

    pub fn message_id(&self, seed: i64) -> String {
        format!("<notification-{seed}@{}>", self.id_domain)
    }

    /// Sends `email`. Opening the session and sending the message each get
    /// the send timeout.
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let to: Mailbox = email.to.parse().map_err(|e| {
            SendError::no_reply(
                Fault::Permanent,
                "the recipient's email address is not valid",
                format_args!("invalid recipient {:?}: {e}", email.to),
            )
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(self.message_id(email.id_seed)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| {
                SendError::no_reply(
                    Fault::Permanent,
                    "the message could not be built",
                    format_args!("building the message: {e}"),
                )
            })?;
        match &self.transport {
            Transport::Smtp(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Transport::File(file) => tokio::time::timeout(self.timeout, file.send(message))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|written| written.map(drop).map_err(|e| e.to_string()))
                .map_err(|e| {
                    SendError::no_reply(
                        Fault::Transient,
                        "the message could not be written to the outbox",
                        format_args!("writing the .eml file: {e}"),
                    )
                }),
        }
    }

    /// The SMTP pool's connections; `None` when writing files.
    pub fn pool(&self) -> Option<PoolSize> {
        match &self.transport {
            Transport::Smtp(pool) => Some(pool.size()),
            Transport::File(_) => None,
        }
    }

    /// Whether the mail server answers: opens a session (greeting, TLS,
    /// login) without sending anything, and keeps it for the next message.
    /// Writing files needs no server.
    pub async fn probe(&self) -> Result<(), SendError> {
        match &self.transport {
            Transport::Smtp(pool) => pool.probe().await,
            Transport::File(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Message-ID depends on the notification and the sender only, so
    /// every attempt, from any worker or after a restart, repeats it (and a
    /// receiving server can drop the duplicate of a retried send).
    #[tokio::test]
    async fn the_message_id_is_stable_per_notification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mailer = |outbox: &str| {
            Mailer::new(MailerConfig {
                smtp_url: None,
                smtp_ca_file: None,
                from: "Herald <herald@example.org>".into(),
                timeout: Duration::from_secs(5),
                outbox: dir.path().join(outbox),
                pool_size: 1,
            })
            .expect("mailer")
        };
        let (one, another) = (mailer("one"), mailer("another"));
        assert_eq!(one.message_id(42), "<notification-42@example.org>");
        assert_eq!(another.message_id(42), one.message_id(42));
        assert_ne!(one.message_id(43), one.message_id(42));
    }
}
