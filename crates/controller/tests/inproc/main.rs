//! In-process controller tests: sim-kube and sim-azure run as libraries inside the test, the
//! controllers are built and run as `lapse-operator run` builds and runs them, and each test
//! asserts through the Kubernetes API and Azure's audit log. One binary, one world per test;
//! each test takes milliseconds to a couple of seconds (docs/testing.md, "In-process controller tests").

// Helpers outside `#[test]` functions fail loudly too; clippy's test allowance does not reach
// them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod failing_delete;
mod fic_conflict;
mod fixtures;
mod logs_backlog;
mod logs_wire;
mod pim_wire;
mod recreated;
mod rounds;
mod standing;
mod synchronized;
mod usage;
