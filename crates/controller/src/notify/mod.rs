//! Notifications and the audit trail of lifecycle transitions (docs/notifications.md,
//! docs/audit.md).
//!
//! A reconcile only finds what changed ([`transitions`], pure) and hands each notification to a
//! bounded queue ([`Notifier::send`] never waits); one task delivers them to the webhook with
//! bounded retries. A dead or slow webhook therefore costs notifications, never a reconcile or
//! a revocation. The audit line of a transition is written by the reconcile itself: it is a log
//! line, as cheap as the reconcile's own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapse_api::lease::{Decision, Reason};
use lapse_api::v1alpha1::{AccessGrantStatus, GrantPhase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::repeat::RepeatWindow;

mod deliver;
mod format;
mod record;

pub use deliver::{Delivery, RetryPolicy};
pub use format::Format;
pub use record::GrantRecord;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    PendingApproval,
    /// An escalation tier opened while the grant waits: its approvers may now decide.
    ApprovalEscalated,
    Approved,
    Denied,
    Activated,
    ExpiringSoon,
    Expired,
    Revoked,
    RevocationOverdue,
    BreakGlassActivated,
    /// Azure's logs showed something about a lease (docs/usage.md): the reason names the
    /// finding (`UseAfterEnd`, `SensitiveAction`, ...).
    UsageFinding,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::PendingApproval,
        Kind::ApprovalEscalated,
        Kind::Approved,
        Kind::Denied,
        Kind::Activated,
        Kind::ExpiringSoon,
        Kind::Expired,
        Kind::Revoked,
        Kind::RevocationOverdue,
        Kind::BreakGlassActivated,
        Kind::UsageFinding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PendingApproval => "PendingApproval",
            Kind::ApprovalEscalated => "ApprovalEscalated",
            Kind::Approved => "Approved",
            Kind::Denied => "Denied",
            Kind::Activated => "Activated",
            Kind::ExpiringSoon => "ExpiringSoon",
            Kind::Expired => "Expired",
            Kind::Revoked => "Revoked",
            Kind::RevocationOverdue => "RevocationOverdue",
            Kind::BreakGlassActivated => "BreakGlassActivated",
            Kind::UsageFinding => "UsageFinding",
        }
    }

    /// The CloudEvents `type`: reverse-DNS, one per kind.
    pub fn event_type(self) -> String {
        format!(
            "dev.lapse.accessgrant.{}",
            self.as_str().to_ascii_lowercase()
        )
    }

    /// Worth a look now: the chat formats mark these.
    pub fn warning(self) -> bool {
        matches!(
            self,
            Kind::Denied | Kind::RevocationOverdue | Kind::BreakGlassActivated
        )
    }
}

/// One notification: what happened to which grant, and the grant as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Unique per notification (the CloudEvents `id`).
    pub id: uuid::Uuid,
    pub kind: Kind,
    /// The reason the operator recorded (an Event or condition reason, docs/api.md).
    pub reason: String,
    pub message: String,
    pub warning: bool,
    pub time: DateTime<Utc>,
    pub grant: GrantRecord,
}

/// A notification setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("LAPSE_NOTIFY_URL is not a usable webhook URL: {0}")]
    Url(String),
    #[error("building the webhook client: {0}")]
    Client(String),
}

/// Where and how notifications go (`LAPSE_NOTIFY_*`).
#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// The webhook; often carries its own secret, so it is never logged.
    pub url: SecretString,
    pub format: Format,
    /// How long before a lease's end `ExpiringSoon` is sent.
    pub expiring_before: Duration,
    pub retry: RetryPolicy,
    /// Notifications waiting for delivery, at most; beyond it new ones are dropped and counted.
    pub capacity: usize,
    /// Approve and Deny actions in Slack and Teams messages, for the approval bridge
    /// (`LAPSE_NOTIFY_ACTIONS`).
    pub actions: bool,
}

impl NotifySettings {
    pub fn new(url: SecretString, format: Format) -> Self {
        Self {
            url,
            format,
            expiring_before: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            capacity: 1_000,
            actions: false,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub kind: String,
    /// `delivered`, `failed` (retries exhausted or refused), `dropped` (queue full).
    pub result: String,
}

impl NotifyLabels {
    /// Every kind and result, so dashboards and alerts read 0 rather than "no data".
    pub fn all() -> impl Iterator<Item = NotifyLabels> {
        Kind::ALL.into_iter().flat_map(|kind| {
            ["delivered", "failed", "dropped"].map(|result| NotifyLabels {
                kind: kind.as_str().into(),
                result: result.into(),
            })
        })
    }
}

/// How long a notification already sent is not sent again: a grant decided twice on a stale
/// cache must still notify once.
const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// The sending side, shared by every reconcile. Without a webhook it only deduplicates (the
/// audit line is written either way).
#[derive(Debug)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Notification>>,
    results: Family<NotifyLabels, Counter>,
    recent: Mutex<RepeatWindow<(String, String, String)>>,
    /// `ExpiringSoon` lead time, when notifications are on.
    pub expiring_before: Option<Duration>,
}

impl Notifier {
    /// No webhook: nothing is sent.
    pub fn disabled(results: Family<NotifyLabels, Counter>) -> Self {
        Self {
            tx: None,
            results,
            recent: Mutex::new(RepeatWindow::new(REPEAT_WINDOW)),
            expiring_before: None,
        }
    }

