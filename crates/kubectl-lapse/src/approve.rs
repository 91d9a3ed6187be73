//! `pending`, `approve` and `deny`: the approver's side (docs/api.md, AccessApproval).
//!
//! Who may decide is the allowing policy's `approval.approvers` (users, or groups the approver
//! decides as, and its escalation tiers' once open), never the grant's requester: `lapse_api`'s
//! own rule (`ApprovalRule::eligible_at`)
//! and tally (`lapse_api::approval::tally`) judge it here before anything is created. The
//! approval admission policy then holds the AccessApproval to the caller: `approver.username`
//! is the caller's and `approver.groups` a subset of theirs.

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, ListParams};
use lapse_api::approval::{ApprovalInput, Tally, tally_since};
use lapse_api::v1alpha1::{
    AccessApproval, AccessApprovalSpec, AccessGrant, ApprovalDecision, Approver, ConditionStatus,
    GrantPhase, GrantTarget,
};
use lapse_api::validate::{ApprovalRule, Eligibility};

use crate::check;
use crate::cli::Output;
use crate::client::{Caller, Kube, api_message, is_already_exists, is_not_found};
use crate::exit::Stop;
use crate::request::approvers;
use crate::summary;
use crate::table::{Table, ellipsize};
use crate::time;

/// Why the caller may not decide on a grant, naming the policy; `None` when they may. An
/// escalation tier's approver may decide once the grant created at `created` has waited the
/// tier's `after` by `now` (the operator judges by the decision's server-set creation time, so
/// one made earlier would never count).
pub fn ineligible(
    caller: &Caller,
    requester: Option<&str>,
    policy: &str,
    rule: &ApprovalRule,
    created: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    if requester == Some(caller.username.as_str()) {
        return Some(format!(
            "you ({}) requested it (spec.requester): a requester's own decision never counts",
            caller.username
        ));
    }
    match rule.eligible_at(&caller.username, &caller.groups, Some(now), created) {
        Eligibility::Eligible => None,
        Eligibility::TooEarly => {
            let opens = created.and_then(|c| {
                rule.escalation
                    .iter()
                    .filter(|t| t.lists(&caller.username, &caller.groups))
                    .map(|t| c + t.after.to_chrono())
                    .min()
            });
            Some(format!(
                "you ({}) are an escalation approver under AccessPolicy {policy}, and your tier \
                 opens {}: a decision before then never counts; decide again once it is open",
                caller.username,
                opens.map_or_else(
                    || "once the grant's creation time is known".to_owned(),
                    |t| format!("at {}", t.to_rfc3339_opts(SecondsFormat::Secs, true))
                )
            ))
        }
        Eligibility::NotAnApprover => Some(format!(
            "you ({}, groups {}) are not an approver under AccessPolicy {policy}: \
             spec.approval.approvers lists {}",
            caller.username,
            if caller.groups.is_empty() {
                "none".to_owned()
            } else {
                caller.groups.join(", ")
            },
            approvers(rule)
        )),
    }
}

/// The groups an approval decides as: those of the caller's that the rule (or one of its
/// escalation tiers) lists (a subset of the caller's, as admission requires).
pub fn deciding_groups(caller: &Caller, rule: &ApprovalRule) -> Vec<String> {
    caller
        .groups
        .iter()
        .filter(|g| rule.groups.contains(g) || rule.escalation.iter().any(|t| t.groups.contains(g)))
        .cloned()
        .collect()
}

/// `nightly-bob-example-com-g2`: the grant, the approver and the generation, as a DNS name.
pub fn approval_name(
    grant: &str,
    username: &str,
    generation: i64,
    decision: ApprovalDecision,
) -> String {
    let mut slug = String::new();
    for c in username.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let suffix = match decision {
        ApprovalDecision::Approve => format!("-g{generation}"),
        ApprovalDecision::Deny => format!("-g{generation}-deny"),
    };
    // A DNS-1123 subdomain is at most 253 characters: the grant's name is cut, never the suffix.
    let room = 253usize.saturating_sub(suffix.len());
    let head: String = format!("{grant}-{slug}").chars().take(room).collect();
    format!("{}{suffix}", head.trim_end_matches(['-', '.']))
}

