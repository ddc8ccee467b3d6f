//! Helpers for the crate's unit tests.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cancels `stop` and waits until every task on `tasks` has ended; panics
/// with `what` if one is still running after 5 s.
pub async fn shut_down(stop: &CancellationToken, tasks: &TaskTracker, what: &str) {
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        panic!("{what} still running 5 s after shutdown");
    }
}
