//! Notification rows and every status transition, each a compare-and-set
//! (`UPDATE … WHERE status = <expected>`): the caller acts only if it won.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::notification::{self, Column, Status};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection,
    EntityTrait, ExprTrait as _, QueryFilter, QueryOrder as _, QuerySelect as _, QueryTrait as _,
    sea_query::Expr,
};

use super::{StorageError, inbox};
use crate::{
    domain::{Content, Title, inbox::Counts, send::SendOptions},
    wire::{InboxChangeV1, InboxEventV1},
};

type Result<T> = std::result::Result<T, StorageError>;

/// The row of a new notification of `user_id`'s at `seq`: PENDING and
/// marked as enqueued `now` (the caller enqueues it next; if that fails it
/// calls `mark_unqueued`), or SCHEDULED when `options` say so (the
/// scheduler queues it when due).
fn new_row(
    user_id: i64,
    seq: i64,
    title: &Title,
    content: &Content,
    options: &SendOptions,
    now: DateTime<Utc>,
) -> notification::ActiveModel {
    let scheduled = options.timing.scheduled(now);
    notification::ActiveModel {
        user_id: Set(user_id),
        title: Set(title.as_str().to_owned()),
        content: Set(content.as_str().to_owned()),
        status: Set(if scheduled {
            Status::Scheduled
        } else {
            Status::Pending
        }),
        attempts: Set(0),
        last_error: Set(None),
        next_attempt_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        claimed_at: Set(None),
        enqueued_at: Set((!scheduled).then_some(now)),
        sent_at: Set(None),
        seq: Set(seq),
        seen_at: Set(None),
        read_at: Set(None),
        archived_at: Set(None),
        sender_app_id: Set(options.sender_app_id),
        category: Set(options.category.as_ref().map(|c| c.as_str().to_owned())),
        data: Set(options.data.as_ref().map(|d| d.as_str().to_owned())),
        send_at: Set(options.timing.send_at),
        expires_at: Set(options.timing.expires_at),
        ..Default::default()
    }
}

/// Inserts a notification for `user_id` (see [`new_row`]) with its
/// NotificationCreated inbox event in the same transaction (the
/// notification's seq is that event's). With an idempotency key, its
/// record too; `IdempotencyKeyTaken` (nothing stored) when a concurrent
/// send holds it.
pub async fn insert(
    db: &DatabaseConnection,
    user_id: i64,
    title: &Title,
    content: &Content,
    options: &SendOptions,
    now: DateTime<Utc>,
) -> Result<(notification::Model, InboxEventV1)> {
    let txn = inbox::begin_write(db).await?;
    let reserved = inbox::next_seq_created(&txn, user_id).await?;
    let row = new_row(user_id, reserved.last_seq, title, content, options, now);
    let row = notification::Entity::insert(row)
        .exec_with_returning(&txn)
        .await?;
    if let Some(key) = &options.idempotency
        && !super::idempotency::claim(&txn, key, row.id, now).await?
    {
        txn.rollback().await?;
        return Err(StorageError::IdempotencyKeyTaken);
    }
    let change = InboxChangeV1::NotificationCreated {
        notification: row.clone().into(),
    };
    let event = inbox::write_reserved(&txn, user_id, reserved, now, change).await?;
    txn.commit().await?;
    Ok((row, event))
}

/// One send of a batch: validated, authorized, without an idempotency key.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: i64,
    pub title: Title,
    pub content: Content,
    pub options: SendOptions,
}

/// Rows per multi-row INSERT of notifications: under SQLite's and
/// Postgres's limits on bound parameters (22 a row).
pub const NOTIFICATIONS_PER_INSERT: usize = 1000;

/// [`insert`] for many sends at once, in one transaction: one statement
/// takes every counter row involved, one inserts the rows, a few write the
/// events. Each user's new notifications get consecutive seqs in the order
/// given, so the log stays gapless and every event's counts are exact. The
/// answers come in the order of `sends`. Sends with an idempotency key are
/// refused (they go through [`insert`]): the batch fails as a whole, and a
/// caller retries each send alone.
pub async fn insert_batch(
    db: &DatabaseConnection,
    sends: &[NewNotification],
    now: DateTime<Utc>,
) -> Result<Vec<(notification::Model, InboxEventV1)>> {
    Ok(write_batch(db, sends, Vec::new(), now).await?.created)
}

