//! What the client needs to know: which cloud, which credential, extra CA roots, budget, timeout.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::limiter::LimitsConfig;

/// The Azure cloud whose endpoints the client talks to.
// Built once per process; keeping `Custom` unboxed keeps the agreed API simple to construct.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGovernment,
    China,
    /// Azure Stack, private clouds, the sandbox: every endpoint given.
    Custom {
        arm: Url,
        graph: Url,
        authority: Url,
    },
}

impl Cloud {
    fn defaults(&self) -> Result<Endpoints, ConfigError> {
        let (arm, graph, authority) = match self {
            Cloud::Public => (
                "https://management.azure.com/",
                "https://graph.microsoft.com/",
                "https://login.microsoftonline.com/",
            ),
            Cloud::UsGovernment => (
                "https://management.usgovcloudapi.net/",
                "https://graph.microsoft.us/",
                "https://login.microsoftonline.us/",
            ),
            Cloud::China => (
                "https://management.chinacloudapi.cn/",
                "https://microsoftgraph.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
            ),
            Cloud::Custom {
                arm,
                graph,
                authority,
            } => {
                return Ok(Endpoints {
                    arm: arm.clone(),
                    graph: graph.clone(),
                    authority: authority.clone(),
                });
            }
        };
        let parse = |field: &'static str, s: &str| {
            Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
                field,
                url: s.to_owned(),
                reason: e.to_string(),
            })
        };
        Ok(Endpoints {
            arm: parse("cloud", arm)?,
            graph: parse("cloud", graph)?,
            authority: parse("cloud", authority)?,
        })
    }
}

/// Parses `public`, `usgovernment`, `china` and the `az cloud` names (`AzureCloud`,
/// `AzureUSGovernment`, `AzureChinaCloud`), case-insensitively. Custom clouds are built from
/// their endpoints instead.
impl FromStr for Cloud {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Cloud, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public" | "azurecloud" | "azurepubliccloud" => Ok(Cloud::Public),
            "usgovernment" | "usgov" | "azureusgovernment" | "azureusgovernmentcloud" => {
                Ok(Cloud::UsGovernment)
            }
            "china" | "azurechinacloud" => Ok(Cloud::China),
            _ => Err(ConfigError::UnknownCloud { name: s.to_owned() }),
        }
    }
}

/// How the operator authenticates to Entra ID.
#[derive(Clone)]
pub enum CredentialConfig {
    /// An app registration's client secret (development, CI).
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
    },
    /// Workload identity federation, as on AKS: the projected ServiceAccount token in
    /// `token_file` (`AZURE_FEDERATED_TOKEN_FILE`) is exchanged for Entra tokens. The file is
    /// re-read as the kubelet rotates it.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    /// Whoever is logged in to the Azure CLI (`az account get-access-token`), for people
    /// running tools such as `kubectl lapse audit` from their own machine. Tokens are cached
    /// until shortly before they expire (the CLI itself is slow to ask).
    AzureCli {
        /// The tenant to ask the CLI for; its default tenant when `None`.
        tenant_id: Option<String>,
    },
}

impl CredentialConfig {
    /// The tenant, when the configuration names one.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            CredentialConfig::ClientSecret { tenant_id, .. }
            | CredentialConfig::WorkloadIdentity { tenant_id, .. } => Some(tenant_id),
            CredentialConfig::AzureCli { tenant_id } => tenant_id.as_deref(),
        }
    }

    /// The client (application) ID, when the configuration names one.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            CredentialConfig::ClientSecret { client_id, .. }
            | CredentialConfig::WorkloadIdentity { client_id, .. } => Some(client_id),
            CredentialConfig::AzureCli { .. } => None,
        }
    }
}

// Hand-written so the secret can never reach a log line through `{:?}`.
impl fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret: _,
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", &"[REDACTED]")
                .finish(),
            CredentialConfig::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
            CredentialConfig::AzureCli { tenant_id } => f
                .debug_struct("AzureCli")
                .field("tenant_id", tenant_id)
                .finish(),
        }
    }
}

/// Everything [`crate::AzureClient::new`] needs.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    pub cloud: Cloud,
    /// Overrides the cloud's ARM endpoint.
    pub arm_endpoint: Option<Url>,
    /// Overrides the cloud's Microsoft Graph endpoint.
    pub graph_endpoint: Option<Url>,
    /// Overrides the cloud's Entra ID authority host.
    pub authority_host: Option<Url>,
    pub credential: CredentialConfig,
    /// Extra PEM roots trusted for ARM, Graph and the token endpoint, on top of the system's.
    pub ca_bundle: Option<PathBuf>,
    pub limits: LimitsConfig,
    /// Bound on one HTTP exchange (not on time spent waiting for budget).
    pub timeout: Duration,
}

