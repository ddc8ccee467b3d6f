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

/// Hashes and verifies passwords on threads of its own, one per permit, at
/// most `permits` at a time: each hash takes 19 MiB and tens of
/// milliseconds of one core, so an unbounded login flood would starve
/// everything else. `per_core` leaves one core free of hashing, and on
/// Linux the threads run at a lower priority (nice `HASH_NICE`), so the
/// API's threads get the cores when they need them: under 32 clients
/// logging in, the cached page's p99 went from 7.7x its idle value (a
/// permit per core, the blocking pool) to 1.2-2.7x (the bench's login flood).
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// The hashing threads' queue; they stop when the last clone is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
    /// Verifications run so far (the dummy ones included).
    verifications: Arc<std::sync::atomic::AtomicU64>,
    /// Where each hash's wait for a permit is recorded (the metrics).
    wait: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..concurrency {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("herald-argon2-{i}"))
                // argon2 keeps its 19 MiB on the heap; the stack stays small.
                .stack_size(256 * 1024)
                .spawn(move || hashing_thread(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs,
            verifications: Arc::default(),
            wait: None,
        }
    }

    /// Records each hash's and check's wait for a permit in `wait`.
    pub fn observed_by(mut self, wait: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.wait = Some(wait);
        self
    }

    /// One permit per core but one (at least one): hashing is pure CPU, and
    /// a login flood keeps every permit busy, so one core stays free of it.
    pub fn per_core() -> Self {
        Self::new(Self::permits_for(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ))
    }

    /// The permits `per_core` gives a machine of `cores` cores.
    pub fn permits_for(cores: usize) -> usize {
        cores.saturating_sub(1).max(1)
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
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password-hashing threads are gone"))?;
        outcome
            .await
            .map_err(|_| anyhow::anyhow!("a password-hashing thread stopped mid-job"))?
    }
}

/// How much lower the hashing threads' priority is (Linux nice, 0 to 19).
pub const HASH_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs from `queue` until every sender is gone.
fn hashing_thread(queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    // Linux gives each thread a nice value of its own; `None` is the
    // calling thread.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, HASH_NICE) {
        tracing::warn!(error = %e, "password hashing runs at normal priority");
    }
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
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

    /// 40 concurrent jobs on 3 permits: never more than 3 run at once,
    /// each on a hashing thread at the lowered priority, and all finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_run_at_most_permits_at_once_on_low_priority_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = PasswordHasher::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..40).map(|_| {
            let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        let name = std::thread::current().name().map(str::to_owned);
                        #[cfg(target_os = "linux")]
                        let nice = rustix::process::getpriority_process(None)?;
                        #[cfg(not(target_os = "linux"))]
                        let nice = HASH_NICE;
                        Ok((name, nice))
                    })
                    .await
            })
        });
        let mut threads = std::collections::HashSet::new();
        for job in jobs.collect::<Vec<_>>() {
            let (name, nice) = job.await.expect("joined").expect("ran");
            assert_eq!(nice, HASH_NICE);
            threads.insert(name.expect("a named thread"));
        }
        assert!(
            most.load(Ordering::SeqCst) <= 3,
            "at most the permits at once"
        );
        assert!(threads.len() <= 3 && threads.iter().all(|t| t.starts_with("herald-argon2-")));
    }

    #[test]
    fn hashing_leaves_a_core_free_of_it() {
        assert_eq!(PasswordHasher::permits_for(1), 1);
        assert_eq!(PasswordHasher::permits_for(2), 1);
        assert_eq!(PasswordHasher::permits_for(8), 7);
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