/// A committed status transition: the row as it is now, and the
/// DeliveryStatusChanged inbox event written with it (for the hint that
/// follows the commit, so followers need not read the log for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub row: notification::Model,
    pub event: InboxEventV1,
}

/// Runs `update`, a compare-and-set moving one notification of `user_id`'s
/// from `previous`, in one transaction with its DeliveryStatusChanged
/// inbox event. The owner's next seq is taken first (the counter row's
/// lock orders this with the owner's marks, which take it first too, so
/// the two never wait on each other's rows); a lost compare-and-set rolls
/// it back unused.
async fn move_status(
    db: &DatabaseConnection,
    user_id: i64,
    previous: Status,
    update: sea_orm::UpdateMany<notification::Entity>,
    now: DateTime<Utc>,
) -> Result<Option<Moved>> {
    let txn = inbox::begin_write(db).await?;
    let reserved = inbox::next_seq(&txn, user_id, Counts::default()).await?;
    let Some(row) = update.exec_with_returning(&txn).await?.into_iter().next() else {
        txn.rollback().await?;
        return Ok(None);
    };
    let change = InboxChangeV1::DeliveryStatusChanged {
        notification: row.clone().into(),
        previous: previous.into(),
    };
    let event = inbox::write_reserved(&txn, user_id, reserved, now, change).await?;
    txn.commit().await?;
    Ok(Some(Moved { row, event }))
}

/// A compare-and-set moving one notification of `user_id`'s from
/// `previous` (see [`move_status`]): run alone with [`Move::run`], or
/// with others in one transaction with [`move_batch`].
#[derive(Debug, Clone)]
pub struct Move {
    /// The notification it moves.
    id: i64,
    pub user_id: i64,
    previous: Status,
    update: sea_orm::UpdateMany<notification::Entity>,
    /// When it happens: its event's time.
    at: DateTime<Utc>,
}

impl Move {
    pub async fn run(self, db: &DatabaseConnection) -> Result<Option<Moved>> {
        move_status(db, self.user_id, self.previous, self.update, self.at).await
    }
}

/// [`Move::run`] for many moves in one transaction: one statement takes the
/// counter rows of every owner involved (in user id order, so two batches
/// never wait on each other) and reserves as many seqs as the owner has
/// moves, each compare-and-set runs as its own `UPDATE`, the winners' events
/// (in the order given) go in with one multi-row `INSERT`, and the seqs of
/// the losers are handed back: every log stays gapless. The answers come in
/// the order of `moves` (`None`: that compare-and-set lost).
pub async fn move_batch(db: &DatabaseConnection, moves: Vec<Move>) -> Result<Vec<Option<Moved>>> {
    Ok(write_batch(db, &[], moves, super::now()).await?.moved)
}

/// What [`write_batch`] stored, in the order given: each send's row and
/// event, and each move's (`None`: that compare-and-set lost).
#[derive(Debug, Default)]
pub struct Written {
    pub created: Vec<(notification::Model, InboxEventV1)>,
    pub moved: Vec<Option<Moved>>,
}

/// `user_id`'s snapshot as a batch numbers their changes.
fn next_of(
    next: &mut std::collections::HashMap<i64, inbox::Snapshot>,
    user_id: i64,
) -> Result<&mut inbox::Snapshot> {
    next.get_mut(&user_id).ok_or_else(|| {
        StorageError::Db(sea_orm::DbErr::Custom(format!(
            "a change without its user {user_id}"
        )))
    })
}

