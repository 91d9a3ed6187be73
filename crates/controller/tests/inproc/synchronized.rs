//! Synchronized expiry (docs/architecture.md): more leases of one subscription end in the same
//! second than ARM's delete budget deletes in time. Here the budget is shrunk (4 at once, then
//! 2 a second, in sim-azure's throttling and the operator's limiter alike) so that 12 leases
//! make the crowd 2,000 make at Azure's 200 + 10/s: without starting early, the last delete
//! would go 4 s after the end. The plan keeps the default 10 % headroom: 3 at once, then 1.8 a
//! second, so the earliest lease starts (12 − 3) / 1.8 = 5 s early.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use kube::Api;
use kube::api::PostParams;
use lapse_api::v1alpha1::{
    AccessGrant, AccessGrantSpec, AccessPolicy, AccessPolicySpec, EndReason, GrantPhase,
    IdentityRef, ObjectIdRef, RoleRequest, Window,
};
use lapse_sim_azure::{Seed, SeedPrincipal};

use crate::fixtures::*;

const LEASES: usize = 12;
/// Deletes at once, then per second.
const BUDGET: (u32, f64) = (4, 2.0);

fn principal(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_ending_together_start_their_deletes_early_and_none_overstays() {
    let mut seed = Seed::sandbox_default();
    for i in 0..LEASES {
        seed.principals.push(SeedPrincipal {
            display_name: format!("crowd-{i:02}"),
            object_id: Some(principal(i)),
            ..SeedPrincipal::default()
        });
    }
    let w = World::with(Options {
        seed,
        deletes: BUDGET,
        ..Options::default()
    })
    .await
    .unwrap();
    Api::<AccessPolicy>::all(w.client.clone())
        .create(
            &PostParams::default(),
            &AccessPolicy::new(
                "crowd",
                AccessPolicySpec {
                    namespaces: vec![NS.into()],
                    service_principals: vec!["*".into()],
                    roles: vec!["Reader".into()],
                    scopes: vec![w.rg()],
                    max_duration: "1h".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    // Every lease ends in the same second, far enough out that all are live well before the
    // earliest has to start, 5 s before the end.
    let end = Utc::now() + TimeDelta::seconds(10);
    let end_text = end.to_rfc3339_opts(SecondsFormat::Secs, true);
    for i in 0..LEASES {
        let mut g = AccessGrant::new(
            &format!("crowd-{i:02}"),
            AccessGrantSpec {
                identity: IdentityRef {
                    service_principal: Some(ObjectIdRef {
                        object_id: principal(i),
                    }),
                    ..Default::default()
                },
                roles: vec![RoleRequest {
                    role: "Reader".into(),
                    scope: w.rg(),
                    condition: None,
                }],
                window: Some(Box::new(Window {
                    not_before: None,
                    not_after: Some(end_text.clone()),
                })),
                justification: Some("in-process test".into()),
                ..Default::default()
            },
        );
        g.metadata.namespace = Some(NS.into());
        w.create(&g).await.unwrap();
    }
    for i in 0..LEASES {
        w.wait_phase(&format!("crowd-{i:02}"), GrantPhase::Active)
            .await
            .unwrap();
    }
    // The plan is made within a second of the leases going live, and the gauge says so.
    w.until("the plan to end leases early", || {
        w.ctx.metrics.leases_ending_early.get() > 0
    })
    .await
    .unwrap();
    let mut ended = Vec::new();
    for i in 0..LEASES {
        let name = format!("crowd-{i:02}");
        let g = w.wait_phase(&name, GrantPhase::Expired).await.unwrap();
        ended.push((name, g));
    }

    // Azure's view: every assignment deleted once, none refused, none after its lease's end
    // by more than the targets' 3 s.
    let deletes: Vec<_> = w
        .calls(
            "DELETE",
            "/providers/Microsoft.Authorization/roleAssignments/",
        )
        .into_iter()
        .filter(succeeded)
        .collect();
    assert_eq!(deletes.len(), LEASES, "one delete per lease");
    let refused = w
        .calls("DELETE", "/roleAssignments/")
        .into_iter()
        .filter(|c| c.status == 429)
        .count();
    assert_eq!(refused, 0, "deletes stayed within the budget");
    let expires: DateTime<Utc> = ended[0]
        .1
        .status
        .as_ref()
        .and_then(|s| s.expires_at)
        .unwrap();
    let latest = deletes.iter().map(|c| c.time).max().unwrap();
    let overstay = (latest - expires).as_seconds_f64();
    assert!(
        overstay <= 3.0,
        "the last delete went {overstay:.1}s after the leases' end"
    );

    // Each lease's record says whether and how early it ended, and why.
    let mut early: Vec<u32> = Vec::new();
    for (name, g) in &ended {
        let st = g.status.as_ref().unwrap();
        assert_eq!(
            st.expires_at,
            Some(expires),
            "{name}: the expiry as granted"
        );
        assert_eq!(st.end_reason, Some(EndReason::Expired), "{name}");
        let ended_at = st.ended_at.unwrap();
        match st.ended_early_seconds {
            Some(s) => {
                let by = (expires - ended_at).as_seconds_f64();
                assert!(
                    by > 0.0 && (f64::from(s) - by).abs() < 1.0,
                    "{name}: endedEarlySeconds {s} for an end {by:.2}s early"
                );
                let msg = st.message.as_deref().unwrap_or_default();
                assert!(
                    msg.contains("synchronized expiry")
                        && msg.contains(&format!("subscription {}", w.sub.to_ascii_lowercase())),
                    "{name}: {msg}"
                );
                early.push(s);
            }
            None => assert!(
                ended_at >= expires,
                "{name} ended before its expiry without saying so"
            ),
        }
    }
    // (12 − 3) / 1.8: the budget (less its headroom) forces the earliest 5 s early, and no
    // lease ends earlier than that (a second for the rounding up and the plan's step).
    let earliest = early.iter().max().copied().unwrap_or_default();
    assert!(
        (4..=6).contains(&earliest),
        "the earliest lease ended {earliest}s early; the budget forces 5"
    );
    assert!(
        early.len() >= 6 && early.len() < LEASES,
        "{} of {LEASES} leases ended early: the ones the burst covers end on time",
        early.len()
    );
    w.until("the plan to be empty again", || {
        w.ctx.metrics.leases_ending_early.get() == 0
    })
    .await
    .unwrap();
    let first_early = ended
        .iter()
        .find(|(_, g)| {
            g.status
                .as_ref()
                .is_some_and(|s| s.ended_early_seconds == Some(earliest))
        })
        .map(|(name, _)| name.clone())
        .unwrap();
    let events = events(&w, &first_early).await.unwrap();
    assert!(
        events.iter().any(|(_, reason, _)| reason == "EndedEarly"),
        "{events:?}"
    );
    eprintln!(
        "{} of {LEASES} leases ended early (at most {earliest}s); last delete {overstay:.2}s \
         after the end",
        early.len()
    );
}
