//! A small pool of SMTP connections on sockets with `TCP_NODELAY`.
//!
//! lettre 0.11.23 leaves Nagle's algorithm on: it writes a message's body
//! and its final `.` in two writes, so every message waits for the server's
//! delayed ACK (40 ms on Linux; lettre PR #1159 fixes it upstream, not yet
//! released). Herald opens the TCP connection itself, turns Nagle off, and
//! hands the socket to lettre's `AsyncSmtpConnection`, which speaks the
//! protocol (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA). For implicit TLS
//! (`smtps://`) Herald also does the TLS handshake on that socket (rustls,
//! as lettre) before handing it over.
//!
//! Certificates are checked against the webpki roots and, when the
//! operator names a file (`SMTP_CA_FILE`), the CA certificates in it.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use lettre::{
    address::Envelope,
    transport::smtp::{
        Error as SmtpError,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
        extension::ClientId,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::rustls::{
    self, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject as _},
};

use super::{Fault, SendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (`smtp://`).
    None,
    /// STARTTLS, and fail if the server does not offer it (`?tls=starttls`).
    StartTls,
    /// STARTTLS when offered (`?tls=opportunistic`).
    Opportunistic,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

#[derive(Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    /// CA certificates trusted besides the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl SmtpTarget {
    /// `smtp://[user:pass@]host[:port][?tls=starttls|required|opportunistic]`
    /// or `smtps://[user:pass@]host[:port]`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).context("SMTP_URL is not a URL")?;
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let tls = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None | Some("none")) => TlsMode::None,
            ("smtp", Some("starttls" | "required")) => TlsMode::StartTls,
            ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtps", None) => TlsMode::Implicit,
            (scheme, tls) => anyhow::bail!(
                "SMTP_URL: unsupported scheme {scheme:?} or tls={tls:?} (use smtp://, smtp://…?tls=starttls or smtps://)"
            ),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .context("SMTP_URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port().unwrap_or(match tls {
            TlsMode::None => 25,
            TlsMode::StartTls | TlsMode::Opportunistic => 587,
            TlsMode::Implicit => 465,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .with_context(|| "SMTP_URL: credentials are not valid percent-encoded UTF-8")
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None => None,
        };
        Ok(Self {
            host,
            port,
            tls,
            credentials,
            extra_roots: Vec::new(),
        })
    }

    /// Trusts the CA certificates of a PEM file too (a private CA, or a
    /// self-signed server certificate). A file without any certificate, or
    /// with one that is not a usable trust anchor, is refused.
    pub fn trust(mut self, pem: &[u8]) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .context("SMTP_CA_FILE: not PEM certificates")?;
        anyhow::ensure!(!certs.is_empty(), "SMTP_CA_FILE holds no certificate");
        let mut probe = RootCertStore::empty();
        for cert in &certs {
            probe
                .add(cert.clone())
                .context("SMTP_CA_FILE: a certificate is not usable as a CA")?;
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// What STARTTLS checks the server's certificate against.
    fn starttls_parameters(&self) -> Result<TlsParameters, SmtpError> {
        let mut builder = TlsParameters::builder(self.host.clone());
        for cert in &self.extra_roots {
            builder = builder.add_root_certificate(Certificate::from_der(cert.to_vec())?);
        }
        builder.build()
    }

    /// The same for implicit TLS, which Herald does itself.
    fn implicit_tls(&self) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Checked in `trust`.
        roots.add_parsable_certificates(self.extra_roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// An implicit-TLS session on a socket Herald opened (with `TCP_NODELAY`),
/// for lettre.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    Ok(String::from_utf8(bytes)?)
}

/// Idle connections older than this are closed rather than reused (servers
/// drop idle sessions: Postfix after 300 s).
const MAX_IDLE: Duration = Duration::from_secs(30);

pub struct SmtpPool {
    target: SmtpTarget,
    hello: ClientId,
    /// What one send (or probe) may take, connecting included.
    connect_timeout: Duration,
    max_idle_connections: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// Sends and probes running now, each on a connection of its own.
    in_use: AtomicUsize,
}

/// The pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Kept open for the next message.
    pub idle: usize,
    /// Opening or sending now.
    pub in_use: usize,
}

/// Counts a connection in use while it lives.
struct InUse<'a>(&'a AtomicUsize);

