//! Each lifecycle transition a decision makes: one audit line, and a notification when it is a
//! kind people are told about (docs/audit.md, docs/notifications.md). Neither waits for
//! anything: the audit line is a log line, the notification goes to a bounded queue.

use chrono::Utc;
use kube::ResourceExt;
use lapse_api::lease::Decision;
use lapse_api::policy::NamedPolicy;
use lapse_api::v1alpha1::{AccessGrant, AccessGrantStatus};

use crate::context::Context;
use crate::notify::{GrantRecord, Notification, repeat_key, transitions};

/// `policies`: the ones the decision was taken with (for the allowing policy's approvers).
pub(super) fn announce(
    ctx: &Context,
    g: &AccessGrant,
    policies: &[NamedPolicy],
    before: &AccessGrantStatus,
    d: &Decision,
) {
    let changes = transitions(before, d);
    if changes.is_empty() {
        return;
    }
    let uid = g.uid().unwrap_or_default();
    let approval = d.status.policy.as_deref().and_then(|name| {
        policies
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.rules.as_ref().ok())
            .and_then(|r| r.approval.clone())
    });
    let record = GrantRecord::of(&ctx.settings.cluster, g, &d.status, approval.as_ref());
    for t in changes {
        // A grant decided twice on a stale cache makes the same transition twice: once here.
        let (what, detail) = match t.kind {
            Some(kind) => (
                kind.as_str().to_owned(),
                repeat_key(kind, g.metadata.generation, &d.status),
            ),
            None => (format!("phase:{}", t.to.as_str()), String::new()),
        };
        if !ctx.notifier.first(&uid, &what, &detail) {
            continue;
        }
        crate::audit::transition(&record, &t);
        if let Some(kind) = t.kind {
            ctx.notifier.send(Notification {
                id: uuid::Uuid::new_v4(),
                kind,
                reason: t.reason,
                message: t.message,
                warning: kind.warning(),
                time: Utc::now(),
                grant: record.clone(),
            });
        }
    }
}
