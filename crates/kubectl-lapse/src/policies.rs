//! `policies`: what a namespace may request — per AccessPolicy covering it, the identities,
//! roles, scopes, federation (and whether it closes early), lease lengths, approval,
//! break-glass and its stance on management locks. The "eligible roles" view.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lapse_api::policy::covers_namespace;
use lapse_api::v1alpha1::{AccessPolicy, ConditionStatus, LockTolerance};
use lapse_api::validate::validate_policy;
use serde::Serialize;

use crate::check;
use crate::cli::Output;
use crate::client::Kube;
use crate::exit::Stop;

/// One policy's offer to the namespace.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub policy: String,
    /// How it covers the namespace: by name glob, by label selector.
    pub covers_by: String,
    pub identities: Vec<String>,
    pub service_principals: Vec<String>,
    pub applications: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub service_accounts: Vec<String>,
    pub audiences: Vec<String>,
    pub max_duration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification_pattern: Option<String>,
    /// `spec.ticket`: the change ticket the justification must name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketOffer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalOffer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass_max_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active_grants: Option<u32>,
    /// `spec.maxExtensions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_extensions: Option<u32>,
    /// `spec.activeHours`, in words (`Mon,Fri 08:00-18:00 Europe/Berlin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<String>,
    pub allow_privileged_identities: bool,
    /// `spec.locks`: whether a management lock on a scope or the identity denies a grant
    /// (`Deny`) or is tolerated (`Tolerate`).
    pub locks: LockTolerance,
    /// `spec.federation.closeEarly`: the federated credential is deleted one token lifetime
    /// before the lease ends.
    pub federation_close_early: bool,
    /// The operator's `Ready` condition, when it has written one (`UnknownRole` still allows the
    /// rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TicketOffer {
    /// The pattern the justification must contain a match of (the ticket's ID).
    pub pattern: String,
    /// The operator's checker that must say the ticket is open; none: the pattern alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checker: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalOffer {
    pub required: u32,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub timeout: String,
    /// `approval.autoApprove`, each rule in words, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_approve: Vec<String>,
    /// `approval.escalation`, each tier in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<String>,
}

/// The offers of the valid policies covering `ns` (with these labels), and the names of the
/// invalid ones (which allow nothing).
pub fn offers(
    policies: &[AccessPolicy],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> (Vec<Offer>, Vec<String>) {
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    let mut sorted: Vec<&AccessPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for p in sorted {
        let name = p.metadata.name.clone().unwrap_or_default();
        let named = check::named(std::slice::from_ref(p));
        if named.iter().any(|n| n.rules.is_err()) {
            invalid.push(name);
            continue;
        }
        if !covers_namespace(&named, ns, labels) {
            continue;
        }
        let Ok(rules) = validate_policy(&p.spec) else {
            continue;
        };
        let by_name = rules.namespaces.iter().find(|g| g.matches(ns));
        let covers_by = match by_name {
            Some(g) => format!("spec.namespaces {:?}", g.as_str()),
            None => "spec.namespaceSelector".into(),
        };
        let s = &p.spec;
        out.push(Offer {
            policy: name,
            covers_by,
            identities: s.identities.clone(),
            service_principals: s.service_principals.clone(),
            applications: s.applications.clone(),
            roles: s.roles.clone(),
            scopes: s.scopes.clone(),
            service_accounts: s.service_accounts.clone(),
            audiences: rules.audiences.clone(),
            max_duration: rules.max_duration.to_string(),
            justification_pattern: s.justification_pattern.clone(),
            ticket: s.ticket.as_ref().map(|t| TicketOffer {
                pattern: t.pattern.clone(),
                checker: t.checker.clone(),
            }),
            approval: rules.approval.as_ref().map(|a| ApprovalOffer {
                required: a.required,
                users: a.users.clone(),
                groups: a.groups.clone(),
                timeout: a.timeout.to_string(),
                auto_approve: a.auto_approve.iter().map(|r| r.describe()).collect(),
                escalation: a
                    .escalation
                    .iter()
                    .map(|t| {
                        let mut who = Vec::new();
                        if !t.users.is_empty() {
                            who.push(format!("users {}", t.users.join(", ")));
                        }
                        if !t.groups.is_empty() {
                            who.push(format!("groups {}", t.groups.join(", ")));
                        }
                        format!("after {}: {}", t.after, who.join(" or "))
                    })
                    .collect(),
            }),
            break_glass_max_duration: rules.break_glass.map(|d| d.to_string()),
            max_active_grants: s.max_active_grants,
            max_extensions: rules.max_extensions,
            active_hours: rules.active_hours.as_ref().map(ToString::to_string),
            allow_privileged_identities: s.allow_privileged_identities,
            locks: rules.locks,
            federation_close_early: rules.close_federation_early,
            ready: p.status.as_ref().and_then(|st| {
                st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| {
                    if c.status == ConditionStatus::True {
                        "True".to_owned()
                    } else {
                        format!("False ({}): {}", c.reason, c.message)
                    }
                })
            }),
        });
    }
    (out, invalid)
}

fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

/// The offers for people, one block per policy.
pub fn render(ns: &str, offers: &[Offer], invalid: &[String]) -> String {
    let mut s = String::new();
    if offers.is_empty() {
        let _ = writeln!(
            s,
            "No AccessPolicy covers namespace {ns}: grants there are denied (default deny)."
        );
    }
    for (i, o) in offers.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "AccessPolicy {} (covers {ns} by {})",
            o.policy, o.covers_by
        );
        let mut field = |k: &str, v: String| {
            let _ = writeln!(s, "  {:<20}{v}", format!("{k}:"));
        };
        let mut ids: Vec<String> = o.identities.clone();
        ids.extend(o.service_principals.iter().map(|x| format!("sp:{x}")));
        ids.extend(o.applications.iter().map(|x| format!("app:{x}")));
        for (j, id) in ids.iter().enumerate() {
            field(if j == 0 { "Identities" } else { "" }, id.clone());
        }
        field("Roles", o.roles.join(", "));
        for (j, scope) in o.scopes.iter().enumerate() {
            field(
                if j == 0 { "Scopes" } else { "" },
                format!("{scope} (and below)"),
            );
        }
        field(
            "Federation",
            if o.service_accounts.is_empty() {
                "none".into()
            } else {
                format!(
                    "ServiceAccounts {} (audiences {})",
                    o.service_accounts.join(", "),
                    o.audiences.join(", ")
                )
            },
        );
        if !o.service_accounts.is_empty() {
            field(
                "Close early",
                if o.federation_close_early {
                    "yes: the federated credential is deleted one token lifetime before the lease \
                     ends (a lease must be longer than that)"
                } else {
                    "no: the federated credential lasts the whole lease"
                }
                .into(),
            );
        }
        field(
            "Max duration",
            format!("{} (extensions included)", o.max_duration),
        );
        if let Some(p) = &o.justification_pattern {
            field("Justification", format!("must match {p:?}"));
        }
        if let Some(t) = &o.ticket {
            field(
                "Ticket",
                match &t.checker {
                    Some(c) => format!(
                        "the justification must name one matching {:?}, open according to \
                         checker {c} (a closed ticket denies, and revokes a live lease)",
                        t.pattern
                    ),
                    None => format!("the justification must name one matching {:?}", t.pattern),
                },
            );
        }
        field(
            "Approval",
            match &o.approval {
                None => "none: allowed grants activate at once".into(),
                Some(a) => format!(
                    "{} from {}{} within {} (never the requester)",
                    a.required,
                    list_or(&a.users, ""),
                    if a.groups.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "{}groups {}",
                            if a.users.is_empty() { "" } else { " or " },
                            a.groups.join(", ")
                        )
                    },
                    a.timeout
                ),
            },
        );
        if let Some(a) = &o.approval {
            for (i, r) in a.auto_approve.iter().enumerate() {
                field("Auto-approve", format!("rule {i}: {r}"));
            }
            for t in &a.escalation {
                field("Escalation", t.clone());
            }
        }
        if let Some(n) = o.max_extensions {
            field("Extensions", format!("at most {n}"));
        }
        if let Some(h) = &o.active_hours {
            field(
                "Hours",
                format!("{h} (activation only then; leases end at the close)"),
            );
        }
        field(
            "Break-glass",
            o.break_glass_max_duration
                .as_ref()
                .map(|d| format!("up to {d} (--break-glass, justification required)"))
                .unwrap_or_else(|| "no".into()),
        );
        if let Some(m) = o.max_active_grants {
            field("Max active grants", format!("{m} per namespace"));
        }
        field(
            "Locks",
            match o.locks {
                LockTolerance::Deny => {
                    "Deny: a management lock on a scope or the identity denies the grant"
                }
                LockTolerance::Tolerate => {
                    "Tolerate: grants activate under management locks; a revocation a lock \
                     refuses waits for its removal (RevocationBlocked)"
                }
            }
            .into(),
        );
        if o.allow_privileged_identities {
            field(
                "Privileged",
                "identities with privileged standing roles may be federated".into(),
            );
        }
        if let Some(r) = &o.ready {
            field("Ready", r.clone());
        }
    }
    if !invalid.is_empty() {
        let _ = writeln!(
            s,
            "\n{} invalid AccessPolicy(ies) allow nothing until fixed: {} (kubectl describe apol)",
            invalid.len(),
            invalid.join(", ")
        );
    }
    s
}

