//! Application keys (`Authorization: Bearer hk_...`): making a secret, and
//! recognising one on a request without a round trip to the database or
//! Redis.
//!
//! A key is looked up by its SHA-256 (the secret has 256 bits of entropy,
//! so a fast hash is right) once per instance, then served from memory.
//! Revocations are written to the database by `herald api-key revoke`, from
//! another process; each instance notices them by polling the number of
//! revoked keys once per `REVOKE_POLL` (one small query per instance, never
//! one per request, and none while it knows no key) and forgets every key
//! it knows when that number moves.
//! Open websockets of an application re-check their key then.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use base64::Engine as _;
use sea_orm::{DatabaseConnection, DbErr};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::storage;

/// What every secret starts with.
pub const PREFIX: &str = "hk_";
/// Characters of the secret kept (after `hk_`) so `api-key list` can show
/// which key is which.
const SHOWN: usize = 8;
/// How often an instance looks for revoked keys; a revocation takes effect
/// within this plus a request's time, well within 2 s.
pub const REVOKE_POLL: Duration = Duration::from_secs(1);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A freshly made key: the secret (shown once) and what is stored of it.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

/// `hk_` and 32 random bytes in base64url (no padding).
pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    NewKey {
        prefix: secret.chars().take(PREFIX.len() + SHOWN).collect(),
        hash: hash(&secret),
        secret,
    }
}

/// The stored form of a secret: its SHA-256, in hex.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A request made with an API key acts as this application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCaller {
    pub key_id: i64,
    pub name: String,
    /// The secret's hash, to re-check the key after a revocation.
    pub hash: String,
}

#[derive(Default)]
struct Known {
    /// Unrevoked keys seen on this instance, by hash. Unknown hashes are
    /// not kept, so guesses cannot fill it.
    keys: HashMap<String, AppCaller>,
    /// Bumped when the keys are forgotten; a lookup that started before
    /// does not put its (possibly revoked) answer back.
    generation: u64,
    /// The number of revoked keys read before any key in `keys` was looked
    /// up (`None` while `keys` is empty): once it moves, a known key may be
    /// revoked.
    revoked_seen: Option<u64>,
    /// When each key's `last_used_at` was last written from here.
    touched: HashMap<i64, Instant>,
}

/// This instance's view of the keys.
pub struct ApiKeys {
    db: DatabaseConnection,
    known: Mutex<Known>,
    /// Moves whenever a revocation was seen.
    revocations: watch::Sender<u64>,
    /// Where `last_used_at` writes and the poll run.
    tasks: TaskTracker,
}

impl ApiKeys {
    pub fn new(db: DatabaseConnection, tasks: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            db,
            known: Mutex::default(),
            revocations: watch::Sender::new(0),
            tasks,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The application whose secret this is, if it exists and is not
    /// revoked. From memory, after the first request on this instance.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<AppCaller>, DbErr> {
        let Some(app) = self.lookup(hash(secret)).await? else {
            return Ok(None);
        };
        self.touch(app.key_id);
        Ok(Some(app))
    }

    async fn lookup(&self, hash: String) -> Result<Option<AppCaller>, DbErr> {
        let (generation, watched) = {
            let known = self.lock();
            if let Some(app) = known.keys.get(&hash) {
                return Ok(Some(app.clone()));
            }
            (known.generation, known.revoked_seen.is_some())
        };
        // Nothing known yet, so nothing polled: the count the poll compares
        // with is read before the key, so a revocation right after the key's
        // read still moves it.
        let baseline = if watched {
            None
        } else {
            Some(storage::api_keys::revoked_count(&self.db).await?)
        };
        let Some(row) = storage::api_keys::find_by_hash(&self.db, &hash).await? else {
            return Ok(None);
        };
        if row.revoked_at.is_some() {
            return Ok(None);
        }
        let app = AppCaller {
            key_id: row.id,
            name: row.name,
            hash: hash.clone(),
        };
        let mut known = self.lock();
        if known.generation == generation {
            if let Some(baseline) = baseline {
                known.revoked_seen = Some(
                    known
                        .revoked_seen
                        .map_or(baseline, |seen| seen.min(baseline)),
                );
            }
            known.keys.insert(hash, app.clone());
        }
        Ok(Some(app))
    }

    /// Writes `last_used_at` in the background, at most once a minute per
    /// key from this instance (and the update itself skips a key another
    /// instance touched in the last minute).
    fn touch(&self, key_id: i64) {
        let now = Instant::now();
        {
            let mut known = self.lock();
            let due = known
                .touched
                .get(&key_id)
                .is_none_or(|at| now.duration_since(*at) >= TOUCH_EVERY);
            if !due {
                return;
            }
            known.touched.insert(key_id, now);
        }
        let db = self.db.clone();
        self.tasks.spawn(async move {
            if let Err(e) = storage::api_keys::touch(&db, key_id, storage::now()).await {
                tracing::warn!(error = ?e, key_id, "recording an API key's last use failed");
            }
        });
    }

    /// Polls for revocations every `interval` until `stop`.
    pub fn watch_revocations(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        crate::shutdown::every(
            &self.tasks,
            interval,
            stop,
            Arc::downgrade(self),
            |keys| async move {
                // No key known here: none to forget, no query.
                let Some(seen) = keys.lock().revoked_seen else {
                    return;
                };
                match storage::api_keys::revoked_count(&keys.db).await {
                    Ok(count) => {
                        if count != seen {
                            keys.forget();
                        }
                    }
                    // Keys already known keep working while the database
                    // cannot answer; new ones cannot be looked up anyway.
                    Err(e) => tracing::warn!(error = ?e, "checking for revoked API keys failed"),
                }
            },
        );
    }

    /// Forgets every known key, so the next request of each reads it again.
    fn forget(&self) {
        {
            let mut known = self.lock();
            known.keys.clear();
            known.generation += 1;
            known.revoked_seen = None;
        }
        self.revocations.send_modify(|n| *n += 1);
    }

    /// Notifies the returned guard's `revoked` once `app`'s key is found
    /// revoked (checked again after each revocation seen), until it drops.
    pub fn watch(self: &Arc<Self>, app: &AppCaller) -> KeyWatch {
        let revoked = Arc::new(Notify::new());
        let mut changes = self.revocations.subscribe();
        let weak = Arc::downgrade(self);
        let hash = app.hash.clone();
        let notify = revoked.clone();
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(keys) = weak.upgrade() else { return };
                match keys.lookup(hash.clone()).await {
                    Ok(None) => {
                        notify.notify_one();
                        return;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::warn!(error = ?e, "re-checking an API key failed"),
                }
            }
        });
        KeyWatch { revoked, task }
    }
}

/// One watched key (an application's open websocket); dropping it stops
/// the watch.
pub struct KeyWatch {
    pub revoked: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_hk_and_43_base64url_characters_and_only_its_hash_is_kept() {
        let key = generate();
        assert!(key.secret.starts_with("hk_"));
        assert_eq!(key.secret.len(), 3 + 43);
        assert!(
            key.secret[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(key.prefix, key.secret[..11]);
        assert_eq!(key.hash, hash(&key.secret));
        assert_eq!(key.hash.len(), 64);
        assert_ne!(generate().secret, key.secret);
    }
}
