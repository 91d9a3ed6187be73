//! Workflows end to end (docs/approval.md, DESIGN §11): an auto-approval rule, an escalation
//! tier, `maxExtensions` and `activeHours`, against the sandbox with the shipped admission
//! policies and impersonated users. Waits are seconds long: escalation `after` values are
//! seconds, and the active hours are a window placed around (or away from) the test's own now.

use std::time::Instant;

use chrono::{DurationRound, TimeDelta, Timelike, Utc};
use lapse_api::v1alpha1::{AccessGrant, ConditionStatus, GrantPhase};
use lapse_e2e::{Capability, World, sandbox_only};

#[path = "support/approval.rs"]
mod support;
use support::*;

/// Reader (no federation) for `duration`, asked by `requester`.
fn reader(name: &str, ns: &str, mi: &str, rg: &str, duration: &str, requester: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata: {{name: {name}, namespace: {ns}}}
spec:
  identity: {{managedIdentity: {mi}}}
  roles: [{{role: Reader, scope: {rg}}}]
  duration: {duration}
  justification: "OPS-7"
  requester: "{requester}"
"#
    )
}

fn condition(g: &AccessGrant, type_: &str) -> Option<(ConditionStatus, String, String)> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason.to_string(), c.message.clone()))
}

fn created(out: std::process::Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Reader for up to 30m approves itself (rule 0); anything longer waits for bob, or for carol
/// once the second tier opens 4 s after the grant's creation. carol's approval before then
/// never counts; made again after, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_approve_rule_needs_no_human_and_an_escalation_tier_counts_only_once_open()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "installs admission policies and impersonates users",
    )?;
    let started = Instant::now();
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, _) = setup(&w).await?;
    println!("set up after {} ms", started.elapsed().as_millis());
    let rg = w.fixtures.resource_group_id();
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: payments}}
spec:
  namespaces: ["{NS}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  maxDuration: 1h
  approval:
    approvers: {{users: ["{BOB}"]}}
    timeout: 1h
    autoApprove: [{{maxDuration: 30m, roles: [Reader]}}]
    escalation: [{{after: 4s, approvers: {{users: ["{CAROL}"]}}}}]
"#
    ))?;

    // 20 minutes of Reader: no human.
    w.create_as_ok(ALICE, &[], &reader("quick", NS, &mi, &rg, "20m", ALICE))?;
    let g = w
        .wait_phase(NS, "quick", GrantPhase::Active, timeout)
        .await?;
    println!(
        "auto-approved grant Active after {} ms",
        started.elapsed().as_millis()
    );
    let (status, reason, msg) =
        approved(&g).ok_or_else(|| anyhow::anyhow!("no Approved condition"))?;
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::True, "Approved")
    );
    assert_eq!(
        msg,
        "auto-approved by rule 0 of AccessPolicy payments: Reader for at most 30m"
    );
    assert!(g.status.as_ref().is_some_and(|s| s.approvals.is_empty()));
    w.wait_event(NS, "quick", "Approved", timeout).await?;
    println!(
        "its Approved Event after {} ms",
        started.elapsed().as_millis()
    );

    // 45 minutes: waits; carol approves before her tier opens, which never counts.
    w.create_as_ok(ALICE, &[], &reader("long", NS, &mi, &rg, "45m", ALICE))?;
    let g = w
        .wait_phase(NS, "long", GrantPhase::PendingApproval, timeout)
        .await?;
    w.create_as_ok(
        CAROL,
        &[],
        &approval("carol-early", &g, "Approve", CAROL, &[]),
    )?;
    let g = w
        .wait_grant(NS, "long", timeout, |g| {
            approved(g).is_some_and(|(_, _, m)| m.contains("escalated since"))
        })
        .await?;
    let (_, _, msg) = approved(&g).ok_or_else(|| anyhow::anyhow!("no Approved condition"))?;
    assert!(
        msg.contains(&format!(
            "{CAROL} (an escalation approver deciding before their tier opened"
        )),
        "{msg}"
    );
    assert_eq!(
        g.status.as_ref().map(|s| s.phase),
        Some(GrantPhase::PendingApproval)
    );
    // Made again now that the tier is open: it counts.
    let again = Instant::now();
    w.create_as_ok(
        CAROL,
        &[],
        &approval("carol-again", &g, "Approve", CAROL, &[]),
    )?;
    let g = w
        .wait_phase(NS, "long", GrantPhase::Active, timeout)
        .await?;
    println!(
        "tier-2 approval to Active: {} ms",
        again.elapsed().as_millis()
    );
    let approvers: Vec<String> = g
        .status
        .map(|s| s.approvals.into_iter().map(|a| a.name).collect())
        .unwrap_or_default();
    assert_eq!(approvers, ["carol-again"]);
    println!("whole test: {} ms", started.elapsed().as_millis());
    Ok(())
}