impl AzureConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration with the cloud's own endpoints, system roots, ARM's default budget and a
    /// 30 s timeout.
    pub fn new(cloud: Cloud, credential: CredentialConfig) -> AzureConfig {
        AzureConfig {
            cloud,
            arm_endpoint: None,
            graph_endpoint: None,
            authority_host: None,
            credential,
            ca_bundle: None,
            limits: LimitsConfig::default(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The endpoints in effect (overrides applied), each checked to be a plain `https` base URL.
    pub fn endpoints(&self) -> Result<Endpoints, ConfigError> {
        let defaults = self.cloud.defaults()?;
        let endpoints = Endpoints {
            arm: self.arm_endpoint.clone().unwrap_or(defaults.arm),
            graph: self.graph_endpoint.clone().unwrap_or(defaults.graph),
            authority: self.authority_host.clone().unwrap_or(defaults.authority),
        };
        check_base_url("arm_endpoint", &endpoints.arm)?;
        check_base_url("graph_endpoint", &endpoints.graph)?;
        check_base_url("authority_host", &endpoints.authority)?;
        Ok(endpoints)
    }

    pub(crate) fn validate(&self) -> Result<Endpoints, ConfigError> {
        let endpoints = self.endpoints()?;
        self.limits.validate().map_err(ConfigError::Limits)?;
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        let cred = &self.credential;
        if !matches!(cred, CredentialConfig::AzureCli { .. }) {
            non_empty("credential.tenant_id", cred.tenant_id().unwrap_or_default())?;
            non_empty("credential.client_id", cred.client_id().unwrap_or_default())?;
        }
        if cred
            .tenant_id()
            .unwrap_or_default()
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(ConfigError::Credential {
                field: "credential.tenant_id",
                reason: "may contain only letters, digits, `-` and `.`".to_owned(),
            });
        }
        if let CredentialConfig::ClientSecret { secret, .. } = cred {
            use secrecy::ExposeSecret;
            if secret.expose_secret().is_empty() {
                return Err(ConfigError::Credential {
                    field: "credential.secret",
                    reason: "is empty".to_owned(),
                });
            }
        }
        Ok(endpoints)
    }
}

fn non_empty(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::Credential {
            field,
            reason: "is empty".to_owned(),
        });
    }
    Ok(())
}

fn check_base_url(field: &'static str, url: &Url) -> Result<(), ConfigError> {
    let refuse = |reason: &str| ConfigError::InvalidUrl {
        field,
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    if url.scheme() != "https" {
        // Bearer tokens and client secrets must never travel in clear text.
        return Err(refuse("must use https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("must not carry credentials"));
    }
    Ok(())
}

/// The endpoints in effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub arm: Url,
    pub graph: Url,
    pub authority: Url,
}

impl Endpoints {
    /// The token scope for ARM: `{arm}/.default`.
    pub fn arm_scope(&self) -> String {
        scope_of(&self.arm)
    }

    /// The token scope for Microsoft Graph: `{graph}/.default`.
    pub fn graph_scope(&self) -> String {
        scope_of(&self.graph)
    }
}

fn scope_of(url: &Url) -> String {
    format!("{}/.default", url.as_str().trim_end_matches('/'))
}

#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    #[error("unknown Azure cloud `{name}`: expected public, usgovernment or china")]
    UnknownCloud { name: String },
    #[error("{field} `{url}` is not usable: {reason}")]
    InvalidUrl {
        field: &'static str,
        url: String,
        reason: String,
    },
    #[error("{field} {reason}")]
    Credential { field: &'static str, reason: String },
    #[error("ca_bundle {}: {reason}", path.display())]
    CaBundle { path: PathBuf, reason: String },
    #[error("{0}")]
    Limits(String),
    #[error("timeout must be greater than zero")]
    Timeout,
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_config() -> AzureConfig {
        AzureConfig::new(
            Cloud::Public,
            CredentialConfig::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                secret: SecretString::from("hunter2-very-secret"),
            },
        )
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let text = format!("{:?}", secret_config());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        assert!(text.contains("client_id"), "{text}");
    }

    #[test]
    fn clouds_have_their_endpoints_and_scopes() {
        let mut cfg = secret_config();
        let e = cfg.endpoints().unwrap();
        assert_eq!(e.arm_scope(), "https://management.azure.com/.default");
        assert_eq!(e.graph_scope(), "https://graph.microsoft.com/.default");
        cfg.cloud = Cloud::UsGovernment;
        let e = cfg.endpoints().unwrap();
        assert_eq!(e.authority.as_str(), "https://login.microsoftonline.us/");
        assert_eq!(
            e.arm_scope(),
            "https://management.usgovcloudapi.net/.default"
        );
        cfg.cloud = Cloud::China;
        assert_eq!(
            cfg.endpoints().unwrap().graph_scope(),
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        cfg.arm_endpoint = Some(Url::parse("https://127.0.0.1:8443").unwrap());
        assert_eq!(
            cfg.endpoints().unwrap().arm_scope(),
            "https://127.0.0.1:8443/.default"
        );
        assert_eq!(
            "AzureUSGovernment".parse::<Cloud>().unwrap(),
            Cloud::UsGovernment
        );
        assert!(
            "mars"
                .parse::<Cloud>()
                .unwrap_err()
                .to_string()
                .contains("mars")
        );
    }

    #[test]
    fn plain_http_endpoints_are_refused_by_name() {
        let mut cfg = secret_config();
        cfg.authority_host = Some(Url::parse("http://login.example").unwrap());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("authority_host") && err.contains("https"),
            "{err}"
        );
    }

    #[test]
    fn empty_credential_fields_are_refused_by_name() {
        let mut cfg = secret_config();
        cfg.credential = CredentialConfig::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: SecretString::from(""),
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("credential.secret"), "{err}");
        cfg.credential = CredentialConfig::WorkloadIdentity {
            tenant_id: "bad/tenant".into(),
            client_id: "c".into(),
            token_file: "/x".into(),
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("credential.tenant_id"), "{err}");
    }

    #[test]
    fn the_azure_cli_needs_no_client_and_may_name_a_tenant() {
        let mut cfg = secret_config();
        cfg.credential = CredentialConfig::AzureCli { tenant_id: None };
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.credential.client_id(), None);
        cfg.credential = CredentialConfig::AzureCli {
            tenant_id: Some("contoso.onmicrosoft.com".into()),
        };
        assert!(cfg.validate().is_ok());
        cfg.credential = CredentialConfig::AzureCli {
            tenant_id: Some("bad tenant".into()),
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("credential.tenant_id"), "{err}");
    }
}
