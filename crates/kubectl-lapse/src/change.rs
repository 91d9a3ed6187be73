//! `extend` and `revoke`: merge patches of a grant's spec.
//!
//! An extension raises `spec.duration` and/or `spec.window.notAfter` (docs/api.md): the lease
//! ends `duration` after its start (`window.notBefore`, else activation), capped by `notAfter`,
//! so each bound that would end the lease before the new end is raised to it. The patch makes a
//! new generation; the operator moves `status.expiresAt` only within the policy's `maxDuration`,
//! and under a policy with `approval` only once that generation is approved.

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use kube::api::{Api, Patch};
use lapse_api::duration::LeaseDuration;
use lapse_api::field::FieldErrors;
use lapse_api::policy::{Gate, Verdict};
use lapse_api::v1alpha1::{AccessGrant, AccessGrantSpec, AccessGrantStatus, GrantPhase};
use lapse_api::validate::validate_grant;
use serde_json::json;

use crate::cli::{ExtendArgs, NameArgs, Output};
use crate::client::{Kube, api_message, is_not_found};
use crate::exit::Stop;
use crate::time;

/// How far to extend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    By(LeaseDuration),
    Until(DateTime<Utc>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtendError {
    #[error("the grant's spec is invalid, so its lease cannot be computed: {0}")]
    Invalid(FieldErrors),
    #[error(
        "the lease already ends at {current}; {to} is not later (to shorten it, edit spec.duration or spec.window.notAfter)"
    )]
    NotLater { current: String, to: String },
    #[error("the lease would be longer than any lease may be: {0}")]
    TooLong(String),
}

/// An extension, worked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    /// When the lease ends now, and when it would.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Where the lease starts (the operator measures its length from here).
    pub start: DateTime<Utc>,
    pub spec: AccessGrantSpec,
    /// The merge patch, `{"spec": {...}}`.
    pub patch: serde_json::Value,
    /// What changed, for people: `spec.duration 10m → 40m`.
    pub changes: Vec<String>,
}

/// Works out the spec that ends the lease at the target, from the grant as it stands.
pub fn plan(
    spec: &AccessGrantSpec,
    status: Option<&AccessGrantStatus>,
    created: DateTime<Utc>,
    target: Target,
) -> Result<Extension, ExtendError> {
    let req = validate_grant(spec).map_err(ExtendError::Invalid)?;
    let start = status
        .and_then(|s| s.activated_at)
        .unwrap_or_else(|| crate::check::lease_of(&req, created).0);
    let from = status
        .and_then(|s| s.expires_at)
        .unwrap_or_else(|| req.expiry_from(start));
    let to = match target {
        Target::By(d) => from + d.to_chrono(),
        Target::Until(t) => t,
    };
    if to <= from {
        return Err(ExtendError::NotLater {
            current: time::rfc3339(from),
            to: time::rfc3339(to),
        });
    }
    let mut new = spec.clone();
    let mut patch = serde_json::Map::new();
    let mut changes = Vec::new();
    let anchor = req.not_before.unwrap_or(start);
    if let Some(d) = req.duration
        && anchor + d.to_chrono() < to
    {
        let secs = ceil_secs(to - anchor);
        let nd = LeaseDuration::from_secs(secs).map_err(|e| ExtendError::TooLong(e.to_string()))?;
        changes.push(format!(
            "spec.duration {} → {nd}",
            spec.duration.as_deref().unwrap_or_default()
        ));
        new.duration = Some(nd.to_string());
        patch.insert("duration".into(), json!(nd.to_string()));
    }
    if let Some(after) = req.not_after
        && after < to
    {
        let t = time::rfc3339(to);
        changes.push(format!(
            "spec.window.notAfter {} → {t}",
            time::rfc3339(after)
        ));
        if let Some(w) = new.window.as_mut() {
            w.not_after = Some(t.clone());
        }
        patch.insert("window".into(), json!({ "notAfter": t }));
    }
    Ok(Extension {
        from,
        to,
        start,
        spec: new,
        patch: json!({ "spec": patch }),
        changes,
    })
}

