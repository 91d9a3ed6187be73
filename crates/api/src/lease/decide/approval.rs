//! Stage *approval* (docs/approval.md): what stands between an allowed grant and its lease —
//! nothing, its policy's approvers, or break-glass — and, for a running lease, an eligible
//! approver's Deny, which always ends it, and approval of an extension.

use chrono::{DateTime, SecondsFormat, Utc};

use super::step::Step;
use crate::approval::{Tally, tally_since};
use crate::lease::conditions::{APPROVED, find};
use crate::lease::reason::Reason;
use crate::policy::Gate;
use crate::v1alpha1::{ApprovalRecord, ConditionStatus, EndReason, GrantPhase};
use crate::validate::{ApprovalRule, GrantRequest};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn who(rule: &ApprovalRule) -> String {
    let mut parts = Vec::new();
    if !rule.users.is_empty() {
        parts.push(format!("users {}", rule.users.join(", ")));
    }
    if !rule.groups.is_empty() {
        parts.push(format!("groups {}", rule.groups.join(", ")));
    }
    parts.join(" or ")
}

fn auto_message(policy: &str, index: usize, description: &str) -> String {
    format!("auto-approved by rule {index} of AccessPolicy {policy}: {description}")
}

fn denial_message(t: &Tally) -> Option<String> {
    let d = t.denial.as_ref()?;
    let comment = d
        .comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    Some(format!(
        "denied by {} (AccessApproval {}){comment}",
        d.username, d.name
    ))
}

fn ignored_note(t: &Tally) -> String {
    if t.ignored.is_empty() {
        return String::new();
    }
    let list: Vec<String> = t
        .ignored
        .iter()
        .map(|i| format!("{} ({}, AccessApproval {})", i.username, i.why, i.name))
        .collect();
    format!("; not counted: {}", list.join(", "))
}

/// The escalation tiers open at `now` and the next to open, for the pending message.
fn tiers_note(rule: &ApprovalRule, since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for t in &rule.escalation {
        let opens = since + t.after.to_chrono();
        let who = who(&ApprovalRule {
            users: t.users.clone(),
            groups: t.groups.clone(),
            ..rule.clone()
        });
        if opens <= now {
            out.push_str(&format!(
                "; escalated since {}: {who} may decide",
                rfc3339(opens)
            ));
        } else {
            out.push_str(&format!("; escalates at {} to {who}", rfc3339(opens)));
        }
    }
    out
}

