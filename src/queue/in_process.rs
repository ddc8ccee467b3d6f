//! The embedded queue: a bounded tokio channel. Nothing survives a restart;
//! the sweeper re-enqueues PENDING rows from the database on start-up.

use std::{
    collections::VecDeque,
    sync::{Mutex as SyncMutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{Mutex, mpsc};

use super::{Depth, Job, Queue};

pub struct InProcessQueue {
    /// Ids with their `traceparent`.
    tx: mpsc::Sender<(i64, Option<String>)>,
    rx: Mutex<mpsc::Receiver<(i64, Option<String>)>>,
    /// When each entry in the channel was queued, in the channel's order
    /// (pushed under this lock with the send, popped after a receive).
    queued_at: SyncMutex<VecDeque<Instant>>,
}

impl InProcessQueue {
    /// `capacity` entries at most; past that `enqueue` fails and the row
    /// waits for the sweeper.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: Mutex::new(rx),
            queued_at: SyncMutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Queue for InProcessQueue {
    async fn enqueue_traced(&self, id: i64, traceparent: Option<&str>) -> anyhow::Result<()> {
        let mut queued_at = self.queued_at();
        self.tx
            .try_send((id, traceparent.map(str::to_owned)))
            .map_err(|e| anyhow::anyhow!("in-process queue: {e}"))?;
        queued_at.push_back(Instant::now());
        Ok(())
    }

    async fn next(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Job>> {
        let mut rx = self.rx.lock().await;
        let mut entries = Vec::new();
        match tokio::time::timeout(wait, rx.recv_many(&mut entries, max.max(1))).await {
            Ok(_) | Err(_) => {}
        }
        let mut queued_at = self.queued_at();
        for _ in 0..entries.len() {
            queued_at.pop_front();
        }
        drop(queued_at);
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

    async fn depth(&self) -> anyhow::Result<Depth> {
        let queued_at = self.queued_at();
        Ok(Depth {
            entries: queued_at.len() as u64,
            oldest: queued_at.front().map(Instant::elapsed),
        })
    }
}

impl InProcessQueue {
    fn queued_at(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.queued_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
