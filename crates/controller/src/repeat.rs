//! "Once per window": a reconcile that runs on a watch cache not yet showing the operator's own
//! status write decides the same transition twice; what it announces (Events, notifications,
//! audit lines) must still go out once.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Keys seen in the last `window`, forgotten after it. A key is remembered by its 64-bit hash
/// (not a copy of its strings): thousands of leases announcing at once stay small, and a
/// collision at worst silences one duplicate-looking announcement for a window.
#[derive(Debug)]
pub struct RepeatWindow<K> {
    window: Duration,
    seen: HashMap<u64, Instant>,
    pruned: Option<Instant>,
    keys: PhantomData<fn(K)>,
}

impl<K: Hash> RepeatWindow<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            pruned: None,
            keys: PhantomData,
        }
    }

    /// True unless `key` was seen within the window before `now`; records it when true.
    pub fn first(&mut self, key: K, now: Instant) -> bool {
        // Forget expired keys once per window, so memory follows the recent rate only.
        if self
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window)
        {
            let window = self.window;
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if self.seen.capacity() > 2 * self.seen.len() + 64 {
                self.seen.shrink_to_fit();
            }
            self.pruned = Some(now);
        }
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let key = h.finish();
        match self.seen.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.window => false,
            _ => {
                self.seen.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_news_once_per_window_and_expired_keys_are_forgotten() {
        let mut w = RepeatWindow::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(w.first("a", t0));
        assert!(!w.first("a", t0 + Duration::from_secs(59)));
        assert!(w.first("b", t0 + Duration::from_secs(1)));
        assert!(
            w.first("a", t0 + Duration::from_secs(60)),
            "news again after it"
        );
        w.first("c", t0 + Duration::from_secs(130));
        assert_eq!(
            w.seen.len(),
            1,
            "a and b pruned: {:?}",
            w.seen.keys().collect::<Vec<_>>()
        );
    }
}