impl Step<'_> {
    /// When the grant's wait for approvers started: its creation (server-set). Escalation tiers
    /// and the timeout count from here.
    fn waiting_since(&self) -> DateTime<Utc> {
        self.input.grant.created_at.unwrap_or(self.now)
    }

    fn tally(&self, req: &GrantRequest, rule: &ApprovalRule) -> Tally {
        tally_since(
            rule,
            self.input.grant.uid,
            self.input.grant.generation.unwrap_or(0),
            req.requester.as_deref(),
            &self.input.approvals.decisions,
            Some(self.waiting_since()),
        )
    }

    /// The gate as far as it can be believed: an auto-approval rule that matched on
    /// `spec.requesterGroups` counts only while the admission policy that ties them to the
    /// creating user is in force; otherwise the grant asks its approvers like any other.
    fn trusted_gate(&self, gate: &Gate) -> Gate {
        match gate {
            Gate::AutoApproved {
                rule,
                on_groups: true,
                fallback,
                ..
            } if self.input.approvals.admission.is_err() => match fallback {
                Some((index, description)) => Gate::AutoApproved {
                    rule: rule.clone(),
                    index: *index,
                    description: description.clone(),
                    on_groups: false,
                    fallback: None,
                },
                None => Gate::Approval(rule.clone()),
            },
            g => g.clone(),
        }
    }

    fn record_approvals(&mut self, t: &Tally) {
        self.st.approvals = t
            .approvals
            .iter()
            .chain(t.denial.iter())
            .map(|d| ApprovalRecord {
                name: d.name.clone(),
                approver: d.username.clone(),
                decision: d.decision,
                generation: d.generation,
                at: d.created_at,
            })
            .collect();
    }

    /// Before activation: `Some(start)` when the grant may activate, the lease starting no
    /// earlier than `anchor` (for an approved grant, not before its approval: a lease does not
    /// run down while nobody may use it). `None` when it waits or has been ended.
    pub(super) fn pass_gate(
        &mut self,
        req: &GrantRequest,
        gate: &Gate,
        policy: &str,
        anchor: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let gate = &self.trusted_gate(gate);
        let rule = match gate {
            Gate::Open => return Some(anchor),
            Gate::BreakGlass(rule) => {
                // Reviewable after the fact: a Deny already given still stops it.
                if self.input.approvals.admission.is_ok()
                    && let Some(msg) = denial_message(&self.tally(req, rule))
                {
                    self.end_denied(msg);
                    return None;
                }
                self.facts.break_glass = Some(format!(
                    "break-glass under AccessPolicy {policy}: activated without approval \
                     ({}); its approvers ({}) may still deny it, which ends it at once",
                    req.justification.as_deref().unwrap_or_default(),
                    who(rule)
                ));
                return Some(anchor);
            }
            Gate::Approval(rule) | Gate::AutoApproved { rule, .. } => rule,
        };
        if req.requester.is_none() {
            let msg = format!(
                "spec.requester: required under AccessPolicy {policy}, which needs approval \
                 (approvers decide on a request by someone; admission sets it to the creating \
                 user, and `kubectl lapse request` fills it)"
            );
            self.facts.policy = Some((false, Reason::Denied, msg.clone()));
            self.end_without_objects(GrantPhase::Denied, Reason::Denied, format!("denied: {msg}"));
            return None;
        }
        if let Gate::AutoApproved {
            index, description, ..
        } = gate
        {
            return self.auto_approve(req, rule, policy, *index, description, anchor);
        }
        let created = self.waiting_since();
        let deadline = created + rule.timeout.to_chrono();
        let t = self.tally(req, rule);
        let pending = match &self.input.approvals.admission {
            Err(missing) => Some((
                Reason::AdmissionPoliciesMissing,
                format!(
                    "approvals are not counted while the admission policies that make requesters \
                     and approvers unforgeable are not in force: {missing}"
                ),
            )),
            Ok(()) => {
                self.record_approvals(&t);
                if let Some(msg) = denial_message(&t) {
                    self.end_denied(msg);
                    return None;
                }
                if t.approved() {
                    let approvers: Vec<&str> =
                        t.approvals.iter().map(|a| a.username.as_str()).collect();
                    let msg = format!(
                        "approved by {} (AccessPolicy {policy} needs {})",
                        approvers.join(", "),
                        rule.required
                    );
                    if self.st.phase == GrantPhase::PendingApproval {
                        self.event(false, Reason::Approved, msg.clone());
                    }
                    self.facts.approval = Some((true, Reason::Approved, msg));
                    let approved_at = t.quorum_at.unwrap_or(self.now).min(self.now);
                    return Some(anchor.max(approved_at));
                }
                let so_far: Vec<&str> = t.approvals.iter().map(|a| a.username.as_str()).collect();
                let so_far = if so_far.is_empty() {
                    String::new()
                } else {
                    format!("; approved so far by {}", so_far.join(", "))
                };
                Some((
                    Reason::PendingApproval,
                    format!(
                        "waiting for {} more approval(s) from {} (AccessPolicy {policy}) until {}{}{so_far}{}",
                        t.missing,
                        who(rule),
                        rfc3339(deadline),
                        tiers_note(rule, created, self.now),
                        ignored_note(&t)
                    ),
                ))
            }
        };
        if self.now >= deadline {
            let msg = format!(
                "not approved within {} (AccessPolicy {policy} approval.timeout)",
                rule.timeout
            );
            self.facts.approval = Some((false, Reason::ApprovalTimedOut, msg.clone()));
            self.end_without_objects(GrantPhase::Denied, Reason::ApprovalTimedOut, msg);
            return None;
        }
        if let Some((reason, msg)) = pending {
            self.facts.approval = Some((false, reason, msg.clone()));
            // Wake up when the next tier opens (its message changes, its approvers count), or
            // at the deadline.
            let next_tier = rule
                .escalation
                .iter()
                .map(|t| created + t.after.to_chrono())
                .filter(|opens| *opens > self.now)
                .min();
            self.requeue_at = Some(next_tier.map_or(deadline, |t| t.min(deadline)));
            self.transition(
                GrantPhase::PendingApproval,
                false,
                Reason::PendingApproval,
                msg,
            );
        }
        None
    }

    /// A grant one of the policy's `autoApprove` rules covers: no human approves, the lease
    /// starts at `anchor`, and the `Approved` condition names the rule. A Deny already given by
    /// an eligible approver still stops it.
    fn auto_approve(
        &mut self,
        req: &GrantRequest,
        rule: &ApprovalRule,
        policy: &str,
        index: usize,
        description: &str,
        anchor: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if self.input.approvals.admission.is_ok()
            && let Some(msg) = denial_message(&self.tally(req, rule))
        {
            self.end_denied(msg);
            return None;
        }
        let msg = auto_message(policy, index, description);
        let said = find(self.input.grant.status, APPROVED)
            .is_some_and(|c| c.status == ConditionStatus::True && c.message == msg);
        if !said {
            self.event(false, Reason::Approved, msg.clone());
        }
        self.facts.approval = Some((true, Reason::Approved, msg));
        Some(anchor)
    }

    fn end_denied(&mut self, msg: String) {
        self.facts.approval = Some((false, Reason::ApprovalDenied, msg.clone()));
        self.end_without_objects(GrantPhase::Denied, Reason::ApprovalDenied, msg);
    }

    /// A running lease under a gate: an eligible approver's Deny ends it (then `true`). Keeps
    /// the `Approved` and `BreakGlass` conditions current.
    pub(super) fn review(&mut self, req: &GrantRequest, gate: &Gate) -> bool {
        let gate = &self.trusted_gate(gate);
        let Some(rule) = gate.approval() else {
            return false;
        };
        if let Gate::BreakGlass(_) = gate {
            self.facts.break_glass = Some(format!(
                "break-glass: activated without approval ({}); its approvers ({}) may still deny it",
                req.justification.as_deref().unwrap_or_default(),
                who(rule)
            ));
        }
        if self.input.approvals.admission.is_err() {
            return false;
        }
        let t = self.tally(req, rule);
        if let Some(msg) = denial_message(&t) {
            self.facts.approval = Some((false, Reason::ApprovalDenied, msg.clone()));
            self.wind_down(EndReason::Revoked, Reason::ApprovalDenied, msg);
            return true;
        }
        if let Gate::AutoApproved {
            index, description, ..
        } = gate
            && self.facts.approval.is_none()
        {
            let policy = self.st.policy.clone().unwrap_or_default();
            self.facts.approval = Some((
                true,
                Reason::Approved,
                auto_message(&policy, *index, description),
            ));
        }
        // An extension waiting for approval has said so already.
        if matches!(gate, Gate::Approval(_)) && self.facts.approval.is_none() {
            if t.approved() {
                self.record_approvals(&t);
                let approvers: Vec<&str> =
                    t.approvals.iter().map(|a| a.username.as_str()).collect();
                self.facts.approval = Some((
                    true,
                    Reason::Approved,
                    format!("approved by {}", approvers.join(", ")),
                ));
            } else if let Some(prior) = find(self.input.grant.status, APPROVED)
                .filter(|c| c.status == ConditionStatus::True)
            {
                // The approval that activated the lease (or its last extension) still stands.
                self.facts.approval = Some((true, Reason::Approved, prior.message.clone()));
            }
        }
        false
    }

    /// Whether a longer lease than the running one may take effect under `gate`: at once
    /// without approval or under break-glass; else once this generation is approved (until
    /// then the lease keeps its expiry, and `Approved=False` says what it waits for).
    pub(super) fn extension_approved(&mut self, req: &GrantRequest, gate: &Gate) -> bool {
        let Gate::Approval(rule) = &self.trusted_gate(gate) else {
            return true;
        };
        if let Err(missing) = &self.input.approvals.admission {
            self.facts.approval = Some((
                false,
                Reason::AdmissionPoliciesMissing,
                format!(
                    "the extension waits: approvals are not counted while the approval \
                     admission policies are not in force: {missing}"
                ),
            ));
            return false;
        }
        let t = self.tally(req, rule);
        if t.approved() {
            return true;
        }
        self.facts.approval = Some((
            false,
            Reason::PendingApproval,
            format!(
                "the extension waits for {} more approval(s) of generation {} from {}; the \
                 lease keeps its expiry{}",
                t.missing,
                self.input.grant.generation.unwrap_or(0),
                who(rule),
                ignored_note(&t)
            ),
        ));
        false
    }
}