/// `maxExtensions: 2`: two extensions are accepted, the third is refused naming the limit and
/// the lease keeps its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_extension_past_max_extensions_is_refused_and_the_lease_is_unchanged()
-> anyhow::Result<()> {
    let started = Instant::now();
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let ns = "batch";
    w.namespace_with(ns, &[])?;
    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: batch}}
spec:
  namespaces: ["{ns}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  maxDuration: 1h
  maxExtensions: 2
"#
    ))?;
    w.apply_ok(
        &reader("job", ns, &mi, &rg, "10m", ALICE)
            .replace("  requester: \"alice@example.com\"\n", ""),
    )?;
    w.wait_phase(ns, "job", GrantPhase::Active, timeout).await?;
    for (n, d) in [(1u32, "11m"), (2, "12m")] {
        let out = w.patch_grant(ns, "job", &format!(r#"{{"spec":{{"duration":"{d}"}}}}"#))?;
        created(out)?;
        w.wait_grant(ns, "job", timeout, |g| {
            g.status.as_ref().is_some_and(|s| s.extensions == n)
        })
        .await?;
    }
    let before = w
        .wait_grant(ns, "job", timeout, |g| {
            g.status.as_ref().is_some_and(|s| s.extensions == 2)
        })
        .await?
        .status
        .and_then(|s| s.expires_at);
    created(w.patch_grant(ns, "job", r#"{"spec":{"duration":"13m"}}"#)?)?;
    let g = w
        .wait_grant(ns, "job", timeout, |g| {
            condition(g, "ExtensionDenied").is_some_and(|(s, _, _)| s == ConditionStatus::True)
        })
        .await?;
    let (_, reason, msg) =
        condition(&g, "ExtensionDenied").ok_or_else(|| anyhow::anyhow!("no ExtensionDenied"))?;
    assert_eq!(reason, "ExtensionLimitReached");
    assert!(msg.contains("maxExtensions is 2"), "{msg}");
    let st = g.status.unwrap_or_default();
    assert_eq!(
        (st.phase, st.extensions, st.expires_at),
        (GrantPhase::Active, 2, before)
    );
    println!("whole test: {} ms", started.elapsed().as_millis());
    Ok(())
}

/// Hours placed around the test's own now (UTC, every day): a grant under a window opening in
/// two hours waits `Scheduled` saying when; one under a window open now activates, and its
/// 30-minute lease is recorded to end at the window's close, a few minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_active_hours_a_grant_waits_and_inside_its_lease_ends_at_the_close()
-> anyhow::Result<()> {
    let started = Instant::now();
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    let now = Utc::now().duration_trunc(TimeDelta::minutes(1))?;
    let hm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let windows = [
        (
            "later",
            now + TimeDelta::hours(2),
            now + TimeDelta::hours(3),
        ),
        (
            "now",
            now - TimeDelta::minutes(1),
            now + TimeDelta::minutes(5),
        ),
    ];
    for (ns, from, to) in windows {
        w.namespace_with(ns, &[])?;
        w.apply_ok(&format!(
            r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: hours-{ns}}}
spec:
  namespaces: ["{ns}"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  maxDuration: 1h
  activeHours: {{timeZone: UTC, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], from: "{}", to: "{}"}}
"#,
            hm(from),
            hm(to)
        ))?;
        w.apply_ok(
            &reader("shift", ns, &mi, &rg, "30m", ALICE)
                .replace("  requester: \"alice@example.com\"\n", ""),
        )?;
    }
    let g = w
        .wait_phase("later", "shift", GrantPhase::Scheduled, timeout)
        .await?;
    let msg = g.status.and_then(|s| s.message).unwrap_or_default();
    let opens = (now + TimeDelta::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        msg.contains("outside the active hours of AccessPolicy hours-later")
            && msg.contains(&format!("activates at {opens}")),
        "{msg}"
    );
    let g = w
        .wait_phase("now", "shift", GrantPhase::Active, timeout)
        .await?;
    assert_eq!(
        g.status.and_then(|s| s.expires_at),
        Some(now + TimeDelta::minutes(5)),
        "the lease ends at the window's close, not 30 minutes after it started"
    );
    let g = w
        .wait_phase("later", "shift", GrantPhase::Scheduled, timeout)
        .await?;
    assert!(g.status.is_some_and(|s| s.activated_at.is_none()));
    println!("whole test: {} ms", started.elapsed().as_millis());
    Ok(())
}

/// Reader for `duration` with this justification, no requester.
fn ticketed(name: &str, ns: &str, mi: &str, rg: &str, justification: &str) -> String {
    format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessGrant
metadata: {{name: {name}, namespace: {ns}}}
spec:
  identity: {{managedIdentity: {mi}}}
  roles: [{{role: Reader, scope: {rg}}}]
  duration: 10m
  justification: "{justification}"
"#
    )
}

