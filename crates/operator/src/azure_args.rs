//! The Azure settings `run` and `check` share: cloud, endpoints, CA bundle and the operator's
//! own credential, each with the environment variable the Azure SDKs and the AKS workload
//! identity webhook use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use lapse_azure::{AzureConfig, Cloud, CredentialConfig, LimitsConfig};

#[derive(Debug, Args)]
pub struct AzureArgs {
    /// Azure cloud whose default endpoints to use.
    #[arg(long, env = "LAPSE_AZURE_CLOUD", value_enum, default_value_t = CloudName::Public)]
    pub azure_cloud: CloudName,

    /// Azure Resource Manager endpoint (overrides the cloud's).
    #[arg(long, env = "LAPSE_ARM_ENDPOINT")]
    pub arm_endpoint: Option<url::Url>,

    /// Microsoft Graph endpoint (overrides the cloud's).
    #[arg(long, env = "LAPSE_GRAPH_ENDPOINT")]
    pub graph_endpoint: Option<url::Url>,

    /// Entra authority host (overrides the cloud's).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<url::Url>,

    /// Extra PEM CA certificates trusted for ARM, Graph and the token endpoint.
    #[arg(long, env = "LAPSE_AZURE_CA_BUNDLE")]
    pub azure_ca_bundle: Option<PathBuf>,

    /// Entra tenant of the operator's identity.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub tenant_id: String,

    /// Client (application) ID of the operator's identity.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub client_id: String,

    /// Client secret (development). Prefer workload identity in clusters.
    #[arg(
        long,
        env = "AZURE_CLIENT_SECRET",
        hide_env_values = true,
        conflicts_with = "federated_token_file"
    )]
    pub client_secret: Option<SecretArg>,

    /// Projected ServiceAccount token for workload identity (set by the AKS webhook).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub federated_token_file: Option<PathBuf>,
}

/// A secret given on the command line or in the environment: never printed, not even by
/// `Debug` (which logs and error reports use).
#[derive(Clone)]
pub struct SecretArg(lapse_azure::SecretString);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned().into()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CloudName {
    Public,
    UsGovernment,
    China,
    /// Azure Stack or another cloud: --arm-endpoint, --graph-endpoint and --authority-host
    /// are all required.
    Custom,
}

impl AzureArgs {
    /// The Azure client configuration; each error names the setting and its variable.
    pub fn config(&self) -> anyhow::Result<AzureConfig> {
        if let Some(ca) = &self.azure_ca_bundle
            && !ca.is_file()
        {
            bail!(
                "--azure-ca-bundle (LAPSE_AZURE_CA_BUNDLE): {} is not a readable file",
                ca.display()
            );
        }
        let credential = match (&self.client_secret, &self.federated_token_file) {
            (Some(secret), None) => CredentialConfig::ClientSecret {
                tenant_id: self.tenant_id.clone(),
                client_id: self.client_id.clone(),
                secret: secret.0.clone(),
            },
            (None, Some(file)) => CredentialConfig::WorkloadIdentity {
                tenant_id: self.tenant_id.clone(),
                client_id: self.client_id.clone(),
                token_file: file.clone(),
            },
            _ => bail!(
                "Azure credentials: set exactly one of --client-secret (AZURE_CLIENT_SECRET) or --federated-token-file (AZURE_FEDERATED_TOKEN_FILE)"
            ),
        };
        let cloud = match self.azure_cloud {
            CloudName::Public => Cloud::Public,
            CloudName::UsGovernment => Cloud::UsGovernment,
            CloudName::China => Cloud::China,
            CloudName::Custom => match (
                &self.arm_endpoint,
                &self.graph_endpoint,
                &self.authority_host,
            ) {
                (Some(arm), Some(graph), Some(authority)) => Cloud::Custom {
                    arm: arm.clone(),
                    graph: graph.clone(),
                    authority: authority.clone(),
                },
                _ => bail!(
                    "--azure-cloud custom (LAPSE_AZURE_CLOUD): also set --arm-endpoint (LAPSE_ARM_ENDPOINT), --graph-endpoint (LAPSE_GRAPH_ENDPOINT) and --authority-host (AZURE_AUTHORITY_HOST)"
                ),
            },
        };
        Ok(AzureConfig {
            cloud,
            arm_endpoint: self.arm_endpoint.clone(),
            graph_endpoint: self.graph_endpoint.clone(),
            authority_host: self.authority_host.clone(),
            credential,
            ca_bundle: self.azure_ca_bundle.clone(),
            limits: LimitsConfig::default(),
            timeout: Duration::from_secs(30),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_secret_never_shows_in_debug_output() {
        let secret: SecretArg = "hunter2-very-secret".parse().unwrap_or_else(|e| match e {});
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let shown = format!("{:?}", Some(secret));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
