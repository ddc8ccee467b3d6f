//! Group commit: many callers' writes stored in one transaction.
//!
//! Callers hand an item to a [`GroupCommit`] with a key and wait for its
//! answer. The key picks one of its lanes, each a queue with a writer task
//! of its own, which takes every item waiting in its lane, up to the batch
//! size, and gives them to `write`, which answers each in order (one
//! transaction for all of them, and a fallback of its own choosing when that
//! fails). Nothing waits for company: a writer takes what is there when it
//! is free, so a lone item is written at once and a busy server makes bigger
//! batches. Items keyed by their owner's user id keep one user's writes in
//! one lane: they would queue on that user's counter row anyway, and one
//! writer gathers them into one batch where two would each hold half of
//! them waiting for the same lock.
//! The writers end once every `GroupCommit` handle is dropped and what was
//! handed to them is written.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use crate::{
    storage::{
        StorageError,
        notifications::{self, NewNotification},
    },
    wire::InboxEventV1,
};

/// One lane's queue: each item with where its answer goes.
type Lane<T, R> = mpsc::Sender<(T, oneshot::Sender<R>)>;

pub struct GroupCommit<T, R> {
    /// One queue per writer task (a lane); an item goes to the lane of its
    /// key.
    lanes: Arc<[Lane<T, R>]>,
    /// The writers' own thread, if they have one: it stops once the last
    /// handle is gone and its writers have finished.
    _thread: Option<Arc<WriterThread>>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            lanes: self.lanes.clone(),
            _thread: self._thread.clone(),
        }
    }
}

/// Where writer tasks run, and the database they write with.
///
/// On Postgres: a thread of their own with a current-thread runtime and a
/// small pool of their own, opened on that runtime. A writer holds its
/// users' counter rows from its first statement to its commit, so every
/// round trip inside a batch is time those users' other writes wait. On
/// the shared runtime the writer was woken behind every request task
/// queued ahead of it: under load each round trip took milliseconds, and
/// one user's throughput followed. A thread that mostly sleeps is run by
/// the kernel as soon as Postgres answers.
///
/// On SQLite: the shared runtime and the shared pool (an in-memory database
/// exists only on its one connection, and SQLite has one writer anyway).
#[derive(Clone)]
pub struct Writers {
    db: sea_orm::DatabaseConnection,
    thread: Option<Arc<WriterThread>>,
    spawner: Spawner,
}

/// Spawns onto the writers' thread, tracked so that it waits for the task
/// before it stops (or onto the shared runtime). Holds no handle of the
/// thread's: the writer tasks keep one without keeping the thread alive.
#[derive(Clone)]
struct Spawner(Option<(tokio::runtime::Handle, tokio_util::task::TaskTracker)>);

