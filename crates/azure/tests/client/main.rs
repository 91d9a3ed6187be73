//! lapse-azure against a scripted transport: request shapes, paging, status handling, error
//! classes, FIC serialisation, pacing and redaction.

// Test helpers outside `#[test]` functions fail loudly too; clippy's test allowance does not
// reach them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod arm;
mod auth;
mod errors;
mod fake;
mod graph;
mod limits;
mod logs;
mod pim;