/// A World whose operator asks the reference checker `jira` (re-checking every second, its
/// last answer standing 3 s while it is down), with a policy in namespace `changes` that needs
/// an open `OPS-<n>` ticket.
async fn ticket_world(
    checker: &lapse_e2e::TicketChecker,
) -> anyhow::Result<(World, String, String)> {
    let mut w = World::without_operator().await?;
    let dir = lapse_e2e::scratch_dir("lapse-ticket-checkers")?;
    checker.write_to(&dir, "jira")?;
    let dir = dir.to_string_lossy().into_owned();
    w.start_operator(&[
        ("LAPSE_TICKET_CHECKERS_DIR", dir.as_str()),
        ("LAPSE_TICKET_RECHECK_INTERVAL", "1s"),
        ("LAPSE_TICKET_STALE_AFTER", "3s"),
        ("LAPSE_TICKET_CHECK_TIMEOUT", "1s"),
    ])
    .await?;
    w.namespace_with("changes", &[])?;
    let rg = w.fixtures.resource_group_id();
    let (mi, _) = w.identity(w.fixtures.identity()).await?;
    w.apply_ok(&format!(
        r#"apiVersion: lapse.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: changes}}
spec:
  namespaces: ["changes"]
  identities: ["{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*"]
  roles: ["Reader"]
  scopes: ["{rg}"]
  maxDuration: 1h
  ticket: {{pattern: "OPS-[0-9]+", checker: jira}}
"#
    ))?;
    Ok((w, mi, rg))
}

/// The `PolicyAllowed` condition's reason and message.
fn policy_allowed(g: &AccessGrant) -> (String, String) {
    condition(g, "PolicyAllowed")
        .map(|(_, r, m)| (r, m))
        .unwrap_or_default()
}

