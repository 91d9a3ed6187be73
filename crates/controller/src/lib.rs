//! Reconcilers for AccessGrant and AccessPolicy: drives the pure lease decision core, schedules expiry, sweeps orphans, emits Events and metrics.

#![forbid(unsafe_code)]
