//! The approval bridge end to end (docs/approval.md, "Approve from Slack or Teams"):
//! `lapse-operator approval-bridge` runs as a ServiceAccount whose RBAC allows only creating
//! AccessApprovals and impersonating bob, carol and `platform-oncall`, against the sandbox with
//! the shipped admission policies. The test signs Slack and Teams requests with its own test
//! secrets, as Slack and Teams would: a mapped approver's click approves as that approver (the
//! admission policy saw them, not the bridge); an unmapped user, a bad signature, a stale
//! timestamp and a replay are refused and create nothing; a mapped user the bridge may not
//! impersonate is refused by Kubernetes itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kube::Api;
use lapse_api::v1alpha1::{AccessApproval, ConditionStatus, GrantPhase};
use lapse_e2e::{Capability, Operator, World, binary, free_port, sandbox_only};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[path = "support/approval.rs"]
mod support;
use support::*;

const SLACK_SECRET: &str = "e2e-slack-signing-secret-0123456789";
/// base64 of the Teams security token, as Teams shows it.
const TEAMS_SECRET: &str = "ZTJlLXRlYW1zLXNlY3VyaXR5LXRva2VuLTAxMjM0NTY3ODk=";
const BRIDGE_NS: &str = "lapse-bridge";
const DAVE: &str = "dave@example.com";

/// What the bridge may do: create AccessApprovals, impersonate exactly these users and group.
fn bridge_rbac() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: lapse-approval-bridge, namespace: {BRIDGE_NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: lapse-approval-bridge}}
rules:
- apiGroups: ["lapse.dev"]
  resources: ["accessapprovals"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["users"]
  verbs: ["impersonate"]
  resourceNames: ["{BOB}", "{CAROL}"]
- apiGroups: [""]
  resources: ["groups"]
  verbs: ["impersonate"]
  resourceNames: ["platform-oncall"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: lapse-approval-bridge}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: lapse-approval-bridge}}
subjects:
- {{kind: ServiceAccount, name: lapse-approval-bridge, namespace: {BRIDGE_NS}}}
"#
    )
}

/// Slack U0BOB is bob; Teams' carol decides as platform-oncall; Slack U0DAVE is dave, whom the
/// bridge's RBAC does not let it impersonate. U0MALLORY is nobody.
fn user_map() -> String {
    format!(
        r#"slack:
  U0BOB: {{user: "{BOB}"}}
  U0DAVE: {{user: "{DAVE}"}}
teams:
  6f5b3c2a-0000-4000-8000-0000000000c0: {{user: "{CAROL}", groups: [platform-oncall]}}
"#
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, msg).as_ref().to_vec()
}

/// The body and headers Slack sends for one button click.
struct SlackRequest {
    body: String,
    timestamp: String,
    signature: String,
}

fn slack_click(
    user: &str,
    action_id: &str,
    value: &str,
    response_url: &str,
    ts: i64,
    secret: &str,
) -> SlackRequest {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0E2E"},
        "api_app_id": "A0E2E",
        "container": {"type": "message", "message_ts": "1.0"},
        "trigger_id": "1.2.3",
        "response_url": response_url,
        "message": {"type": "message", "text": "Approval needed", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "Approval needed"}}
        ]},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "lapse.decide",
                     "value": value, "action_ts": "1.0"}],
    });
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let timestamp = ts.to_string();
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("v0:{timestamp}:{body}").as_bytes(),
    );
    let signature = format!(
        "v0={}",
        mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    SlackRequest {
        body,
        timestamp,
        signature,
    }
}

/// A local stand-in for Slack's response_url: records what the bridge posts.
#[derive(Clone, Default)]
struct Responses(Arc<Mutex<Vec<(String, Value)>>>);

impl Responses {
    async fn serve(&self) -> anyhow::Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = self.0.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse().ok())
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                        let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                            .unwrap_or_default();
                        if let Ok(mut v) = seen.lock() {
                            v.push((path, body));
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                        return;
                    }
                });
            }
        });
        Ok(port)
    }

    /// Waits for a post to `path`.
    async fn wait(&self, path: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self
                .0
                .lock()
                .ok()
                .and_then(|v| v.iter().find(|(p, _)| p == path).map(|(_, b)| b.clone()))
            {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("nothing was posted to {path}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Bridge {
    process: Operator,
    url: String,
    metrics_url: String,
    http: reqwest::Client,
}

impl Bridge {
    async fn slack(&self, r: &SlackRequest) -> anyhow::Result<(u16, String, Duration)> {
        let started = Instant::now();
        let resp = self
            .http
            .post(format!("{}/slack/actions", self.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", &r.timestamp)
            .header("X-Slack-Signature", &r.signature)
            .body(r.body.clone())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, text, started.elapsed()))
    }

    async fn teams(&self, body: &str, secret_b64: &str) -> anyhow::Result<(u16, String)> {
        let key = base64::engine::general_purpose::STANDARD.decode(secret_b64)?;
        let mac =
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, body.as_bytes()));
        let resp = self
            .http
            .post(format!("{}/teams/actions", self.url))
            .header("Content-Type", "application/json")
            .header("Authorization", format!("HMAC {mac}"))
            .body(body.to_owned())
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    async fn metric(&self, platform: &str, result: &str) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await?
            .text()
            .await?;
        let want =
            format!("lapse_bridge_requests_total{{platform=\"{platform}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {want} in {text}"))
    }
}