impl Spawner {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.0 {
            Some((handle, tasks)) => {
                tasks.spawn_on(task, handle);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }
}

/// Stops the writers' thread when dropped: it then waits for its writers
/// (they end once every handle of theirs is gone) and closes its pool.
struct WriterThread {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connections of the writers' own pool: one per lane of the inbox's group
/// commit, and one spare.
const WRITER_CONNECTIONS: u32 = 3;

impl Writers {
    /// The writers of an application whose database is `db`, at `url`;
    /// `batched`: whether any group commit runs (else no thread, no pool).
    pub async fn start(
        db: &sea_orm::DatabaseConnection,
        url: &str,
        batched: bool,
    ) -> anyhow::Result<Self> {
        if !batched || db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(Self {
                db: db.clone(),
                thread: None,
                spawner: Spawner(None),
            });
        }
        let (ready, opened) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let tasks = tokio_util::task::TaskTracker::new();
        let url = url.to_owned();
        let tracker = tasks.clone();
        std::thread::Builder::new()
            .name("herald-writers".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                let db = runtime.block_on(crate::storage::db::connect_sized(
                    &url,
                    Some(WRITER_CONNECTIONS),
                ));
                let opened = db.is_ok();
                let _ = ready.send(db.map(|db| (runtime.handle().clone(), db)));
                if opened {
                    runtime.block_on(async move {
                        let _ = stopped.await;
                        tracker.close();
                        tracker.wait().await;
                    });
                }
            })?;
        let (handle, writers_db) = opened.await??;
        Ok(Self {
            db: writers_db,
            thread: Some(Arc::new(WriterThread { stop: Some(stop) })),
            spawner: Spawner(Some((handle, tasks))),
        })
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
    /// Starts `lanes` writer tasks on `writers`, each writing batches of up
    /// to `batch` items of its own lane with `write`, which must answer each
    /// item of its batch, in order. `after` then runs on those answers
    /// before they go out, in a task of its own: the lane's next batch is
    /// written meanwhile (what a batch does once committed need not hold up
    /// the next one's locks).
    pub fn start<W, F, A, AF>(
        what: &'static str,
        writers: &Writers,
        lanes: usize,
        batch: usize,
        write: W,
        after: A,
    ) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
        A: Fn(Vec<R>) -> AF + Send + Sync + 'static,
        AF: Future<Output = Vec<R>> + Send + 'static,
    {
        let (write, after) = (Arc::new(write), Arc::new(after));
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (items, mut waiting) = mpsc::channel(batch.saturating_mul(4).max(1));
                let (write, after, spawner) =
                    (write.clone(), after.clone(), writers.spawner.clone());
                writers.spawner.clone().spawn(async move {
                    while let Some(gathered) = gather(&mut waiting, batch).await {
                        let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                            gathered.into_iter().unzip();
                        let (size, started) = (items.len(), std::time::Instant::now());
                        let answers = write(items).await;
                        tracing::debug!(
                            what,
                            size,
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "batch written"
                        );
                        let after = after.clone();
                        spawner.spawn(async move {
                            let answers = after(answers).await;
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
                        });
                    }
                });
                items
            })
            .collect();
        Self {
            lanes,
            _thread: writers.thread.clone(),
        }
    }

    /// Hands `item` to the next batch of `key`'s lane and waits for its
    /// answer. Items that take the same locks should share a key (the
    /// owner's user id): one lane's batches never wait on each other, and
    /// while its writer waits for a lock, the items behind it gather into
    /// one batch rather than a second writer's batch waiting for the same
    /// lock.
    pub async fn submit(&self, key: u64, item: T, what: &'static str) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        let lanes = u64::try_from(self.lanes.len()).unwrap_or(u64::MAX);
        let lane = usize::try_from(key % lanes).unwrap_or_default();
        self.lanes[lane]
            .send((item, reply))
            .await
            .map_err(|_| Stopped(what))?;
        answer.await.map_err(|_| Stopped(what))
    }
}

/// A change to a user's inbox that [`InboxWrites`] stores in a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// A send (validated, authorized, without an idempotency key).
    Send(Box<NewNotification>),
    /// One of the worker's compare-and-sets (a claim or an outcome).
    Move(Box<notifications::Move>),
}

/// What a [`Change`] stored.
#[derive(Debug)]
pub enum Stored {
    Created(entity::notification::Model, InboxEventV1),
    /// `None`: the compare-and-set lost.
    Moved(Option<notifications::Moved>),
}

impl Stored {
    fn event(&self) -> Option<&InboxEventV1> {
        match self {
            Self::Created(_, event) => Some(event),
            Self::Moved(moved) => moved.as_ref().map(|m| &m.event),
        }
    }
}

type Answer = Result<Stored, StorageError>;

/// The group commit of changes to users' inboxes: sends and the worker's
/// claims and outcomes, in the same lanes, keyed by user (one lane on
/// SQLite, which has one writer at a time anyway; two elsewhere). A batch
/// takes each of its users' counter row once for all their changes, sends
/// and moves alike (`notifications::write_batch`); with a lane of their
/// own each, a user's sends and moves took that row in turn, each batch
/// waiting for the other's commit. Each batch runs in the webhook relay's
/// wake scope (the outbox rows it writes wake the relay), and after its
/// commit each user's cached snapshot moves once, to the last of their
/// events the batch committed, before the batch is answered: the callers
/// announce their events next. Snapshots only move forward, so a batch's
/// may land after the next one's.
#[derive(Clone)]
pub struct InboxWrites(GroupCommit<Change, Answer>);

