//! ARM and Microsoft Graph client on azure_core/azure_identity: typed calls, error taxonomy, per-subscription rate limiter that serves revocations first.

#![forbid(unsafe_code)]
