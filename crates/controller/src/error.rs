use std::time::Duration;

/// Why a reconcile did not finish. Each says what was being done.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("writing the status of AccessGrant {grant}: {source}")]
    StatusWrite { grant: String, source: kube::Error },

    #[error("AccessGrant {grant}: revocation not finished yet; retrying in {}s", retry_after.as_secs())]
    RevocationPending {
        grant: String,
        retry_after: Duration,
    },

    #[error("finalizer of AccessGrant: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("the AccessGrant has no namespace")]
    NoNamespace,
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::StatusWrite { .. } => "status_write",
            Self::RevocationPending { .. } => "revocation_pending",
            Self::Finalizer(_) => "finalizer",
            Self::NoNamespace => "no_namespace",
        }
    }

    /// How soon to retry, when the error knows better than the default backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RevocationPending { retry_after, .. } => Some(*retry_after),
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(inner)
                | kube::runtime::finalizer::Error::ApplyFailed(inner) => inner.retry_after(),
                _ => None,
            },
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
