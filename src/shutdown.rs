//! The order of a shutdown, under one deadline: `HERALD_SHUTDOWN_GRACE`,
//! counted from when shutdown is asked for, covers the HTTP server's
//! in-flight requests and then the send tasks together (not each in turn).
//! The send tasks finish before the background loops are stopped, since a
//! send whose cache bump fails hands it to the lost-bump loop.

use std::{
    future::Future,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use anyhow::Context as _;
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// When the shutdown's grace ends.
#[derive(Clone)]
pub(crate) struct Deadline {
    grace: Duration,
    at: Arc<OnceLock<Instant>>,
}

impl Deadline {
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            grace,
            at: Arc::default(),
        }
    }

    /// Starts the clock, if it is not running yet (call it as soon as
    /// shutdown is asked for); the deadline.
    pub(crate) fn start(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.grace)
    }

    /// Completes once the deadline has passed.
    async fn passed(&self) {
        tokio::time::sleep_until(self.start()).await;
    }
}

/// Runs `server` until `shutdown`, then lets its in-flight requests run
/// until the deadline before it is dropped; then waits for `worker` (which
/// keeps to the same grace). A server that fails cancels `shutdown`, so the
/// worker stops (and puts its jobs back) instead of running on unseen.
pub(crate) async fn serve_then_join<S>(
    server: Option<S>,
    worker: Option<tokio::task::JoinHandle<()>>,
    shutdown: &CancellationToken,
    deadline: &Deadline,
) -> anyhow::Result<()>
where
    S: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let mut result = Ok(());
    if let Some(server) = server {
        let mut server = tokio::spawn(server);
        tokio::select! {
            joined = &mut server => {
                result = joined.context("server task").and_then(|r| r.context("serving HTTP"));
            }
            () = async {
                shutdown.cancelled().await;
                deadline.passed().await;
            } => {
                tracing::warn!(grace = ?deadline.grace, "shutdown grace period over; dropping open connections");
                server.abort();
            }
        }
        if result.is_err() {
            shutdown.cancel();
        }
    }
    if let Some(worker) = worker {
        worker.await.context("worker task")?;
    }
    result
}

/// After the server and the worker: the send tasks get what is left of the
/// deadline; then `background` is cancelled and its loops (`loops`) get
/// the rest, if any (they end as soon as they see it).
pub(crate) async fn wind_down(
    sends: &TaskTracker,
    background: &CancellationToken,
    loops: &TaskTracker,
    deadline: &Deadline,
) {
    wait_for(sends, deadline, "sends").await;
    background.cancel();
    wait_for(loops, deadline, "background tasks").await;
}

/// Waits until `tasks` have ended or the deadline has passed (then logs
/// that `what` are abandoned).
async fn wait_for(tasks: &TaskTracker, deadline: &Deadline, what: &str) {
    tasks.close();
    tokio::select! {
        biased;
        () = tasks.wait() => {}
        () = deadline.passed() => {
            tracing::warn!(tasks = tasks.len(), "shutdown grace period over; abandoning unfinished {what}");
        }
    }
}

/// Runs `tick` on `owner` every `interval` (the first at once, late ticks
/// delayed, not bunched) in a task of `tasks`, until `stop` or until the
/// owner is dropped.
pub(crate) fn every<T, F, Fut>(
    tasks: &TaskTracker,
    interval: Duration,
    stop: CancellationToken,
    owner: Weak<T>,
    mut tick: F,
) where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let Some(owner) = owner.upgrade() else { break };
            tick(owner).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_failing_server_stops_the_worker() {
        let shutdown = CancellationToken::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let worker = tokio::spawn({
            let (shutdown, stopped) = (shutdown.clone(), stopped.clone());
            async move {
                shutdown.cancelled().await;
                stopped.store(true, Ordering::SeqCst);
            }
        });
        let failing = async { Err(std::io::Error::other("the listener broke")) };
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            serve_then_join(
                Some(failing),
                Some(worker),
                &shutdown,
                &Deadline::new(Duration::from_secs(1)),
            ),
        )
        .await
        .expect("returns once the worker has stopped");
        let error = format!("{:#}", result.expect_err("the server's error"));
        assert!(error.contains("the listener broke"), "{error}");
        assert!(stopped.load(Ordering::SeqCst), "the worker was stopped");
    }

    /// A send still running at shutdown finishes while the background
    /// loops still run: a cache bump it loses is handed to a retry loop
    /// that is not already stopped.
    #[tokio::test]
    async fn sends_finish_before_the_background_stops() {
        let (sends, loops) = (TaskTracker::new(), TaskTracker::new());
        let background = CancellationToken::new();
        let stopped_under_it = Arc::new(AtomicBool::new(true));
        sends.spawn({
            let (background, seen) = (background.clone(), stopped_under_it.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen.store(background.is_cancelled(), Ordering::SeqCst);
            }
        });
        let deadline = Deadline::new(Duration::from_secs(10));
        deadline.start();
        wind_down(&sends, &background, &loops, &deadline).await;
        assert!(
            !stopped_under_it.load(Ordering::SeqCst),
            "the background was stopped under a running send"
        );
        assert!(background.is_cancelled());
    }

    /// A request and a send that both outlast the grace: the shutdown ends
    /// one grace after it was asked for, not one for each in turn.
    #[tokio::test]
    async fn one_grace_covers_requests_and_sends() {
        let grace = Duration::from_secs(1);
        let shutdown = CancellationToken::new();
        let (sends, loops) = (TaskTracker::new(), TaskTracker::new());
        sends.spawn(std::future::pending::<()>());
        let stuck_request = std::future::pending::<std::io::Result<()>>();
        let deadline = Deadline::new(grace);
        let asked = Instant::now();
        shutdown.cancel();
        deadline.start();
        serve_then_join(Some(stuck_request), None, &shutdown, &deadline)
            .await
            .expect("the server was dropped, not failed");
        wind_down(&sends, &CancellationToken::new(), &loops, &deadline).await;
        let took = asked.elapsed();
        assert!(
            took >= grace && took < grace * 18 / 10,
            "shutdown took {took:?} with a grace of {grace:?}"
        );
    }
}
