//! The lapse.dev API and the pure lease logic: CRD types, domain types (durations, ARM IDs,
//! roles, derived names), policy evaluation and the lease decision core. Nothing here does I/O.
#![forbid(unsafe_code)]

pub mod approval;
pub mod arm;
pub mod chat;
pub mod duration;
pub mod field;
pub mod hours;
pub mod lease;
pub mod lock;
pub mod naming;
pub mod policy;
pub mod role;
pub mod ticket;
pub mod usage;
pub mod v1alpha1;
pub mod validate;
