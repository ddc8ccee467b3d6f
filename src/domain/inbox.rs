//! The inbox state chain and what each mark does to it (contract-inbox.graphql,
//! header): READ implies SEEN, ARCHIVED implies READ. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// A mark a client applies to notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboxAction {
    /// Sets seenAt where null.
    Seen,
    /// Sets readAt (and seenAt) where null.
    Read,
    /// Clears readAt; seenAt stays. An archived notification is also
    /// unarchived, since ARCHIVED implies READ.
    Unread,
    /// Sets archivedAt (and readAt, seenAt) where null.
    Archive,
    /// Clears archivedAt; readAt and seenAt stay.
    Unarchive,
}

/// Counts over a user's notifications (see `State::counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Not archived.
    pub total: i64,
    /// Not archived and not read.
    pub unread: i64,
    /// Not archived and not seen.
    pub unseen: i64,
}

impl Counts {
    /// One new notification: unarchived, unread, unseen.
    pub const CREATED: Self = Self {
        total: 1,
        unread: 1,
        unseen: 1,
    };

    /// `n` times these counts.
    pub fn times(self, n: i64) -> Self {
        Self::default().add(self, n)
    }

    fn add(self, other: Self, times: i64) -> Self {
        Self {
            total: self.total + other.total * times,
            unread: self.unread + other.unread * times,
            unseen: self.unseen + other.unseen * times,
        }
    }
}

/// One notification's read state, as the three flags of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub seen: bool,
    pub read: bool,
    pub archived: bool,
}

impl State {
    /// From the bit set storage groups by: 1 seen, 2 read, 4 archived.
    pub fn from_bits(bits: i64) -> Self {
        Self {
            seen: bits & 1 != 0,
            read: bits & 2 != 0,
            archived: bits & 4 != 0,
        }
    }

    /// What this notification contributes to its user's counts.
    pub fn counts(self) -> Counts {
        let open = i64::from(!self.archived);
        Counts {
            total: open,
            unread: open * i64::from(!self.read),
            unseen: open * i64::from(!self.seen),
        }
    }
}

impl InboxAction {
    /// The state after this action; equal to `s` when it changes nothing.
    pub fn apply(self, s: State) -> State {
        match self {
            Self::Seen => State { seen: true, ..s },
            Self::Read => State {
                seen: true,
                read: true,
                ..s
            },
            Self::Unread => State {
                read: false,
                archived: false,
                ..s
            },
            Self::Archive => State {
                seen: true,
                read: true,
                archived: true,
            },
            Self::Unarchive => State {
                archived: false,
                ..s
            },
        }
    }

    /// The change in counts when this action applies to `n` notifications
    /// in state `s`.
    pub fn delta(self, s: State, n: i64) -> Counts {
        let after = self.apply(s).counts();
        let before = s.counts();
        Counts::default().add(after, n).add(before, -n)
    }
}

impl std::ops::Add for Counts {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Counts::add(self, other, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_states() -> Vec<State> {
        (0..8).map(State::from_bits).collect()
    }

    fn in_chain(s: State) -> bool {
        (!s.read || s.seen) && (!s.archived || s.read)
    }

    const ACTIONS: [InboxAction; 5] = [
        InboxAction::Seen,
        InboxAction::Read,
        InboxAction::Unread,
        InboxAction::Archive,
        InboxAction::Unarchive,
    ];

    #[test]
    fn every_action_keeps_the_chain() {
        for s in all_states().into_iter().filter(|s| in_chain(*s)) {
            for action in ACTIONS {
                assert!(in_chain(action.apply(s)), "{action:?} on {s:?}");
            }
        }
    }

    #[test]
    fn actions_change_what_the_contract_says() {
        let fresh = State::from_bits(0);
        assert_eq!(InboxAction::Read.apply(fresh), State::from_bits(3));
        assert_eq!(InboxAction::Archive.apply(fresh), State::from_bits(7));
        assert_eq!(
            InboxAction::Unread.apply(State::from_bits(3)),
            State::from_bits(1)
        );
        assert_eq!(
            InboxAction::Unarchive.apply(State::from_bits(7)),
            State::from_bits(3)
        );
        // READ on a read notification changes nothing.
        assert_eq!(
            InboxAction::Read.apply(State::from_bits(3)),
            State::from_bits(3)
        );
    }

    #[test]
    fn deltas_move_counts_between_states() {
        let fresh = State::from_bits(0);
        assert_eq!(
            InboxAction::Read.delta(fresh, 2),
            Counts {
                total: 0,
                unread: -2,
                unseen: -2
            }
        );
        assert_eq!(
            InboxAction::Archive.delta(State::from_bits(1), 1),
            Counts {
                total: -1,
                unread: -1,
                unseen: 0
            }
        );
        assert_eq!(
            InboxAction::Unarchive.delta(State::from_bits(7), 3),
            Counts {
                total: 3,
                unread: 0,
                unseen: 0
            }
        );
        assert_eq!(
            InboxAction::Seen.delta(State::from_bits(1), 5),
            Counts::default()
        );
    }
}