/// [`insert_batch`] and [`move_batch`] in one transaction: one statement
/// takes the counter rows of every user involved (in user id order) and
/// reserves a seq for each send and each move. A user's sends take the
/// first of their seqs, in the order given, and their moves the rest; the
/// seqs of the moves that lost are handed back, so every log stays gapless
/// and each event carries the counts at its seq. A move is never of a
/// notification sent in the same batch: a notification is queued, and so
/// claimed, only after its send committed.
pub async fn write_batch(
    db: &DatabaseConnection,
    sends: &[NewNotification],
    moves: Vec<Move>,
    now: DateTime<Utc>,
) -> Result<Written> {
    if sends.iter().any(|s| s.options.idempotency.is_some()) {
        return Err(StorageError::Db(sea_orm::DbErr::Custom(
            "a batched send with an idempotency key".to_owned(),
        )));
    }
    // User id → (seqs, of which sends).
    let mut reserve = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for send in sends {
        let step = reserve.entry(send.user_id).or_default();
        step.0 += 1;
        step.1 += 1;
    }
    for m in &moves {
        reserve.entry(m.user_id).or_default().0 += 1;
    }
    let txn = inbox::begin_write(db).await?;
    let reserved = inbox::next_seqs_many(&txn, &reserve).await?;
    let reserved_of = |user_id: i64| {
        reserved.get(&user_id).ok_or_else(|| {
            StorageError::Db(sea_orm::DbErr::Custom(format!(
                "no counter row came back for user {user_id}"
            )))
        })
    };
    // Each user's snapshot before the batch's first seq of theirs, moved
    // along as the batch's changes are numbered.
    let mut next = std::collections::HashMap::with_capacity(reserve.len());
    for (&user_id, &(seqs, created)) in &reserve {
        let last = reserved_of(user_id)?;
        let before = inbox::Snapshot {
            last_seq: last.last_seq - seqs,
            counts: last.counts + Counts::CREATED.times(-created),
        };
        next.insert(user_id, before);
    }
    let mut numbered = Vec::with_capacity(sends.len());
    for send in sends {
        let snapshot = next_of(&mut next, send.user_id)?;
        snapshot.last_seq += 1;
        snapshot.counts = snapshot.counts + Counts::CREATED;
        numbered.push(*snapshot);
    }
    let mut stored = std::collections::HashMap::with_capacity(sends.len());
    for chunk in sends
        .iter()
        .zip(&numbered)
        .collect::<Vec<_>>()
        .chunks(NOTIFICATIONS_PER_INSERT)
    {
        let rows = chunk.iter().map(|(send, reserved)| {
            new_row(
                send.user_id,
                reserved.last_seq,
                &send.title,
                &send.content,
                &send.options,
                now,
            )
        });
        for row in notification::Entity::insert_many(rows)
            .exec_with_returning(&txn)
            .await?
        {
            stored.insert((row.user_id, row.seq), row);
        }
    }
    let mut written = Written {
        created: Vec::with_capacity(sends.len()),
        moved: Vec::with_capacity(moves.len()),
    };
    let mut events = Vec::with_capacity(sends.len() + moves.len());
    for (send, reserved) in sends.iter().zip(&numbered) {
        let row = stored
            .remove(&(send.user_id, reserved.last_seq))
            .ok_or_else(|| {
                StorageError::Db(sea_orm::DbErr::Custom(
                    "an inserted notification did not come back".to_owned(),
                ))
            })?;
        let event = InboxEventV1 {
            user_id: send.user_id,
            seq: reserved.last_seq,
            at: now,
            counts: reserved.counts,
            change: InboxChangeV1::NotificationCreated {
                notification: row.clone().into(),
            },
        };
        events.push(event.clone());
        written.created.push((row, event));
    }
    let rows = compare_and_set_all(&txn, &moves).await?;
    for (m, row) in moves.into_iter().zip(rows) {
        let Some(row) = row else {
            written.moved.push(None);
            continue;
        };
        let at = next_of(&mut next, m.user_id)?;
        at.last_seq += 1;
        let event = InboxEventV1 {
            user_id: m.user_id,
            seq: at.last_seq,
            at: m.at,
            counts: at.counts,
            change: InboxChangeV1::DeliveryStatusChanged {
                notification: row.clone().into(),
                previous: m.previous.into(),
            },
        };
        events.push(event.clone());
        written.moved.push(Some(Moved { row, event }));
    }
    // Hands back what the losers left, so each log stays gapless.
    for &user_id in reserve.keys() {
        let unused = reserved_of(user_id)?.last_seq - next_of(&mut next, user_id)?.last_seq;
        if unused > 0 {
            inbox::unreserve(&txn, user_id, unused).await?;
        }
    }
    inbox::write_events(&txn, &events).await?;
    txn.commit().await?;
    Ok(written)
}