fn input(a: &AccessApproval) -> ApprovalInput {
    ApprovalInput {
        name: a.metadata.name.clone().unwrap_or_default(),
        grant_uid: a.spec.grant.uid.clone(),
        generation: a.spec.grant.generation,
        decision: a.spec.decision,
        username: a.spec.approver.username.clone(),
        groups: a.spec.approver.groups.clone(),
        comment: a.spec.comment.clone(),
        created_at: a
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(time::from_k8s),
    }
}

/// The tally of a grant's approvals, as the operator will count them (escalation tiers open
/// from the grant's creation, as the operator counts them).
pub fn tally_of(g: &AccessGrant, rule: &ApprovalRule, approvals: &[AccessApproval]) -> Tally {
    let name = g.metadata.name.as_deref().unwrap_or_default();
    let inputs: Vec<ApprovalInput> = approvals
        .iter()
        .filter(|a| a.spec.grant.name == name)
        .map(input)
        .collect();
    tally_since(
        rule,
        g.metadata.uid.as_deref().unwrap_or_default(),
        g.metadata.generation.unwrap_or_default(),
        g.spec.requester.as_deref(),
        &inputs,
        g.metadata
            .creation_timestamp
            .as_ref()
            .and_then(time::from_k8s),
    )
}

/// Whether the grant waits for approval: phase PendingApproval, or a running lease whose
/// extension waits (`Approved=False`, reason PendingApproval).
pub fn waits_for_approval(g: &AccessGrant) -> bool {
    let Some(st) = &g.status else { return false };
    st.phase == GrantPhase::PendingApproval
        || (st.phase == GrantPhase::Active
            && st.conditions.iter().any(|c| {
                c.type_ == "Approved"
                    && c.status == ConditionStatus::False
                    && c.reason == "PendingApproval"
            }))
}

/// The allowing policy's approval rule, from the policies the caller may read.
fn rule_of<'a>(
    g: &AccessGrant,
    policies: &'a [lapse_api::policy::NamedPolicy],
) -> Option<(&'a str, &'a ApprovalRule)> {
    let name = g.status.as_ref()?.policy.as_deref()?;
    let p = policies.iter().find(|p| p.name == name)?;
    let rule = p.rules.as_ref().ok()?.approval.as_ref()?;
    Some((p.name.as_str(), rule))
}

async fn approvals_in(kube: &Kube, ns: Option<&str>) -> anyhow::Result<Vec<AccessApproval>> {
    let api: Api<AccessApproval> = match ns {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing AccessApprovals")?
        .items)
}

async fn readable_policies(kube: &Kube) -> anyhow::Result<Vec<lapse_api::policy::NamedPolicy>> {
    let policies = check::policies(kube).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "you may not list AccessPolicies (cluster-scoped): who may approve is theirs to say \
             (ask for get/list on accesspolicies.lapse.dev)"
        )
    })?;
    Ok(check::named(&policies))
}