pub async fn run(kube: &Kube, output: Option<Output>) -> anyhow::Result<()> {
    if kube.all_namespaces {
        return Err(
            Stop::Usage("policies answers for one namespace: use -n, not -A".into()).into(),
        );
    }
    let ns = &kube.namespace;
    let policies = check::policies(kube).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "you may not list AccessPolicies (cluster-scoped): ask for get/list on \
             accesspolicies.lapse.dev"
        )
    })?;
    let labels = match kube.namespace_labels(ns).await? {
        Some(l) => l,
        None => {
            eprintln!(
                "note: you may not read namespace {ns}: policies that select namespaces by label \
                 are judged without its labels"
            );
            BTreeMap::new()
        }
    };
    let (offers, invalid) = offers(&policies, ns, &labels);
    match output {
        Some(format) => crate::output::print(
            format,
            &serde_json::json!({"namespace": ns, "policies": offers, "invalidPolicies": invalid}),
        ),
        None => {
            print!("{}", render(ns, &offers, &invalid));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::{
        AccessPolicySpec, ApprovalRules, Approvers, BreakGlassRules, FederationRules, LabelSelector,
    };

    use super::*;

    fn policy(name: &str, edit: impl FnOnce(&mut AccessPolicySpec)) -> AccessPolicy {
        let mut spec = AccessPolicySpec {
            namespaces: vec!["team-*".into()],
            identities: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*".into()],
            roles: vec!["Reader".into()],
            scopes: vec!["/subscriptions/s/resourceGroups/rg".into()],
            max_duration: "8h".into(),
            ..Default::default()
        };
        edit(&mut spec);
        AccessPolicy::new(name, spec)
    }

    #[test]
    fn only_policies_covering_the_namespace_are_offered() {
        let ps = [
            policy("b-approval", |s| {
                s.approval = Some(ApprovalRules {
                    required: 2,
                    approvers: Approvers {
                        users: vec!["bob".into()],
                        groups: vec!["oncall".into()],
                    },
                    timeout: "4h".into(),
                    ..Default::default()
                });
                s.break_glass = Some(BreakGlassRules {
                    max_duration: "1h".into(),
                });
            }),
            policy("a-other", |s| s.namespaces = vec!["other".into()]),
            policy("c-label", |s| {
                s.namespaces.clear();
                s.namespace_selector = Some(LabelSelector {
                    match_labels: [("tier".to_owned(), "prod".to_owned())].into(),
                    ..Default::default()
                });
            }),
            policy("d-broken", |s| s.max_duration = "forever".into()),
        ];
        let labels = [("tier".to_owned(), "prod".to_owned())].into();
        let (offered, invalid) = offers(&ps, "team-a", &labels);
        let names: Vec<(&str, &str)> = offered
            .iter()
            .map(|o| (o.policy.as_str(), o.covers_by.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("b-approval", "spec.namespaces \"team-*\""),
                ("c-label", "spec.namespaceSelector")
            ]
        );
        assert_eq!(invalid, ["d-broken"]);
        let text = render("team-a", &offered, &invalid);
        for part in [
            "AccessPolicy b-approval (covers team-a by spec.namespaces \"team-*\")",
            "Approval:           2 from bob or groups oncall within 4h (never the requester)",
            "Break-glass:        up to 1h",
            "Max duration:       8h (extensions included)",
            "1 invalid AccessPolicy(ies) allow nothing until fixed: d-broken",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        // The defaults: locks deny, no federation (so nothing closes early).
        assert!(
            text.contains("Locks:              Deny: a management lock"),
            "{text}"
        );
        assert!(!text.contains("Close early:"), "{text}");
        let (none, _) = offers(&ps, "default", &BTreeMap::new());
        assert!(none.is_empty());
        assert!(render("default", &none, &[]).contains("No AccessPolicy covers namespace default"));
    }

    #[test]
    fn the_lock_stance_and_close_early_are_shown_and_serialised() {
        let ps = [
            policy("a-tolerant", |s| {
                s.locks = LockTolerance::Tolerate;
                s.service_accounts = vec!["runner".into()];
                s.federation = Some(FederationRules { close_early: true });
            }),
            policy("b-plain", |s| s.service_accounts = vec!["runner".into()]),
        ];
        let (offered, _) = offers(&ps, "team-a", &BTreeMap::new());
        let stances: Vec<(LockTolerance, bool)> = offered
            .iter()
            .map(|o| (o.locks, o.federation_close_early))
            .collect();
        assert_eq!(
            stances,
            [
                (LockTolerance::Tolerate, true),
                (LockTolerance::Deny, false)
            ]
        );
        let text = render("team-a", &offered, &[]);
        for part in [
            "Locks:              Tolerate: grants activate under management locks",
            "Close early:        yes: the federated credential is deleted one token lifetime",
            "Close early:        no: the federated credential lasts the whole lease",
            "Locks:              Deny",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        let json = serde_json::to_value(&offered).unwrap_or_default();
        assert_eq!(json[0]["locks"], "Tolerate");
        assert_eq!(json[0]["federationCloseEarly"], true);
        assert_eq!(json[1]["locks"], "Deny");
        assert_eq!(json[1]["federationCloseEarly"], false);
    }

    #[test]
    fn the_ticket_rule_is_shown_and_serialised() {
        let ps = [
            policy("a-checked", |s| {
                s.ticket = Some(lapse_api::v1alpha1::TicketRules {
                    pattern: "OPS-[0-9]+".into(),
                    checker: Some("jira".into()),
                });
            }),
            policy("b-pattern", |s| {
                s.ticket = Some(lapse_api::v1alpha1::TicketRules {
                    pattern: "CHG[0-9]{7}".into(),
                    checker: None,
                });
            }),
        ];
        let (offered, _) = offers(&ps, "team-a", &BTreeMap::new());
        let text = render("team-a", &offered, &[]);
        for part in [
            "Ticket:             the justification must name one matching \"OPS-[0-9]+\", open \
             according to checker jira (a closed ticket denies, and revokes a live lease)",
            "Ticket:             the justification must name one matching \"CHG[0-9]{7}\"\n",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        let json = serde_json::to_value(&offered).unwrap_or_default();
        assert_eq!(
            json[0]["ticket"],
            serde_json::json!({"pattern": "OPS-[0-9]+", "checker": "jira"})
        );
        assert_eq!(
            json[1]["ticket"],
            serde_json::json!({"pattern": "CHG[0-9]{7}"})
        );
    }
}
