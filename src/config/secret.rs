//! The JWT signing key: `JWT_SECRET`, or in embedded mode a key file in the
//! data folder, created once.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::{auth::jwt::MIN_SECRET_LEN, storage::DatabaseKind};

/// The JWT key: `JWT_SECRET` when set; required for Postgres; otherwise the
/// embedded key file, created once so tokens survive restarts.
pub(super) fn resolve_jwt_secret(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
