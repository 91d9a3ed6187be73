//! Listing the estate in Azure (the audit's I/O): subscriptions, their role assignments and
//! user-assigned identities, every identity's and app registration's federated credentials,
//! the app registrations' secrets and certificates, the names of the service principals role
//! assignments name, custom role names, and the management locks of the subscriptions that hold
//! lapse's objects. Every list follows `nextLink` /
//! `@odata.nextLink` (lapse-azure's `list_all`); every read waits for the client's budget, and
//! a 429 pauses that budget for its `Retry-After` before the read is tried again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{self, StreamExt as _};
use lapse_api::arm::ArmId;
use lapse_api::lock::ManagementLock;
use lapse_api::role::RoleCatalogue;
use lapse_azure::{AppCredential, AzureClient, AzureError, ErrorClass, Operation, Outcome};
use uuid::Uuid;

use super::findings::{
    CredentialKind, Estate, FicParent, ListedApplication, ListedAssignment, ListedCredential,
    ListedFic, ListedIdentity, PrincipalInfo,
};
use super::progress::Progress;

/// Lists of one kind fetched at once (each is also paced by the client's budget).
const CONCURRENCY: usize = 8;
/// Tries of one read that Azure throttles (each waits out its `Retry-After`).
const THROTTLED_TRIES: u32 = 10;
/// Tries of one read that fails in a way worth retrying (5xx, timeouts), with backoff.
const RETRYABLE_TRIES: u32 = 4;
/// The first backoff after such a failure (doubling).
#[cfg(not(test))]
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
#[cfg(test)]
const RETRY_BACKOFF: Duration = Duration::from_millis(1);

/// What the audit listed, and what it could not.
#[derive(Debug, Default)]
pub struct Listing {
    pub estate: Estate,
    /// Reads that failed without failing the audit (Graph refused, say): what was not checked.
    pub notes: Vec<String>,
    /// Graph could not list the app registrations: their secrets and federated credentials
    /// were not checked.
    pub applications_unread: bool,
}

/// Reads counted by the client: ARM, Graph, and the 429s among them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reads {
    pub arm: u64,
    pub graph: u64,
    pub throttled: u64,
}

pub fn reads(azure: &AzureClient) -> Reads {
    let graph_ops = [
        Operation::ListApplications,
        Operation::ListAppFics,
        Operation::GetServicePrincipal,
        Operation::GetApplication,
    ];
    let mut r = Reads::default();
    for c in azure.call_counts() {
        if graph_ops.contains(&c.operation) {
            r.graph += c.count;
        } else {
            r.arm += c.count;
        }
        if c.outcome == Outcome::Throttled {
            r.throttled += c.count;
        }
    }
    r
}