impl InboxWrites {
    pub fn start(writers: &Writers, batch: usize, inbox: crate::inbox::Inbox) -> Self {
        let lanes = match writers.db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => 1,
            _ => 2,
        };
        let (db, webhooks) = (writers.db.clone(), inbox.webhooks.clone());
        Self(GroupCommit::start(
            "inbox change",
            writers,
            lanes,
            batch,
            move |changes| {
                let db = db.clone();
                webhooks.scope(async move { write(&db, changes).await })
            },
            move |answers| {
                let inbox = inbox.clone();
                async move {
                    let events = answers.iter().filter_map(|a| a.as_ref().ok()?.event());
                    inbox.touched_by(events).await;
                    answers
                }
            },
        ))
    }

    /// Stores `send` in the next batch of its user's lane; answers once it
    /// committed and its user's cached snapshot moved past it.
    pub async fn send(
        &self,
        send: NewNotification,
    ) -> Result<(entity::notification::Model, InboxEventV1), StorageError> {
        match self
            .submit(send.user_id, Change::Send(Box::new(send)))
            .await?
        {
            Stored::Created(row, event) => Ok((row, event)),
            Stored::Moved(_) => Err(mismatched()),
        }
    }

    /// Runs `change` in the next batch of its owner's lane; answers once it
    /// committed and its owner's cached snapshot moved. Announce it next.
    pub async fn run(
        &self,
        change: notifications::Move,
    ) -> Result<Option<notifications::Moved>, StorageError> {
        match self
            .submit(change.user_id, Change::Move(Box::new(change)))
            .await?
        {
            Stored::Moved(moved) => Ok(moved),
            Stored::Created(..) => Err(mismatched()),
        }
    }

    async fn submit(&self, user_id: i64, change: Change) -> Answer {
        self.0
            .submit(user_id.cast_unsigned(), change, "inbox change")
            .await
            .map_err(|e| StorageError::Db(sea_orm::DbErr::Custom(e.to_string())))?
    }
}

fn mismatched() -> StorageError {
    StorageError::Db(sea_orm::DbErr::Custom(
        "a group commit answered a change with another kind's answer".to_owned(),
    ))
}

/// Stores `changes` in one transaction; if that fails, each alone, so only
/// a bad one fails. Answers in the order given.
pub(crate) async fn write(db: &sea_orm::DatabaseConnection, changes: Vec<Change>) -> Vec<Answer> {
    or_each_alone(
        "inbox change",
        changes,
        async |changes| {
            let (mut sends, mut moves, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
            for change in changes {
                kinds.push(matches!(change, Change::Send(_)));
                match change {
                    Change::Send(send) => sends.push(*send),
                    Change::Move(m) => moves.push(*m),
                }
            }
            let written =
                notifications::write_batch(db, &sends, moves, crate::storage::now()).await?;
            let (mut created, mut moved) = (written.created.into_iter(), written.moved.into_iter());
            kinds
                .into_iter()
                .map(|send| {
                    if send {
                        created
                            .next()
                            .map(|(row, event)| Stored::Created(row, event))
                    } else {
                        moved.next().map(Stored::Moved)
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    StorageError::Db(sea_orm::DbErr::Custom(
                        "a batch answered fewer changes than it was given".to_owned(),
                    ))
                })
        },
        async move |change| match change {
            Change::Send(send) => notifications::insert(
                db,
                send.user_id,
                &send.title,
                &send.content,
                &send.options,
                crate::storage::now(),
            )
            .await
            .map(|(row, event)| Stored::Created(row, event)),
            Change::Move(m) => m.run(db).await.map(Stored::Moved),
        },
    )
    .await
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
async fn gather<T>(waiting: &mut mpsc::Receiver<T>, batch: usize) -> Option<Vec<T>> {
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