/// `pending`: grants waiting for an approval the caller may give.
pub async fn pending(kube: &Kube, output: Option<Output>) -> anyhow::Result<()> {
    let caller = kube.whoami().await?;
    let policies = readable_policies(kube).await?;
    let grants = crate::list::grants(kube, None).await?;
    let approvals = approvals_in(
        kube,
        (!kube.all_namespaces).then_some(kube.namespace.as_str()),
    )
    .await?;
    let mut rows = Vec::new();
    for g in grants.into_iter().filter(waits_for_approval) {
        let Some((policy, rule)) = rule_of(&g, &policies) else {
            continue;
        };
        let created = g
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(time::from_k8s);
        if ineligible(
            &caller,
            g.spec.requester.as_deref(),
            policy,
            rule,
            created,
            Utc::now(),
        )
        .is_some()
        {
            continue;
        }
        let ns = g.metadata.namespace.clone().unwrap_or_default();
        let mine: Vec<AccessApproval> = approvals
            .iter()
            .filter(|a| a.metadata.namespace.as_deref() == Some(ns.as_str()))
            .cloned()
            .collect();
        let t = tally_of(&g, rule, &mine);
        let decided = t.approvals.iter().any(|a| a.username == caller.username);
        rows.push((g, policy.to_owned(), rule.clone(), t, decided));
    }
    if let Some(format) = output {
        let items: Vec<&AccessGrant> = rows.iter().map(|r| &r.0).collect();
        return crate::output::print(format, &crate::output::list(&items));
    }
    if rows.is_empty() {
        eprintln!(
            "Nothing waits for your approval ({}){}.",
            caller.username,
            if kube.all_namespaces {
                String::new()
            } else {
                format!(" in namespace {}", kube.namespace)
            }
        );
        return Ok(());
    }
    let now = Utc::now();
    let mut header = vec![
        "name",
        "requester",
        "identity",
        "roles@scopes",
        "lease",
        "policy",
        "approvals",
        "waiting",
    ];
    if kube.all_namespaces {
        header.insert(0, "namespace");
    }
    let mut table = Table::new(&header);
    for (g, policy, rule, t, decided) in &rows {
        let have = rule.required.saturating_sub(t.missing);
        let mut row = vec![
            g.metadata.name.clone().unwrap_or_default(),
            g.spec.requester.clone().unwrap_or_else(|| "-".into()),
            summary::identity(g),
            ellipsize(&summary::roles_at_scopes(&g.spec), 50),
            summary::when(g, now),
            policy.clone(),
            format!(
                "{have}/{}{}",
                rule.required,
                if *decided { " (yours counted)" } else { "" }
            ),
            summary::created(g)
                .map(|c| time::human(now - c))
                .unwrap_or_default(),
        ];
        if kube.all_namespaces {
            row.insert(0, g.metadata.namespace.clone().unwrap_or_default());
        }
        table.row(row);
    }
    print!("{}", table.render());
    Ok(())
}

