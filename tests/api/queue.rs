//! The Redis Streams queue tells how many entries wait for a worker (the
//! group's lag), which the sweeper reads before re-queuing stale rows.

use std::time::Duration;

use herald::queue::{Queue as _, redis_streams::RedisStreamQueue};

use crate::helpers::{RedisPrefix, redis_url};

#[tokio::test]
async fn waiting_counts_the_entries_no_worker_has_taken() {
    let Some(prefix) = RedisPrefix::new().await else {
        return;
    };
    let client = redis::Client::open(redis_url()).expect("client");
    let manager = redis::aio::ConnectionManager::new(client.clone())
        .await
        .expect("manager");
    let keys = herald::keys::Keys::new(prefix.prefix.clone());
    let queue = RedisStreamQueue::new(
        client,
        manager,
        herald::queue::redis_streams::QueueNames::notifications(&keys),
        Some(Duration::from_secs(60)),
    );
    assert_eq!(queue.waiting().await.expect("no stream"), Some(0));
    for id in 1..=5 {
        queue.enqueue(id).await.expect("enqueue");
    }
    // The first read creates the group at the stream's start and takes one.
    let first = queue.next(1, Duration::from_secs(1)).await.expect("next");
    assert_eq!(first.len(), 1);
    assert_eq!(queue.waiting().await.expect("lag"), Some(4));
    queue.ack(&first[0]).await.expect("ack");
    assert_eq!(
        queue.waiting().await.expect("lag"),
        Some(4),
        "acks change nothing"
    );
    let rest = queue.next(10, Duration::from_secs(1)).await.expect("next");
    assert_eq!(rest.len(), 4);
    assert_eq!(
        queue.waiting().await.expect("lag"),
        Some(0),
        "taken, not acked"
    );
    for job in &rest {
        queue.ack(job).await.expect("ack");
    }
    queue.enqueue(6).await.expect("enqueue");
    assert_eq!(
        queue.waiting().await.expect("lag"),
        Some(1),
        "after deletions too"
    );
}