/// Runs the compare-and-set of each of `moves`, as if one after the other
/// in that order, and answers the row each one moved (`None`: it lost).
/// On Postgres they go in one statement, a data-modifying CTE each
/// (`WITH m0 AS (UPDATE … RETURNING *), … SELECT 0, * FROM m0 UNION ALL …`):
/// one round trip while the batch holds its owners' counter rows, instead
/// of one per move. Postgres applies only one of two changes to one row in
/// one statement, so a second move of the same row waits for the next
/// statement. SQLite runs them one by one (no round trips to save).
async fn compare_and_set_all(
    txn: &sea_orm::DatabaseTransaction,
    moves: &[Move],
) -> Result<Vec<Option<notification::Model>>> {
    use std::fmt::Write as _;

    use sea_orm::{FromQueryResult as _, sea_query::PostgresQueryBuilder};

    let mut rows = vec![None; moves.len()];
    if txn.get_database_backend() != sea_orm::DbBackend::Postgres {
        for (m, row) in moves.iter().zip(&mut rows) {
            *row = m
                .update
                .clone()
                .exec_with_returning(txn)
                .await?
                .into_iter()
                .next();
        }
        return Ok(rows);
    }
    let mut left: Vec<usize> = (0..moves.len()).collect();
    while !left.is_empty() {
        let mut named = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            left.into_iter().partition(|&i| named.insert(moves[i].id));
        left = later;
        let mut sql = sea_orm::sea_query::SqlWriterValues::new("$", true);
        let unwritable =
            |e: std::fmt::Error| StorageError::Db(sea_orm::DbErr::Custom(e.to_string()));
        for (k, &i) in round.iter().enumerate() {
            let glue = if k == 0 { "WITH" } else { "," };
            write!(sql, "{glue} m{k} AS (").map_err(unwritable)?;
            let mut update = moves[i].update.as_query().clone();
            update.returning_all();
            update.build_collect_into(PostgresQueryBuilder, &mut sql);
            sql.write_str(")").map_err(unwritable)?;
        }
        for k in 0..round.len() {
            let glue = if k == 0 { " " } else { " UNION ALL " };
            write!(sql, "{glue}SELECT {k} AS herald_move, * FROM m{k}").map_err(unwritable)?;
        }
        let (sql, values) = sql.into_parts();
        let statement =
            sea_orm::Statement::from_sql_and_values(txn.get_database_backend(), sql, values);
        for found in txn.query_all_raw(statement).await? {
            let k: i32 = found.try_get("", "herald_move")?;
            let i = usize::try_from(k)
                .ok()
                .and_then(|k| round.get(k))
                .ok_or_else(|| {
                    StorageError::Db(sea_orm::DbErr::Custom(format!("no move {k} in the batch")))
                })?;
            rows[*i] = Some(notification::Model::from_query_result(&found, "")?);
        }
    }
    Ok(rows)
}

pub async fn find(db: &impl ConnectionTrait, id: i64) -> Result<Option<notification::Model>> {
    Ok(notification::Entity::find_by_id(id).one(db).await?)
}

/// One page of a user's notifications (archived ones too), newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<notification::Model>,
    /// Every notification of the user's, from the counter row.
    pub total: u64,
    /// The user's last seq and counts, as of the same snapshot as `items`.
    pub snapshot: inbox::Snapshot,
}

/// One page of a user's notifications, newest first, with their number and
/// the user's last seq from the same snapshot (no `COUNT(*)`: the counter
/// row keeps the number). `page` counts from 1.
pub async fn page(
    db: &DatabaseConnection,
    user_id: i64,
    page: u64,
    page_size: u64,
) -> Result<Page> {
    let txn = inbox::begin_snapshot(db).await?;
    let counter = entity::inbox_counter::Entity::find_by_id(user_id)
        .one(&txn)
        .await?;
    let total = counter.as_ref().map_or(0, |c| c.notifications);
    let total = u64::try_from(total).unwrap_or_default();
    let snapshot = counter.map(inbox::Snapshot::from).unwrap_or_default();
    let offset = page.saturating_sub(1).saturating_mul(page_size);
    let items = if offset >= total {
        Vec::new()
    } else {
        notification::Entity::find()
            .filter(Column::UserId.eq(user_id))
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(page_size)
            .offset(offset)
            .all(&txn)
            .await?
    };
    txn.commit().await?;
    Ok(Page {
        items,
        total,
        snapshot,
    })
}

