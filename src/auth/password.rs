use std::sync::Arc;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _},
};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// An argon2id hash (m=19456 KiB, t=2, p=1, the crate's defaults) of a random
/// password nobody knows. Login verifies against it when the email is unknown,
/// so an unknown email costs the same time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$dG9vX3NhbHR5X3RvX2d1ZXNz$Hw2DoTjnVM9dfqDT3ONQn7A69/8bf8J2b2wH8NgtBRI";

/// Hashes and verifies passwords on the blocking pool, at most `permits` at a
/// time: each hash takes 19 MiB and tens of milliseconds of one core, so an
/// unbounded login flood would starve everything else.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Verifications run so far (the dummy ones included).
    verifications: Arc<std::sync::atomic::AtomicU64>,
    /// Where each hash's wait for a permit is recorded (the metrics).
    wait: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            verifications: Arc::default(),
            wait: None,
        }
    }

    /// Records each hash's and check's wait for a permit in `wait`.
    pub fn observed_by(mut self, wait: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.wait = Some(wait);
        self
    }

    /// One permit per core: hashing is pure CPU.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.expose().to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("argon2 hash failed: {e}"))
        })
        .await
    }

    /// Checks `password` against `hash`, or against a dummy hash when there is
    /// no account, so both cases take the same time. A stored hash that does
    /// not parse is an error (corrupt data), not a wrong password.
    pub async fn verify(&self, password: &str, hash: Option<String>) -> anyhow::Result<bool> {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password = password.to_owned();
        self.run(move || {
            let known = hash.is_some();
            let hash = hash.as_deref().unwrap_or(DUMMY_HASH);
            match Argon2::default().verify_password(password.as_bytes(), hash) {
                Ok(()) => Ok(known),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(anyhow::anyhow!("stored password hash is unusable: {e}")),
            }
        })
        .await
    }

    /// How many verifications have run: an unknown email costs one too.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let asked = std::time::Instant::now();
        let _permit = self.permits.acquire().await?;
        if let Some(wait) = &self.wait {
            wait.observe(asked.elapsed().as_secs_f64());
        }
        tokio::task::spawn_blocking(job).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::new(2);
        let password = Password::parse("correct horse battery").expect("valid");
        let hash = hasher.hash(&password).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            hasher
                .verify("correct horse battery", Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("correct horse battery!", Some(hash))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::new(1);
        assert!(
            !hasher
                .verify("anything at all", None)
                .await
                .expect("verify")
        );
    }

    #[test]
    fn the_dummy_hash_uses_the_same_parameters_as_real_hashes() {
        let parsed = argon2::PasswordHash::new(DUMMY_HASH).expect("parses");
        let params = argon2::Params::try_from(&parsed).expect("params");
        let defaults = argon2::Params::default();
        assert_eq!(params.m_cost(), defaults.m_cost());
        assert_eq!(params.t_cost(), defaults.t_cost());
        assert_eq!(params.p_cost(), defaults.p_cost());
        assert_eq!(parsed.algorithm, argon2::Algorithm::Argon2id.ident());
    }
}
