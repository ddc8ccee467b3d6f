//! A small SMTP server for tests: speaks enough SMTP over TCP for lettre,
//! records every message, and can be told how to answer the next ones
//! (4xx, 5xx), to hold replies until released, or to hang. It can offer
//! TLS (implicit, or STARTTLS) with a self-signed certificate made for the
//! test, and require `AUTH PLAIN`. It can also go down (stop listening:
//! connections are refused) and come back on the same port, or greet with
//! `421` (service not available).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, rustls};
use tokio_util::sync::CancellationToken;

/// How the sink answers one message (or one connection, for `Hang`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Accept,
    /// `451 4.3.0 try again later`
    Transient,
    /// `550 5.1.1 no such mailbox`
    Permanent,
    /// `421 4.3.2 shutting down`, and the connection closes.
    ShuttingDown,
    /// Accept the connection and never say a word.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt_to: Vec<String>,
    /// Whether the session was encrypted when the message came.
    pub tls: bool,
    /// The user the session authenticated as.
    pub user: Option<String>,
    /// The message as sent (headers and body), dot-unstuffed.
    pub data: String,
}

impl Received {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    /// The reply once the script is used up.
    otherwise: Option<Reply>,
    /// The reply to every message for these recipients, before the script.
    for_recipient: std::collections::HashMap<String, Reply>,
    /// Connections accepted so far.
    connections: usize,
    /// Greet every new connection with `421` and close it.
    greet_421: bool,
    /// Say `421` and close a session that sent no command for this long.
    idle_421: Option<Duration>,
    /// Sessions closed that way.
    idle_closed: usize,
    received: Vec<Received>,
    /// Messages answered with 4xx/5xx.
    rejected: usize,
    /// Messages read in full whose reply is being held.
    held: usize,
    /// Connections taken by a `Hang`.
    hanging: usize,
}

/// What the sink offers besides plain SMTP.
#[derive(Clone, Default)]
pub struct Offer {
    pub tls: Option<SinkTls>,
    /// `AUTH PLAIN` with this user and password, required before `MAIL`
    /// (and offered only once the session is encrypted, if TLS is on).
    pub auth: Option<(String, String)>,
}

#[derive(Clone)]
pub struct SinkTls {
    pub acceptor: TlsAcceptor,
    /// TLS from the first byte (`smtps://`), else after `STARTTLS`.
    pub implicit: bool,
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, made for one
/// test: the acceptor that serves it and the certificate's PEM (for the
/// client to trust).
pub fn self_signed() -> (TlsAcceptor, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
    (TlsAcceptor::from(Arc::new(config)), cert.pem())
}

/// Where a session stands.
#[derive(Clone, Copy)]
struct Session {
    /// Send the 220 banner (not after STARTTLS).
    greet: bool,
    encrypted: bool,
    /// Offer STARTTLS.
    starttls: bool,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    offer: Arc<Offer>,
    state: Arc<Mutex<State>>,
    /// While false, replies to DATA wait.
    open: watch::Sender<bool>,
    /// While up: the listening task.
    up: Arc<Mutex<Option<Listening>>>,
}

struct Listening {
    task: JoinHandle<()>,
    /// Ends the connections it accepted.
    stop: CancellationToken,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(Offer::default()).await
    }

    /// A sink, and a Herald on `backend` that delivers to it; `None` when
    /// the backend is unavailable.
    pub async fn with_app(
        backend: crate::helpers::Backend,
    ) -> Option<(Self, crate::helpers::TestApp)> {
        let sink = Self::start().await;
        let url = sink.url();
        let app = crate::helpers::TestApp::spawn_with(backend, |c| {
            c.mail.smtp_url = Some(secrecy::SecretString::from(url));
        })
        .await?;
        Some((sink, app))
    }

    pub async fn start_with(offer: Offer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let sink = Self {
            port,
            offer: Arc::new(offer),
            state: Arc::default(),
            open: watch::channel(true).0,
            up: Arc::default(),
        };
        sink.listen(listener);
        sink
    }