    /// Starts the delivery task on the current runtime.
    pub fn start(
        settings: &NotifySettings,
        results: Family<NotifyLabels, Counter>,
    ) -> Result<Self, NotifyError> {
        let post = deliver::HttpPost::new(settings.url.clone(), &settings.retry)?;
        let (tx, rx) = mpsc::channel::<Notification>(settings.capacity.max(1));
        let (format, retry, counts) = (settings.format, settings.retry, results.clone());
        let actions = settings.actions;
        let post = std::sync::Arc::new(post);
        tokio::spawn(async move {
            let rx =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|n| (n, rx)) },
                );
            // A few at once, so one webhook timeout does not hold every later notification.
            rx.for_each_concurrent(DELIVERIES_AT_ONCE, |n| {
                let (post, counts) = (post.clone(), counts.clone());
                async move {
                    let (content_type, body) = format.render_with(&n, actions);
                    let body = serde_json::to_vec(&body).unwrap_or_default();
                    let result = deliver::deliver(post.as_ref(), &retry, content_type, &body).await;
                    let label = match &result {
                        Delivery::Delivered { .. } => "delivered",
                        Delivery::Failed { attempts, last } => {
                            tracing::warn!(
                                kind = n.kind.as_str(),
                                grant = %n.grant.grant(),
                                attempts,
                                last = %last,
                                "notification not delivered"
                            );
                            "failed"
                        }
                    };
                    counts
                        .get_or_create(&NotifyLabels {
                            kind: n.kind.as_str().into(),
                            result: label.into(),
                        })
                        .inc();
                }
            })
            .await;
        });
        Ok(Self {
            tx: Some(tx),
            results,
            recent: Mutex::new(RepeatWindow::new(REPEAT_WINDOW)),
            expiring_before: Some(settings.expiring_before),
        })
    }

    /// True the first time `(uid, what, detail)` is seen within the repeat window.
    pub fn first(&self, uid: &str, what: &str, detail: &str) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first(
                (uid.to_owned(), what.to_owned(), detail.to_owned()),
                Instant::now(),
            )
    }

    /// Queues a notification; never waits. A full queue drops it (counted and logged).
    pub fn send(&self, n: Notification) {
        let Some(tx) = &self.tx else {
            return;
        };
        let kind = n.kind;
        if let Err(e) = tx.try_send(n) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the queue is full",
                mpsc::error::TrySendError::Closed(_) => "the delivery task ended",
            };
            tracing::warn!(kind = kind.as_str(), "notification dropped: {why}");
            self.results
                .get_or_create(&NotifyLabels {
                    kind: kind.as_str().into(),
                    result: "dropped".into(),
                })
                .inc();
        }
    }
}

const DELIVERIES_AT_ONCE: usize = 4;

/// One lifecycle change a decision made: a notification (when `kind` is set) and an audit line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub kind: Option<Kind>,
    pub from: GrantPhase,
    pub to: GrantPhase,
    pub reason: String,
    pub message: String,
}

/// What changed between the status before a decision and the decision: each phase change, and
/// the approvals, break-glass activations and overdue revocations the decision announced.
/// Pure, so the mapping is tested apart from any cluster.
pub fn transitions(before: &AccessGrantStatus, d: &Decision) -> Vec<Transition> {
    let (from, to) = (before.phase, d.status.phase);
    let event = |reasons: &[Reason]| {
        d.events
            .iter()
            .find(|e| reasons.contains(&e.reason))
            .map(|e| (e.reason.as_str().to_owned(), e.message.clone()))
    };
    let status_message = || d.status.message.clone().unwrap_or_default();
    let ready_reason = || {
        d.status
            .conditions
            .iter()
            .find(|c| c.type_ == lapse_api::lease::READY)
            .map(|c| c.reason.to_string())
            .unwrap_or_else(|| to.as_str().to_owned())
    };
    let mut out = Vec::new();
    if from != to {
        let kind = match to {
            GrantPhase::PendingApproval => Some(Kind::PendingApproval),
            GrantPhase::Active => Some(Kind::Activated),
            GrantPhase::Denied => Some(Kind::Denied),
            GrantPhase::Expired => Some(Kind::Expired),
            GrantPhase::Revoked => Some(Kind::Revoked),
            _ => None,
        };
        let (reason, message) = match kind {
            Some(Kind::Activated) => event(&[Reason::Activated]),
            // The approval stage's own reason says more than the phase.
            Some(Kind::Denied) => event(&[Reason::ApprovalDenied, Reason::ApprovalTimedOut])
                .map(|(reason, _)| (reason, status_message())),
            _ => None,
        }
        .unwrap_or_else(|| (ready_reason(), status_message()));
        out.push(Transition {
            kind,
            from,
            to,
            reason,
            message,
        });
    }
    for (kind, reason) in [
        (Kind::Approved, Reason::Approved),
        (Kind::BreakGlassActivated, Reason::BreakGlassActivated),
        (Kind::RevocationOverdue, Reason::RevocationOverdue),
    ] {
        if let Some((reason, message)) = event(&[reason]) {
            out.push(Transition {
                kind: Some(kind),
                from,
                to,
                reason,
                message,
            });
        }
    }
    out
}

/// What makes a repeat of `kind` for the same grant news again: a new generation's approval, a
/// new expiry's warning. Empty for kinds that happen once per grant.
pub fn repeat_key(kind: Kind, generation: Option<i64>, status: &AccessGrantStatus) -> String {
    match kind {
        Kind::PendingApproval | Kind::Approved => generation.unwrap_or_default().to_string(),
        Kind::ExpiringSoon => status
            .expires_at
            .map(|t| t.timestamp().to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
