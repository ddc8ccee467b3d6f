//! A user's inbox: the counter row, the event log, the marks and the keyset
//! pages (DESIGN.md, invariant 4).
//!
//! Every write here runs in a transaction that first takes the user's
//! counter row (`INSERT … ON CONFLICT (user_id) DO UPDATE … RETURNING`:
//! a row lock on Postgres, the write lock on SQLite), so one user's changes
//! get gapless seqs and exact counts, and other users' changes run in
//! parallel. Nothing here publishes or caches: callers do that after the
//! commit, as hints.

use chrono::{DateTime, Utc};
use entity::{
    inbox_counter,
    inbox_event::{self},
    notification::{self, Column},
};
use sea_orm::{
    AccessMode,
    ActiveValue::Set,
    ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, ExprTrait as _, IsolationLevel, QueryFilter, QueryOrder as _,
    QuerySelect as _, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sea_query::{Alias, Expr, Func, OnConflict},
};

use super::{StorageError, webhooks};
use crate::{
    domain::inbox::{Counts, InboxAction, State},
    webhooks::EventType,
    wire::{self, InboxChangeV1, InboxEventV1, NotificationV1},
};

type Result<T> = std::result::Result<T, StorageError>;

/// A user's last seq and counts, as of one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub last_seq: i64,
    pub counts: Counts,
}

impl From<inbox_counter::Model> for Snapshot {
    fn from(m: inbox_counter::Model) -> Self {
        Self {
            last_seq: m.last_seq,
            counts: Counts {
                total: m.total,
                unread: m.unread,
                unseen: m.unseen,
            },
        }
    }
}

/// The user's snapshot right after `event`.
impl From<&InboxEventV1> for Snapshot {
    fn from(event: &InboxEventV1) -> Self {
        Self {
            last_seq: event.seq,
            counts: event.counts,
        }
    }
}

/// Begins a transaction that writes one user's inbox. On SQLite it takes
/// the write lock at once (`BEGIN IMMEDIATE`): a deferred transaction that
/// read first could not upgrade while another writer commits.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction> {
    Ok(db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?)
}

/// Begins a read-only transaction whose statements all see one snapshot
/// (REPEATABLE READ on Postgres; a SQLite read transaction has one anyway).
pub async fn begin_snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let options = match db.get_database_backend() {
        DbBackend::Postgres => TransactionOptions {
            isolation_level: Some(IsolationLevel::RepeatableRead),
            access_mode: Some(AccessMode::ReadOnly),
            ..Default::default()
        },
        _ => TransactionOptions::default(),
    };
    Ok(db.begin_with_options(options).await?)
}

/// Moves the user's counter row by `step` seqs, `delta` and `created` new
/// notifications, creating it if needed, and returns it: the row stays
/// locked until the transaction ends.
async fn advance(
    txn: &DatabaseTransaction,
    user_id: i64,
    step: i64,
    delta: Counts,
    created: i64,
) -> Result<Snapshot> {
    use inbox_counter::Column as C;
    let moved = |c: C, by: i64| (c, Expr::col((inbox_counter::Entity, c)).add(by));
    let row = inbox_counter::ActiveModel {
        user_id: Set(user_id),
        last_seq: Set(step),
        total: Set(delta.total),
        unread: Set(delta.unread),
        unseen: Set(delta.unseen),
        notifications: Set(created),
    };
    let upsert = OnConflict::column(C::UserId)
        .values([
            moved(C::LastSeq, step),
            moved(C::Total, delta.total),
            moved(C::Unread, delta.unread),
            moved(C::Unseen, delta.unseen),
            moved(C::Notifications, created),
        ])
        .to_owned();
    let counter = inbox_counter::Entity::insert(row)
        .on_conflict(upsert)
        .exec_with_returning(txn)
        .await?;
    Ok(counter.into())
}

/// Takes the user's counter row (see the module doc) without changing it.
/// The first statement of every inbox write transaction.
pub async fn lock(txn: &DatabaseTransaction, user_id: i64) -> Result<Snapshot> {
    advance(txn, user_id, 0, Counts::default(), 0).await
}

/// Reserves the user's next seq, moving the counts by `delta`; the caller
/// then writes the event with `write_event` in the same transaction.
pub async fn next_seq(txn: &DatabaseTransaction, user_id: i64, delta: Counts) -> Result<Snapshot> {
    advance(txn, user_id, 1, delta, 0).await
}