/// The enqueue failed: let the sweeper enqueue the row as soon as it is due.
pub async fn mark_unqueued(db: &impl ConnectionTrait, id: i64) -> Result<()> {
    notification::Entity::update_many()
        .col_expr(
            Column::EnqueuedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(Status::Pending))
        .exec(db)
        .await?;
    Ok(())
}

fn due(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(Column::NextAttemptAt.is_null())
        .add(Column::NextAttemptAt.lte(now))
}

/// `expires_at` has passed at `now`.
fn expired_at(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(Column::ExpiresAt.is_not_null())
        .add(Column::ExpiresAt.lte(now))
}

/// `expires_at` has not passed at `now` (or there is none).
fn unexpired_at(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(Column::ExpiresAt.is_null())
        .add(Column::ExpiresAt.gt(now))
}

/// A PENDING row's owner and category, for the worker to decide on before
/// it claims. `None`: the row is not PENDING (claimed, final, canceled, or
/// one of many queue entries of a backlog the sweeper re-queued) or gone;
/// it is passed over without taking its owner's counter lock.
pub async fn pending(db: &DatabaseConnection, id: i64) -> Result<Pending> {
    Ok(pending_many(db, &[id]).await?.remove(&id).flatten())
}

/// What the worker reads of a row before claiming it: its owner and its
/// category, if it is PENDING.
pub type Pending = Option<(i64, Option<String>)>;

/// [`pending`] of each of `ids` in one query (a read batch of the queue):
/// every id is in the answer, `None` where the row is not PENDING or gone.
///
/// On Postgres it is planned at each call, with its ids, rather than by a
/// plan the connection keeps: a kept plan is chosen after a statement's
/// fifth run and then used until the table is next analyzed, and one
/// chosen while `notifications` was still small (a new installation's
/// first sends) scans the whole table for every read, about 8 ms at 25,000
/// rows against 0.09 ms through the primary key (issue 13's bench). It
/// runs on sqlx itself (SeaORM has no per-statement switch), so
/// `QueryStats` neither counts it nor logs it as slow.
pub async fn pending_many(
    db: &DatabaseConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Pending>> {
    // The status is checked here, not in SQL: with it in the statement the
    // planner may read every PENDING row from the partial status index.
    let found: Vec<(i64, i64, String, Option<String>)> =
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            sea_orm::sqlx::query_as(
                "SELECT id, user_id, status, category FROM notifications WHERE id = ANY($1)",
            )
            .bind(ids)
            .persistent(false)
            .fetch_all(db.get_postgres_connection_pool())
            .await
            .map_err(|e| sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e.into())))?
        } else {
            notification::Entity::find()
                .select_only()
                .column(Column::Id)
                .column(Column::UserId)
                .column(Column::Status)
                .column(Column::Category)
                .filter(Column::Id.is_in(ids.iter().copied()))
                .into_tuple()
                .all(db)
                .await?
        };
    let mut pending: std::collections::HashMap<i64, Pending> =
        ids.iter().map(|id| (*id, None)).collect();
    for (id, user_id, status, category) in found {
        if status == sea_orm::ActiveEnum::to_value(&Status::Pending) {
            pending.insert(id, Some((user_id, category)));
        }
    }
    Ok(pending)
}

/// PENDING → PROCESSING, only if still PENDING and due: counts the attempt
/// and stamps the claim. With `mail` false (its recipient turned email off)
/// the same compare-and-set moves it to SKIPPED instead, and past its
/// `expires_at` to EXPIRED (the returned row says which); the caller
/// delivers only a PROCESSING row. `None`: someone else has it (a worker,
/// or a cancel), or it is not due. `user_id` is the row's owner (`pending`).
pub async fn claim_deciding(
    db: &DatabaseConnection,
    id: i64,
    user_id: i64,
    mail: bool,
    now: DateTime<Utc>,
) -> Result<Option<Moved>> {
    claim_move(id, user_id, mail, now).run(db).await
}

