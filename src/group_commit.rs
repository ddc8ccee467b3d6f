//! Group commit: many callers' writes stored in one transaction.
//!
//! Callers hand an item to a [`GroupCommit`] and wait for its answer. Its
//! writer tasks each take every item waiting, up to the batch size, and
//! give them to `write`, which answers each in order (one transaction for
//! all of them, and a fallback of its own choosing when that fails). Nothing
//! waits for company: a writer takes what is there when it is free, so a
//! lone item is written at once and a busy server makes bigger batches.
//! The writers end once every `GroupCommit` handle is dropped and what was
//! handed to them is written.

use std::{future::Future, sync::Arc};

use tokio::sync::{Mutex, mpsc, oneshot};

pub struct GroupCommit<T, R> {
    items: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

/// The writer tasks stopped before answering (the runtime is going down).
#[derive(Debug, thiserror::Error)]
#[error("the {0} writer stopped")]
pub struct Stopped(pub &'static str);

impl<T, R> GroupCommit<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts `writers` tasks writing batches of up to `batch` items with
    /// `write`, which must answer each item of its batch, in order.
    pub fn start<W, F>(what: &'static str, writers: usize, batch: usize, write: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (items, waiting) = mpsc::channel(batch.saturating_mul(4).max(1));
        let waiting = Arc::new(Mutex::new(waiting));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            let (waiting, write) = (waiting.clone(), write.clone());
            tokio::spawn(async move {
                while let Some(gathered) = gather(&waiting, batch).await {
                    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        gathered.into_iter().unzip();
                    let answers = write(items).await;
                    if answers.len() != replies.len() {
                        tracing::error!(
                            what,
                            "a group commit answered {} of {} items",
                            answers.len(),
                            replies.len()
                        );
                    }
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // A caller that stopped waiting: what was written stays.
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        Self { items }
    }

    /// Hands `item` to the next batch and waits for its answer.
    pub async fn submit(&self, item: T, what: &'static str) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.items
            .send((item, reply))
            .await
            .map_err(|_| Stopped(what))?;
        answer.await.map_err(|_| Stopped(what))
    }
}

/// Writes `items` with `batch`, one transaction for all of them; if that
/// fails, each alone with `alone`, so only a bad item fails (the failed
/// batch rolled back: nothing of it stays).
pub async fn or_each_alone<T: Clone, R, E: std::fmt::Debug>(
    what: &'static str,
    items: Vec<T>,
    batch: impl AsyncFnOnce(Vec<T>) -> Result<Vec<R>, E>,
    alone: impl AsyncFnOnce(T) -> Result<R, E> + Clone,
) -> Vec<Result<R, E>> {
    match batch(items.clone()).await {
        Ok(written) => written.into_iter().map(Ok).collect(),
        Err(e) if items.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = ?e, what, items = items.len(), "a batch failed; writing each alone");
            let mut answers = Vec::with_capacity(items.len());
            for item in items {
                answers.push(alone.clone()(item).await);
            }
            answers
        }
    }
}

/// The next batch: waits for one item, then takes those already waiting.
/// `None` once every sender is gone and nothing is left.
async fn gather<T>(waiting: &Mutex<mpsc::Receiver<T>>, batch: usize) -> Option<Vec<T>> {
    let mut waiting = waiting.lock().await;
    let first = waiting.recv().await?;
    let mut items = vec![first];
    while items.len() < batch {
        match waiting.try_recv() {
            Ok(next) => items.push(next),
            Err(_) => break,
        }
    }
    Some(items)
}