/// `next_seq` for a new notification: it also counts among every
/// notification of the user's (the old list's total).
pub async fn next_seq_created(txn: &DatabaseTransaction, user_id: i64) -> Result<Snapshot> {
    advance(txn, user_id, 1, Counts::CREATED, 1).await
}

/// Reserves seqs for each user of `steps` (user id → (seqs, created): as
/// many seqs, `created` of them for new notifications, which move the
/// counts by `Counts::CREATED` each and the number of notifications by one;
/// the other seqs keep the counts). One statement takes every counter row,
/// in user id order (so two batches never wait on each other), and answers
/// each user's snapshot after its last reserved seq.
pub async fn next_seqs_many(
    txn: &DatabaseTransaction,
    steps: &std::collections::BTreeMap<i64, (i64, i64)>,
) -> Result<std::collections::BTreeMap<i64, Snapshot>> {
    use inbox_counter::Column as C;
    if steps.is_empty() {
        return Ok(Default::default());
    }
    let moved = |c: C| {
        (
            c,
            Expr::col((inbox_counter::Entity, c)).add(Expr::col((Alias::new("excluded"), c))),
        )
    };
    let rows = steps.iter().map(|(&user_id, &(seqs, created))| {
        let delta = Counts::CREATED.times(created);
        inbox_counter::ActiveModel {
            user_id: Set(user_id),
            last_seq: Set(seqs),
            total: Set(delta.total),
            unread: Set(delta.unread),
            unseen: Set(delta.unseen),
            notifications: Set(created),
        }
    });
    let upsert = OnConflict::column(C::UserId)
        .values([
            moved(C::LastSeq),
            moved(C::Total),
            moved(C::Unread),
            moved(C::Unseen),
            moved(C::Notifications),
        ])
        .to_owned();
    let counters = inbox_counter::Entity::insert_many(rows)
        .on_conflict(upsert)
        .exec_with_returning(txn)
        .await?;
    Ok(counters
        .into_iter()
        .map(|c| (c.user_id, Snapshot::from(c)))
        .collect())
}

/// Reserves the user's next `n` seqs for `n` status changes (the counts
/// stay): the snapshot holds the last of them. Write their events with
/// `write_events`; hand back the ones left unused with `unreserve`.
pub async fn next_seqs(txn: &DatabaseTransaction, user_id: i64, n: i64) -> Result<Snapshot> {
    advance(txn, user_id, n, Counts::default(), 0).await
}

/// Hands back the last `n` seqs this transaction reserved and did not use.
/// Gapless because the counter row stays locked by this transaction.
pub async fn unreserve(txn: &DatabaseTransaction, user_id: i64, n: i64) -> Result<Snapshot> {
    advance(txn, user_id, -n, Counts::default(), 0).await
}

/// The log row of `event`.
fn event_row(event: &InboxEventV1) -> Result<inbox_event::ActiveModel> {
    let payload = wire::encode(event).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    Ok(inbox_event::ActiveModel {
        user_id: Set(event.user_id),
        seq: Set(event.seq),
        kind: Set(event.change.kind().to_owned()),
        at: Set(event.at),
        total: Set(event.counts.total),
        unread: Set(event.counts.unread),
        unseen: Set(event.counts.unseen),
        payload: Set(payload),
    })
}

/// Appends `event` to its user's log (its seq from `next_seq`), with the
/// webhooks it reports (a move to a final status) in the same transaction.
async fn write_event(txn: &DatabaseTransaction, event: &InboxEventV1) -> Result<()> {
    inbox_event::Entity::insert(event_row(event)?)
        .exec_without_returning(txn)
        .await?;
    record_webhooks(txn, std::slice::from_ref(event)).await
}

/// The outbox rows of the webhooks `events` report (none for most events:
/// no statement then).
async fn record_webhooks(txn: &DatabaseTransaction, events: &[InboxEventV1]) -> Result<()> {
    let outgoing = webhooks::from_inbox_events(events);
    if let Some(last) = events.last() {
        webhooks::record(txn, &outgoing, last.at).await?;
    }
    Ok(())
}

