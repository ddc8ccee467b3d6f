//! Command line and configuration: every setting is a flag and an environment
//! variable, with defaults that run with nothing installed.
//!
//! `Config` is the resolved form `app::build` takes; tests build it directly.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::{auth::jwt::MIN_SECRET_LEN, storage::DatabaseKind};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a notification center server (GraphQL API, delivery worker, live status)",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (the default).
    Serve(ServeArgs),
    /// Apply database migrations, or show their status.
    Migrate(MigrateArgs),
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Folder for embedded-mode state: the SQLite file and jwt.key.
    #[arg(
        long,
        env = "HERALD_DATA_DIR",
        default_value = "./herald-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// sqlite://… or postgres://…; default: sqlite://<data dir>/herald.db?mode=rwc.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// HS256 signing secret, at least 32 bytes. Required with Postgres; in
    /// embedded mode it defaults to <data dir>/jwt.key, created on first start.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Token lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, env = "JWT_TTL", default_value = "1h", value_parser = parse_duration)]
    pub jwt_ttl: Duration,
    /// Do not apply migrations on start (run `herald migrate` instead).
    #[arg(long, env = "HERALD_NO_MIGRATE")]
    pub no_migrate: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: Option<MigrateAction>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// List migrations and whether each is applied.
    Status,
}

/// Everything `app::build` needs, resolved and validated.
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    /// The HS256 key, at least 32 bytes.
    pub jwt_secret: SecretBox<[u8]>,
    pub jwt_ttl: Duration,
    pub migrate_on_start: bool,
}

impl Cli {
    /// Parses the command line; no subcommand means `serve` with its
    /// environment variables and defaults applied.
    pub fn parse_with_default() -> Self {
        let cli = Self::parse();
        if cli.command.is_some() {
            return cli;
        }
        Self::parse_from(std::env::args_os().chain([std::ffi::OsString::from("serve")]))
    }
}

impl GlobalArgs {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("herald.db").display()
            )
        })
    }
}

impl Config {
    /// Resolves the `serve` settings. Fails with one clear line when a
    /// Postgres deployment has no (or a short) `JWT_SECRET`.
    pub fn from_args(global: &GlobalArgs, serve: ServeArgs) -> anyhow::Result<Self> {
        let database_url = global.database_url();
        let kind = DatabaseKind::of(&database_url)?;
        let jwt_secret = resolve_jwt_secret(serve.jwt_secret, kind, &global.data_dir)?;
        Ok(Self {
            bind: serve.bind,
            database_url,
            jwt_secret,
            jwt_ttl: serve.jwt_ttl,
            migrate_on_start: !serve.no_migrate,
        })
    }
}

/// The JWT key: `JWT_SECRET` when set; required for Postgres; otherwise the
/// embedded key file, created once so tokens survive restarts.
fn resolve_jwt_secret(
    given: Option<SecretString>,
    kind: DatabaseKind,
    data_dir: &Path,
) -> anyhow::Result<SecretBox<[u8]>> {
    match (given, kind) {
        (Some(secret), _) => {
            let bytes = secret.expose_secret().as_bytes();
            anyhow::ensure!(
                bytes.len() >= MIN_SECRET_LEN,
                "JWT_SECRET is {} bytes; it must be at least {MIN_SECRET_LEN} (try: openssl rand -hex 32)",
                bytes.len()
            );
            Ok(SecretBox::new(bytes.into()))
        }
        (None, DatabaseKind::Postgres) => anyhow::bail!(
            "JWT_SECRET is required when DATABASE_URL is Postgres: set it to at least {MIN_SECRET_LEN} random bytes (try: openssl rand -hex 32)"
        ),
        (None, DatabaseKind::Sqlite) => load_or_create_key_file(&data_dir.join("jwt.key")),
    }
}

/// Reads the hex key in `path`, or creates it with 32 random bytes, mode 0600.
/// Two processes starting at once agree: only one `create_new` wins.
fn load_or_create_key_file(path: &Path) -> anyhow::Result<SecretBox<[u8]>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let mut key = [0u8; MIN_SECRET_LEN];
            rand::Rng::fill(&mut rand::rng(), &mut key[..]);
            file.write_all(hex::encode(key).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new JWT signing key");
            Ok(SecretBox::new(Box::new(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let key = hex::decode(text.trim())
                .ok()
                .filter(|k| k.len() >= MIN_SECRET_LEN)
                .with_context(|| {
                    format!(
                        "{} must hold at least {MIN_SECRET_LEN} hex-encoded bytes; delete it to make a new key (all tokens become invalid)",
                        path.display()
                    )
                })?;
            Ok(SecretBox::new(key.into_boxed_slice()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Parses `90`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (e.g. 3600, 90s, 15m, 1h, 7d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn postgres_without_a_secret_is_refused() {
        let dir = std::env::temp_dir();
        let err = resolve_jwt_secret(None, DatabaseKind::Postgres, &dir).expect_err("refused");
        assert!(err.to_string().contains("JWT_SECRET is required"));
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = std::env::temp_dir();
        let short = SecretString::from("too short");
        assert!(resolve_jwt_secret(Some(short), DatabaseKind::Sqlite, &dir).is_err());
    }

    #[test]
    fn the_embedded_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = resolve_jwt_secret(None, DatabaseKind::Sqlite, dir.path()).expect("created");
        let second = resolve_jwt_secret(None, DatabaseKind::Sqlite, dir.path()).expect("read");
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), MIN_SECRET_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("jwt.key"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_cli_defaults_to_serve_and_reads_flags() {
        let cli = Cli::try_parse_from(["herald"]).expect("parses");
        assert!(cli.command.is_none());
        let cli =
            Cli::try_parse_from(["herald", "serve", "--bind", "0.0.0.0:9000", "--no-migrate"])
                .expect("parses");
        match cli.command {
            Some(Command::Serve(args)) => {
                assert_eq!(args.bind, SocketAddr::from(([0, 0, 0, 0], 9000)));
                assert_eq!(args.jwt_ttl, Duration::from_secs(3600));
                assert!(args.no_migrate);
            }
            other => panic!("expected serve, got {other:?}"),
        }
    }
}