fn ceil_secs(d: TimeDelta) -> u64 {
    let s = d.num_seconds() + i64::from(d.subsec_nanos() > 0);
    u64::try_from(s).unwrap_or(0)
}

async fn live(kube: &Kube, name: &str) -> anyhow::Result<(Api<AccessGrant>, AccessGrant)> {
    let ns = &kube.namespace;
    let api: Api<AccessGrant> = Api::namespaced(kube.client.clone(), ns);
    match api.get(name).await {
        Ok(g) => Ok((api, g)),
        Err(e) if is_not_found(&e) => {
            anyhow::bail!("AccessGrant {ns}/{name} not found")
        }
        Err(e) => Err(e).with_context(|| format!("reading AccessGrant {ns}/{name}")),
    }
}

pub async fn extend(kube: &Kube, args: &ExtendArgs, output: Option<Output>) -> anyhow::Result<()> {
    let target = match (&args.by, &args.until) {
        (Some(by), _) => {
            Target::By(time::parse_duration("--by", by).map_err(|e| Stop::Usage(e.to_string()))?)
        }
        (None, Some(until)) => Target::Until(
            time::parse_time("--until", until).map_err(|e| Stop::Usage(e.to_string()))?,
        ),
        (None, None) => return Err(Stop::Usage("--by or --until is required".into()).into()),
    };
    let (ns, name) = (kube.namespace.clone(), args.name.as_str());
    let (api, g) = live(kube, name).await?;
    let phase = crate::summary::phase(&g);
    if phase.is_terminal() || phase == GrantPhase::Revoking {
        return Err(Stop::Refused(format!(
            "AccessGrant {ns}/{name} is {}: its lease has ended and cannot be extended; request \
             a new one",
            phase.as_str()
        ))
        .into());
    }
    let created = crate::summary::created(&g).unwrap_or_else(Utc::now);
    let ext = plan(&g.spec, g.status.as_ref(), created, target)
        .map_err(|e| Stop::Refused(format!("AccessGrant {ns}/{name}: {e}")))?;
    let start = ext.start;
    let verdict = crate::request::judge(
        kube,
        &ns,
        name,
        &ext.spec,
        |req| req.expiry_from(start) - start,
        "this extension",
    )
    .await?;
    let patched = api
        .patch(
            name,
            &crate::client::patch_params(),
            &Patch::Merge(&ext.patch),
        )
        .await
        .map_err(|e| anyhow::anyhow!("patching AccessGrant {ns}/{name}: {}", api_message(&e)))?;
    if let Some(format) = output {
        return crate::output::print(format, &patched);
    }
    let generation = patched.metadata.generation.unwrap_or_default();
    println!(
        "accessgrant.lapse.dev/{name}: asked to extend the lease from {} to {} ({}; generation {generation})",
        time::rfc3339(ext.from),
        time::rfc3339(ext.to),
        ext.changes.join(", "),
    );
    // Under approval the extension is a new request: the verdict says so, or (when the policies
    // could not be read) the grant's Approved condition does.
    let approval = match &verdict {
        Some(Verdict::Allowed { gate, .. }) => matches!(gate, Gate::Approval(_)),
        _ => g
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Approved")),
    };
    if approval {
        println!(
            "its policy requires approval: the extension takes effect once generation \
             {generation} is approved (kubectl lapse approve {name}); until then the lease keeps \
             its expiry"
        );
    } else {
        println!(
            "the operator moves status.expiresAt once it accepts the extension (kubectl lapse \
             describe {name})"
        );
    }
    Ok(())
}