/// A grant whose ticket the checker says is closed is denied naming it, one naming no ticket
/// is denied naming `spec.justification`, and a live lease is revoked (its role assignment
/// deleted) within a re-check of its ticket closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ticket_denies_a_grant_and_closing_it_revokes_a_live_lease() -> anyhow::Result<()>
{
    let started = Instant::now();
    let checker = lapse_e2e::TicketChecker::start().await?;
    checker.set("OPS-1", true);
    checker.set("OPS-2", false);
    let (w, mi, rg) = ticket_world(&checker).await?;
    let timeout = w.scaled(TIMEOUT);

    w.apply_ok(&ticketed(
        "closed",
        "changes",
        &mi,
        &rg,
        "OPS-2 rotate keys",
    ))?;
    w.apply_ok(&ticketed("none", "changes", &mi, &rg, "rotate keys"))?;
    w.apply_ok(&ticketed("live", "changes", &mi, &rg, "OPS-1 rotate keys"))?;
    let g = w
        .wait_phase("changes", "closed", GrantPhase::Denied, timeout)
        .await?;
    let (reason, msg) = policy_allowed(&g);
    assert_eq!(reason, "TicketClosed", "{msg}");
    assert!(
        msg.contains("ticket OPS-2 (checker jira) is closed; AccessPolicy changes"),
        "{msg}"
    );
    w.wait_event("changes", "closed", "TicketClosed", timeout)
        .await?;
    let g = w
        .wait_phase("changes", "none", GrantPhase::Denied, timeout)
        .await?;
    let msg = g.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("spec.justification: must name a change ticket matching \"OPS-[0-9]+\""),
        "{msg}"
    );
    let g = w
        .wait_phase("changes", "live", GrantPhase::Active, timeout)
        .await?;
    let ids = lapse_e2e::recorded_ids(&g);
    println!(
        "open ticket: Active after {} ms",
        started.elapsed().as_millis()
    );

    checker.set("OPS-1", false);
    let closed = Instant::now();
    let g = w
        .wait_phase("changes", "live", GrantPhase::Revoked, timeout)
        .await?;
    let to_revoked = closed.elapsed();
    let (reason, msg) = policy_allowed(&g);
    assert_eq!(reason, "TicketClosed", "{msg}");
    assert!(
        msg.contains("ticket OPS-1 (checker jira) was closed"),
        "{msg}"
    );
    w.wait_owned(timeout, |owned| ids.iter().all(|id| !owned.contains(id)))
        .await?;
    println!(
        "ticket closed -> Revoked: {} ms; Azure objects gone: {} ms (re-check interval 1 s)",
        to_revoked.as_millis(),
        closed.elapsed().as_millis()
    );
    assert!(
        to_revoked < w.scaled(std::time::Duration::from_secs(5)),
        "revoked {to_revoked:?} after the ticket closed"
    );
    let metrics = w.metrics().await?;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("lapse_ticket_checks_total{result=\"closed\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    println!("whole test: {} ms", started.elapsed().as_millis());
    Ok(())
}

/// A checker that stops answering: the live lease stands on its last answer for the stale
/// period (3 s), then is revoked (`TicketUnverified`, failing closed); a grant applied while
/// it is down never activates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_checker_fails_closed_after_the_stale_period() -> anyhow::Result<()> {
    let started = Instant::now();
    let checker = lapse_e2e::TicketChecker::start().await?;
    checker.set("OPS-3", true);
    checker.set("OPS-4", true);
    let (w, mi, rg) = ticket_world(&checker).await?;
    let timeout = w.scaled(TIMEOUT);
    w.apply_ok(&ticketed("live", "changes", &mi, &rg, "OPS-3 migration"))?;
    w.wait_phase("changes", "live", GrantPhase::Active, timeout)
        .await?;

    checker.set_down(true);
    let down = Instant::now();
    w.apply_ok(&ticketed("later", "changes", &mi, &rg, "OPS-4 migration"))?;
    let g = w
        .wait_phase("changes", "live", GrantPhase::Revoked, timeout)
        .await?;
    let to_revoked = down.elapsed();
    let (reason, msg) = policy_allowed(&g);
    assert_eq!(reason, "TicketUnverified", "{msg}");
    assert!(
        msg.contains("ticket OPS-3 (checker jira) could not be checked (the checker jira has not answered for"),
        "{msg}"
    );
    println!(
        "checker down -> Revoked: {} ms (stale period 3 s, re-check 1 s)",
        to_revoked.as_millis()
    );
    assert!(
        to_revoked >= std::time::Duration::from_secs(3),
        "the last answer did not stand for the stale period: revoked after {to_revoked:?}"
    );
    let g = w
        .wait_grant("changes", "later", timeout, |g| {
            g.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("cannot be checked"))
        })
        .await?;
    assert!(g.status.is_some_and(|s| s.activated_at.is_none()));
    // Back up: the waiting grant's ticket is answered and it activates.
    checker.set_down(false);
    w.wait_phase("changes", "later", GrantPhase::Active, timeout)
        .await?;
    println!("whole test: {} ms", started.elapsed().as_millis());
    Ok(())
}
