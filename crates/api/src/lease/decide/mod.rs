//! The lease decision: one pure step from what is known to what to do next.
//!
//! The controller calls [`decide`], persists the returned status, makes the returned calls,
//! records their outcomes in the [`AzureView`](super::AzureView) and calls [`decide`] again, until
//! no call is left. Everything the invariants of docs/architecture.md ("Invariants") need is
//! decided here.
//!
//! What the core acts on is derived from the spec, the policies, the operator's owner identity,
//! server-set times and what Azure holds. The status is read only when it carries the
//! operator's seal ([`StatusTrust::Sealed`](super::StatusTrust::Sealed)); deletes are aimed at
//! derived names only.
//!
//! One module per lifecycle stage, each an `impl` block of `Step` (the decision's state and
//! primitives, in `step`): `trust`, `admission`, `approval`, `activation`, `running`, `ending`.
//! Calls go one way: every stage may end the lease (`ending`), `admission` asks `approval` and
//! hands its result to `activation`, `running` asks `approval` and reuses `activation`'s
//! planning and object stage; nothing calls back. `workflow` holds the policy's bounds
//! (`activeHours`, `maxExtensions`) that `activation` and `running` apply; `usage` counts
//! what Azure's logs showed and ends a lease that did something its policy revokes for.

mod activation;
mod admission;
mod approval;
mod ending;
mod running;
mod step;
mod trust;
mod usage;
mod workflow;

use step::Step;

use crate::lease::model::{Decision, LeaseInput};
use crate::v1alpha1::GrantPhase;
use crate::validate::validate_grant;

/// Decides the next step of one lease.
pub fn decide(input: &LeaseInput<'_>) -> Decision {
    let mut step = Step::new(input);
    step.run();
    step.finish()
}

impl Step<'_> {
    /// The stages, in the order they get their say.
    fn run(&mut self) {
        if self.distrust() {
            return;
        }
        self.count_usage();
        if self.input.grant.deleting {
            self.end_deleted();
            return;
        }
        if self.st.phase.is_terminal() || self.st.phase == GrantPhase::Revoking {
            self.continue_ending();
            return;
        }
        let req = validate_grant(self.input.grant.spec);
        if self.activated() {
            self.run_activated(req);
        } else if let Some(admitted) = self.admit(req) {
            self.activate(admitted);
        }
    }
}
