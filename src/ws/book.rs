//! Bookkeeping: the subscriptions one socket runs, by id, and the sockets
//! each user holds open on this instance.
//!
//! A subscription holds its slot from its `subscribe` until its response
//! stream ends (the server completed it) or the client completes it; the
//! book learns both from the streams themselves, never from the text sent.

use std::{
    collections::HashMap,
    future::poll_fn,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use async_graphql::Response;
use futures_util::{StreamExt as _, stream::BoxStream};

use super::SocketLimits;

/// What a running subscription produced.
// Handed straight to the socket, never stored: boxing would only allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// A result of subscription `id`.
    Next(String, Response),
    /// Subscription `id` ended on the server's side; its slot is free.
    Completed(String),
}

/// The subscriptions of one socket.
pub struct Book {
    max: usize,
    running: Vec<(String, BoxStream<'static, Response>)>,
    /// Where the next poll starts, so that a busy subscription does not
    /// starve the others.
    cursor: usize,
}

impl Book {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            running: Vec::new(),
            cursor: 0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn contains(&self, id: &str) -> bool {
        self.running.iter().any(|(running, _)| running == id)
    }

    /// Subscriptions running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.running.len() >= self.max
    }

    /// Runs `responses` as subscription `id`. The caller checks
    /// [`Book::is_full`] and settles a duplicate id first.
    pub fn start(&mut self, id: String, responses: BoxStream<'static, Response>) {
        self.running.push((id, responses));
    }

    /// Drops subscription `id`; whether it was running.
    pub fn stop(&mut self, id: &str) -> bool {
        let before = self.running.len();
        self.running.retain(|(running, _)| running != id);
        self.running.len() != before
    }

    /// The next result or completion of any subscription; pending forever
    /// while none runs.
    pub async fn next(&mut self) -> Event {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let n = self.running.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let (id, responses) = &mut self.running[i];
            match responses.poll_next_unpin(cx) {
                Poll::Ready(Some(response)) => {
                    let id = id.clone();
                    self.cursor = i + 1;
                    return Poll::Ready(Event::Next(id, response));
                }
                Poll::Ready(None) => {
                    let (id, _) = self.running.swap_remove(i);
                    self.cursor = i;
                    return Poll::Ready(Event::Completed(id));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// One open socket counted against its user until dropped.
pub struct SocketSlot {
    open: Arc<Mutex<HashMap<i64, usize>>>,
    user_id: i64,
}

impl SocketSlot {
    /// A slot for one more socket of `user_id`, unless the user holds
    /// `max_sockets_per_user` already.
    pub fn claim(limits: &SocketLimits, user_id: i64) -> Option<Self> {
        let mut open = limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(user_id).or_insert(0);
        if *n >= limits.max_sockets_per_user {
            return None;
        }
        *n += 1;
        Some(Self {
            open: limits.open.clone(),
            user_id,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt as _, stream};

    use super::*;

    fn responses(texts: &[&'static str]) -> BoxStream<'static, Response> {
        stream::iter(texts.to_vec())
            .map(|t| Response::new(async_graphql::Value::from(t)))
            .boxed()
    }

    #[test]
    fn a_slot_is_freed_by_the_end_of_its_stream_not_by_what_it_says() {
        let mut book = Book::new(1);
        book.start("a".into(), responses(&["complete"]));
        assert!(book.is_full());
        let Some(Event::Next(id, response)) = book.next().now_or_never() else {
            panic!("a result");
        };
        assert_eq!((id.as_str(), response.data), ("a", "complete".into()));
        assert!(book.is_full(), "a result frees nothing");
        assert!(matches!(
            book.next().now_or_never(),
            Some(Event::Completed(id)) if id == "a"
        ));
        assert!(!book.is_full());
        assert!(book.next().now_or_never().is_none(), "nothing runs");
    }

    #[test]
    fn a_stopped_subscription_frees_its_slot_and_says_nothing_more() {
        let mut book = Book::new(2);
        book.start("a".into(), stream::pending().boxed());
        book.start("b".into(), responses(&["b"]));
        assert!(book.stop("b"));
        assert!(!book.is_full());
        assert!(!book.stop("b"));
        assert!(book.contains("a") && !book.contains("b"));
        assert!(book.next().now_or_never().is_none());
    }

    #[test]
    fn a_user_holds_at_most_the_limit_of_sockets() {
        let limits = SocketLimits {
            max_sockets_per_user: 2,
            ..SocketLimits::default()
        };
        let first = SocketSlot::claim(&limits, 7);
        let second = SocketSlot::claim(&limits, 7);
        assert!(first.is_some() && second.is_some());
        assert!(SocketSlot::claim(&limits, 7).is_none());
        assert!(SocketSlot::claim(&limits, 8).is_some(), "per user");
        drop(first);
        assert!(SocketSlot::claim(&limits, 7).is_some());
    }
}