/// Rows per multi-row INSERT into the log: under SQLite's and Postgres's
/// limits on bound parameters (8 a row).
const EVENTS_PER_INSERT: usize = 500;

/// Appends `events` (seqs from `next_seqs`) to the log, a few statements
/// for many events.
pub async fn write_events(txn: &DatabaseTransaction, events: &[InboxEventV1]) -> Result<()> {
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let rows = chunk.iter().map(event_row).collect::<Result<Vec<_>>>()?;
        inbox_event::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    record_webhooks(txn, events).await
}

/// Writes the event for `change` at the seq `reserved` holds (from
/// `next_seq` in this transaction).
pub async fn write_reserved(
    txn: &DatabaseTransaction,
    user_id: i64,
    reserved: Snapshot,
    at: DateTime<Utc>,
    change: InboxChangeV1,
) -> Result<InboxEventV1> {
    let event = InboxEventV1 {
        user_id,
        seq: reserved.last_seq,
        at,
        counts: reserved.counts,
        change,
    };
    write_event(txn, &event).await?;
    Ok(event)
}

/// Reserves the next seq with `delta` and writes the event for `change`.
pub async fn append(
    txn: &DatabaseTransaction,
    user_id: i64,
    delta: Counts,
    at: DateTime<Utc>,
    change: InboxChangeV1,
) -> Result<InboxEventV1> {
    let reserved = next_seq(txn, user_id, delta).await?;
    write_reserved(txn, user_id, reserved, at, change).await
}

/// The user's last seq and counts (zero for a user with no counter row yet).
pub async fn snapshot(db: &impl ConnectionTrait, user_id: i64) -> Result<Snapshot> {
    Ok(inbox_counter::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .map(Snapshot::from)
        .unwrap_or_default())
}

/// Which notifications a mark applies to.
#[derive(Debug, Clone)]
pub enum Target {
    /// These ids, each the caller's (checked; duplicates allowed).
    Ids(Vec<i64>),
    /// Every notification with seq <= this (clamped to the last seq).
    UpTo(i64),
}

/// What a mark did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// Notifications whose state changed.
    pub updated: u64,
    /// The counts and last seq right after the mark.
    pub snapshot: Snapshot,
    /// The NotificationsMarked event; `None` when nothing changed.
    pub event: Option<InboxEventV1>,
}

/// Rows `action` would change (given the chain, exactly those whose state
/// `InboxAction::apply` moves).
fn changes(action: InboxAction) -> Condition {
    Condition::all().add(match action {
        InboxAction::Seen => Column::SeenAt.is_null(),
        InboxAction::Read => Column::ReadAt.is_null(),
        InboxAction::Unread => Column::ReadAt.is_not_null(),
        InboxAction::Archive => Column::ArchivedAt.is_null(),
        InboxAction::Unarchive => Column::ArchivedAt.is_not_null(),
    })
}

/// A notification's state as the bit set `State::from_bits` reads.
const STATE_BITS: &str = "(CASE WHEN seen_at IS NULL THEN 0 ELSE 1 END) \
    + (CASE WHEN read_at IS NULL THEN 0 ELSE 2 END) \
    + (CASE WHEN archived_at IS NULL THEN 0 ELSE 4 END)";

