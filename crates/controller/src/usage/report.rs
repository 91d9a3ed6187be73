//! Findings told to people: each is an audit line, a metric and a notification; a grant's are
//! also Events on the grant (the decision records them), a finding without a grant is an Event
//! on the AccessPolicy that governs the resource.

use chrono::Utc;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use lapse_api::arm::ArmId;
use lapse_api::policy::NamedPolicy;
use lapse_api::usage::Finding;

use crate::context::Context;
use crate::notify::{GrantRecord, Kind, Notification};

/// A finding no grant carries (`UseWithoutLease`).
pub fn unleased(ctx: &Context, f: &Finding, policies: &[NamedPolicy]) {
    let resource = f.resource.as_deref().and_then(|r| ArmId::parse(r).ok());
    let policy = resource
        .as_ref()
        .and_then(|r| super::windows::policy_governing(policies, r));
    tell(ctx, f, None, policy);
    let Some(p) = policy.and_then(|name| {
        ctx.policies
            .store()
            .state()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }) else {
        return;
    };
    ctx.events.send(
        Event {
            type_: EventType::Warning,
            reason: f.kind.as_str().to_owned(),
            note: Some(f.message.chars().take(1000).collect()),
            action: "Observe".into(),
            secondary: None,
        },
        p.object_ref(&()),
    );
}

/// A finding the decision recorded on a grant (as an Event), told to everyone else.
pub fn leased(ctx: &Context, f: &Finding, record: &GrantRecord) {
    let f = Finding {
        grant: Some(format!("{}/{}", record.namespace, record.name)),
        ..f.clone()
    };
    tell(ctx, &f, Some(record), record.policy.as_deref());
}

fn tell(ctx: &Context, f: &Finding, record: Option<&GrantRecord>, policy: Option<&str>) {
    ctx.metrics.usage_finding(f.kind);
    crate::audit::usage_finding(f, policy);
    let grant = record.cloned().unwrap_or_else(|| {
        GrantRecord::unleased(&ctx.settings.cluster, &f.principal.to_string(), policy)
    });
    ctx.notifier.send(Notification {
        id: uuid::Uuid::new_v4(),
        kind: Kind::UsageFinding,
        reason: f.kind.as_str().to_owned(),
        message: f.message.clone(),
        warning: f.kind.warning(),
        time: Utc::now(),
        grant,
    });
}
