//! Azure-enforced expiry through PIM (docs/security.md, "When access really ends"): under a
//! policy with `azure.expiry: PIM` a role assignment is requested with an end time Azure keeps
//! whatever happens to lapse, and PIM's own rules bound what lapse may ask.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use crate::v1alpha1::AssignmentSchedule;

/// PIM's rules and the operator's grace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PimSettings {
    /// How long after `expiresAt` Azure removes the assignment: lapse removes it at
    /// `expiresAt` and Azure's end is the second guard, so the grace is the longest access can
    /// outlive the lease when lapse cannot act at all.
    pub grace: TimeDelta,
    /// PIM's minimum active duration: a schedule shorter than this is refused, and an
    /// assignment cannot be removed within this of its start (`ActiveDurationTooShort`).
    /// Azure's is 5 minutes; configurable only to test against a simulator.
    pub minimum: TimeDelta,
}

impl Default for PimSettings {
    fn default() -> Self {
        Self {
            grace: TimeDelta::minutes(5),
            minimum: PIM_MINIMUM,
        }
    }
}

/// PIM's minimum active duration in Azure.
pub const PIM_MINIMUM: TimeDelta = TimeDelta::minutes(5);

/// Azure's answer to a schedule shorter than the minimum, or a removal too soon after the
/// start.
pub const ACTIVE_DURATION_TOO_SHORT: &str = "ActiveDurationTooShort";
/// Azure's answer when the tenant has no Microsoft Entra ID P2 (or Governance) licence.
pub const PIM_LICENCE_REQUIRED: &str = "AadPremiumLicenseRequired";

impl PimSettings {
    /// The schedule to request for a lease ending at `expires_at`, starting `now` (whole
    /// seconds, as the request carries them). Never shorter than PIM's minimum.
    pub fn schedule(&self, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> AssignmentSchedule {
        let starts_at = now.trunc_subsecs(0);
        AssignmentSchedule {
            starts_at,
            ends_at: self.ends_at(expires_at).max(starts_at + self.minimum),
        }
    }

    /// Where Azure should end an assignment of a lease ending at `expires_at`.
    pub fn ends_at(&self, expires_at: DateTime<Utc>) -> DateTime<Utc> {
        (expires_at + self.grace).trunc_subsecs(0)
    }

    /// The earliest instant PIM lets the assignment be removed.
    pub fn removable_at(&self, schedule: &AssignmentSchedule) -> DateTime<Utc> {
        schedule.starts_at + self.minimum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()).unwrap()
    }

    #[test]
    fn a_schedule_ends_one_grace_after_the_lease_in_whole_seconds() {
        let pim = PimSettings::default();
        let s = pim.schedule(at("2026-01-01T10:00:00.700Z"), at("2026-01-01T11:00:00Z"));
        assert_eq!(s.starts_at, at("2026-01-01T10:00:00Z"));
        assert_eq!(s.ends_at, at("2026-01-01T11:05:00Z"));
        assert_eq!(pim.removable_at(&s), at("2026-01-01T10:05:00Z"));
    }

    #[test]
    fn a_schedule_is_never_shorter_than_pims_minimum() {
        let pim = PimSettings {
            grace: TimeDelta::zero(),
            minimum: PIM_MINIMUM,
        };
        let s = pim.schedule(at("2026-01-01T10:00:00Z"), at("2026-01-01T10:01:00Z"));
        assert_eq!(s.ends_at, at("2026-01-01T10:05:00Z"));
    }
}