/// Applies `action` to the user's notifications `target` names, in one
/// transaction with its event. Another user's id: `Forbidden`, an unknown
/// one: `UnknownNotifications`; either way nothing changes.
pub async fn mark(
    db: &DatabaseConnection,
    user_id: i64,
    action: InboxAction,
    target: Target,
    now: DateTime<Utc>,
) -> Result<Marked> {
    let txn = begin_write(db).await?;
    let before = lock(&txn, user_id).await?;
    let (scope, up_to) = match &target {
        Target::Ids(ids) => {
            check_owner(&txn, user_id, ids).await?;
            (Column::Id.is_in(ids.iter().copied()), None)
        }
        Target::UpTo(up_to) => {
            let up_to = std::cmp::min(*up_to, before.last_seq);
            (Column::Seq.lte(up_to), Some(up_to))
        }
    };
    let scope = Condition::all()
        .add(Column::UserId.eq(user_id))
        .add(scope)
        .add(changes(action));
    // Under the counter lock no other write moves these rows' state, so
    // the deltas counted here are the ones the UPDATE makes.
    let classes: Vec<(i32, i64)> = notification::Entity::find()
        .select_only()
        .column_as(Expr::cust(STATE_BITS), "bits")
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(scope.clone())
        .group_by(Expr::cust("1"))
        .into_tuple()
        .all(&txn)
        .await?;
    let updated: i64 = classes.iter().map(|(_, n)| n).sum();
    if updated == 0 {
        txn.rollback().await?;
        return Ok(Marked {
            updated: 0,
            snapshot: before,
            event: None,
        });
    }
    let delta = classes.iter().fold(Counts::default(), |sum, (bits, n)| {
        sum + action.delta(State::from_bits(i64::from(*bits)), *n)
    });
    if matches!(action, InboxAction::Read | InboxAction::Archive) {
        record_first_reads(&txn, scope.clone(), now).await?;
    }
    let update = set_state(notification::Entity::update_many(), action, now).filter(scope);
    let ids = match target {
        Target::Ids(_) => {
            let mut ids: Vec<i64> = update
                .exec_with_returning(&txn)
                .await?
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort_unstable();
            ids
        }
        Target::UpTo(_) => {
            update.exec(&txn).await?;
            Vec::new()
        }
    };
    let change = InboxChangeV1::NotificationsMarked { action, ids, up_to };
    let event = append(&txn, user_id, delta, now, change).await?;
    txn.commit().await?;
    Ok(Marked {
        updated: u64::try_from(updated).unwrap_or_default(),
        snapshot: Snapshot::from(&event),
        event: Some(event),
    })
}

/// READ and ARCHIVE make unread notifications read: those never read
/// before report `notification.read` once (when an endpoint listens; the
/// UPDATE then stamps `first_read_at`).
async fn record_first_reads(
    txn: &DatabaseTransaction,
    scope: Condition,
    now: DateTime<Utc>,
) -> Result<()> {
    if !webhooks::listens(txn, EventType::Read).await? {
        return Ok(());
    }
    let first_reads = notification::Entity::find()
        .filter(
            scope
                .add(Column::ReadAt.is_null())
                .add(Column::FirstReadAt.is_null()),
        )
        .order_by_asc(Column::Id)
        .all(txn)
        .await?;
    let events: Vec<webhooks::Outgoing> = first_reads
        .into_iter()
        .map(|row| {
            let mut read = NotificationV1::from(row);
            read.read_at = Some(now);
            read.seen_at = read.seen_at.or(Some(now));
            webhooks::Outgoing::new(EventType::Read, now, &read)
        })
        .collect();
    webhooks::record(txn, &events, now).await?;
    Ok(())
}

/// Every id exists and is `user_id`'s.
async fn check_owner(txn: &DatabaseTransaction, user_id: i64, ids: &[i64]) -> Result<()> {
    let owners: Vec<(i64, i64)> = notification::Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::UserId)
        .filter(Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(txn)
        .await?;
    if owners.iter().any(|(_, owner)| *owner != user_id) {
        return Err(StorageError::Forbidden);
    }
    let mut unknown: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !owners.iter().any(|(found, _)| found == id))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    unknown.dedup();
    Err(StorageError::UnknownNotifications(unknown))
}

/// The SET part of `action`'s UPDATE (the state chain: see `InboxAction`).
fn set_state(
    update: sea_orm::UpdateMany<notification::Entity>,
    action: InboxAction,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<notification::Entity> {
    let none = Option::<DateTime<Utc>>::None;
    let keep_or_now = |c: Column| Expr::expr(Func::coalesce([Expr::col(c), Expr::value(now)]));
    match action {
        InboxAction::Seen => update.col_expr(Column::SeenAt, Expr::value(now)),
        InboxAction::Read => update
            .col_expr(Column::ReadAt, Expr::value(now))
            .col_expr(Column::SeenAt, keep_or_now(Column::SeenAt))
            .col_expr(Column::FirstReadAt, keep_or_now(Column::FirstReadAt)),
        InboxAction::Unread => update
            .col_expr(Column::ReadAt, Expr::value(none))
            .col_expr(Column::ArchivedAt, Expr::value(none)),
        InboxAction::Archive => update
            .col_expr(Column::ArchivedAt, Expr::value(now))
            .col_expr(Column::ReadAt, keep_or_now(Column::ReadAt))
            .col_expr(Column::SeenAt, keep_or_now(Column::SeenAt))
            .col_expr(Column::FirstReadAt, keep_or_now(Column::FirstReadAt)),
        InboxAction::Unarchive => update.col_expr(Column::ArchivedAt, Expr::value(none)),
    }
}

/// Which notifications an inbox page lists by archive state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Archived {
    #[default]
    Exclude,
    Include,
    Only,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    pub archived: Archived,
    pub unread_only: bool,
}