impl<'a> InUse<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SmtpPool {
    pub fn new(target: SmtpTarget, connect_timeout: Duration, max_idle_connections: usize) -> Self {
        Self {
            target,
            hello: ClientId::default(),
            connect_timeout,
            max_idle_connections: max_idle_connections.max(1),
            idle: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
        }
    }

    /// Its connections now, for the metrics.
    pub fn size(&self) -> PoolSize {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        PoolSize {
            idle,
            in_use: self.in_use.load(Ordering::Relaxed),
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle_connections {
            idle.push((conn, Instant::now()));
        }
    }

    /// A new session, by `deadline`. Whatever fails before the message
    /// (connect, greeting, TLS, login) is the server's side, so it is
    /// `Unreachable`, whatever the reply code.
    async fn open(&self, deadline: Instant) -> Result<AsyncSmtpConnection, SendError> {
        let unreachable =
            |phrase: &str, cause: String| SendError::no_reply(Fault::Unreachable, phrase, cause);
        match tokio::time::timeout_at(deadline, self.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(Connect::Tcp(cause))) => Err(unreachable(UNREACHABLE, cause)),
            Ok(Err(Connect::Tls(e))) => Err(unreachable(tls_phrase(&*e), format!("TLS: {e}"))),
            Ok(Err(Connect::Smtp(e))) => Err(match e.status() {
                Some(_) => SendError::reply(Fault::Unreachable, describe(&e)),
                None if e.is_tls() || untrusted_certificate(&e) => {
                    unreachable(tls_phrase(&e), describe(&e))
                }
                None => unreachable(UNREACHABLE, describe(&e)),
            }),
            Err(_) => Err(unreachable(
                NO_ANSWER,
                format!(
                    "SMTP: no greeting within {} s",
                    self.connect_timeout.as_secs_f32()
                ),
            )),
        }
    }

    /// Opens a session and keeps it for the next message: does the server
    /// answer?
    pub async fn probe(&self) -> Result<(), SendError> {
        let _in_use = InUse::new(&self.in_use);
        let conn = self.open(Instant::now() + self.connect_timeout).await?;
        self.put_back(conn);
        Ok(())
    }

    /// Sends on `conn` by `deadline`; `Err(None)`: no answer in time.
    async fn transmit(
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
        deadline: Instant,
    ) -> Result<(), Option<SmtpError>> {
        match tokio::time::timeout_at(deadline, conn.send(envelope, message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    /// Why a message failed on an open session.
    fn failed(&self, e: Option<SmtpError>) -> SendError {
        match e {
            Some(e) => classify(&e),
            None => SendError::no_reply(
                Fault::Transient,
                NO_ANSWER,
                format_args!(
                    "SMTP: no answer to the message within {} s",
                    self.connect_timeout.as_secs_f32()
                ),
            ),
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Connect> {
        let t = &self.target;
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| Connect::Tcp("timed out".to_owned()))?
        .map_err(|e| Connect::Tcp(e.to_string()))?;
        // The point of this module: no Nagle, no delayed-ACK stall.
        tcp.set_nodelay(true)
            .map_err(|e| Connect::Tcp(e.to_string()))?;
        let mut conn = if t.tls == TlsMode::Implicit {
            let tls_error = |e| Connect::Tls(Box::new(e));
            let connector = t.implicit_tls().map_err(tls_error)?;
            let name = ServerName::try_from(t.host.clone())
                .map_err(|e| tls_error(rustls::Error::General(e.to_string())))?;
            let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| Connect::Tcp("TLS handshake timed out".to_owned()))?
                .map_err(|e| Connect::Tls(Box::new(e)))?;
            AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(tls)), &self.hello)
                .await?
        } else {
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
            let upgrade = match t.tls {
                TlsMode::StartTls => true,
                TlsMode::Opportunistic => conn.can_starttls(),
                TlsMode::None | TlsMode::Implicit => false,
            };
            if upgrade {
                conn.starttls(t.starttls_parameters()?, &self.hello).await?;
            }
            conn
        };
        if let Some(credentials) = &t.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }

    /// Sends one message. A reused connection that turns out to be dead
    /// (closed by the server while idle, without a word or with a `421`) is
    /// replaced once, at once.
    /// All of it within the timeout; a session that timed out is dropped,
    /// not quit: it would not answer.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let _in_use = InUse::new(&self.in_use);
        let deadline = Instant::now() + self.connect_timeout;
        if let Some(mut conn) = self.take_idle() {
            match Self::transmit(&mut conn, envelope, message, deadline).await {
                Ok(()) => {
                    self.put_back(conn);
                    return Ok(());
                }
                Err(Some(e)) if closed_while_idle(&e) => conn.abort().await,
                Err(e) => {
                    if e.is_some() {
                        conn.abort().await;
                    }
                    return Err(self.failed(e));
                }
            }
        }
        let mut conn = self.open(deadline).await?;
        match Self::transmit(&mut conn, envelope, message, deadline).await {
            Ok(()) => {
                self.put_back(conn);
                Ok(())
            }
            Err(e) => {
                if e.is_some() {
                    conn.abort().await;
                }
                Err(self.failed(e))
            }
        }
    }
}

