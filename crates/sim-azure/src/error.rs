//! Errors of the library API (starting, seeding, writing files), as opposed to the HTTP error
//! responses the simulator serves (see `api_error`).

use std::path::PathBuf;

/// What went wrong while starting, seeding or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimAzureError {
    /// The certificate authority or server certificate could not be generated.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The token signing key could not be generated or loaded.
    #[error("token signing key: {0}")]
    SigningKey(String),
    /// The listening socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address that was asked for.
        addr: std::net::SocketAddr,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The seed refers to something that does not exist or is malformed.
    #[error("seed field `{field}`: {reason}")]
    Seed {
        /// Dotted path of the offending seed field.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The seed YAML could not be parsed.
    #[error("seed YAML: {0}")]
    SeedYaml(#[from] serde_yaml_ng::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File that could not be written.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A scope could not be deleted (it does not exist, or is not a resource group or resource).
    #[error("cannot delete scope `{scope}`: {reason}")]
    DeleteScope {
        /// The scope given.
        scope: String,
        /// ARM's refusal.
        reason: String,
    },
    /// A fault rule's path pattern is not a valid regular expression.
    #[error("fault rule path pattern `{pattern}`: {reason}")]
    FaultPattern {
        /// The pattern given.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
}

impl SimAzureError {
    pub(crate) fn seed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Seed {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
