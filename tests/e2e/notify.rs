//! Notifications end to end (docs/notifications.md): the operator posts every kind of
//! notification to a webhook this test serves, in each of the four formats; a webhook that never
//! answers delays no revocation; the webhook URL (and the secret in it) appears nowhere.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapse_api::v1alpha1::GrantPhase;
use lapse_e2e::{Capability, World, sandbox_only};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[path = "support/approval.rs"]
mod support;
use support::*;

/// Every kind the operator notifies about.
const KINDS: [&str; 10] = [
    "PendingApproval",
    "ApprovalEscalated",
    "Approved",
    "Denied",
    "Activated",
    "ExpiringSoon",
    "Expired",
    "Revoked",
    "RevocationOverdue",
    "BreakGlassActivated",
];

/// The secret part of the webhook URL, as Slack's and Teams' URLs carry one.
const SECRET: &str = "T0000-SECRET-TOKEN-e2e";

/// One POST the webhook received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// A webhook on a local port: answers every POST with 204 and keeps what it got; or, when
/// `dead`, accepts connections and never answers.
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    async fn start(dead: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/{SECRET}", listener.local_addr()?);
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let (rx, cx) = (received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                *cx.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                if dead {
                    held.push(sock);
                    continue;
                }
                let rx = rx.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, rx).await;
                });
            }
        });
        Ok(Self {
            url,
            received,
            connections,
            task,
        })
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// HTTP/1.1 with keep-alive: enough of it for reqwest's POSTs.
async fn serve(
    sock: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
) -> anyhow::Result<()> {
    let mut sock = BufReader::new(sock);
    loop {
        let mut request_line = String::new();
        if sock.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut line = String::new();
            sock.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => content_type = v.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        sock.read_exact(&mut body).await?;
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Received {
                path,
                content_type,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
        sock.get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

/// The kind and grant of a notification, read the way each format carries them.
fn kind_and_grant(format: &str, r: &Received) -> Option<(String, String)> {
    let b = &r.body;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match format {
        "json" => Some((text(&b["kind"])?, text(&b["grant"]["name"])?)),
        "cloudevents" => Some((
            text(&b["data"]["kind"])?,
            text(&b["subject"])?.rsplit('/').next()?.to_owned(),
        )),
        // The context line starts with the kind; the headline names `namespace/name`.
        "slack" => {
            let context = text(&b["blocks"][3]["elements"][0]["text"])?;
            let head = text(&b["blocks"][0]["text"]["text"])?;
            Some((
                context.split(' ').next()?.to_owned(),
                head.split(&format!("{NS}/"))
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .to_owned(),
            ))
        }
        "teams" => {
            let card = &b["attachments"][0]["content"];
            let context = text(&card["body"][3]["text"])?;
            let head = text(&card["body"][0]["text"])?;
            Some((
                context.split(' ').next()?.to_owned(),
                head.split(&format!("{NS}/"))
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .to_owned(),
            ))
        }
        _ => None,
    }
}

/// What each format must look like on the wire, beyond carrying its kind.
fn assert_shape(format: &str, r: &Received) {
    let b = &r.body;
    match format {
        "json" => {
            assert_eq!(r.content_type, "application/json");
            assert!(b["grant"]["requester"].is_string(), "{b}");
            assert!(b["grant"]["identity"]["id"].is_string(), "{b}");
        }
        "cloudevents" => {
            assert!(
                r.content_type.starts_with("application/cloudevents+json"),
                "{}",
                r.content_type
            );
            assert_eq!(b["specversion"], "1.0");
            let kind = b["data"]["kind"].as_str().unwrap_or_default();
            assert_eq!(
                b["type"],
                format!("dev.lapse.accessgrant.{}", kind.to_ascii_lowercase())
            );
            assert_eq!(b["source"], "lapse.dev/clusters/e2e");
        }
        "slack" => {
            assert_eq!(r.content_type, "application/json");
            assert!(b["text"].is_string(), "{b}");
            assert_eq!(b["blocks"][0]["type"], "header");
        }
        "teams" => {
            assert_eq!(r.content_type, "application/json");
            assert_eq!(b["type"], "message");
            assert_eq!(
                b["attachments"][0]["contentType"],
                "application/vnd.microsoft.card.adaptive"
            );
        }
        other => assert_eq!(other, "json|cloudevents|slack|teams", "unknown format"),
    }
}

/// Drives one grant through each notified transition, with the operator posting in `format`:
/// approval asked, given, access active, expiring, expired; asked and denied; break-glass,
/// revoked while Azure refuses the deletes (overdue), then revoked.
async fn every_kind_arrives(format: &str) -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "serves a webhook on this machine and impersonates users",
    )?;
    let hook = Webhook::start(false).await?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[
        ("LAPSE_NOTIFY_URL", &hook.url),
        ("LAPSE_NOTIFY_FORMAT", format),
        ("LAPSE_NOTIFY_EXPIRING_BEFORE", "6s"),
        ("LAPSE_OVERDUE_AFTER", "2s"),
    ])
    .await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, _) = setup(&w).await?;
    // An escalation tier 2 s into the wait: a grant nobody decides on escalates to carol.
    w.apply_ok(&policy(&w).replace(
        "    timeout: 1h\n",
        "    timeout: 1h\n    escalation:\n    - after: 2s\n      approvers:\n        users: [\"carol@example.com\"]\n",
    ))?;
    let rg = w.fixtures.resource_group_id();
    let create = |who: &str, groups: &[&str], yaml: &str| w.create_as_ok(who, groups, yaml);
    let short = |name: &str, extra: &str| {
        grant(name, &mi, &rg, ALICE, extra).replace("duration: 10m", "duration: 10s")
    };

    // Asked, approved, active, expiring, expired.
    create(ALICE, &[], &short("asked", ""))?;
    let g = w
        .wait_phase(NS, "asked", GrantPhase::PendingApproval, timeout)
        .await?;
    create(BOB, &[], &approval("asked-bob", &g, "Approve", BOB, &[]))?;
    // Asked, escalated (nobody decided for 2 s), and denied.
    create(ALICE, &[], &short("refused", ""))?;
    let g = w
        .wait_phase(NS, "refused", GrantPhase::PendingApproval, timeout)
        .await?;
    let deadline = Instant::now() + timeout;
    while !hook.received().iter().any(|r| {
        kind_and_grant(format, r).is_some_and(|(k, g)| k == "ApprovalEscalated" && g == "refused")
    }) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no ApprovalEscalated for refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create(BOB, &[], &approval("refused-bob", &g, "Deny", BOB, &[]))?;
    // Break-glass, then revoked while Azure refuses deletes: overdue first, revoked once it
    // lets them through.
    // On the storage account, so that it shares no role assignment with the grants above.
    let storage = w.fixtures.storage_account_id();
    create(
        ALICE,
        &[],
        &grant("glass", &mi, &storage, ALICE, "  breakGlass: true\n"),
    )?;
    w.wait_phase(NS, "glass", GrantPhase::Active, timeout)
        .await?;
    w.azure_fault(json!({"method": "DELETE", "pathPattern": "storageAccounts/[^/]+/providers/Microsoft.Authorization/roleAssignments/",
        "action": {"type": "status", "status": 500, "code": "InternalServerError", "message": "injected"}}))
        .await?;
    let out = w.patch_grant(NS, "glass", r#"{"spec":{"revoked":true}}"#)?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.wait_grant(NS, "glass", timeout, |g| {
        g.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "RevocationOverdue"
                    && c.status == lapse_api::v1alpha1::ConditionStatus::True
            })
        })
    })
    .await?;
    w.clear_azure_faults().await?;
    w.wait_phase(NS, "glass", GrantPhase::Revoked, timeout)
        .await?;
    w.wait_phase(NS, "asked", GrantPhase::Expired, timeout)
        .await?;

    // Every kind arrives, for the grant it is about, once.
    let expected: BTreeMap<&str, &str> = [
        ("PendingApproval", "asked"),
        ("ApprovalEscalated", "refused"),
        ("Approved", "asked"),
        ("Activated", "asked"),
        ("ExpiringSoon", "asked"),
        ("Expired", "asked"),
        ("Denied", "refused"),
        ("BreakGlassActivated", "glass"),
        ("RevocationOverdue", "glass"),
        ("Revoked", "glass"),
    ]
    .into();
    let deadline = Instant::now() + timeout;
    let seen = loop {
        let got: Vec<(String, String)> = hook
            .received()
            .iter()
            .filter_map(|r| kind_and_grant(format, r))
            .collect();
        if expected
            .iter()
            .all(|(k, g)| got.iter().any(|(gk, gg)| gk == k && gg == g))
            || Instant::now() > deadline
        {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for kind in KINDS {
        let grant = expected[kind];
        let n = seen.iter().filter(|(k, g)| k == kind && g == grant).count();
        assert!(
            n >= 1,
            "{format}: no {kind} for {grant}; received: {seen:?}"
        );
        // Two PendingApproval for a grant whose pending lasted (a repeat within the window is
        // deduplicated), never two of the same transition.
        assert_eq!(
            n, 1,
            "{format}: {kind} for {grant} sent {n} times: {seen:?}"
        );
    }
    for r in hook.received() {
        assert_shape(format, &r);
        assert_eq!(r.path, format!("/hooks/{SECRET}"));
    }
    println!(
        "[{format}] {} notifications received, each kind once",
        hook.received().len()
    );

    // The delivery metric counts what the webhook got, by kind.
    let metrics = w.metrics().await?;
    for kind in KINDS {
        let got = seen.iter().filter(|(k, _)| k == kind).count();
        let line =
            format!("lapse_notifications_total{{kind=\"{kind}\",result=\"delivered\"}} {got}");
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    // The webhook's secret is in nothing the operator prints.
    let logs = w.operator_logs();
    assert!(
        !logs.contains(SECRET),
        "the webhook URL leaked into the log"
    );
    // And every transition is an audit line, with who asked and who decided.
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("lapse::audit"))
        .collect();
    for (transition, who) in [
        (format!("{NS}/asked: Pending -> PendingApproval"), ALICE),
        (
            format!("{NS}/asked: Activating -> Active"),
            "bob@example.com (Approve)",
        ),
        (
            format!("{NS}/refused: PendingApproval -> Denied (ApprovalDenied)"),
            "bob@example.com (Deny)",
        ),
        (format!("{NS}/glass: Revoking -> Revoked"), ALICE),
        (format!("{NS}/asked: Revoking -> Expired"), ALICE),
    ] {
        assert!(
            audit
                .iter()
                .any(|l| l.contains(&transition) && l.contains(who)),
            "no audit line for {transition} naming {who}:\n{}",
            audit.join("\n")
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_arrives_as_json() -> anyhow::Result<()> {
    every_kind_arrives("json").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_arrives_as_cloudevents() -> anyhow::Result<()> {
    every_kind_arrives("cloudevents").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_arrives_as_slack_block_kit() -> anyhow::Result<()> {
    every_kind_arrives("slack").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_arrives_as_a_teams_adaptive_card() -> anyhow::Result<()> {
    every_kind_arrives("teams").await
}

/// A webhook that accepts connections and never answers holds up notifications, never a
/// revocation: a break-glass lease is revoked as fast as without notifications (measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_delays_no_revocation() -> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "serves a webhook on this machine and impersonates users",
    )?;
    let hook = Webhook::start(true).await?;
    let mut w = World::without_operator().await?;
    w.start_operator(&[
        ("LAPSE_NOTIFY_URL", &hook.url),
        ("LAPSE_NOTIFY_FORMAT", "slack"),
    ])
    .await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, _) = setup(&w).await?;
    let rg = w.fixtures.resource_group_id();
    let mut took = Vec::new();
    for i in 0..5 {
        let name = format!("glass-{i}");
        let out = w.create_as(
            ALICE,
            &[],
            &grant(&name, &mi, &rg, ALICE, "  breakGlass: true\n"),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        w.wait_phase(NS, &name, GrantPhase::Active, timeout).await?;
        let revoked = Instant::now();
        let out = w.patch_grant(NS, &name, r#"{"spec":{"revoked":true}}"#)?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        w.wait_phase(NS, &name, GrantPhase::Revoked, timeout)
            .await?;
        took.push(revoked.elapsed().as_millis());
    }
    assert!(
        hook.connections() > 0,
        "the operator never tried the webhook"
    );
    assert!(hook.received().is_empty());
    took.sort_unstable();
    println!(
        "revoke -> Revoked with a webhook that never answers: median {} ms, max {} ms ({} notifications stuck)",
        took[took.len() / 2],
        took[took.len() - 1],
        hook.connections()
    );
    Ok(())
}