impl Filter {
    /// A short plain tag, one per filter (for cache keys).
    pub fn tag(self) -> String {
        let archived = match self.archived {
            Archived::Exclude => 'e',
            Archived::Include => 'i',
            Archived::Only => 'o',
        };
        format!("{archived}{}", u8::from(self.unread_only))
    }
}

/// One keyset page of a user's notifications, newest (highest seq) first,
/// with the user's counts and last seq from the same snapshot.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<notification::Model>,
    pub has_next_page: bool,
    pub snapshot: Snapshot,
}

/// Up to `first` of the user's notifications with seq below `before`
/// (all when `None`), matching `filter`.
pub async fn page(
    db: &DatabaseConnection,
    user_id: i64,
    before: Option<i64>,
    first: u64,
    filter: Filter,
) -> Result<Page> {
    let txn = begin_snapshot(db).await?;
    let snapshot = snapshot(&txn, user_id).await?;
    let mut query = notification::Entity::find().filter(Column::UserId.eq(user_id));
    if let Some(before) = before {
        query = query.filter(Column::Seq.lt(before));
    }
    query = match filter.archived {
        Archived::Exclude => query.filter(Column::ArchivedAt.is_null()),
        Archived::Include => query,
        Archived::Only => query.filter(Column::ArchivedAt.is_not_null()),
    };
    if filter.unread_only {
        query = query.filter(Column::ReadAt.is_null());
    }
    let mut items = query
        .order_by_desc(Column::Seq)
        .limit(first.saturating_add(1))
        .all(&txn)
        .await?;
    txn.commit().await?;
    let has_next_page = items.len() as u64 > first;
    items.truncate(usize::try_from(first).unwrap_or(usize::MAX));
    Ok(Page {
        items,
        has_next_page,
        snapshot,
    })
}

/// What a poll for events after a seq finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// `after` is past the last seq, or older than the retained log: the
    /// client must refetch, then continue after `snapshot.last_seq`.
    Resync(Snapshot),
    /// Events after `after`, oldest first and consecutive.
    Events {
        events: Vec<InboxEventV1>,
        snapshot: Snapshot,
    },
}

/// Up to `first` events of the user's with seq > `after` (`after` >= 0).
pub async fn changes_after(
    db: &DatabaseConnection,
    user_id: i64,
    after: i64,
    first: u64,
) -> Result<Changes> {
    let txn = begin_snapshot(db).await?;
    let snapshot = snapshot(&txn, user_id).await?;
    if after >= snapshot.last_seq {
        txn.commit().await?;
        return Ok(if after > snapshot.last_seq {
            Changes::Resync(snapshot)
        } else {
            Changes::Events {
                events: Vec::new(),
                snapshot,
            }
        });
    }
    let rows = inbox_event::Entity::find()
        .filter(inbox_event::Column::UserId.eq(user_id))
        .filter(inbox_event::Column::Seq.gt(after))
        .order_by_asc(inbox_event::Column::Seq)
        .limit(first)
        .all(&txn)
        .await?;
    txn.commit().await?;
    // The log no longer (or never did: rows from before the inbox existed)
    // holds the event right after `after`.
    if rows.first().is_none_or(|row| row.seq != after + 1) {
        return Ok(Changes::Resync(snapshot));
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match wire::decode::<InboxEventV1>(&row.payload) {
            Ok(Some(event)) => events.push(event),
            // Written by another release (a format this one cannot read):
            // stop before it; the client resyncs when it is first.
            Ok(None) if events.is_empty() => return Ok(Changes::Resync(snapshot)),
            Ok(None) => break,
            Err(e) => {
                return Err(sea_orm::DbErr::Custom(format!(
                    "inbox event {user_id}/{}: {e}",
                    row.seq
                ))
                .into());
            }
        }
    }
    Ok(Changes::Events { events, snapshot })
}
