//! The `herald` binary itself: subcommands, start-up refusals, restarts.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::helpers::{PASSWORD, error_code};

fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "DATABASE_URL",
        "JWT_SECRET",
        "JWT_TTL",
        "HERALD_BIND",
        "HERALD_DATA_DIR",
        "LOG_FORMAT",
        "HERALD_NO_MIGRATE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["migrate", "status", "--help"],
        &["schema", "--help"],
        &["api-key", "--help"],
        &["api-key", "create", "--help"],
        &["api-key", "list", "--help"],
        &["api-key", "revoke", "--help"],
    ] {
        let out = herald().args(args).output().expect("runs");
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: herald"),
            "{args:?}"
        );
    }
}

#[test]
fn schema_graphql_is_generated_from_the_code() {
    let out = herald().arg("schema").output().expect("runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let committed = std::fs::read_to_string(&path).expect("schema.graphql exists");
    assert!(
        generated == committed,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn serve_refuses_to_start_on_postgres_without_a_jwt_secret() {
    let out = herald()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("JWT_SECRET is required"), "{stderr}");
}

#[test]
fn serve_refuses_a_jwt_secret_shorter_than_32_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = herald()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("HERALD_DATA_DIR", dir.path())
        .env("JWT_SECRET", "short")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
}

#[test]
fn migrate_applies_migrations_and_status_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = |dir: &Path| {
        let out = herald()
            .args(["migrate", "status"])
            .env("HERALD_DATA_DIR", dir)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let before = status(dir.path());
    assert!(
        before.contains("pending  m20261127_000001_create_users"),
        "{before}"
    );
    let out = herald()
        .arg("migrate")
        .env("HERALD_DATA_DIR", dir.path())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = status(dir.path());
    assert!(
        after.contains("applied  m20261127_000001_create_users"),
        "{after}"
    );
    assert!(!after.contains("pending"), "{after}");
}

/// A `herald` process with nothing but a data dir: embedded mode.
struct Server {
    child: Child,
    url: String,
    /// What it logged up to announcing its address.
    log: String,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, "json", &[])
    }

    fn start_with(data_dir: &Path, log_format: &str, env: &[(&str, &str)]) -> Self {
        let mut child = herald()
            .args(["--log-format", log_format, "serve", "--bind", "127.0.0.1:0"])
            .env("HERALD_DATA_DIR", data_dir)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawns");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                // "serving GraphQL on http://{addr}/graphql", in either format.
                if let Some(addr) = line
                    .split_once("serving GraphQL on http://")
                    .and_then(|(_, rest)| rest.split_once("/graphql"))
                    .map(|(addr, _)| addr.to_owned())
                {
                    let _ = tx.send((addr, std::mem::take(&mut log)));
                }
            }
        });
        let (addr, log) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server announces its address");
        Self {
            child,
            url: format!("http://{addr}/graphql"),
            log,
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.child.wait().expect("waits")
    }

    fn signal_term(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn post(
    url: &str,
    query: &str,
    variables: serde_json::Value,
    token: Option<&str>,
) -> serde_json::Value {
    let mut req = reqwest::Client::new()
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    crate::leaks::json_body(req.send().await.expect("request")).await
}

#[tokio::test]
async fn a_restart_keeps_users_and_their_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let body = post(
        &server.url,
        "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token } }",
        json!({ "e": "restart@example.com", "p": PASSWORD }),
        None,
    )
    .await;
    let token = body["data"]["register"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let key = std::fs::read_to_string(dir.path().join("jwt.key")).expect("jwt.key kept");

    let server = Server::start(dir.path());
    let me = post(&server.url, "{ me { email } }", json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["email"], "restart@example.com", "{me}");
    let login = post(
        &server.url,
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        json!({ "e": "restart@example.com", "p": PASSWORD }),
        None,
    )
    .await;
    assert!(login["data"]["login"]["token"].is_string(), "{login}");
    let again = post(
        &server.url,
        "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token } }",
        json!({ "e": "restart@example.com", "p": PASSWORD }),
        None,
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("jwt.key")).expect("key"),
        key
    );
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), "pretty", &[]);
    assert!(server.log.contains("serving GraphQL"), "{}", server.log);
    assert!(
        !server.log.contains('\u{1b}'),
        "ANSI escapes in piped logs: {:?}",
        server.log
    );
}

/// A request whose body is half sent: in flight until the rest comes. It
/// asks `Expect: 100-continue` and sends its body only after the server's
/// `100 Continue`, so the server has demonstrably read the head and is
/// reading the body when this returns.
fn half_sent_request(server: &Server) -> (std::net::TcpStream, &'static [u8]) {
    use std::io::{Read as _, Write as _};
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/graphql");
    let body: &'static [u8] = br#"{"query":"{ __typename }"}"#;
    let mut conn = std::net::TcpStream::connect(addr).expect("connects");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        conn,
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("head");
    let mut interim = Vec::new();
    let mut byte = [0u8];
    while !interim.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte)
            .expect("the server's 100 Continue");
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    conn.write_all(&body[..10]).expect("half the body");
    (conn, &body[10..])
}

#[test]
fn shutdown_grace_governs_in_flight_requests() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(dir.path(), "json", &[("HERALD_SHUTDOWN_GRACE", "2s")]);
    let (mut finishing, rest) = half_sent_request(&server);
    let (mut stalled, _) = half_sent_request(&server);
    // Both requests are being read by the server (it said 100 Continue).
    let asked = std::time::Instant::now();
    server.signal_term();

    // Within the grace: the request completes.
    std::thread::sleep(Duration::from_millis(300));
    finishing.write_all(rest).expect("the rest of the body");
    let mut answer = String::new();
    finishing.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""__typename":"Query""#), "{answer}");

    // After the grace: the stalled one is cut and the process exits.
    let mut nothing = Vec::new();
    let _ = stalled.read_to_end(&mut nothing);
    let status = server.child.wait().expect("exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(nothing.is_empty(), "{}", String::from_utf8_lossy(&nothing));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "exited {took:?} after SIGTERM with a 2 s grace"
    );
}

#[test]
fn a_huge_setting_stops_the_start_with_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = herald()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("HERALD_DATA_DIR", dir.path())
        .env("HERALD_VISIBILITY_TIMEOUT", u64::MAX.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald started with a visibility timeout of u64::MAX seconds");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("reads");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--visibility-timeout") && stderr.contains("out of range"),
        "{stderr}"
    );
}
