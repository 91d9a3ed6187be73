//! `request`: an AccessGrant built from flags, judged first by the operator's own policy code,
//! then created (or printed with `--dry-run`), and with `--wait` followed until it is Active.

use std::time::Instant;

use chrono::Utc;
use kube::api::Api;
use lapse_api::arm::ArmId;
use lapse_api::policy::{Gate, Verdict};
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantSpec, DEFAULT_AUDIENCE, Federation, IdentityRef, ObjectIdRef,
    RoleRequest, Window,
};
use lapse_api::validate::{ApprovalRule, validate_grant};

use crate::check::{self, Inputs, NamespaceView};
use crate::cli::{Output, RequestArgs};
use crate::client::{Kube, api_message, is_already_exists};
use crate::exit::Stop;
use crate::time::{self, TimeError};

/// A flag whose value cannot make a grant: a usage error (exit 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("--identity {value:?}: {reason}")]
    Identity { value: String, reason: String },
    #[error("--role {value:?}: {reason}")]
    Role { value: String, reason: String },
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error("{0}")]
    Lease(String),
}

const IDENTITY_FORMS: &str = "expected a managed identity resource ID \
    (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>), \
    sp:<object-id> or app:<object-id>";

/// `--identity`: a managed identity resource ID, `sp:<object-id>` or `app:<object-id>` (also
/// with `/`, as the IDENTITY column writes them).
pub fn parse_identity(s: &str) -> Result<IdentityRef, FlagError> {
    let err = |reason: String| FlagError::Identity {
        value: s.to_owned(),
        reason,
    };
    let s = s.trim();
    if s.starts_with('/') {
        let id = ArmId::parse(s).map_err(|e| err(e.to_string()))?;
        if !id.is_managed_identity() {
            return Err(err(
                "not a Microsoft.ManagedIdentity/userAssignedIdentities resource ID".into(),
            ));
        }
        return Ok(IdentityRef {
            managed_identity: Some(s.to_owned()),
            ..Default::default()
        });
    }
    let (kind, id) = s
        .split_once(':')
        .or_else(|| s.split_once('/'))
        .ok_or_else(|| err(IDENTITY_FORMS.into()))?;
    let object = || -> Result<ObjectIdRef, FlagError> {
        let shaped = id.len() == 36 && uuid::Uuid::try_parse(id).is_ok();
        if shaped {
            Ok(ObjectIdRef {
                object_id: id.to_ascii_lowercase(),
            })
        } else {
            Err(err(format!(
                "{id:?} is not an object ID (a GUID, 8-4-4-4-12 hex digits)"
            )))
        }
    };
    match kind {
        "sp" => Ok(IdentityRef {
            service_principal: Some(object()?),
            ..Default::default()
        }),
        "app" => Ok(IdentityRef {
            application: Some(object()?),
            ..Default::default()
        }),
        "mi" => Err(err(
            "a managed identity needs its full resource ID: mi/<name> does not say which \
             subscription and resource group it is in"
                .into(),
        )),
        _ => Err(err(IDENTITY_FORMS.into())),
    }
}

