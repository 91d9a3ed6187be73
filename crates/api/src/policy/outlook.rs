//! Whether a running lease can still be extended under its policy, for reminders
//! (`ExpiringSoon`): the policy's `maxDuration` (total), `maxExtensions` (count) and
//! `activeHours` (the window's close) bound it.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::duration::LeaseDuration;
use crate::validate::PolicyRules;

/// What is left to extend a lease by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionOutlook {
    /// It can be extended by up to `by`, to `until`.
    Possible {
        by: LeaseDuration,
        until: DateTime<Utc>,
        /// Extensions left under `maxExtensions`, when it is set.
        left: Option<u32>,
        /// The policy needs approval: an extension is a new request.
        needs_approval: bool,
    },
    /// No extension can be accepted; why.
    Impossible(String),
}

/// The outlook of a lease that started at `activated_at`, expires at `expires_at` and was
/// extended `extensions` times, under `rules` (`None`: no policy allows it now).
pub fn extension_outlook(
    rules: Option<&PolicyRules>,
    activated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    extensions: u32,
) -> ExtensionOutlook {
    let Some(rules) = rules else {
        return ExtensionOutlook::Impossible(
            "no valid AccessPolicy allows the lease to be extended now".into(),
        );
    };
    if let Some(max) = rules.max_extensions
        && extensions >= max
    {
        return ExtensionOutlook::Impossible(format!(
            "it was extended {extensions} time(s) and the policy's maxExtensions is {max}"
        ));
    }
    let mut until = activated_at + rules.max_duration.to_chrono();
    let mut bound = format!("maxDuration {}", rules.max_duration);
    if let Some(close) = rules
        .active_hours
        .as_ref()
        .and_then(|h| h.containing(activated_at))
        .map(|o| o.close)
        .filter(|c| *c < until)
    {
        until = close;
        bound = format!(
            "the close of the policy's active hours at {}",
            rfc3339(close)
        );
    }
    // Whole minutes, so the suggested command is one a person would type.
    let room = until - expires_at;
    let minutes = room.num_minutes();
    match u64::try_from(minutes * 60)
        .ok()
        .filter(|s| *s > 0)
        .and_then(|s| LeaseDuration::from_secs(s).ok())
    {
        Some(by) => ExtensionOutlook::Possible {
            by,
            until: expires_at + TimeDelta::minutes(minutes),
            left: rules.max_extensions.map(|m| m - extensions),
            needs_approval: rules.approval.is_some(),
        },
        None => ExtensionOutlook::Impossible(format!("the lease already reaches {bound}")),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl ExtensionOutlook {
    /// One sentence for a reminder, naming the exact `kubectl lapse extend` command when an
    /// extension is possible.
    pub fn sentence(&self, namespace: &str, name: &str) -> String {
        match self {
            Self::Impossible(why) => format!("it cannot be extended: {why}"),
            Self::Possible {
                by,
                until,
                left,
                needs_approval,
            } => {
                let left = left
                    .map(|n| format!(", {n} extension(s) left"))
                    .unwrap_or_default();
                let approval = if *needs_approval {
                    "; the extension needs approval again"
                } else {
                    ""
                };
                format!(
                    "it can be extended by up to {by} (to {}{left}){approval}: \
                     kubectl lapse -n {namespace} extend {name} --by {by}",
                    rfc3339(*until)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::{AccessPolicySpec, ActiveHours, Weekday};
    use crate::validate::validate_policy;

    fn rules(edit: impl FnOnce(&mut AccessPolicySpec)) -> PolicyRules {
        let mut spec = AccessPolicySpec {
            namespaces: vec!["payments".into()],
            identities: vec![
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*".into(),
            ],
            roles: vec!["Reader".into()],
            scopes: vec!["/subscriptions/s".into()],
            max_duration: "1h".into(),
            ..Default::default()
        };
        edit(&mut spec);
        validate_policy(&spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 - 1_800_000_000 % 86_400 + m * 60, 0)
            .unwrap_or_default()
    }

    #[test]
    fn a_reminder_names_the_room_left_and_the_command() {
        let r = rules(|p| p.max_extensions = Some(2));
        let o = extension_outlook(Some(&r), at(0), at(20), 1);
        assert_eq!(
            o.sentence("payments", "nightly"),
            format!(
                "it can be extended by up to 40m (to {}, 1 extension(s) left): kubectl lapse \
                 -n payments extend nightly --by 40m",
                rfc3339(at(60))
            )
        );
        let o = extension_outlook(Some(&r), at(0), at(20), 2);
        assert!(o.sentence("payments", "nightly").contains(
            "it cannot be extended: it was extended 2 time(s) and the policy's maxExtensions is 2"
        ));
        let o = extension_outlook(Some(&r), at(0), at(60), 0);
        assert!(
            o.sentence("p", "n")
                .contains("the lease already reaches maxDuration 1h")
        );
        assert!(matches!(
            extension_outlook(None, at(0), at(10), 0),
            ExtensionOutlook::Impossible(_)
        ));
    }

    #[test]
    fn active_hours_bound_the_room_at_the_window_close() {
        // at(0) is a midnight UTC; the window closes at 00:30.
        let r = rules(|p| {
            p.active_hours = Some(ActiveHours {
                time_zone: "UTC".into(),
                days: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Sat,
                    Weekday::Sun,
                ],
                from: "00:00".into(),
                to: "00:30".into(),
            })
        });
        let o = extension_outlook(Some(&r), at(0), at(20), 0);
        assert!(matches!(o, ExtensionOutlook::Possible { until, .. } if until == at(30)));
    }
}