/// Runs a read until it is not throttled (the client waits out each `Retry-After` before the
/// next try) and retries transient failures with backoff.
async fn retried<T, F, Fut>(read: F) -> Result<T, AzureError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, AzureError>>,
{
    let (mut throttled, mut failed) = (0, 0);
    let mut backoff = RETRY_BACKOFF;
    loop {
        match read().await {
            Err(e) if e.class() == ErrorClass::Throttled && throttled + 1 < THROTTLED_TRIES => {
                throttled += 1;
                // The client's budget is paused until Retry-After; the next try waits for it.
                tokio::task::yield_now().await;
            }
            Err(e) if e.class() == ErrorClass::Retryable && failed + 1 < RETRYABLE_TRIES => {
                failed += 1;
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// Whether an error is Azure refusing the caller (no role, no Graph permission).
fn refused(e: &AzureError) -> bool {
    matches!(e, AzureError::Terminal { status: 403, .. })
}

/// The subscriptions to audit: those given, else every one the credentials see (disabled and
/// deleted ones left out).
pub async fn subscriptions(azure: &AzureClient, given: &[String]) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        let mut subs: Vec<String> = given.iter().map(|s| s.trim().to_owned()).collect();
        subs.sort();
        subs.dedup();
        return Ok(subs);
    }
    let listed = retried(|| azure.list_subscriptions()).await.context(
        "listing the subscriptions the credentials can see (pass --subscription to name them)",
    )?;
    let subs: Vec<String> = listed
        .into_iter()
        .filter(|s| !matches!(s.state.as_deref(), Some("Disabled" | "Deleted")))
        .map(|s| s.id)
        .collect();
    if subs.is_empty() {
        anyhow::bail!(
            "the Azure credentials see no subscription: give one with --subscription, and Reader on it"
        );
    }
    Ok(subs)
}

/// Lists everything the audit judges.
pub async fn list(
    azure: &AzureClient,
    subscriptions: Vec<String>,
    progress: &Progress,
) -> anyhow::Result<Listing> {
    let mut estate = Estate::default();
    let mut notes = Vec::new();
    let mut applications_unread = false;
    estate.caller = azure.own_principal().await.ok();

    // ARM, per subscription: role assignments and user-assigned identities.
    for (i, sub) in subscriptions.iter().enumerate() {
        progress.show(&format!(
            "subscription {}/{}: role assignments and identities of {sub}",
            i + 1,
            subscriptions.len()
        ));
        let (assignments, identities) = futures::join!(
            retried(|| azure.list_role_assignments(sub, None)),
            retried(|| azure.list_managed_identities(sub)),
        );
        let hint = |what: &str| {
            format!("listing {what} in subscription {sub} (the audit needs Reader on it)")
        };
        for ra in assignments.with_context(|| hint("role assignments"))? {
            estate.role_assignments.push(ListedAssignment {
                id: ra.id.clone(),
                name: ra.name,
                scope: if ra.scope.is_empty() {
                    scope_of(&ra.id)
                } else {
                    ra.scope.clone()
                },
                role_definition_id: ra.role_definition_id.clone(),
                principal_id: ra.principal_id,
                principal_type: ra.principal_type.clone(),
                description: ra.description.clone(),
            });
        }
        for mi in identities.with_context(|| hint("user-assigned identities"))? {
            estate.identities.push(ListedIdentity {
                id: mi.id,
                name: mi.name,
                principal_id: mi.principal_id,
            });
        }
    }
    estate.subscriptions = subscriptions;

    // Every identity's federated credentials.
    let total = estate.identities.len();
    let ids: Vec<String> = estate.identities.iter().map(|i| i.id.clone()).collect();
    let mut done = 0;
    let mut lists = stream::iter(ids.into_iter().map(|id| async move {
        let arm = ArmId::parse(&id).with_context(|| format!("identity ID {id}"))?;
        let fics = retried(|| azure.list_fics(&arm))
            .await
            .with_context(|| format!("listing the federated credentials of {id}"))?;
        anyhow::Ok((id, fics))
    }))
    .buffer_unordered(CONCURRENCY);
    while let Some(result) = lists.next().await {
        let (id, fics) = result?;
        done += 1;
        progress.show(&format!(
            "federated credentials of identities: {done}/{total}"
        ));
        for f in fics {
            estate.federated_credentials.push(ListedFic {
                id: f.id,
                name: f.name,
                parent: FicParent::Identity(id.clone()),
                issuer: f.issuer,
                subject: f.subject,
                audiences: f.audiences,
                description: f.description,
            });
        }
    }
    drop(lists);

    // Graph: app registrations with their credentials, and their federated credentials.
    progress.show("app registrations (Microsoft Graph)");
    match retried(|| azure.list_applications()).await {
        Ok(apps) => {
            for app in apps {
                let credentials = app
                    .password_credentials
                    .iter()
                    .map(|c| credential(c, CredentialKind::Secret))
                    .chain(
                        app.key_credentials
                            .iter()
                            .map(|c| credential(c, CredentialKind::Certificate)),
                    )
                    .collect();
                estate.applications.push(ListedApplication {
                    id: app.id,
                    app_id: app.app_id,
                    display_name: app.display_name,
                    credentials,
                });
            }
        }
        Err(e) if refused(&e) => {
            applications_unread = true;
            notes.push(format!(
                "app registrations could not be read ({e}): LongLivedSecret and their \
                 federated credentials were not checked (the audit needs Microsoft Graph \
                 Application.Read.All)"
            ));
        }
        Err(e) => return Err(e).context("listing app registrations (Microsoft Graph)"),
    }
    let total = estate.applications.len();
    let apps: Vec<Uuid> = estate.applications.iter().map(|a| a.id).collect();
    let mut done = 0;
    let mut lists = stream::iter(apps.into_iter().map(|app| async move {
        let fics = retried(|| azure.list_app_fics(&app))
            .await
            .with_context(|| format!("listing the federated credentials of application {app}"))?;
        anyhow::Ok((app, fics))
    }))
    .buffer_unordered(CONCURRENCY);
    while let Some(result) = lists.next().await {
        let (app, fics) = result?;
        done += 1;
        progress.show(&format!(
            "federated credentials of app registrations: {done}/{total}"
        ));
        for f in fics {
            estate.federated_credentials.push(ListedFic {
                id: f.id,
                name: f.name,
                parent: FicParent::Application(app),
                issuer: f.issuer,
                subject: f.subject,
                audiences: f.audiences,
                description: f.description,
            });
        }
    }
    drop(lists);

    // Names for the service principals that role assignments name (identities are known).
    let known: BTreeSet<Uuid> = estate.identities.iter().map(|i| i.principal_id).collect();
    let wanted: BTreeSet<Uuid> = estate
        .role_assignments
        .iter()
        .filter(|ra| {
            !matches!(
                ra.principal_type.as_deref(),
                Some("User" | "Group" | "ForeignGroup" | "Device")
            )
        })
        .map(|ra| ra.principal_id)
        .filter(|p| !known.contains(p))
        .collect();
    let total = wanted.len();
    let mut done = 0;
    let mut lookups = stream::iter(
        wanted
            .into_iter()
            .map(|id| async move { (id, retried(|| azure.get_service_principal(&id)).await) }),
    )
    .buffer_unordered(CONCURRENCY);
    let mut names_refused = None;
    while let Some((id, found)) = lookups.next().await {
        done += 1;
        progress.show(&format!("service principal names: {done}/{total}"));
        match found {
            Ok(Some(sp)) => {
                estate.principals.insert(
                    id,
                    PrincipalInfo {
                        display_name: sp.display_name,
                        app_id: Some(sp.app_id),
                        kind: sp.service_principal_type,
                    },
                );
            }
            // A principal deleted since: its assignments still show, nameless.
            Ok(None) => {}
            Err(e) if refused(&e) => names_refused = Some(e.to_string()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading service principal {id}"));
            }
        }
    }
    drop(lookups);
    if let Some(e) = names_refused {
        notes.push(format!(
            "service principals could not be read ({e}): they are shown by object ID"
        ));
    }

    // Custom role names (built-ins are known).
    let builtin = RoleCatalogue::builtin();
    let first = estate.subscriptions.first().cloned().unwrap_or_default();
    let custom: BTreeSet<Uuid> = estate
        .role_assignments
        .iter()
        .filter_map(|ra| {
            ra.role_definition_id
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|g| Uuid::try_parse(g).ok())
        })
        .filter(|g| builtin.name_of(g).is_none())
        .collect();
    let mut names = BTreeMap::new();
    for guid in custom {
        progress.show(&format!("custom role {guid}"));
        if let Ok(Some(def)) = retried(|| azure.role_definition_by_id(&first, &guid)).await {
            names.insert(guid, def.role_name);
        }
    }
    estate.role_names = names;
    progress.clear();
    Ok(Listing {
        estate,
        notes,
        applications_unread,
    })
}

/// The management locks of the subscriptions that hold lapse's objects
/// (`findings::lock_subscriptions`): one list per subscription, every lock in it
/// (`list_subscription_locks`). `Ok(None)` with a note when Azure refuses the read: which of
/// lapse's objects are locked is then not known.
pub async fn locks(
    azure: &AzureClient,
    subscriptions: &BTreeSet<String>,
    progress: &Progress,
) -> anyhow::Result<(Option<Vec<ManagementLock>>, Option<String>)> {
    let mut locks = Vec::new();
    for (i, sub) in subscriptions.iter().enumerate() {
        progress.show(&format!(
            "management locks: subscription {}/{}",
            i + 1,
            subscriptions.len()
        ));
        match retried(|| azure.list_subscription_locks(sub)).await {
            Ok(found) => locks.extend(found),
            Err(e) if refused(&e) => {
                progress.clear();
                return Ok((
                    None,
                    Some(format!(
                        "management locks could not be read ({e}): LockedLapseObject was not \
                         checked (the audit needs Microsoft.Authorization/locks/read, part of \
                         Reader)"
                    )),
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("listing the management locks of subscription {sub}")
                });
            }
        }
    }
    progress.clear();
    Ok((Some(locks), None))
}

fn credential(c: &AppCredential, kind: CredentialKind) -> ListedCredential {
    ListedCredential {
        kind,
        key_id: c.key_id,
        display_name: c.display_name.clone(),
        start: c.start,
        end: c.end,
    }
}

/// The scope of a role assignment ID (`{scope}/providers/Microsoft.Authorization/…`).
fn scope_of(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    lower
        .rfind("/providers/microsoft.authorization/roleassignments/")
        .map(|i| id[..i].to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scope_is_read_from_the_assignment_id() {
        assert_eq!(
            scope_of(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/x"
            ),
            "/subscriptions/s/resourceGroups/rg"
        );
        assert_eq!(scope_of("nonsense"), "");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_refusals_are_not() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let result: Result<u32, AzureError> = retried(|| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                match n {
                    0 => Err(AzureError::Throttled {
                        operation: Operation::ListRoleAssignments,
                        retry_after: Duration::from_secs(5),
                        code: "SubscriptionRequestsThrottled".into(),
                    }),
                    1 => Err(AzureError::Retryable {
                        operation: Operation::ListRoleAssignments,
                        status: Some(503),
                        code: "ServiceUnavailable".into(),
                        message: String::new(),
                    }),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(result.ok(), Some(2));
        let calls = AtomicU32::new(0);
        let refused: Result<u32, AzureError> = retried(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            async {
                Err(AzureError::Terminal {
                    operation: Operation::ListApplications,
                    status: 403,
                    code: "Authorization_RequestDenied".into(),
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(refused.as_ref().is_err_and(super::refused));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    /// A large estate, listed against the Azure simulator with small pages: everything is
    /// found across the pages, and the reads keep to the budget (the limiter paces them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_estate_is_listed_page_by_page_within_the_read_budget() {
        use clap::Parser as _;
        use lapse_sim_azure::{
            Config, Seed, SeedApplication, SeedCredential, SeedFederatedCredential, SeedIdentity,
            SeedRoleAssignment, SimAzure,
        };

        use crate::audit::findings::{FindingKind, Options, audit};
        use crate::cli::{Cli, Command};

        const IDENTITIES: usize = 40;
        const APPS: usize = 15;
        let mut seed = Seed::sandbox_estate();
        let sub = seed.subscriptions[0].id.clone();
        let rg = format!("/subscriptions/{sub}/resourceGroups/lapse-legacy-rg");
        for i in 0..IDENTITIES {
            seed.subscriptions[0].resource_groups[1]
                .identities
                .push(SeedIdentity {
                    name: format!("worker-{i}"),
                    federated_credentials: vec![SeedFederatedCredential {
                        name: format!("ci-{i}"),
                        issuer: "https://token.actions.githubusercontent.com".into(),
                        subject: format!("repo:contoso/worker-{i}:ref:refs/heads/main"),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            seed.role_assignments.push(SeedRoleAssignment {
                principal: format!("worker-{i}"),
                role: "Reader".into(),
                scope: rg.clone(),
                name: None,
            });
        }
        for i in 0..APPS {
            seed.applications.push(SeedApplication {
                display_name: format!("app-{i}"),
                password_credentials: vec![SeedCredential {
                    display_name: Some("one year".into()),
                    start_date_time: "2026-01-01T00:00:00Z".into(),
                    end_date_time: "2027-06-01T00:00:00Z".into(),
                    key_id: None,
                }],
                ..Default::default()
            });
        }
        let sim = SimAzure::start(
            Config {
                page_size: 7,
                ..Config::default()
            },
            seed,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let ca = std::env::temp_dir().join(format!("lapse-audit-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, sim.ca_pem()).unwrap_or_else(|e| panic!("{e}"));
        let auditor = sim
            .credentials("lapse-auditor")
            .unwrap_or_else(|| panic!("no auditor"));
        let ca_arg = ca.display().to_string();
        let argv = [
            "kubectl-lapse",
            "audit",
            "--azure-cloud",
            "custom",
            "--arm-endpoint",
            sim.url(),
            "--graph-endpoint",
            sim.url(),
            "--authority-host",
            sim.url(),
            "--azure-ca-bundle",
            &ca_arg,
            "--max-reads-per-second",
            "40",
        ];
        let Ok(Command::Audit(args)) = Cli::try_parse_from(argv).map(|c| c.command) else {
            panic!("not audit")
        };
        let cfg = super::super::connect::config(
            &args,
            lapse_azure::CredentialConfig::ClientSecret {
                tenant_id: auditor.tenant_id.clone(),
                client_id: auditor.client_id.clone(),
                secret: lapse_azure::SecretString::from(
                    auditor.client_secret.clone().unwrap_or_default(),
                ),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let azure = AzureClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        let subs = subscriptions(&azure, &[])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let listing = list(&azure, subs, &Progress::stderr())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let took = started.elapsed();
        let _ = std::fs::remove_file(&ca);

        let e = &listing.estate;
        assert_eq!(e.identities.len(), 3 + IDENTITIES);
        assert_eq!(e.federated_credentials.len(), 1 + IDENTITIES);
        assert_eq!(e.applications.len(), 2 + APPS);
        let report = audit(
            e,
            None,
            &Options {
                now: chrono::Utc::now(),
                max_secret_age: chrono::TimeDelta::days(90),
                overstay_after: chrono::TimeDelta::seconds(30),
            },
        );
        let count = |k: FindingKind| report.findings.iter().filter(|f| f.kind == k).count();
        assert_eq!(count(FindingKind::StandingRoleAssignment), 6 + IDENTITIES);
        assert_eq!(count(FindingKind::StandingFederation), 1 + IDENTITIES);
        assert_eq!(count(FindingKind::LongLivedSecret), 1 + APPS);
        // Role assignment and identity lists came in pages of 7.
        let pages = sim
            .audit()
            .entries()
            .iter()
            .filter(|e| e.path.ends_with("/roleAssignments") && e.method == "GET")
            .count();
        assert!(pages >= (6 + IDENTITIES).div_ceil(7), "{pages} pages");
        // At most 40 reads a second after the first 40, per budget: ARM and Graph alike.
        let r = reads(&azure);
        let slowest = r.arm.max(r.graph).saturating_sub(40) as f64 / 40.0;
        assert!(
            took.as_secs_f64() >= slowest * 0.9,
            "{r:?} in {took:?}: faster than the budget allows"
        );
        sim.shutdown().await;
    }
}