/// `--role ROLE@SCOPE`: split where the scope (an ARM ID, starting with `/`) begins.
pub fn parse_role(s: &str) -> Result<RoleRequest, FlagError> {
    let err = |reason: &str| FlagError::Role {
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    let (role, scope) = s
        .split_once("@/")
        .ok_or_else(|| err("expected ROLE@SCOPE, the scope an ARM ID starting with /"))?;
    let role = role.trim();
    if role.is_empty() {
        return Err(err("the role before @ is empty"));
    }
    Ok(RoleRequest {
        role: role.to_owned(),
        scope: format!("/{scope}"),
        condition: None,
    })
}

/// The spec the flags ask for (`spec.requester` is filled in later, from the API server).
pub fn build_spec(a: &RequestArgs) -> Result<AccessGrantSpec, FlagError> {
    let identity = parse_identity(&a.identity)?;
    let roles = a
        .roles
        .iter()
        .map(|r| parse_role(r))
        .collect::<Result<Vec<_>, _>>()?;
    let duration = a
        .for_
        .as_deref()
        .map(|d| time::parse_duration("--for", d))
        .transpose()?;
    let from = a
        .from
        .as_deref()
        .map(|t| time::parse_time("--from", t))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|t| time::parse_time("--until", t))
        .transpose()?;
    if duration.is_none() && until.is_none() {
        return Err(FlagError::Lease(
            "how long? --for DURATION or --until TIME is required".into(),
        ));
    }
    if let (Some(f), Some(u)) = (from, until)
        && f >= u
    {
        return Err(FlagError::Lease("--from must be before --until".into()));
    }
    let window = (from.is_some() || until.is_some()).then(|| {
        Window {
            not_before: from.map(time::rfc3339),
            not_after: until.map(time::rfc3339),
        }
        .into()
    });
    Ok(AccessGrantSpec {
        identity,
        roles,
        federation: a.service_account.as_ref().map(|sa| {
            Federation {
                service_account: sa.clone(),
                audience: a
                    .audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            }
            .into()
        }),
        duration: duration.map(|d| d.to_string()),
        window,
        justification: a.justification.clone(),
        revoked: false,
        requester: None,
        requester_groups: Vec::new(),
        break_glass: a.break_glass,
    })
}

/// Whom an approval rule asks: "users bob or groups platform-oncall".
pub fn approvers(rule: &ApprovalRule) -> String {
    let mut parts = Vec::new();
    if !rule.users.is_empty() {
        parts.push(format!("users {}", rule.users.join(", ")));
    }
    if !rule.groups.is_empty() {
        parts.push(format!("groups {}", rule.groups.join(", ")));
    }
    parts.join(" or ")
}

/// The groups stamped into `spec.requesterGroups`: the caller's own (admission checks they are a
/// subset of the request's), without Kubernetes' `system:` groups, which no policy names, at
/// most the schema's limit.
fn requester_groups(groups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = groups
        .iter()
        .filter(|g| !g.starts_with("system:"))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out.truncate(lapse_api::v1alpha1::MAX_REQUESTER_GROUPS as usize);
    out
}

/// What an allowing verdict means for the requester, in one sentence.
pub fn gate_sentence(verdict: &Verdict) -> Option<String> {
    let Verdict::Allowed { policy, gate, .. } = verdict else {
        return None;
    };
    Some(match gate {
        Gate::Open => format!("allowed by AccessPolicy {policy}"),
        Gate::Approval(rule) => format!(
            "allowed by AccessPolicy {policy} once approved: {} approval(s) from {} within {}, \
             never the requester's own",
            rule.required,
            approvers(rule),
            rule.timeout
        ),
        Gate::AutoApproved {
            index, description, ..
        } => format!(
            "allowed by AccessPolicy {policy} without waiting: its approval.autoApprove rule \
             {index} ({description}) approves it"
        ),
        Gate::BreakGlass(rule) => format!(
            "allowed by AccessPolicy {policy} as break-glass: it activates without approval, \
             loudly (Warning Event, BreakGlass condition), and {} may still deny it, which ends \
             it at once",
            approvers(rule)
        ),
    })
}

