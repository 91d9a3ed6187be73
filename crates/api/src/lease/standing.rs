//! Standing objects held by someone else: when a lease that uses one looks at it again
//! (docs/architecture.md, "Scaling past one cluster and one subscription").
//!
//! Azure keeps one role assignment per (principal, role, scope) and one federated credential
//! per (identity, issuer, subject). A lease that finds its tuple held by another's object uses
//! that object and never touches it; when the object goes (another lapse cluster's lease ended,
//! or someone deleted it) the lease creates its own. What an object says of its holder (a
//! lapse marker and its `expires=`, a lapse FIC name) is writable by anyone with Azure write
//! access, so it decides only *when to look*: never what is deleted, never how long access
//! lasts (the lease's own record bounds that).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::naming::{Marker, fic_cluster};

/// Who holds an object a lease uses but did not create, as the object itself says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Holder {
    /// No lapse marker: access someone made by hand, expected to stay. Looked at again by the
    /// sweep, every `--sweep-interval`.
    #[default]
    Unmarked,
    /// Another lapse operator's object (its description marker or FIC name), expected to go
    /// when that operator's lease ends: `expires_at` when its marker says so.
    Lapse { expires_at: Option<DateTime<Utc>> },
}

/// A lapse holder that advertises no end (a managed identity's FIC has no description, only
/// its name) is looked at this often.
pub const UNDATED_HOLDER_POLL: Duration = Duration::from_secs(30);
/// Past a holder's advertised end, looks come this soon at first...
const OVERDUE_POLL_MIN: Duration = Duration::from_millis(500);
/// ...and back off to this: a holder whose lease was extended (its marker still names the
/// first end) costs one look a minute.
const OVERDUE_POLL_MAX: Duration = Duration::from_secs(60);

impl Holder {
    /// What an object's description (role assignments, application FICs) and FIC name say of
    /// its holder.
    pub fn of(description: Option<&str>, fic_name: Option<&str>) -> Self {
        match description.and_then(Marker::parse) {
            Some(m) => Self::Lapse {
                expires_at: m.expires_at,
            },
            None if fic_name.and_then(fic_cluster).is_some() => Self::Lapse { expires_at: None },
            None => Self::Unmarked,
        }
    }

    /// When a lease using this holder's object should look at it again: `None` leaves it to
    /// the sweep. Before the advertised end, at it; past it, soon (half the time already
    /// overdue, between 0.5 s and 60 s), since the holder's own operator deletes it within
    /// about a second of its lease's end.
    pub fn look_again_at(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = match self {
            Self::Unmarked => return None,
            Self::Lapse {
                expires_at: Some(end),
            } if now < end => return Some(end),
            Self::Lapse {
                expires_at: Some(end),
            } => ((now - end) / 2)
                .to_std()
                .unwrap_or(OVERDUE_POLL_MIN)
                .clamp(OVERDUE_POLL_MIN, OVERDUE_POLL_MAX),
            Self::Lapse { expires_at: None } => UNDATED_HOLDER_POLL,
        };
        Some(now + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX))
    }

    /// Whether a look is due now: the controller then reads the object from Azure again
    /// rather than from its inventory, which the sweep refreshes only every interval.
    pub fn due(self, now: DateTime<Utc>) -> bool {
        match self {
            Self::Unmarked => false,
            Self::Lapse { expires_at } => expires_at.is_none_or(|end| now >= end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn holders_are_read_from_markers_and_fic_names() {
        assert_eq!(Holder::of(None, None), Holder::Unmarked);
        assert_eq!(
            Holder::of(Some("standing access made by hand"), Some("my-credential")),
            Holder::Unmarked
        );
        assert_eq!(
            Holder::of(
                Some("lapse:east owner=x grant=a/b expires=2027-01-01T00:00:00Z"),
                None
            ),
            Holder::Lapse {
                expires_at: DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }
        );
        assert_eq!(
            Holder::of(Some("lapse:east"), None),
            Holder::Lapse { expires_at: None }
        );
        let fic = format!("lapse-east-{}", "0".repeat(32));
        assert_eq!(
            Holder::of(None, Some(&fic)),
            Holder::Lapse { expires_at: None }
        );
    }

    #[test]
    fn a_dated_holder_is_looked_at_at_its_end_then_soon_then_less_often() {
        let h = Holder::Lapse {
            expires_at: Some(at(100)),
        };
        assert!(!h.due(at(99)));
        assert_eq!(h.look_again_at(at(10)), Some(at(100)));
        assert!(h.due(at(100)));
        let half = TimeDelta::milliseconds(500);
        assert_eq!(h.look_again_at(at(100)), Some(at(100) + half));
        assert_eq!(h.look_again_at(at(110)), Some(at(115)));
        assert_eq!(h.look_again_at(at(1000)), Some(at(1060)));
    }

    #[test]
    fn undated_holders_are_polled_and_unmarked_ones_left_to_the_sweep() {
        let undated = Holder::Lapse { expires_at: None };
        assert!(undated.due(at(0)));
        assert_eq!(undated.look_again_at(at(0)), Some(at(30)));
        assert!(!Holder::Unmarked.due(at(0)));
        assert_eq!(Holder::Unmarked.look_again_at(at(0)), None);
    }
}
