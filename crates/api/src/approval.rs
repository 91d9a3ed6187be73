//! Counting approvals: which AccessApproval decisions count for a grant under a policy's
//! `approval` rule, and what they add up to. Pure; the decision core acts on the tally.
//!
//! A decision counts when it names the grant's uid, comes from an eligible approver (a user
//! the rule lists, or deciding as a group it lists) and that approver is not the grant's
//! requester. An escalation tier's approvers count only for decisions made (by the API server's
//! clock) once their tier had opened, `after` the wait started; one made earlier never counts,
//! not even once the tier opens: it must be made again. Approvals count for the generation they name only (an edited grant is a new
//! request); a Deny counts whatever generation it names (a Deny always ends the lease).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::v1alpha1::ApprovalDecision;
use crate::validate::{ApprovalRule, Eligibility};

/// One AccessApproval as the core sees it: its spec and its server-set creation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalInput {
    /// The AccessApproval's name.
    pub name: String,
    pub grant_uid: String,
    pub generation: i64,
    pub decision: ApprovalDecision,
    pub username: String,
    pub groups: Vec<String>,
    pub comment: Option<String>,
    /// `metadata.creationTimestamp`: when the decision was made, on the API server's clock.
    pub created_at: Option<DateTime<Utc>>,
}

/// The approvals a grant's namespace holds for it, and whether they can be believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalView {
    /// `Err` names what is missing while the admission policies that make `spec.requester` and
    /// `spec.approver` unforgeable are not in force: then no decision counts.
    pub admission: Result<(), String>,
    /// The AccessApprovals naming the grant (by name; the tally checks the uid).
    pub decisions: Vec<ApprovalInput>,
}

impl Default for ApprovalView {
    fn default() -> Self {
        Self {
            admission: Err("the approval admission policies have not been seen yet".into()),
            decisions: Vec::new(),
        }
    }
}

/// A decision left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub name: String,
    pub username: String,
    pub why: &'static str,
}

/// What the decisions for one grant add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Counted approvals of this generation, one per distinct approver, earliest first.
    pub approvals: Vec<ApprovalInput>,
    /// The first counted Deny (by creation time), if any.
    pub denial: Option<ApprovalInput>,
    pub ignored: Vec<Ignored>,
    /// Approvals still needed.
    pub missing: u32,
    /// When the quorum was reached: the creation time of the approval that completed it (the
    /// latest of the earliest `required` distinct approvals).
    pub quorum_at: Option<DateTime<Utc>>,
}

impl Tally {
    pub fn approved(&self) -> bool {
        self.missing == 0 && self.denial.is_none()
    }
}

/// Tallies `decisions` for the grant `uid` at `generation`, requested by `requester`, without
/// escalation: a tier approver's decision never counts (see [`tally_since`]).
pub fn tally(
    rule: &ApprovalRule,
    uid: &str,
    generation: i64,
    requester: Option<&str>,
    decisions: &[ApprovalInput],
) -> Tally {
    tally_since(rule, uid, generation, requester, decisions, None)
}