/// Judges a grant with the operator's code on what the caller can see. Refuses (exit 3) when
/// the verdict is a conclusive denial; prints the verdict and its caveats to stderr otherwise,
/// and returns it (`None` when the policies could not be read).
pub async fn judge(
    kube: &Kube,
    ns: &str,
    name: &str,
    spec: &AccessGrantSpec,
    lease: impl FnOnce(&lapse_api::validate::GrantRequest) -> chrono::TimeDelta,
    what: &str,
) -> anyhow::Result<Option<Verdict>> {
    let req = validate_grant(spec).map_err(|errs| {
        Stop::Refused(format!(
            "AccessGrant {ns}/{name}: {what} would be Denied (InvalidSpec): {errs}"
        ))
    })?;
    let Some(policies) = check::policies(kube).await? else {
        eprintln!(
            "note: you may not list AccessPolicies (cluster-scoped), so {what} was not checked \
             here: the operator decides"
        );
        return Ok(None);
    };
    let named = check::named(&policies);
    let labels = kube.namespace_labels(ns).await?;
    let view = NamespaceView::load(kube, ns, Some(name)).await?;
    let c = check::check(
        &req,
        lease(&req),
        &Inputs {
            namespace: ns,
            labels: labels.as_ref(),
            policies: &named,
            view: &view,
        },
    );
    let caveats = || {
        for note in &c.caveats {
            eprintln!("note: {note}");
        }
    };
    if let Some(s) = gate_sentence(&c.verdict) {
        eprintln!("{s}");
        caveats();
        return Ok(Some(c.verdict));
    }
    let lines = check::refusal_lines(&c.verdict);
    let listed: String = lines.iter().map(|l| format!("\n  - {l}")).collect();
    if c.conclusive {
        return Err(Stop::Refused(format!(
            "no AccessPolicy allows {what} (AccessGrant {ns}/{name}); nothing was changed:{listed}"
        ))
        .into());
    }
    eprintln!("warning: no AccessPolicy allows {what} as far as can be seen from here:{listed}");
    caveats();
    eprintln!("warning: going ahead: the operator decides");
    Ok(Some(c.verdict))
}

