//! Change tickets (DESIGN §11, docs/approval.md "Tickets"): what the decision core knows of the
//! tickets grants name. The controller asks the checkers and hands the answers in as a
//! [`TicketView`], an input fact like the management locks; the core decides what they mean.

use std::collections::BTreeMap;
use std::fmt;

use crate::policy::{NamedPolicy, covers_namespace};

/// One ticket at one checker: what a check is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketKey {
    /// The checker's name (the policy's `ticket.checker`).
    pub checker: String,
    /// The ticket's ID (the pattern's first match in the justification).
    pub ticket: String,
}

impl fmt::Display for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ticket {} (checker {})", self.ticket, self.checker)
    }
}

/// What is known of one ticket.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TicketState {
    /// The checker said open (now, or last before it became unreachable, within the stale
    /// period).
    Open,
    /// The checker said closed.
    Closed,
    /// Not asked yet, or the first answer is still coming: a grant waits, a live lease stands
    /// (the next answer decides it).
    #[default]
    Unknown,
    /// No answer can be believed: the checker has failed for longer than the stale period, or
    /// the operator has no checker of that name. Fails closed: a grant waits, a live lease ends.
    Unavailable { detail: String },
}

/// The tickets' states, as far as the controller knows them. A ticket not listed is
/// [`TicketState::Unknown`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketView {
    pub states: BTreeMap<TicketKey, TicketState>,
}

impl TicketView {
    pub fn get(&self, key: &TicketKey) -> TicketState {
        self.states.get(key).cloned().unwrap_or_default()
    }
}

/// The tickets a grant's justification names under every valid policy that covers its
/// namespace and has a checker: what the controller must ask about before the core decides.
/// (The policy that allows the grant is only known once the core evaluates it.)
pub fn tickets_to_check(
    policies: &[NamedPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    justification: Option<&str>,
) -> Vec<TicketKey> {
    let Some(j) = justification else {
        return Vec::new();
    };
    let mut out: Vec<TicketKey> = policies
        .iter()
        .filter(|p| covers_namespace(std::slice::from_ref(p), namespace, labels))
        .filter_map(|p| {
            let rule = p.rules.as_ref().ok()?.ticket.as_ref()?;
            Some(TicketKey {
                checker: rule.checker.clone()?,
                ticket: rule.ticket_in(j)?.to_owned(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The ticket the policy named `policy` requires a check of for this justification, if any.
pub fn checked_ticket(
    policies: &[NamedPolicy],
    policy: &str,
    justification: Option<&str>,
) -> Option<TicketKey> {
    let rule = policies
        .iter()
        .find(|p| p.name == policy)?
        .rules
        .as_ref()
        .ok()?
        .ticket
        .as_ref()?;
    Some(TicketKey {
        checker: rule.checker.clone()?,
        ticket: rule.ticket_in(justification?)?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::{AccessPolicySpec, TicketRules};
    use crate::validate::validate_policy;

    fn policy(name: &str, ns: &str, pattern: &str, checker: Option<&str>) -> NamedPolicy {
        let spec = AccessPolicySpec {
            namespaces: vec![ns.into()],
            identities: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*".into()],
            roles: vec!["Reader".into()],
            scopes: vec!["/subscriptions/00000000-0000-0000-0000-000000000001".into()],
            max_duration: "1h".into(),
            ticket: Some(TicketRules {
                pattern: pattern.into(),
                checker: checker.map(Into::into),
            }),
            ..Default::default()
        };
        NamedPolicy {
            name: name.into(),
            rules: validate_policy(&spec).map_err(|e| e.to_string()),
        }
    }

    #[test]
    fn the_ticket_is_the_first_match_under_each_covering_policy_with_a_checker() {
        let policies = [
            policy("ops", "payments", "OPS-[0-9]+", Some("jira")),
            policy("chg", "payments", "CHG[0-9]{4}", Some("snow")),
            policy("plain", "payments", "OPS-[0-9]+", None),
            policy("other", "search", "OPS-[0-9]+", Some("jira")),
        ];
        let keys = tickets_to_check(
            &policies,
            "payments",
            &BTreeMap::new(),
            Some("OPS-12 then OPS-13, CHG0042"),
        );
        assert_eq!(
            keys,
            [
                TicketKey {
                    checker: "jira".into(),
                    ticket: "OPS-12".into()
                },
                TicketKey {
                    checker: "snow".into(),
                    ticket: "CHG0042".into()
                },
            ]
        );
        assert!(tickets_to_check(&policies, "payments", &BTreeMap::new(), Some("none")).is_empty());
        assert!(tickets_to_check(&policies, "payments", &BTreeMap::new(), None).is_empty());
        assert_eq!(
            checked_ticket(&policies, "ops", Some("see OPS-7")),
            Some(TicketKey {
                checker: "jira".into(),
                ticket: "OPS-7".into()
            })
        );
        assert_eq!(checked_ticket(&policies, "plain", Some("OPS-7")), None);
    }

    #[test]
    fn a_checker_name_is_a_plain_file_name() {
        for bad in [".hidden", "a/b", "", "x y"] {
            assert!(
                policy("p", "ns", "X-[0-9]+", Some(bad)).rules.is_err(),
                "{bad:?}"
            );
        }
        assert!(
            policy("p", "ns", "X-[0-9]+", Some("jira.prod_1"))
                .rules
                .is_ok()
        );
        let bad = policy("p", "ns", "X-[", None).rules.unwrap_err();
        assert!(bad.contains("spec.ticket.pattern"), "{bad}");
    }
}