/// `approve` and `deny`.
pub async fn decide(
    kube: &Kube,
    name: &str,
    decision: ApprovalDecision,
    comment: Option<&str>,
    output: Option<Output>,
) -> anyhow::Result<()> {
    if kube.all_namespaces {
        return Err(
            Stop::Usage("approve and deny work in one namespace: use -n, not -A".into()).into(),
        );
    }
    let ns = kube.namespace.clone();
    let verb = match decision {
        ApprovalDecision::Approve => "approve",
        ApprovalDecision::Deny => "deny",
    };
    let grants: Api<AccessGrant> = Api::namespaced(kube.client.clone(), &ns);
    let g = match grants.get(name).await {
        Ok(g) => g,
        Err(e) if is_not_found(&e) => anyhow::bail!("AccessGrant {ns}/{name} not found"),
        Err(e) => return Err(e).with_context(|| format!("reading AccessGrant {ns}/{name}")),
    };
    let phase = summary::phase(&g);
    if phase.is_terminal() {
        return Err(Stop::Refused(format!(
            "AccessGrant {ns}/{name} is {}: there is nothing left to {verb}",
            phase.as_str()
        ))
        .into());
    }
    let caller = kube.whoami().await?;
    let policies = readable_policies(kube).await?;
    let Some(policy) = g.status.as_ref().and_then(|s| s.policy.clone()) else {
        return Err(Stop::Refused(format!(
            "AccessGrant {ns}/{name} has no allowing AccessPolicy yet (phase {}): nothing to {verb} \
             until the operator has allowed it",
            phase.as_str()
        ))
        .into());
    };
    let Some((_, rule)) = rule_of(&g, &policies) else {
        return Err(Stop::Refused(format!(
            "AccessGrant {ns}/{name} is allowed by AccessPolicy {policy}, which needs no approval: \
             there is nothing to {verb} (to end it, kubectl lapse revoke {name})"
        ))
        .into());
    };
    let created = g
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(time::from_k8s);
    if let Some(why) = ineligible(
        &caller,
        g.spec.requester.as_deref(),
        &policy,
        rule,
        created,
        Utc::now(),
    ) {
        return Err(
            Stop::Refused(format!("you may not {verb} AccessGrant {ns}/{name}: {why}")).into(),
        );
    }
    let generation = g.metadata.generation.unwrap_or(1);
    let approval_name = approval_name(name, &caller.username, generation, decision);
    let mut approval = AccessApproval::new(
        &approval_name,
        AccessApprovalSpec {
            grant: GrantTarget {
                name: name.to_owned(),
                uid: g.metadata.uid.clone().unwrap_or_default(),
                generation,
            },
            decision,
            approver: Approver {
                username: caller.username.clone(),
                groups: deciding_groups(&caller, rule),
            },
            comment: comment.map(str::to_owned),
        },
    );
    approval.metadata.namespace = Some(ns.clone());
    let api: Api<AccessApproval> = Api::namespaced(kube.client.clone(), &ns);
    let created = match api.create(&crate::client::post_params(), &approval).await {
        Ok(a) => a,
        Err(e) if is_already_exists(&e) => {
            let existing = api.get(&approval_name).await.ok();
            if existing.as_ref().is_some_and(|a| {
                a.spec.decision == decision && a.spec.grant.uid == approval.spec.grant.uid
            }) {
                eprintln!(
                    "you already decided {} on generation {generation} (AccessApproval {approval_name})",
                    decision.as_str()
                );
                existing.unwrap_or(approval)
            } else {
                anyhow::bail!(
                    "AccessApproval {ns}/{approval_name} already exists with another decision; \
                     approvals are immutable (kubectl lapse describe {name})"
                );
            }
        }
        Err(e) => {
            anyhow::bail!(
                "creating AccessApproval {ns}/{approval_name}: {}",
                api_message(&e)
            )
        }
    };
    if let Some(format) = output {
        return crate::output::print(format, &created);
    }
    println!(
        "accessapproval.lapse.dev/{approval_name} created: {} of AccessGrant {ns}/{name} generation {generation}",
        decision.as_str()
    );
    let all = approvals_in(kube, Some(&ns))
        .await
        .unwrap_or_else(|_| vec![created.clone()]);
    let t = tally_of(&g, rule, &all);
    println!("{}", outcome(&t, rule, &policy, phase));
    Ok(())
}

/// What the decisions now add up to, as the operator will count them.
pub fn outcome(t: &Tally, rule: &ApprovalRule, policy: &str, phase: GrantPhase) -> String {
    if let Some(d) = &t.denial {
        return format!(
            "denied by {} (AccessApproval {}): the operator ends the grant{}",
            d.username,
            d.name,
            if phase == GrantPhase::Active {
                " and revokes its running lease at once"
            } else {
                ": it never activates"
            }
        );
    }
    let who: Vec<&str> = t.approvals.iter().map(|a| a.username.as_str()).collect();
    let counted = format!(
        "counted {} of {} approval(s) AccessPolicy {policy} needs (from {})",
        t.approvals.len(),
        rule.required,
        who.join(", ")
    );
    if t.approved() {
        let then = if phase == GrantPhase::Active {
            "the operator applies the extension"
        } else {
            "the operator activates it"
        };
        format!("{counted}: quorum reached, {then}")
    } else {
        format!(
            "{counted}: waiting for {} more from {}",
            t.missing,
            approvers(rule)
        )
    }
}

#[cfg(test)]
mod tests {
    use lapse_api::duration::LeaseDuration;

    use super::*;

    fn rule(required: u32) -> ApprovalRule {
        ApprovalRule {
            required,
            users: vec!["bob@example.com".into()],
            groups: vec!["platform-oncall".into()],
            timeout: LeaseDuration::from_secs(3600).unwrap_or(LeaseDuration::MIN),
            auto_approve: Vec::new(),
            escalation: Vec::new(),
        }
    }

