//! A small SMTP server for tests: speaks enough SMTP over TCP for lettre,
//! records every message, and can be told how to answer the next ones
//! (4xx, 5xx), to hold replies until released, or to hang. It can also go
//! down (stop listening: connections are refused) and come back on the same
//! port, or greet with `421` (service not available).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// How the sink answers one message (or one connection, for `Hang`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Accept,
    /// `451 4.3.0 try again later`
    Transient,
    /// `550 5.1.1 no such mailbox`
    Permanent,
    /// Accept the connection and never say a word.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt_to: Vec<String>,
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
    /// Connections accepted so far.
    connections: usize,
    /// Greet every new connection with `421` and close it.
    greet_421: bool,
    received: Vec<Received>,
    /// Messages answered with 4xx/5xx.
    rejected: usize,
    /// Messages read in full whose reply is being held.
    held: usize,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let sink = Self {
            port,
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
        let deadline = tokio::time::Instant::now() + within;
        while self.lock().held < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} held messages expected, {} arrived",
                self.lock().held
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_reply(&self) -> Reply {
        let mut state = self.lock();
        let otherwise = state.otherwise.unwrap_or(Reply::Accept);
        state.script.pop_front().unwrap_or(otherwise)
    }

    async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        // A Hang at the head of the script takes the whole connection.
        let hang = {
            let mut state = self.lock();
            if state.script.front() == Some(&Reply::Hang) {
                state.script.pop_front();
                true
            } else {
                false
            }
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        let (read, mut write) = stream.into_split();
        if self.lock().greet_421 {
            write
                .write_all(b"421 4.3.2 service not available\r\n")
                .await?;
            return Ok(());
        }
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let mut rcpt_to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let verb = line.trim_end().to_ascii_uppercase();
            if verb.starts_with("EHLO") {
                write
                    .write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
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
                        return Ok(());
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
                match self.next_reply() {
                    Reply::Accept | Reply::Hang => {
                        self.lock().received.push(Received {
                            rcpt_to: std::mem::take(&mut rcpt_to),
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
                }
            } else if verb.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }
}
