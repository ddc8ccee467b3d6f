//! The embedded queue: a bounded tokio channel. Nothing survives a restart;
//! the sweeper re-enqueues PENDING rows from the database on start-up.

use std::time::Duration;

use tokio::sync::{Mutex, mpsc};

use super::{Job, Queue};

pub struct InProcessQueue {
    /// Ids with their `traceparent`.
    tx: mpsc::Sender<(i64, Option<String>)>,
    rx: Mutex<mpsc::Receiver<(i64, Option<String>)>>,
}

impl InProcessQueue {
    /// `capacity` entries at most; past that `enqueue` fails and the row
    /// waits for the sweeper.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

#[async_trait::async_trait]
impl Queue for InProcessQueue {
    async fn enqueue_traced(&self, id: i64, traceparent: Option<&str>) -> anyhow::Result<()> {
        self.tx
            .try_send((id, traceparent.map(str::to_owned)))
            .map_err(|e| anyhow::anyhow!("in-process queue: {e}"))
    }

    async fn next(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Job>> {
        let mut rx = self.rx.lock().await;
        let mut entries = Vec::new();
        match tokio::time::timeout(wait, rx.recv_many(&mut entries, max.max(1))).await {
            Ok(_) | Err(_) => {}
        }
        Ok(entries
            .into_iter()
            .map(|(id, traceparent)| Job {
                id,
                receipt: String::new(),
                deliveries: 1,
                traceparent,
            })
            .collect())
    }

    async fn ack(&self, _job: &Job) -> anyhow::Result<()> {
        Ok(())
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> anyhow::Result<()> {
        tracing::warn!(id = job.id, reason, "dead letter");
        Ok(())
    }

    async fn waiting(&self) -> anyhow::Result<Option<u64>> {
        let held = self.tx.max_capacity() - self.tx.capacity();
        Ok(Some(held as u64))
    }

    fn survives_restart(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_come_out_in_order_and_a_full_queue_refuses() {
        let q = InProcessQueue::new(2);
        q.enqueue(1).await.expect("room");
        q.enqueue(2).await.expect("room");
        assert!(q.enqueue(3).await.is_err());
        assert_eq!(q.waiting().await.expect("waiting"), Some(2));
        let jobs = q.next(10, Duration::from_millis(10)).await.expect("next");
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(
            q.next(10, Duration::from_millis(10))
                .await
                .expect("next")
                .is_empty()
        );
    }
}