    fn caller(name: &str, groups: &[&str]) -> Caller {
        Caller {
            username: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn eligibility_is_the_policys_and_never_the_requesters() {
        let r = rule(1);
        let alice = Some("alice@example.com");
        assert_eq!(
            ineligible(
                &caller("bob@example.com", &[]),
                alice,
                "p",
                &r,
                None,
                Utc::now()
            ),
            None
        );
        assert_eq!(
            ineligible(
                &caller("carol", &["platform-oncall", "devs"]),
                alice,
                "p",
                &r,
                None,
                Utc::now()
            ),
            None
        );
        let why = ineligible(
            &caller("alice@example.com", &["platform-oncall"]),
            alice,
            "p",
            &r,
            None,
            Utc::now(),
        );
        assert!(why.is_some_and(|w| w.contains("requested it (spec.requester)")));
        let why = ineligible(
            &caller("carol", &["devs"]),
            alice,
            "p",
            &r,
            None,
            Utc::now(),
        )
        .unwrap_or_default();
        assert!(
            why.contains("not an approver under AccessPolicy p")
                && why.contains("users bob@example.com or groups platform-oncall"),
            "{why}"
        );
    }

    #[test]
    fn an_escalation_approver_may_decide_only_once_their_tier_is_open() {
        let mut r = rule(1);
        r.escalation = vec![lapse_api::validate::EscalationTier {
            after: LeaseDuration::from_secs(300).unwrap_or(LeaseDuration::MIN),
            users: vec!["carol".into()],
            groups: vec!["leads".into()],
        }];
        let created = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let at = |m: i64| created.unwrap_or_default() + chrono::TimeDelta::minutes(m);
        let carol = caller("carol", &[]);
        let why = ineligible(&carol, None, "p", &r, created, at(4)).unwrap_or_default();
        assert!(
            why.contains(
                "your tier opens at 2026-12-01T08:05:00Z: a decision before then never counts"
            ),
            "{why}"
        );
        assert_eq!(ineligible(&carol, None, "p", &r, created, at(5)), None);
        let lead = caller("dave", &["leads", "devs"]);
        assert_eq!(ineligible(&lead, None, "p", &r, created, at(6)), None);
        assert_eq!(deciding_groups(&lead, &r), ["leads"]);
    }

    #[test]
    fn an_approval_decides_only_as_the_groups_that_make_it_count() {
        let c = caller(
            "carol",
            &["devs", "platform-oncall", "system:authenticated"],
        );
        assert_eq!(deciding_groups(&c, &rule(1)), ["platform-oncall"]);
    }

    #[test]
    fn approval_names_are_dns_names_with_the_generation() {
        assert_eq!(
            approval_name("nightly", "bob@example.com", 2, ApprovalDecision::Approve),
            "nightly-bob-example-com-g2"
        );
        assert_eq!(
            approval_name(
                "nightly",
                "system:serviceaccount:ops:Bot",
                1,
                ApprovalDecision::Deny
            ),
            "nightly-system-serviceaccount-ops-bot-g1-deny"
        );
        let long = approval_name(&"a".repeat(250), "bob", 12, ApprovalDecision::Deny);
        assert!(long.len() <= 253 && long.ends_with("-g12-deny"), "{long}");
    }

    #[test]
    fn the_outcome_says_what_the_operator_will_do() {
        let r = rule(2);
        let t = Tally {
            missing: 1,
            approvals: vec![ApprovalInput {
                name: "a".into(),
                grant_uid: "u".into(),
                generation: 1,
                decision: ApprovalDecision::Approve,
                username: "bob@example.com".into(),
                groups: vec![],
                comment: None,
                created_at: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            outcome(&t, &r, "p", GrantPhase::PendingApproval),
            "counted 1 of 2 approval(s) AccessPolicy p needs (from bob@example.com): waiting for \
             1 more from users bob@example.com or groups platform-oncall"
        );
    }
}