/// The move [`claim_deciding`] makes, to run alone or in a batch.
pub fn claim_move(id: i64, user_id: i64, mail: bool, now: DateTime<Utc>) -> Move {
    // One statement decides: expired, skipped or claimed.
    let unless_expired = |expired: Expr, claimed: Expr| -> Expr {
        Expr::case(expired_at(now), expired).finally(claimed).into()
    };
    let (status, attempts, claimed_at) = if mail {
        (
            Status::Processing,
            Expr::col(Column::Attempts).add(1),
            Some(now),
        )
    } else {
        (Status::Skipped, Expr::col(Column::Attempts), None)
    };
    let update = notification::Entity::update_many()
        .col_expr(
            Column::Status,
            unless_expired(Expr::value(Status::Expired), Expr::value(status)),
        )
        .col_expr(
            Column::Attempts,
            unless_expired(Expr::col(Column::Attempts), attempts),
        )
        .col_expr(
            Column::ClaimedAt,
            unless_expired(
                Expr::value(Option::<DateTime<Utc>>::None),
                Expr::value(claimed_at),
            ),
        )
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Status.eq(Status::Pending))
        .filter(due(now));
    Move {
        id,
        user_id,
        previous: Status::Pending,
        update,
        at: now,
    }
}

/// `claim_deciding` for a row whose email is on: PENDING → PROCESSING (or
/// EXPIRED), reading its owner first.
pub async fn claim(db: &DatabaseConnection, id: i64, now: DateTime<Utc>) -> Result<Option<Moved>> {
    let Some((user_id, _)) = pending(db, id).await? else {
        return Ok(None);
    };
    claim_deciding(db, id, user_id, true, now).await
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Back to PENDING, due again at `retry_at`.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// Back to PENDING, due again at `retry_at`, and the attempt does not
    /// count (`attempts` goes back down): the mail server was unreachable.
    GiveBack {
        error: String,
        retry_at: DateTime<Utc>,
    },
    Failed {
        error: String,
    },
}

/// PROCESSING → SENT | PENDING | FAILED, only if the row is still the claim
/// `attempt` made: a worker whose claim expired and was taken over finds the
/// row moved, and `None` tells it to stop.
///
/// `attempts` is the claim's token. A give-back lowers it again, so one
/// number can name two claims in turn; it never names a claim after one the
/// sweeper took over (that release counts, so later claims go higher), and
/// the sweeper itself checks that the claim is still expired
/// (`release_expired_claim`).
/// `user_id` is the notification's owner, as the claim read it.
pub async fn record(
    db: &DatabaseConnection,
    id: i64,
    user_id: i64,
    attempt: i32,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<Option<Moved>> {
    record_move(id, user_id, attempt, outcome, now, Condition::all())
        .run(db)
        .await
}

/// The move [`record`] makes (with `extra` conditions), to run alone or in
/// a batch.
pub fn record_move(
    id: i64,
    user_id: i64,
    attempt: i32,
    outcome: &Outcome,
    now: DateTime<Utc>,
    extra: Condition,
) -> Move {
    let none = Option::<DateTime<Utc>>::None;
    let update = notification::Entity::update_many()
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .col_expr(Column::ClaimedAt, Expr::value(none));
    let update = match outcome {
        Outcome::Sent => update
            .col_expr(Column::Status, Expr::value(Status::Sent))
            .col_expr(Column::SentAt, Expr::value(Some(now)))
            .col_expr(Column::LastError, Expr::value(Option::<String>::None))
            .col_expr(Column::NextAttemptAt, Expr::value(none)),
        Outcome::Retry { error, retry_at } => update
            .col_expr(Column::Status, Expr::value(Status::Pending))
            .col_expr(Column::LastError, Expr::value(Some(error.clone())))
            .col_expr(Column::NextAttemptAt, Expr::value(Some(*retry_at)))
            .col_expr(Column::EnqueuedAt, Expr::value(none)),
        Outcome::GiveBack { error, retry_at } => update
            .col_expr(Column::Status, Expr::value(Status::Pending))
            .col_expr(Column::Attempts, Expr::value(attempt - 1))
            .col_expr(Column::LastError, Expr::value(Some(error.clone())))
            .col_expr(Column::NextAttemptAt, Expr::value(Some(*retry_at)))
            .col_expr(Column::EnqueuedAt, Expr::value(none)),
        Outcome::Failed { error } => update
            .col_expr(Column::Status, Expr::value(Status::Failed))
            .col_expr(Column::LastError, Expr::value(Some(error.clone())))
            .col_expr(Column::NextAttemptAt, Expr::value(none)),
    };
    let update = update
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(Status::Processing))
        .filter(Column::Attempts.eq(attempt))
        .filter(extra);
    Move {
        id,
        user_id,
        previous: Status::Processing,
        update,
        at: now,
    }
}