/// Whether `e`, on a connection that sat in the pool, says the server
/// closed it meanwhile: the connection broke without a reply, or the first
/// reply is a `421` (Postfix's idle timeout says so before closing).
fn closed_while_idle(e: &SmtpError) -> bool {
    e.status().is_none_or(|code| u16::from(code) == 421)
}

/// Why a connection could not be opened.
enum Connect {
    /// The TCP connect itself (refused, unreachable, timed out).
    Tcp(String),
    /// The implicit-TLS handshake, or setting it up.
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// The SMTP greeting, EHLO, STARTTLS or AUTH.
    Smtp(SmtpError),
}

impl From<SmtpError> for Connect {
    fn from(e: SmtpError) -> Self {
        Self::Smtp(e)
    }
}

/// What the owner of a notification reads when there was no reply (the
/// cause goes to the log).
const UNREACHABLE: &str = "the mail server could not be reached";
const NO_ANSWER: &str = "the mail server did not answer in time";
const BROKEN: &str = "the connection to the mail server broke during delivery";
const UNTRUSTED: &str = "the mail server's TLS certificate was not trusted";
const NO_TLS: &str = "a secure (TLS) connection to the mail server could not be set up";

/// A failure while sending a message: `421` (the server is closing the
/// session) is the server's side; other 5xx replies are permanent; other
/// 4xx, a broken connection and the rest are worth another attempt.
pub fn classify(e: &SmtpError) -> SendError {
    match e.status().map(u16::from) {
        Some(421) => SendError::reply(Fault::Unreachable, describe(e)),
        Some(_) if e.is_permanent() => SendError::reply(Fault::Permanent, describe(e)),
        Some(_) => SendError::reply(Fault::Transient, describe(e)),
        None => SendError::no_reply(Fault::Transient, BROKEN, describe(e)),
    }
}

/// What the owner reads about a failed TLS handshake.
fn tls_phrase(e: &(dyn std::error::Error + 'static)) -> &'static str {
    if untrusted_certificate(e) {
        UNTRUSTED
    } else {
        NO_TLS
    }
}

/// Whether `e` comes from a server certificate that was refused, through
/// lettre's and io's wrapping.
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        // An io error's `source` skips the error it wraps.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}

fn describe(e: &SmtpError) -> String {
    match e.status() {
        Some(code) => format!("SMTP {code}: {e}"),
        None => format!("SMTP: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_url_form_parses() {
        let t = SmtpTarget::parse("smtp://127.0.0.1:2525").expect("plain");
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("127.0.0.1", 2525, TlsMode::None)
        );
        assert!(t.credentials.is_none());
        let t = SmtpTarget::parse("smtp://user:p%40ss@mail.example.com?tls=starttls")
            .expect("starttls");
        assert_eq!((t.port, t.tls), (587, TlsMode::StartTls));
        assert!(t.credentials.is_some());
        let t =
            SmtpTarget::parse("smtp://mail.example.com?tls=opportunistic").expect("opportunistic");
        assert_eq!(t.tls, TlsMode::Opportunistic);
        let t = SmtpTarget::parse("smtps://user:pass@mail.example.com").expect("smtps");
        assert_eq!((t.port, t.tls), (465, TlsMode::Implicit));
        for bad in [
            "http://example.com",
            "smtp://h?tls=bogus",
            "smtps://h?tls=starttls",
            "smtp://",
        ] {
            assert!(SmtpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_printed() {
        assert_eq!(percent_decode("p%40ss%2Bword").expect("utf-8"), "p@ss+word");
        assert_eq!(percent_decode("a+b").expect("utf-8"), "a+b");
        let t = SmtpTarget::parse("smtp://u:secret@h").expect("ok");
        assert!(!format!("{t:?}").contains("secret"));
    }
}
