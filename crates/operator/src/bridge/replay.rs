//! Replay protection: a genuine request is accepted once. Every verified request's signature is
//! remembered until its timestamp leaves the five-minute window (after which the window check
//! refuses it anyway), so memory holds at most the requests of ten minutes of timestamps, and
//! never more than `capacity` entries. When that many are still live, new requests are refused
//! (`overloaded`) rather than forgetting one that could then be replayed: failing closed costs
//! a retry, never a second decision.

use std::collections::{BTreeSet, HashMap};

/// What the guard says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: remembered now.
    Fresh,
    /// Already accepted within its window.
    Replay,
    /// Memory is full of live entries.
    Full,
}

#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    /// key → expiry (Unix seconds).
    seen: HashMap<Vec<u8>, i64>,
    /// (expiry, key), oldest first, for eviction.
    by_expiry: BTreeSet<(i64, Vec<u8>)>,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Remembers `key` until `expires` unless already remembered; forgets what expired by `now`.
    pub fn check(&mut self, key: &[u8], expires: i64, now: i64) -> Seen {
        while let Some((at, _)) = self.by_expiry.first() {
            if *at >= now {
                break;
            }
            if let Some((_, k)) = self.by_expiry.pop_first() {
                self.seen.remove(&k);
            }
        }
        if self.seen.contains_key(key) {
            return Seen::Replay;
        }
        if self.seen.len() >= self.capacity {
            return Seen::Full;
        }
        self.seen.insert(key.to_vec(), expires);
        self.by_expiry.insert((expires, key.to_vec()));
        Seen::Fresh
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_accepted_once_within_its_window() {
        let mut g = ReplayGuard::new(10);
        assert_eq!(g.check(b"sig-a", 1_300, 1_000), Seen::Fresh);
        assert_eq!(g.check(b"sig-a", 1_300, 1_100), Seen::Replay);
        assert_eq!(g.check(b"sig-a", 1_300, 1_300), Seen::Replay);
        assert_eq!(g.check(b"sig-b", 1_300, 1_100), Seen::Fresh);
        // Past its expiry the entry goes (the window check refuses such a request anyway).
        assert_eq!(g.check(b"sig-c", 1_700, 1_301), Seen::Fresh);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_fails_closed_while_full() {
        let mut g = ReplayGuard::new(3);
        for k in [b"k1", b"k2", b"k3"] {
            assert_eq!(g.check(k, 2_000, 1_000), Seen::Fresh);
        }
        assert_eq!(g.check(b"k4", 2_000, 1_000), Seen::Full);
        // Nothing live was forgotten to make room.
        assert_eq!(g.check(b"k1", 2_000, 1_500), Seen::Replay);
        assert_eq!(g.len(), 3);
        // Once they expire there is room again.
        assert_eq!(g.check(b"k4", 2_400, 2_001), Seen::Fresh);
        assert_eq!(g.len(), 1);
    }
}
