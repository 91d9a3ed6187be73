//! Kubernetes API server for tests and demos that speaks the real REST protocol over HTTPS (library).

#![forbid(unsafe_code)]