pub async fn run(kube: &Kube, args: &RequestArgs, output: Option<Output>) -> anyhow::Result<()> {
    let ns = kube.namespace.clone();
    let name = &args.name;
    if kube.all_namespaces {
        return Err(Stop::Usage("request works in one namespace: use -n, not -A".into()).into());
    }
    let mut spec = build_spec(args).map_err(|e| Stop::Usage(e.to_string()))?;
    let timeout =
        time::parse_duration("--timeout", &args.timeout).map_err(|e| Stop::Usage(e.to_string()))?;
    match kube.whoami().await {
        Ok(caller) => {
            spec.requester_groups = requester_groups(&caller.groups);
            spec.requester = Some(caller.username);
        }
        Err(e) if args.dry_run => eprintln!("warning: spec.requester left out: {e:#}"),
        Err(e) => return Err(e),
    }
    let now = Utc::now();
    if let Some(until) = spec.window.as_ref().and_then(|w| w.not_after.as_deref())
        && time::parse_time("--until", until).is_ok_and(|t| t <= now)
    {
        return Err(Stop::Refused(format!(
            "AccessGrant {ns}/{name}: spec.window.notAfter {until} has passed: the grant would \
             never activate (Expired)"
        ))
        .into());
    }
    judge(
        kube,
        &ns,
        name,
        &spec,
        |req| check::lease_of(req, now).1,
        "this request",
    )
    .await?;

    let mut grant = AccessGrant::new(name, spec);
    grant.metadata.namespace = Some(ns.clone());
    if args.dry_run {
        return crate::output::print(output.unwrap_or(Output::Yaml), &grant);
    }
    let api: Api<AccessGrant> = Api::namespaced(kube.client.clone(), &ns);
    let started = Instant::now();
    let created = match api.create(&crate::client::post_params(), &grant).await {
        Ok(g) => g,
        Err(e) if is_already_exists(&e) => {
            anyhow::bail!(
                "AccessGrant {ns}/{name} already exists: pick another name, or `kubectl lapse \
                 describe {name}`"
            )
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "creating AccessGrant {ns}/{name}: {}",
                api_message(&e)
            ));
        }
    };
    if !args.wait {
        return match output {
            Some(format) => crate::output::print(format, &created),
            None => {
                println!("accessgrant.lapse.dev/{name} created in namespace {ns}");
                Ok(())
            }
        };
    }
    eprintln!("accessgrant.lapse.dev/{name} created in namespace {ns}; waiting until it is Active");
    let active = crate::wait::until_active(&kube.client, &ns, name, timeout.to_std()).await?;
    match output {
        Some(format) => crate::output::print(format, &active),
        None => {
            let expires = active
                .status
                .as_ref()
                .and_then(|s| s.expires_at)
                .map(|t| {
                    format!(
                        ": {} ({})",
                        time::event("expires", "expired", t, Utc::now()),
                        time::rfc3339(t)
                    )
                })
                .unwrap_or_default();
            println!(
                "accessgrant.lapse.dev/{name} is Active{expires} (after {:.1}s)",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn requester_groups_are_the_callers_own_without_system_groups() {
        let groups: Vec<String> = ["sre", "system:authenticated", "platform-oncall", "sre"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(super::requester_groups(&groups), ["platform-oncall", "sre"]);
    }

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    const MI: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup";
    const GUID: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

    fn args(extra: &[&str]) -> RequestArgs {
        let base = ["kubectl-lapse", "request", "g", "--identity", MI];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Request(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identities_in_each_documented_form() {
        assert_eq!(
            parse_identity(MI).map(|i| i.managed_identity),
            Ok(Some(MI.to_owned()))
        );
        for form in [format!("sp:{GUID}"), format!("sp/{GUID}")] {
            assert_eq!(
                parse_identity(&form).map(|i| i.service_principal.map(|s| s.object_id)),
                Ok(Some(GUID.to_owned()))
            );
        }
        assert_eq!(
            parse_identity(&format!("app:{}", GUID.to_uppercase()))
                .map(|i| i.application.map(|s| s.object_id)),
            Ok(Some(GUID.to_owned()))
        );
        let why = |s: &str| {
            parse_identity(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(why("mi/backup").contains("needs its full resource ID"));
        assert!(why("sp:nope").contains("not an object ID"));
        assert!(why("backup").contains("expected a managed identity resource ID"));
        assert!(
            why("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg")
                .contains("not a Microsoft.ManagedIdentity")
        );
    }

    #[test]
    fn roles_split_where_the_scope_starts() {
        let r = parse_role("Storage Blob Data Reader@/subscriptions/s/resourceGroups/rg");
        assert_eq!(
            r.map(|r| (r.role, r.scope)),
            Ok((
                "Storage Blob Data Reader".to_owned(),
                "/subscriptions/s/resourceGroups/rg".to_owned()
            ))
        );
        // A role definition ID is a role too.
        let def = format!("/providers/Microsoft.Authorization/roleDefinitions/{GUID}");
        let r = parse_role(&format!("{def}@/subscriptions/s"));
        assert_eq!(r.map(|r| r.role), Ok(def));
        assert!(parse_role("Reader").is_err());
        assert!(parse_role("@/subscriptions/s").is_err());
    }

    #[test]
    fn the_spec_says_what_the_flags_say() {
        let spec = build_spec(&args(&[
            "--role",
            "Reader@/subscriptions/s/resourceGroups/rg",
            "--service-account",
            "backup-runner",
            "--for",
            "90m",
            "--from",
            "2026-12-01T02:00:00+01:00",
            "--justification",
            "OPS-7",
            "--break-glass",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.duration.as_deref(), Some("1h30m"));
        assert_eq!(
            spec.window.and_then(|w| w.not_before).as_deref(),
            Some("2026-12-01T01:00:00Z")
        );
        assert_eq!(
            spec.federation.map(|f| (f.service_account, f.audience)),
            Some(("backup-runner".to_owned(), DEFAULT_AUDIENCE.to_owned()))
        );
        assert!(spec.break_glass);
        assert_eq!(spec.justification.as_deref(), Some("OPS-7"));
    }

    #[test]
    fn a_lease_needs_an_end() {
        let role = ["--role", "Reader@/subscriptions/s"];
        let e = build_spec(&args(&role)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--for DURATION or --until TIME is required")));
        let e = build_spec(&args(
            &[
                &role[..],
                &[
                    "--from",
                    "2026-12-01T02:00:00Z",
                    "--until",
                    "2026-12-01T01:00:00Z",
                ],
            ]
            .concat(),
        ))
        .err();
        assert_eq!(
            e,
            Some(FlagError::Lease("--from must be before --until".into()))
        );
        let e = build_spec(&args(&[&role[..], &["--for", "1d"]].concat()))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--for: ")));
    }
}