    fn listen(&self, listener: TcpListener) {
        let server = self.clone();
        let stop = CancellationToken::new();
        let connections = stop.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                server.lock().connections += 1;
                let conn = server.clone();
                let stop = connections.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn.serve(stream) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        *self
            .up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Listening { task, stop });
    }

    /// The server goes down: it stops listening, so connections are
    /// refused, and drops the connections it had open.
    pub async fn refuse_connections(&self) {
        let up = self
            .up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Listening { task, stop }) = up {
            stop.cancel();
            task.abort();
            let _ = task.await;
        }
    }

    /// The server is back, on the same port.
    pub async fn accept_connections(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "rebinding port {}: {e}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.listen(listener);
    }

    /// While on, every new connection is greeted with `421` and closed.
    pub fn greet_with_421(&self, on: bool) {
        self.lock().greet_421 = on;
    }

    /// From now on, a session that sends no command for `after` is told
    /// `421` and closed (as Postfix does after its idle timeout).
    pub fn close_idle_with_421(&self, after: Duration) {
        self.lock().idle_421 = Some(after);
    }

    /// Sessions closed for being idle.
    pub fn idle_closed(&self) -> usize {
        self.lock().idle_closed
    }

    /// Messages read in full whose reply is being held now (`hold`).
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// The reply to every message once the script is used up.
    pub fn otherwise(&self, reply: Reply) {
        self.lock().otherwise = Some(reply);
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The reply to every message for `recipient`, forever (the script and
    /// `otherwise` apply to the others).
    pub fn answer(&self, recipient: &str, reply: Reply) {
        self.lock()
            .for_recipient
            .insert(recipient.to_owned(), reply);
    }

    /// The next replies, in order; after them, `Accept`.
    pub fn script(&self, replies: &[Reply]) {
        self.lock().script.extend(replies.iter().copied());
    }

    /// Hold every DATA reply until `release`.
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// How many copies of each `Message-ID` arrived.
    pub fn copies(&self) -> std::collections::HashMap<String, usize> {
        let mut copies = std::collections::HashMap::new();
        for mail in self.received() {
            *copies
                .entry(mail.header("Message-ID").unwrap_or_default())
                .or_default() += 1;
        }
        copies
    }

    pub fn rejected(&self) -> usize {
        self.lock().rejected
    }

    /// Waits until `n` messages have been read in full and wait for their
    /// reply (after `hold`): their senders have done all they do first.
    pub async fn wait_held(&self, n: usize, within: Duration) {
        self.wait_count("held messages", n, within, |s| s.held)
            .await;
    }

    /// Waits until `n` connections are taken by a `Hang`.
    pub async fn wait_hanging(&self, n: usize, within: Duration) {
        self.wait_count("hanging connections", n, within, |s| s.hanging)
            .await;
    }

    async fn wait_count(
        &self,
        what: &str,
        n: usize,
        within: Duration,
        count: impl Fn(&State) -> usize,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        while count(&self.lock()) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} {what} expected, {} arrived",
                count(&self.lock())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_reply(&self, rcpt_to: &[String]) -> Reply {
        let mut state = self.lock();
        if let Some(reply) = rcpt_to.iter().find_map(|r| state.for_recipient.get(r)) {
            return *reply;
        }
        let otherwise = state.otherwise.unwrap_or(Reply::Accept);
        state.script.pop_front().unwrap_or(otherwise)
    }

    async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        // A Hang at the head of the script takes the whole connection.
        let hang = {
            let mut state = self.lock();
            if state.script.front() == Some(&Reply::Hang) {
                state.script.pop_front();
                state.hanging += 1;
                true
            } else {
                false
            }
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        if self.lock().greet_421 {
            let mut stream = stream;
            stream
                .write_all(b"421 4.3.2 service not available\r\n")
                .await?;
            return Ok(());
        }
        match self.offer.tls.clone() {
            Some(SinkTls {
                acceptor,
                implicit: true,
            }) => {
                let stream = acceptor.accept(stream).await?;
                let session = Session {
                    greet: true,
                    encrypted: true,
                    starttls: false,
                };
                self.session(stream, session).await.map(drop)
            }
            Some(SinkTls { acceptor, .. }) => {
                let session = Session {
                    greet: true,
                    encrypted: false,
                    starttls: true,
                };
                if let Some(plain) = self.session(stream, session).await? {
                    let stream = acceptor.accept(plain).await?;
                    let session = Session {
                        greet: false,
                        encrypted: true,
                        starttls: false,
                    };
                    self.session(stream, session).await?;
                }
                Ok(())
            }
            None => {
                let session = Session {
                    greet: true,
                    encrypted: false,
                    starttls: false,
                };
                self.session(stream, session).await.map(drop)
            }
        }
    }

    /// One SMTP session on `stream`; the stream back when the client asked
    /// for STARTTLS (the caller does the handshake and goes on).
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        session: Session,
    ) -> std::io::Result<Option<S>> {
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read);
        if session.greet {
            write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        }
        let auth_offered =
            self.offer.auth.is_some() && (session.encrypted || self.offer.tls.is_none());
        let mut user: Option<String> = None;
        let mut rcpt_to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let idle_421 = self.lock().idle_421;
            let read = match idle_421 {
                Some(after) => tokio::time::timeout(after, lines.read_line(&mut line)).await,
                None => Ok(lines.read_line(&mut line).await),
            };
            let Ok(read) = read else {
                write
                    .write_all(b"421 4.4.2 sink.test idle too long, closing\r\n")
                    .await?;
                self.lock().idle_closed += 1;
                return Ok(None);
            };
            if read? == 0 {
                return Ok(None);
            }
            let verb = line.trim_end().to_ascii_uppercase();
            if verb.starts_with("EHLO") {
                let mut ehlo = String::from("250-sink.test\r\n250-8BITMIME\r\n");
                if session.starttls {
                    ehlo.push_str("250-STARTTLS\r\n");
                }
                if auth_offered {
                    ehlo.push_str("250-AUTH PLAIN\r\n");
                }
                ehlo.push_str("250 SMTPUTF8\r\n");
                write.write_all(ehlo.as_bytes()).await?;
            } else if verb == "STARTTLS" && session.starttls {
                write.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
                return Ok(Some(lines.into_inner().unsplit(write)));
            } else if verb.starts_with("AUTH PLAIN ") && auth_offered {
                let claimed = plain_credentials(line.trim_end()["AUTH PLAIN ".len()..].trim());
                if claimed.is_some() && claimed == self.offer.auth {
                    user = claimed.map(|(name, _)| name);
                    write.write_all(b"235 2.7.0 authenticated\r\n").await?;
                } else {
                    write.write_all(b"535 5.7.8 bad credentials\r\n").await?;
                }
            } else if verb.starts_with("MAIL FROM") && self.offer.auth.is_some() && user.is_none() {
                write
                    .write_all(b"530 5.7.0 authentication required\r\n")
                    .await?;
            } else if verb.starts_with("HELO")
                || verb.starts_with("NOOP")
                || verb.starts_with("RSET")
            {
                if verb.starts_with("RSET") {
                    rcpt_to.clear();
                }
                write.write_all(b"250 ok\r\n").await?;
            } else if verb.starts_with("MAIL FROM") {
                rcpt_to.clear();
                write.write_all(b"250 ok\r\n").await?;
            } else if verb.starts_with("RCPT TO") {
                let addr = line.trim_end()[8..].trim().trim_start_matches(':').trim();
                rcpt_to.push(addr.trim_matches(['<', '>']).to_owned());
                write.write_all(b"250 ok\r\n").await?;
            } else if verb == "DATA" {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                let mut open = self.open.subscribe();
                if !*open.borrow() {
                    self.lock().held += 1;
                    let _ = open.wait_for(|open| *open).await;
                    self.lock().held -= 1;
                }
                match self.next_reply(&rcpt_to) {
                    Reply::Accept | Reply::Hang => {
                        self.lock().received.push(Received {
                            rcpt_to: std::mem::take(&mut rcpt_to),
                            tls: session.encrypted,
                            user: user.clone(),
                            data,
                        });
                        write.write_all(b"250 2.0.0 queued\r\n").await?;
                    }
                    Reply::Transient => {
                        self.lock().rejected += 1;
                        write.write_all(b"451 4.3.0 try again later\r\n").await?;
                    }
                    Reply::Permanent => {
                        self.lock().rejected += 1;
                        write.write_all(b"550 5.1.1 no such mailbox\r\n").await?;
                    }
                    Reply::ShuttingDown => {
                        self.lock().rejected += 1;
                        write.write_all(b"421 4.3.2 shutting down\r\n").await?;
                        return Ok(None);
                    }
                }
            } else if verb.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(None);
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }
}

/// The user and password of an `AUTH PLAIN` initial response
/// (base64 of `authzid NUL user NUL password`).
fn plain_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((user.to_owned(), password.to_owned()))
}
