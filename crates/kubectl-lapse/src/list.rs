//! `list`: the grants of a namespace (or all, `-A`), with what a person asks first: whose, what,
//! in which phase, how long left, asked by whom.

use anyhow::Context as _;
use chrono::Utc;
use kube::api::{Api, ListParams};
use lapse_api::v1alpha1::{AccessGrant, GrantPhase};

use crate::cli::{ListArgs, Output};
use crate::client::Kube;
use crate::exit::Stop;
use crate::summary;
use crate::table::{Table, ellipsize};

/// Parses `--phase` values, case-insensitively.
pub fn parse_phases(values: &[String]) -> Result<Vec<GrantPhase>, Stop> {
    const ALL: [GrantPhase; 10] = [
        GrantPhase::Pending,
        GrantPhase::PendingApproval,
        GrantPhase::Scheduled,
        GrantPhase::Activating,
        GrantPhase::Active,
        GrantPhase::Revoking,
        GrantPhase::Expired,
        GrantPhase::Revoked,
        GrantPhase::Denied,
        GrantPhase::Failed,
    ];
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            ALL.into_iter()
                .find(|p| p.as_str().eq_ignore_ascii_case(v.trim()))
                .ok_or_else(|| {
                    Stop::Usage(format!(
                        "--phase: {v:?} is not a phase (one of {})",
                        ALL.map(GrantPhase::as_str).join(", ")
                    ))
                })
        })
        .collect()
}

/// The grants of the namespace, or of all namespaces with `-A`, sorted by namespace and name.
pub async fn grants(kube: &Kube, selector: Option<&str>) -> anyhow::Result<Vec<AccessGrant>> {
    let api: Api<AccessGrant> = if kube.all_namespaces {
        Api::all(kube.client.clone())
    } else {
        Api::namespaced(kube.client.clone(), &kube.namespace)
    };
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut items = api
        .list(&lp)
        .await
        .with_context(|| {
            if kube.all_namespaces {
                "listing AccessGrants in all namespaces".to_owned()
            } else {
                format!("listing AccessGrants in namespace {}", kube.namespace)
            }
        })?
        .items;
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(items)
}

pub async fn run(kube: &Kube, args: &ListArgs, output: Option<Output>) -> anyhow::Result<()> {
    let phases = parse_phases(&args.phase)?;
    let items: Vec<AccessGrant> = grants(kube, args.selector.as_deref())
        .await?
        .into_iter()
        .filter(|g| phases.is_empty() || phases.contains(&summary::phase(g)))
        .collect();
    if let Some(format) = output {
        return crate::output::print(format, &crate::output::list(&items));
    }
    if items.is_empty() {
        eprintln!("{}", nothing_found(kube));
        return Ok(());
    }
    print!("{}", table(&items, kube.all_namespaces));
    Ok(())
}

pub fn nothing_found(kube: &Kube) -> String {
    if kube.all_namespaces {
        "No AccessGrants found.".into()
    } else {
        format!("No AccessGrants found in namespace {}.", kube.namespace)
    }
}

/// NAMESPACE (with -A), NAME, IDENTITY, ROLES@SCOPES, PHASE, LEASE, REQUESTER.
pub fn table(items: &[AccessGrant], all_namespaces: bool) -> String {
    let now = Utc::now();
    let mut header = vec![
        "name",
        "identity",
        "roles@scopes",
        "phase",
        "lease",
        "requester",
    ];
    if all_namespaces {
        header.insert(0, "namespace");
    }
    let mut t = Table::new(&header);
    for g in items {
        let mut row = vec![
            g.metadata.name.clone().unwrap_or_default(),
            summary::identity(g),
            ellipsize(&summary::roles_at_scopes(&g.spec), 60),
            summary::phase(g).as_str().to_owned(),
            summary::when(g, now),
            g.spec.requester.clone().unwrap_or_else(|| "-".into()),
        ];
        if all_namespaces {
            row.insert(0, g.metadata.namespace.clone().unwrap_or_default());
        }
        t.row(row);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_case_insensitively_and_name_the_choices() {
        let got = parse_phases(&["active".into(), "PendingApproval".into(), String::new()]);
        assert_eq!(
            got.ok(),
            Some(vec![GrantPhase::Active, GrantPhase::PendingApproval])
        );
        let err = parse_phases(&["Running".into()])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("\"Running\" is not a phase") && e.contains("Revoking")),
        );
    }
}
