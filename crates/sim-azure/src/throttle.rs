//! ARM throttling: one token bucket per (subscription, principal, operation kind), refilled
//! continuously, like ARM's regional token buckets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{ThrottleConfig, ThrottleLimit};
use crate::http::lock;

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpKind {
    Read,
    Write,
    Delete,
}

impl OpKind {
    pub fn of(method: &hyper::Method) -> Self {
        match *method {
            hyper::Method::GET | hyper::Method::HEAD => Self::Read,
            hyper::Method::DELETE => Self::Delete,
            _ => Self::Write,
        }
    }

    /// Suffix of the `x-ms-ratelimit-remaining-subscription-*` header.
    pub fn header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// All buckets.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottleConfig,
    buckets: Mutex<HashMap<(String, String, OpKind), Bucket>>,
}

/// Outcome of drawing a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Draw {
    /// Allowed; this many tokens are left.
    Allowed(u32),
    /// Throttled; retry after this many seconds.
    Throttled(u64),
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, kind: OpKind) -> ThrottleLimit {
        match kind {
            OpKind::Read => self.config.reads,
            OpKind::Write => self.config.writes,
            OpKind::Delete => self.config.deletes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn draw(&self, subscription: &str, principal: &str, kind: OpKind, now: Instant) -> Draw {
        let limit = self.limit(kind);
        let capacity = f64::from(limit.capacity);
        let mut buckets = lock(&self.buckets);
        let bucket = buckets
            .entry((
                subscription.to_ascii_lowercase(),
                principal.to_ascii_lowercase(),
                kind,
            ))
            .or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.refill_per_sec).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            // Truncation is intended: the header reports whole requests left.
            Draw::Allowed(bucket.tokens.floor() as u32)
        } else {
            let missing = 1.0 - bucket.tokens;
            let secs = if limit.refill_per_sec > 0.0 {
                (missing / limit.refill_per_sec).ceil()
            } else {
                3600.0
            };
            Draw::Throttled((secs as u64).max(1))
        }
    }
}

impl Throttle {
    /// Gives back the token a request drew (the request was refused before it counted).
    pub fn refund(&self, subscription: &str, principal: &str, kind: OpKind) {
        let capacity = f64::from(self.limit(kind).capacity);
        if let Some(bucket) = lock(&self.buckets).get_mut(&(
            subscription.to_ascii_lowercase(),
            principal.to_ascii_lowercase(),
            kind,
        )) {
            bucket.tokens = (bucket.tokens + 1.0).min(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_counts_down_then_refills() {
        let cfg = ThrottleConfig {
            writes: ThrottleLimit {
                capacity: 3,
                refill_per_sec: 1.0,
            },
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(cfg);
        let now = Instant::now();
        assert_eq!(t.draw("s", "p", OpKind::Write, now), Draw::Allowed(2));
        assert_eq!(t.draw("s", "p", OpKind::Write, now), Draw::Allowed(1));
        assert_eq!(t.draw("s", "p", OpKind::Write, now), Draw::Allowed(0));
        assert_eq!(t.draw("s", "p", OpKind::Write, now), Draw::Throttled(1));
        // Other principals and kinds have their own buckets.
        assert_eq!(t.draw("s", "q", OpKind::Write, now), Draw::Allowed(2));
        assert_eq!(t.draw("s", "p", OpKind::Read, now), Draw::Allowed(249));
        assert_eq!(
            t.draw("s", "p", OpKind::Write, now + Duration::from_secs(1)),
            Draw::Allowed(0)
        );
        // A refunded token is drawn again.
        t.refund("s", "p", OpKind::Write);
        assert_eq!(
            t.draw("s", "p", OpKind::Write, now + Duration::from_secs(1)),
            Draw::Allowed(0)
        );
    }
}
