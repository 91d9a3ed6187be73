use std::time::Duration;

/// How soon a grant whose finalizer patch was refused for a stale cached copy is tried again,
/// unless the watch brings the fresh copy first.
const STALE_COPY_RETRY: Duration = Duration::from_secs(15);

/// Why a reconcile did not finish. Each says what was being done.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("writing the status of AccessGrant {grant}: {source}")]
    StatusWrite { grant: String, source: kube::Error },

    #[error("encoding the status of AccessGrant {grant}: {reason}")]
    StatusEncode { grant: String, reason: String },

    /// The grant cache holds only what this process packed: a bug, never bad input.
    #[error("the cached copy of grant {grant} does not unpack: {reason}")]
    Unpack { grant: String, reason: String },

    #[error("AccessGrant {grant}: revocation not finished yet; retrying in {}s", retry_after.as_secs())]
    RevocationPending {
        grant: String,
        retry_after: Duration,
    },

    #[error("finalizer of AccessGrant: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("starting notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),

    #[error("the AccessGrant has no namespace")]
    NoNamespace,

    #[error(
        "setting spec.revoked on AccessGrant {grant} after its status was tampered with: {source}"
    )]
    RevokeWrite { grant: String, source: kube::Error },

    #[error("the owner identity: {0} (check --cluster-name, --cluster-id and --shard)")]
    Owner(#[from] lapse_api::naming::NamingError),

    #[error("reading the status seal key from the {what}: {reason}")]
    SealKey { what: String, reason: String },

    #[error(
        "learning this cluster's identity from namespace kube-system: {0}; the operator needs get on namespaces, or set --cluster-id (LAPSE_CLUSTER_ID)"
    )]
    ClusterId(#[source] kube::Error),

    #[error("configuring the Azure client: {0}")]
    AzureConfig(lapse_azure::ConfigError),

    #[error("configuring the ticket checkers: {0}")]
    Tickets(String),
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::StatusWrite { .. } => "status_write",
            Self::StatusEncode { .. } => "status_encode",
            Self::Unpack { .. } => "unpack",
            Self::RevocationPending { .. } => "revocation_pending",
            Self::Finalizer(_) => "finalizer",
            Self::NoNamespace => "no_namespace",
            Self::RevokeWrite { .. } => "revoke_write",
            Self::SealKey { .. } => "seal_key",
            Self::ClusterId(_) => "cluster_id",
            Self::Owner(_) => "owner",
            Self::AzureConfig(_) => "azure_config",
            Self::Notify(_) => "notify",
            Self::Tickets(_) => "tickets",
        }
    }

    /// How soon to retry, when the error knows better than the default backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RevocationPending { retry_after, .. } => Some(*retry_after),
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(inner)
                | kube::runtime::finalizer::Error::ApplyFailed(inner) => inner.retry_after(),
                // The finalizer's JSON patch tests the cached list of finalizers: 422 or 409
                // means the cache is behind the grant. The watch event that catches it up
                // reconciles the grant again; retrying every few seconds before that only
                // adds refused writes to an API server already behind (a flood of creates).
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                    if s.code == 409 || s.code == 422 =>
                {
                    Some(STALE_COPY_RETRY)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::runtime::finalizer::Error as FinalizerError;

    use super::*;

    fn refused(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("the server rejected our request", "Invalid")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_finalizer_patch_refused_for_a_stale_copy_waits_for_the_watch() {
        for code in [409, 422] {
            let add = Error::Finalizer(Box::new(FinalizerError::AddFinalizer(refused(code))));
            assert_eq!(add.retry_after(), Some(STALE_COPY_RETRY), "{code}");
            let remove = Error::Finalizer(Box::new(FinalizerError::RemoveFinalizer(refused(code))));
            assert_eq!(remove.retry_after(), Some(STALE_COPY_RETRY), "{code}");
        }
        // Anything else keeps the default backoff.
        let unavailable = Error::Finalizer(Box::new(FinalizerError::AddFinalizer(refused(503))));
        assert_eq!(unavailable.retry_after(), None);
    }
}
