//! `--wait`: polls a grant until it is Active, ends, or the time is up, saying what it waits for.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::Api;
use lapse_api::v1alpha1::{AccessGrant, GrantPhase};

use crate::exit::Stop;

/// How often the grant is read.
const POLL: Duration = Duration::from_millis(200);

fn condition_message(g: &AccessGrant, type_: &str) -> Option<String> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty())
}

fn message(g: &AccessGrant) -> String {
    g.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// Waits until `ns/name` is Active (returned); a terminal phase is a [`Stop::Refused`] naming
/// the grant's message, the deadline a [`Stop::TimedOut`]. Progress goes to stderr.
pub async fn until_active(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<AccessGrant> {
    let api: Api<AccessGrant> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    let mut said: Option<(GrantPhase, String)> = None;
    loop {
        let g = api
            .get(name)
            .await
            .with_context(|| format!("reading AccessGrant {ns}/{name}"))?;
        let phase = g.status.as_ref().map(|s| s.phase).unwrap_or_default();
        match phase {
            GrantPhase::Active => return Ok(g),
            p if p.is_terminal() => {
                return Err(Stop::Refused(format!(
                    "AccessGrant {ns}/{name} is {}: {}",
                    p.as_str(),
                    message(&g)
                ))
                .into());
            }
            p => {
                let note = match p {
                    GrantPhase::PendingApproval => format!(
                        "waiting for approval: {}",
                        condition_message(&g, "Approved").unwrap_or_else(|| message(&g))
                    ),
                    GrantPhase::Scheduled => format!("scheduled: {}", message(&g)),
                    other => other.as_str().to_owned(),
                };
                if said.as_ref() != Some(&(p, note.clone())) {
                    eprintln!("{ns}/{name}: {note}");
                    said = Some((p, note));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Stop::TimedOut(format!(
                "AccessGrant {ns}/{name} is still {} after {}s{}",
                phase.as_str(),
                timeout.as_secs(),
                match message(&g) {
                    m if m.is_empty() => String::new(),
                    m => format!(": {m}"),
                }
            ))
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}
