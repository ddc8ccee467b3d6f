//! Bench data written straight into Herald's database, as Herald itself
//! would have written it: notifications with the user's next seqs, one
//! NotificationCreated event each in the log, and the counter row moved to
//! match, in one transaction that first takes the counter row (Herald's own
//! lock order), so the seqs stay gapless even if Herald writes for the same
//! user meanwhile.
//!
//! Nothing is announced or invalidated afterwards: the bench seeds users
//! before reading their inbox (nothing of theirs is cached yet), or rows
//! the worker is about to move (each move announces the user's changes).

use anyhow::{Context as _, bail};
use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, DbBackend, Statement, TransactionTrait as _, Value,
};

/// How the seeded notifications stand.
#[derive(Debug, Clone, Copy)]
pub enum Seeded {
    /// Delivered (nothing for the worker to do).
    Sent,
    /// Waiting for the worker (the sweeper enqueues them).
    Pending,
    /// SCHEDULED a day ahead (the bench then makes them due at once).
    Scheduled,
}

/// Inserts `n` notifications for `user_id` titled `{title} 1..=n`,
/// unread and unseen, with their events. Returns their ids, oldest first.
pub async fn notifications(
    db: &DatabaseConnection,
    user_id: i64,
    n: u64,
    title: &str,
    status: Seeded,
) -> anyhow::Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let statement = |sql: &str, values: Vec<Value>| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    };
    let txn = db.begin().await?;
    let before = txn
        .query_one_raw(statement(
            "INSERT INTO inbox_counters (user_id, last_seq, total, unread, unseen) VALUES ($1, 0, 0, 0, 0) \
             ON CONFLICT (user_id) DO UPDATE SET last_seq = inbox_counters.last_seq \
             RETURNING last_seq, total, unread, unseen",
            vec![user_id.into()],
        ))
        .await
        .context("taking the counter row (seeding needs Herald's Postgres database)")?
        .context("no counter row")?;
    let [base, total, unread, unseen] =
        ["last_seq", "total", "unread", "unseen"].map(|c| before.try_get::<i64>("", c));
    let (base, total, unread, unseen) = (base?, total?, unread?, unseen?);
    let n = i64::try_from(n)?;
    let (status, attempts, sent_at, send_at) = match status {
        Seeded::Sent => ("SENT", 1, "t.now", "NULL::timestamptz"),
        Seeded::Pending => ("PENDING", 0, "NULL::timestamptz", "NULL::timestamptz"),
        Seeded::Scheduled => (
            "SCHEDULED",
            0,
            "NULL::timestamptz",
            "t.now + interval '1 day'",
        ),
    };
    txn.execute_raw(statement(
        &format!(
            "INSERT INTO notifications (user_id, title, content, status, attempts, created_at, updated_at, sent_at, send_at, seq) \
             SELECT $1, $2 || ' ' || g, 'bench inbox', '{status}', {attempts}, t.now, t.now, {sent_at}, {send_at}, $3 + g \
             FROM generate_series(1, $4::bigint) AS g, (SELECT date_trunc('milliseconds', now()) AS now) AS t"
        ),
        vec![user_id.into(), title.into(), base.into(), n.into()],
    ))
    .await?;
    // The payload is wire::InboxEventV1 (format 1) in its JSON form;
    // `check` below reads it back through Herald's own decoder.
    txn.execute_raw(statement(
        "INSERT INTO inbox_events (user_id, seq, kind, at, total, unread, unseen, payload) \
         SELECT user_id, seq, 'NotificationCreated', created_at, $3 + seq - $2, $4 + seq - $2, $5 + seq - $2, \
           json_build_object('v', 1, 'user_id', user_id, 'seq', seq, 'at', created_at, \
             'counts', json_build_object('total', $3 + seq - $2, 'unread', $4 + seq - $2, 'unseen', $5 + seq - $2), \
             'change', json_build_object('kind', 'NotificationCreated', 'notification', json_build_object( \
               'id', id, 'user_id', user_id, 'title', title, 'content', content, 'status', status, \
               'attempts', attempts, 'last_error', last_error, 'next_attempt_at', next_attempt_at, \
               'sent_at', sent_at, 'created_at', created_at, 'updated_at', updated_at, 'seq', seq, \
               'seen_at', seen_at, 'read_at', read_at, 'archived_at', archived_at)))::text \
         FROM notifications WHERE user_id = $1 AND seq > $2",
        vec![
            user_id.into(),
            base.into(),
            total.into(),
            unread.into(),
            unseen.into(),
        ],
    ))
    .await?;
    txn.execute_raw(statement(
        "UPDATE inbox_counters SET last_seq = last_seq + $2, total = total + $2, \
         unread = unread + $2, unseen = unseen + $2 WHERE user_id = $1",
        vec![user_id.into(), n.into()],
    ))
    .await?;
    let ids = txn
        .query_all_raw(statement(
            "SELECT id FROM notifications WHERE user_id = $1 AND seq > $2 ORDER BY seq",
            vec![user_id.into(), base.into()],
        ))
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    txn.commit().await?;
    check(db, user_id, base, n).await?;
    Ok(ids)
}

/// Refreshes the planner's statistics, as autovacuum does within a minute
/// of a bulk insert. Without it the planner takes a freshly seeded
/// 20,000-notification user for a small one and sorts all their rows for a
/// first page instead of walking `notifications_user_seq_key` backwards.
pub async fn analyze(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared("ANALYZE notifications, inbox_events, inbox_counters")
        .await?;
    Ok(())
}

/// Herald reads the seeded log back: consecutive events from `base + 1`,
/// ending at the counter row's last seq.
async fn check(db: &DatabaseConnection, user_id: i64, base: i64, n: i64) -> anyhow::Result<()> {
    use herald::storage::inbox::{Changes, changes_after};
    let probe = u64::try_from(n.min(3))?;
    match changes_after(db, user_id, base, probe).await? {
        Changes::Events { events, snapshot }
            if events.len() as u64 == probe
                && events.first().is_some_and(|e| e.seq == base + 1)
                && snapshot.last_seq == base + n => {}
        other => bail!("Herald does not read the seeded inbox back: {other:?}"),
    }
    Ok(())
}
