//! Integration tests of sim-azure over HTTPS (one binary: faster to build and link).

// Test helpers outside `#[test]` functions fail loudly too; clippy's test allowance does not
// reach them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod contract;
mod estate;
mod federation;
mod graph;
mod identities;
mod least_privilege;
mod locks;
mod logs;
mod operations;
mod pim;
mod role_assignments;
mod sdk;
mod sim_kube;
mod wire;