/// Fails a row that is not final yet (PENDING or PROCESSING), e.g. a queue
/// entry that went to the dead-letter stream.
pub async fn fail_unfinished(
    db: &DatabaseConnection,
    id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<Option<Moved>> {
    let Some(before) = find(db, id).await? else {
        return Ok(None);
    };
    if !matches!(before.status, Status::Pending | Status::Processing) {
        return Ok(None);
    }
    let none = Option::<DateTime<Utc>>::None;
    let update = notification::Entity::update_many()
        .col_expr(Column::Status, Expr::value(Status::Failed))
        .col_expr(Column::LastError, Expr::value(Some(error.to_owned())))
        .col_expr(Column::NextAttemptAt, Expr::value(none))
        .col_expr(Column::ClaimedAt, Expr::value(none))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(before.status))
        .filter(Column::Attempts.eq(before.attempts));
    move_status(db, before.user_id, before.status, update, now).await
}

/// PROCESSING rows whose claim is older than `visibility` at `now`: their
/// worker died (or lost its database) before recording an outcome.
pub async fn expired_claims(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    visibility: Duration,
    limit: u64,
) -> Result<Vec<notification::Model>> {
    Ok(notification::Entity::find()
        .filter(Column::Status.eq(Status::Processing))
        .filter(Column::ClaimedAt.lt(super::before(now, visibility)))
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Records `outcome` for an expired claim found by `expired_claims`: a
/// compare-and-set on the claim's attempt number, and on the claim still
/// being expired. A worker that finished meanwhile, or a fresh claim (even
/// one at the same attempt number after a give-back), wins over the
/// sweeper, and of two sweepers one wins.
pub async fn release_expired_claim(
    db: &DatabaseConnection,
    expired: &notification::Model,
    outcome: &Outcome,
    now: DateTime<Utc>,
    visibility: Duration,
) -> Result<Option<Moved>> {
    let still_expired = Condition::all().add(Column::ClaimedAt.lt(super::before(now, visibility)));
    record_move(
        expired.id,
        expired.user_id,
        expired.attempts,
        outcome,
        now,
        still_expired,
    )
    .run(db)
    .await
}

/// PENDING rows that are due and whose queue entry may be lost (never
/// enqueued, or enqueued before `stamped_before`), re-stamped as enqueued
/// `now`, in one statement. Of several sweepers running it at once, each row
/// goes to one: the others find it re-stamped and skip it.
pub async fn take_for_enqueue(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    stamped_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<i64>> {
    let stale = || {
        Condition::any()
            .add(Column::EnqueuedAt.is_null())
            .add(Column::EnqueuedAt.lt(stamped_before))
    };
    let candidates = notification::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::Status.eq(Status::Pending))
        .filter(due(now))
        .filter(stale())
        .order_by_asc(Column::Id)
        .limit(limit)
        .into_query();
    let rows = notification::Entity::update_many()
        .col_expr(Column::EnqueuedAt, Expr::value(Some(now)))
        .filter(Column::Id.in_subquery(candidates))
        .filter(Column::Status.eq(Status::Pending))
        .filter(stale())
        .exec_with_returning(db)
        .await?;
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// SCHEDULED rows whose `send_at` has come at `now` (and whose
/// `expires_at` has not), earliest first, from the `(status, send_at)`
/// index: `(id, user_id)`.
pub async fn due_scheduled(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<(i64, i64)>> {
    Ok(notification::Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::UserId)
        .filter(Column::Status.eq(Status::Scheduled))
        .filter(Column::SendAt.lte(now))
        .filter(unexpired_at(now))
        .order_by_asc(Column::SendAt)
        .order_by_asc(Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// SCHEDULED → PENDING for those of `ids` (all `user_id`'s) still
/// SCHEDULED, due and unexpired at `now`: one transaction, one UPDATE, one
/// DeliveryStatusChanged event each, in `send_at` order. `queued`: stamp
/// them as enqueued now (the caller enqueues them next, or calls
/// `mark_unqueued`); otherwise the sweeper enqueues them. Ids another
/// scheduler moved first are left out of the answer.
pub async fn promote(
    db: &DatabaseConnection,
    user_id: i64,
    ids: &[i64],
    now: DateTime<Utc>,
    queued: bool,
) -> Result<Vec<Moved>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let txn = inbox::begin_write(db).await?;
    // The counter row first (the lock order of every inbox write), and
    // every seq this could need: the seqs unused are handed back below
    // under the same lock, so the log stays gapless.
    let mut reserved = inbox::next_seqs(&txn, user_id, wanted).await?;
    let mut rows = notification::Entity::update_many()
        .col_expr(Column::Status, Expr::value(Status::Pending))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .col_expr(Column::EnqueuedAt, Expr::value(queued.then_some(now)))
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Status.eq(Status::Scheduled))
        .filter(Column::SendAt.lte(now))
        .filter(unexpired_at(now))
        .exec_with_returning(&txn)
        .await?;
    if rows.is_empty() {
        txn.rollback().await?;
        return Ok(Vec::new());
    }
    let moved = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    if moved < wanted {
        reserved = inbox::unreserve(&txn, user_id, wanted - moved).await?;
    }
    rows.sort_by_key(|r| (r.send_at, r.id));
    let first = reserved.last_seq - moved + 1;
    let events: Vec<InboxEventV1> = rows
        .iter()
        .zip(first..)
        .map(|(row, seq)| InboxEventV1 {
            user_id,
            seq,
            at: now,
            counts: reserved.counts,
            change: InboxChangeV1::DeliveryStatusChanged {
                notification: row.clone().into(),
                previous: Status::Scheduled.into(),
            },
        })
        .collect();
    inbox::write_events(&txn, &events).await?;
    txn.commit().await?;
    Ok(rows
        .into_iter()
        .zip(events)
        .map(|(row, event)| Moved { row, event })
        .collect())
}

/// PENDING and SCHEDULED rows whose `expires_at` has passed at `now`, from
/// the `(status, expires_at)` index.
pub async fn expired(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<notification::Model>> {
    Ok(notification::Entity::find()
        .filter(Column::Status.is_in([Status::Pending, Status::Scheduled]))
        .filter(expired_at(now))
        .order_by_asc(Column::ExpiresAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// `row` (as `expired` read it) → EXPIRED, if it still has that status.
pub async fn expire(
    db: &DatabaseConnection,
    row: &notification::Model,
    now: DateTime<Utc>,
) -> Result<Option<Moved>> {
    let update = notification::Entity::update_many()
        .col_expr(Column::Status, Expr::value(Status::Expired))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(row.id))
        .filter(Column::Status.eq(row.status))
        .filter(expired_at(now));
    move_status(db, row.user_id, row.status, update, now).await
}

/// What a cancel came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canceled {
    Now(Box<Moved>),
    /// Claimed, or final, already.
    TooLate,
}

/// SCHEDULED, or PENDING (not claimed), → CANCELED: a compare-and-set on
/// the status `row` was read with, read again when something moved it
/// meanwhile (SCHEDULED → PENDING still cancels; a worker's claim wins).
pub async fn cancel(
    db: &DatabaseConnection,
    row: notification::Model,
    now: DateTime<Utc>,
) -> Result<Canceled> {
    let mut row = row;
    // Each retry follows a move; the moves that keep a row cancelable are
    // few (SCHEDULED → PENDING, a retry back to PENDING): a handful is plenty.
    for _ in 0..8 {
        if !matches!(row.status, Status::Scheduled | Status::Pending) {
            return Ok(Canceled::TooLate);
        }
        let update = notification::Entity::update_many()
            .col_expr(Column::Status, Expr::value(Status::Canceled))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(row.id))
            .filter(Column::Status.eq(row.status));
        if let Some(moved) = move_status(db, row.user_id, row.status, update, now).await? {
            return Ok(Canceled::Now(Box::new(moved)));
        }
        match find(db, row.id).await? {
            Some(now_row) => row = now_row,
            None => return Ok(Canceled::TooLate),
        }
    }
    Ok(Canceled::TooLate)
}
