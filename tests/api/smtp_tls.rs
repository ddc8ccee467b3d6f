//! SMTP over TLS (STARTTLS and `smtps://`) with `AUTH PLAIN`, against a sink
//! that serves a self-signed certificate made in the test, which Herald
//! trusts through `SMTP_CA_FILE`.

use std::time::{Duration, Instant};

use herald::mailer::{SmtpPool, SmtpTarget};
use lettre::address::Envelope;
use secrecy::SecretString;

use crate::helpers::{Backend, TestApp, unique_email};
use crate::smtp_sink::{Offer, SinkTls, SmtpSink, self_signed};

const USER: &str = "herald";
/// With characters a URL must percent-encode.
const PASSWORD: &str = "s3cret p@ss/word";
const PASSWORD_IN_URL: &str = "s3cret%20p%40ss%2Fword";

/// A sink requiring AUTH over TLS, its `SMTP_URL` for Herald, and the CA
/// file (the sink's certificate) Herald needs to trust it.
async fn tls_sink(implicit: bool) -> (SmtpSink, String, tempfile::NamedTempFile) {
    let (acceptor, pem) = self_signed();
    let sink = SmtpSink::start_with(Offer {
        tls: Some(SinkTls { acceptor, implicit }),
        auth: Some((USER.to_owned(), PASSWORD.to_owned())),
    })
    .await;
    let url = if implicit {
        format!("smtps://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{}", sink.port)
    } else {
        format!(
            "smtp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{}?tls=starttls",
            sink.port
        )
    };
    let mut ca = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut ca, pem.as_bytes()).expect("write CA");
    (sink, url, ca)
}

/// A notification is SENT through Herald's worker, over TLS, logged in.
async fn delivers(implicit: bool) {
    let (sink, url, ca) = tls_sink(implicit).await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.mail.smtp_url = Some(SecretString::from(url));
        c.mail.ca_file = Some(ca.path().to_path_buf());
    })
    .await
    .expect("sqlite");
    let email = unique_email("tls");
    let token = app.token_for(&email).await;
    let id = app.send_ok(&token, "over TLS", "encrypted").await;
    app.wait_for_status(&token, &id, "SENT", Duration::from_secs(20))
        .await;
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].tls, "the message came over TLS");
    assert_eq!(received[0].user.as_deref(), Some(USER));
    assert_eq!(received[0].rcpt_to, vec![email]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth_delivers() {
    delivers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_with_auth_delivers() {
    delivers(true).await;
}

fn pool(url: &str, ca: Option<&tempfile::NamedTempFile>) -> SmtpPool {
    let mut target = SmtpTarget::parse(url).expect("url");
    if let Some(ca) = ca {
        target = target
            .trust(&std::fs::read(ca.path()).expect("read CA"))
            .expect("trusted");
    }
    SmtpPool::new(target, Duration::from_secs(5), 1)
}

fn envelope() -> Envelope {
    Envelope::new(
        Some("herald@localhost".parse().expect("from")),
        vec!["someone@example.com".parse().expect("to")],
    )
    .expect("envelope")
}

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nHello.\r\n";

/// Without the CA the certificate is refused, and nothing is sent; with
/// the wrong password the server refuses the login.
async fn refuses(implicit: bool) {
    let (sink, url, ca) = tls_sink(implicit).await;
    let untrusted = pool(&url, None).send(&envelope(), MESSAGE).await;
    assert!(
        matches!(&untrusted, Err(e) if format!("{e:?}").to_lowercase().contains("certificate")),
        "{untrusted:?}"
    );
    let wrong = url.replace(PASSWORD_IN_URL, "guess");
    let refused = pool(&wrong, Some(&ca)).send(&envelope(), MESSAGE).await;
    assert!(
        matches!(&refused, Err(e) if format!("{e:?}").contains("535")),
        "{refused:?}"
    );
    assert!(sink.received().is_empty());
    // The same pool settings with the right password do send.
    pool(&url, Some(&ca))
        .send(&envelope(), MESSAGE)
        .await
        .expect("sent");
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_refuses_an_untrusted_certificate_and_a_wrong_password() {
    refuses(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_refuses_an_untrusted_certificate_and_a_wrong_password() {
    refuses(true).await;
}

/// Messages one after another on one `smtps://` session: none waits for a
/// delayed ACK (40 ms on Linux) as it did while lettre opened the socket
/// with Nagle's algorithm on. Each message is timed on its own: with the
/// stall every one takes 40 ms or more; without it, a slow one is a rare
/// hiccup of a loaded machine (two are allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_sends_without_the_nagle_stall() {
    let (sink, url, ca) = tls_sink(true).await;
    let pool = pool(&url, Some(&ca));
    // The session opens (handshake, login) outside the measurement.
    pool.send(&envelope(), MESSAGE).await.expect("first");
    const N: usize = 20;
    let mut slow = Vec::new();
    for _ in 0..N {
        let started = Instant::now();
        pool.send(&envelope(), MESSAGE).await.expect("sent");
        let took = started.elapsed();
        if took >= Duration::from_millis(40) {
            slow.push(took);
        }
    }
    assert_eq!(sink.received().len(), N + 1);
    assert!(
        slow.len() <= 2,
        "{} of {N} messages took 40 ms or more ({slow:?}): the delayed-ACK stall is back",
        slow.len()
    );
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let refused = target_with_pem(b"not a certificate");
    assert!(refused.is_err());
    assert!(target_with_pem(b"").is_err(), "an empty file");
}

fn target_with_pem(pem: &[u8]) -> anyhow::Result<SmtpTarget> {
    SmtpTarget::parse("smtps://127.0.0.1:465")
        .expect("url")
        .trust(pem)
}

/// `?tls=opportunistic` upgrades when the server offers STARTTLS, and
/// sends in the clear when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_upgrades_only_when_offered() {
    let (sink, url, ca) = tls_sink(false).await;
    let url = url.replace("tls=starttls", "tls=opportunistic");
    pool(&url, Some(&ca))
        .send(&envelope(), MESSAGE)
        .await
        .expect("sent");
    let plain = SmtpSink::start().await;
    pool(
        &format!("smtp://127.0.0.1:{}?tls=opportunistic", plain.port),
        None,
    )
    .send(&envelope(), MESSAGE)
    .await
    .expect("sent");
    let tls = |sink: &SmtpSink| sink.received().iter().map(|m| m.tls).collect::<Vec<_>>();
    assert_eq!((tls(&sink), tls(&plain)), (vec![true], vec![false]));
}