/// Tallies `decisions` for a grant that has waited since `since` (its creation): escalation
/// tiers open `after` that.
pub fn tally_since(
    rule: &ApprovalRule,
    uid: &str,
    generation: i64,
    requester: Option<&str>,
    decisions: &[ApprovalInput],
    since: Option<DateTime<Utc>>,
) -> Tally {
    let mut sorted: Vec<&ApprovalInput> = decisions.iter().filter(|d| d.grant_uid == uid).collect();
    // Deterministic: by creation time, then name.
    sorted.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    let mut out = Tally::default();
    let mut seen = BTreeSet::new();
    for d in sorted {
        let ignore = |why| Ignored {
            name: d.name.clone(),
            username: d.username.clone(),
            why,
        };
        if requester == Some(d.username.as_str()) {
            out.ignored.push(ignore("the requester"));
            continue;
        }
        match rule.eligible_at(&d.username, &d.groups, d.created_at, since) {
            Eligibility::Eligible => {}
            Eligibility::TooEarly => {
                out.ignored.push(ignore(
                    "an escalation approver deciding before their tier opened; decide again",
                ));
                continue;
            }
            Eligibility::NotAnApprover => {
                out.ignored.push(ignore("not an approver under the policy"));
                continue;
            }
        }
        match d.decision {
            ApprovalDecision::Deny => {
                if out.denial.is_none() {
                    out.denial = Some(d.clone());
                }
            }
            ApprovalDecision::Approve if d.generation != generation => {
                out.ignored
                    .push(ignore("for an earlier version of the grant"));
            }
            ApprovalDecision::Approve => {
                if seen.insert(d.username.clone()) {
                    out.approvals.push(d.clone());
                }
            }
        }
    }
    let required = usize::try_from(rule.required).unwrap_or(usize::MAX);
    out.missing = u32::try_from(required.saturating_sub(out.approvals.len())).unwrap_or(u32::MAX);
    if out.missing == 0 {
        out.quorum_at = out
            .approvals
            .iter()
            .take(required)
            .filter_map(|a| a.created_at)
            .max();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::LeaseDuration;

    fn rule(required: u32) -> ApprovalRule {
        ApprovalRule {
            required,
            users: vec!["bob".into()],
            groups: vec!["oncall".into()],
            timeout: LeaseDuration::parse("24h").unwrap_or_else(|e| panic!("{e}")),
            auto_approve: Vec::new(),
            escalation: Vec::new(),
        }
    }

    fn at(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_800_000_000 + s, 0)
    }

    fn decision(
        name: &str,
        user: &str,
        groups: &[&str],
        d: ApprovalDecision,
        generation: i64,
        t: i64,
    ) -> ApprovalInput {
        ApprovalInput {
            name: name.into(),
            grant_uid: "uid-1".into(),
            generation,
            decision: d,
            username: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            comment: None,
            created_at: at(t),
        }
    }

    #[test]
    fn the_requester_and_strangers_do_not_count() {
        let ds = [
            decision("a", "alice", &["oncall"], ApprovalDecision::Approve, 1, 1),
            decision("c", "carol", &["devs"], ApprovalDecision::Approve, 1, 2),
            decision("b", "bob", &[], ApprovalDecision::Approve, 1, 3),
        ];
        let t = tally(&rule(1), "uid-1", 1, Some("alice"), &ds);
        assert!(t.approved());
        assert_eq!(t.quorum_at, at(3));
        let why: Vec<(&str, &str)> = t
            .ignored
            .iter()
            .map(|i| (i.username.as_str(), i.why))
            .collect();
        assert_eq!(
            why,
            [
                ("alice", "the requester"),
                ("carol", "not an approver under the policy")
            ]
        );
    }

    #[test]
    fn a_quorum_needs_distinct_approvers_of_this_generation_and_uid() {
        let mut other_uid = decision("x", "dave", &["oncall"], ApprovalDecision::Approve, 2, 0);
        other_uid.grant_uid = "uid-2".into();
        let ds = [
            decision("b1", "bob", &[], ApprovalDecision::Approve, 2, 1),
            decision("b2", "bob", &["oncall"], ApprovalDecision::Approve, 2, 2),
            decision("e", "erin", &["oncall"], ApprovalDecision::Approve, 1, 3),
            other_uid,
        ];
        let t = tally(&rule(2), "uid-1", 2, Some("alice"), &ds);
        assert!(!t.approved());
        assert_eq!(t.missing, 1);
        assert_eq!(t.quorum_at, None);
        let more = [
            ds.to_vec(),
            vec![decision(
                "f",
                "frank",
                &["oncall"],
                ApprovalDecision::Approve,
                2,
                9,
            )],
        ]
        .concat();
        let t = tally(&rule(2), "uid-1", 2, Some("alice"), &more);
        assert!(t.approved());
        assert_eq!(t.quorum_at, at(9));
    }

    #[test]
    fn an_escalation_approver_counts_only_once_their_tier_has_opened() {
        let mut r = rule(1);
        r.escalation = vec![crate::validate::EscalationTier {
            after: LeaseDuration::parse("15m").unwrap_or_else(|e| panic!("{e}")),
            users: vec!["dora".into()],
            groups: vec!["managers".into()],
        }];
        let since = at(0);
        let early = decision("d1", "dora", &[], ApprovalDecision::Approve, 1, 899);
        let t = tally_since(
            &r,
            "uid-1",
            1,
            Some("alice"),
            std::slice::from_ref(&early),
            since,
        );
        assert!(!t.approved());
        assert!(t.ignored[0].why.contains("before their tier opened"));
        // An early Deny does not count either.
        let deny = decision("d0", "erin", &["managers"], ApprovalDecision::Deny, 1, 10);
        let t = tally_since(&r, "uid-1", 1, Some("alice"), &[deny], since);
        assert_eq!(t.denial, None);
        // Made again once the tier opened, it counts; the early one still does not.
        let again = decision("d2", "dora", &[], ApprovalDecision::Approve, 1, 900);
        let t = tally_since(&r, "uid-1", 1, Some("alice"), &[early, again], since);
        assert!(t.approved());
        assert_eq!(t.approvals[0].name, "d2");
        assert_eq!(t.quorum_at, at(900));
        // Without knowing when the wait started, no tier opens.
        let late = decision("d3", "dora", &[], ApprovalDecision::Approve, 1, 5000);
        assert!(!tally(&r, "uid-1", 1, Some("alice"), &[late]).approved());
    }

    #[test]
    fn one_eligible_deny_of_any_generation_wins() {
        let ds = [
            decision("b", "bob", &[], ApprovalDecision::Approve, 3, 1),
            decision("d", "dora", &["oncall"], ApprovalDecision::Deny, 1, 2),
            decision("s", "stranger", &[], ApprovalDecision::Deny, 3, 0),
        ];
        let t = tally(&rule(1), "uid-1", 3, Some("alice"), &ds);
        assert!(!t.approved());
        assert_eq!(t.denial.map(|d| d.username), Some("dora".to_owned()));
    }
}