/// Starts the bridge as its ServiceAccount, with the test secrets and user map.
async fn start_bridge(w: &World, response_port: u16) -> anyhow::Result<Bridge> {
    let sb = w.target.sandbox()?;
    w.kubectl_ok(&["create", "namespace", BRIDGE_NS])?;
    w.apply_ok(&bridge_rbac())?;
    let token = w.kubectl_ok(&[
        "-n",
        BRIDGE_NS,
        "create",
        "token",
        "lapse-approval-bridge",
        "--duration=1h",
    ])?;
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&sb.kubeconfig)?;
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.trim().to_owned().into());
            auth.client_certificate_data = None;
            auth.client_key_data = None;
        }
    }
    let sa_kubeconfig = sb.dir.join("bridge-kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml_ng::to_string(&kubeconfig)?)?;
    let users = sb.dir.join("bridge-users.yaml");
    std::fs::write(&users, user_map())?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let mut cmd = std::process::Command::new(binary("lapse-operator")?);
    cmd.arg("approval-bridge")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", &sa_kubeconfig)
        .env("LAPSE_BRIDGE_SLACK_SIGNING_SECRET", SLACK_SECRET)
        .env("LAPSE_BRIDGE_TEAMS_SECRET", TEAMS_SECRET)
        .env("LAPSE_BRIDGE_USERS", &users)
        .env("LAPSE_BRIDGE_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "LAPSE_BRIDGE_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env(
            "LAPSE_BRIDGE_SLACK_RESPONSE_URL_PREFIXES",
            format!("http://127.0.0.1:{response_port}/"),
        )
        .env("LAPSE_LOG", "info");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut process = Operator::spawn(cmd, sb.dir.join("bridge.log"), metrics_port, metrics_port)?;
    process.wait_ready(&http).await?;
    Ok(Bridge {
        process,
        url: format!("http://127.0.0.1:{port}"),
        metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        http,
    })
}

async fn approvals(w: &World) -> anyhow::Result<Vec<AccessApproval>> {
    let api: Api<AccessApproval> = Api::namespaced(w.kube.clone(), NS);
    Ok(api.list(&Default::default()).await?.items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_teams_decide_as_the_mapped_approver_and_every_forgery_is_refused()
-> anyhow::Result<()> {
    sandbox_only(
        Capability::DisposableCluster,
        "runs the bridge as a ServiceAccount it makes up, with impersonation RBAC and the \
         admission policies",
    )?;
    let w = World::start().await?;
    let timeout = w.scaled(TIMEOUT);
    let (mi, _) = setup(&w).await?;
    let storage = w.fixtures.storage_account_id();
    let responses = Responses::default();
    let response_port = responses.serve().await?;
    let respond = |n: &str| format!("http://127.0.0.1:{response_port}/r/{n}");
    let bridge = start_bridge(&w, response_port).await?;
    let logs = || bridge.process.logs();

    w.create_as_ok(ALICE, &[], &grant("nightly", &mi, &storage, ALICE, ""))?;
    let g = w
        .wait_phase(NS, "nightly", GrantPhase::PendingApproval, timeout)
        .await?;
    let value = format!(
        "{NS}/nightly/{}/{}",
        g.metadata.uid.as_deref().unwrap_or_default(),
        g.metadata.generation.unwrap_or(1)
    );
    let now = unix_now();

    // Refused, each with a clear answer, nothing created:
    // a signature made with another secret,
    let forged = slack_click(
        "U0BOB",
        "lapse.approve",
        &value,
        &respond("forged"),
        now,
        "guess",
    );
    let (status, text, _) = bridge.slack(&forged).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("X-Slack-Signature does not match"), "{text}");
    // a genuine request from more than five minutes ago,
    let stale = slack_click(
        "U0BOB",
        "lapse.approve",
        &value,
        &respond("stale"),
        now - 600,
        SLACK_SECRET,
    );
    let (status, text, _) = bridge.slack(&stale).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("outside the 300s window"), "{text}");
    // a Slack user the map does not know.
    let stranger = slack_click(
        "U0MALLORY",
        "lapse.approve",
        &value,
        &respond("stranger"),
        now,
        SLACK_SECRET,
    );
    let (status, text, _) = bridge.slack(&stranger).await?;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("U0MALLORY is not mapped to a Kubernetes user") && text.contains("ephemeral"),
        "{text}"
    );
    let told = responses.wait("/r/stranger").await?;
    assert!(
        told["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not mapped"),
        "{told}"
    );
    assert!(
        approvals(&w).await?.is_empty(),
        "a refused request created an approval"
    );

    // bob clicks Approve: answered at once (Slack's limit is 3 s), then recorded as bob.
    let click = slack_click(
        "U0BOB",
        "lapse.approve",
        &value,
        &respond("bob"),
        now,
        SLACK_SECRET,
    );
    let (status, text, took) = bridge.slack(&click).await?;
    assert_eq!(status, 200, "{text}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    println!("Slack click answered in {} ms", took.as_millis());
    let g = w
        .wait_phase(NS, "nightly", GrantPhase::Active, timeout)
        .await
        .with_context(logs)?;
    let recorded = approvals(&w).await?;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    // The admission policy only lets spec.approver be the authenticated user: bob, through
    // impersonation, not the bridge's ServiceAccount.
    assert_eq!(recorded[0].spec.approver.username, BOB);
    assert!(
        recorded[0]
            .spec
            .comment
            .as_deref()
            .is_some_and(|c| c.contains("from Slack by U0BOB")),
        "{:?}",
        recorded[0].spec.comment
    );
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(
        st.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        [BOB]
    );
    assert_eq!(approved(&g).map(|a| a.0), Some(ConditionStatus::True));
    let update = responses.wait("/r/bob").await?;
    assert_eq!(update["replace_original"], true, "{update}");
    let outcome = update["blocks"]
        .as_array()
        .and_then(|b| b.last())
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(
        outcome.contains(BOB) && outcome.contains("approved"),
        "{update}"
    );

    // The same request again, within its window: a replay, refused.
    let (status, text, _) = bridge.slack(&click).await?;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("already received"), "{text}");

    // dave is mapped, but the bridge may not impersonate him: Kubernetes refuses.
    let dave = slack_click(
        "U0DAVE",
        "lapse.deny",
        &value,
        &respond("dave"),
        now,
        SLACK_SECRET,
    );
    let (status, _, _) = bridge.slack(&dave).await?;
    assert_eq!(status, 200);
    let told = responses.wait("/r/dave").await?;
    let said = told["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("Kubernetes refused") && said.contains("impersonate"),
        "{told}"
    );
    assert_eq!(told["response_type"], "ephemeral");
    assert_eq!(approvals(&w).await?.len(), 1, "refusals created approvals");

    // Teams: carol, mapped with platform-oncall, approves a second grant from the channel.
    w.create_as_ok(ALICE, &[], &grant("weekly", &mi, &storage, ALICE, ""))?;
    let g = w
        .wait_phase(NS, "weekly", GrantPhase::PendingApproval, timeout)
        .await?;
    let activity = |text: &str, secs_ago: i64| {
        json!({
            "type": "message",
            "id": format!("17{secs_ago}"),
            "timestamp": chrono::DateTime::from_timestamp(unix_now() - secs_ago, 0)
                .unwrap_or_default()
                .to_rfc3339(),
            "text": text,
            "from": {"id": "29:1carol", "name": "Carol", "aadObjectId": "6f5b3c2a-0000-4000-8000-0000000000c0"},
            "channelId": "msteams",
        })
        .to_string()
    };
    let command = format!(
        "<at>lapse</at> approve {NS}/weekly/{}/{} on call, fine",
        g.metadata.uid.as_deref().unwrap_or_default(),
        g.metadata.generation.unwrap_or(1)
    );
    let (status, text) = bridge
        .teams(&activity(&command, 0), "d3Jvbmctc2VjcmV0")
        .await?;
    assert_eq!(status, 401, "{text}");
    let (status, text) = bridge.teams(&activity(&command, 900), TEAMS_SECRET).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("outside the 300s window"), "{text}");
    let body = activity(&command, 0);
    let (status, text) = bridge.teams(&body, TEAMS_SECRET).await?;
    assert_eq!(status, 200, "{text}");
    let reply: Value = serde_json::from_str(&text)?;
    assert_eq!(reply["type"], "message");
    assert!(
        reply["text"]
            .as_str()
            .is_some_and(|t| t.contains(CAROL) && t.contains("recorded")),
        "{reply}"
    );
    let g = w
        .wait_phase(NS, "weekly", GrantPhase::Active, timeout)
        .await
        .with_context(logs)?;
    let st = g.status.clone().unwrap_or_default();
    assert_eq!(
        st.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        [CAROL]
    );
    let carols = approvals(&w).await?;
    let carol = carols
        .iter()
        .find(|a| a.spec.grant.name == "weekly")
        .context("no AccessApproval for weekly")?;
    assert_eq!(carol.spec.approver.groups, ["platform-oncall"]);
    let (status, _) = bridge.teams(&body, TEAMS_SECRET).await?;
    assert_eq!(status, 409, "a Teams replay was accepted");

    // Every refusal was counted.
    for (platform, result, n) in [
        ("slack", "bad_signature", 1),
        ("slack", "stale_timestamp", 1),
        ("slack", "unknown_user", 1),
        ("slack", "replay", 1),
        ("slack", "accepted", 2),
        ("teams", "bad_signature", 1),
        ("teams", "stale_timestamp", 1),
        ("teams", "replay", 1),
        ("teams", "accepted", 1),
    ] {
        assert_eq!(
            bridge.metric(platform, result).await?,
            n,
            "{platform} {result}"
        );
    }
    Ok(())
}