pub async fn revoke(kube: &Kube, args: &NameArgs, output: Option<Output>) -> anyhow::Result<()> {
    let (ns, name) = (kube.namespace.clone(), args.name.as_str());
    let (api, g) = live(kube, name).await?;
    let phase = crate::summary::phase(&g);
    if g.spec.revoked || phase.is_terminal() {
        if let Some(format) = output {
            return crate::output::print(format, &g);
        }
        println!(
            "accessgrant.lapse.dev/{name} is already {}{}: nothing to revoke",
            phase.as_str(),
            if g.spec.revoked && !phase.is_terminal() {
                " (spec.revoked is set)"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let patched = api
        .patch(
            name,
            &crate::client::patch_params(),
            &Patch::Merge(json!({"spec": {"revoked": true}})),
        )
        .await
        .map_err(|e| anyhow::anyhow!("revoking AccessGrant {ns}/{name}: {}", api_message(&e)))?;
    if let Some(format) = output {
        return crate::output::print(format, &patched);
    }
    println!(
        "accessgrant.lapse.dev/{name} revoked (spec.revoked: true): the operator deletes its Azure \
         objects now; the grant stays as the record"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use lapse_api::v1alpha1::{IdentityRef, RoleRequest, Window};

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn spec(duration: Option<&str>, not_after: Option<DateTime<Utc>>) -> AccessGrantSpec {
        AccessGrantSpec {
            identity: IdentityRef {
                managed_identity: Some("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x".into()),
                ..Default::default()
            },
            roles: vec![RoleRequest {
                role: "Reader".into(),
                scope: "/subscriptions/00000000-0000-0000-0000-000000000001".into(),
                condition: None,
            }],
            duration: duration.map(str::to_owned),
            window: not_after.map(|t| Window {
                not_before: None,
                not_after: Some(time::rfc3339(t)),
            }.into()),
            ..Default::default()
        }
    }

    fn active(activated: i64, expires: i64) -> AccessGrantStatus {
        AccessGrantStatus {
            phase: GrantPhase::Active,
            activated_at: Some(at(activated)),
            expires_at: Some(at(expires)),
            ..Default::default()
        }
    }

    #[test]
    fn by_raises_the_duration_from_the_lease_start() {
        let st = active(60, 60 + 600);
        let by = Target::By(LeaseDuration::from_secs(1800).unwrap_or(LeaseDuration::MIN));
        let e =
            plan(&spec(Some("10m"), None), Some(&st), at(0), by).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.from, e.to), (at(660), at(660 + 1800)));
        assert_eq!(e.patch, json!({"spec": {"duration": "40m"}}));
        assert_eq!(e.changes, ["spec.duration 10m → 40m"]);
    }

    #[test]
    fn until_raises_whichever_bound_ends_the_lease_first() {
        let st = active(0, 600);
        // Window only.
        let e = plan(
            &spec(None, Some(at(600))),
            Some(&st),
            at(0),
            Target::Until(at(3600)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            e.patch,
            json!({"spec": {"window": {"notAfter": time::rfc3339(at(3600))}}})
        );
        // Both bounds, the duration ending first: only it moves.
        let e = plan(
            &spec(Some("10m"), Some(at(7200))),
            Some(&st),
            at(0),
            Target::Until(at(3600)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.patch, json!({"spec": {"duration": "1h"}}));
        // Both move when both end before the target.
        let e = plan(
            &spec(Some("10m"), Some(at(900))),
            Some(&st),
            at(0),
            Target::Until(at(3601)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            e.patch,
            json!({"spec": {"duration": "1h1s", "window": {"notAfter": time::rfc3339(at(3601))}}})
        );
    }

    #[test]
    fn an_extension_must_end_later() {
        let st = active(0, 600);
        let e = plan(
            &spec(Some("10m"), None),
            Some(&st),
            at(0),
            Target::Until(at(300)),
        );
        assert!(matches!(e, Err(ExtendError::NotLater { .. })));
    }

    #[test]
    fn a_grant_not_yet_active_extends_from_its_creation() {
        let e = plan(
            &spec(Some("10m"), None),
            None,
            at(100),
            Target::By(LeaseDuration::from_secs(600).unwrap_or(LeaseDuration::MIN)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.from, e.to), (at(700), at(1300)));
        assert_eq!(e.patch, json!({"spec": {"duration": "20m"}}));
    }
}
