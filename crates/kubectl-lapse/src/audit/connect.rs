//! The audit's Azure client: lapse-azure's, configured from the variables the operator reads
//! (`LAPSE_AZURE_CLOUD`, `LAPSE_ARM_ENDPOINT`, `LAPSE_GRAPH_ENDPOINT`, `AZURE_AUTHORITY_HOST`,
//! `LAPSE_AZURE_CA_BUNDLE`), so what points the operator at a cloud (or at the sandbox) points
//! the audit there too; with the caller's own credentials, the first of: a client secret, a
//! workload identity token file, the Azure CLI's login.

use std::time::Duration;

use lapse_azure::{
    AzureClient, AzureConfig, BucketConfig, Cloud, CredentialConfig, LimitsConfig, SecretString,
    Url,
};

use crate::cli::AuditArgs;
use crate::exit::Stop;

/// Where the credential came from, for the audit's own report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    ClientSecret,
    WorkloadIdentity,
    AzureCli,
}

impl CredentialSource {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::ClientSecret => "a client secret from AZURE_CLIENT_SECRET",
            Self::WorkloadIdentity => "a workload identity token from AZURE_FEDERATED_TOKEN_FILE",
            Self::AzureCli => "the Azure CLI's login",
        }
    }
}

/// The credential chain over these variables: environment (a client secret), workload
/// identity (a token file), then the Azure CLI.
pub fn credential(
    var: impl Fn(&str) -> Option<String>,
) -> Result<(CredentialConfig, CredentialSource), Stop> {
    let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    let tenant = get("AZURE_TENANT_ID");
    let client = get("AZURE_CLIENT_ID");
    let missing = |what: &str| {
        Stop::Usage(format!(
            "{what} is set but AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set: set them, \
             or unset it to use the Azure CLI's login"
        ))
    };
    if let Some(secret) = get("AZURE_CLIENT_SECRET") {
        let (Some(tenant_id), Some(client_id)) = (tenant, client) else {
            return Err(missing("AZURE_CLIENT_SECRET"));
        };
        return Ok((
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret: SecretString::from(secret),
            },
            CredentialSource::ClientSecret,
        ));
    }
    if let Some(file) = get("AZURE_FEDERATED_TOKEN_FILE") {
        let (Some(tenant_id), Some(client_id)) = (tenant, client) else {
            return Err(missing("AZURE_FEDERATED_TOKEN_FILE"));
        };
        return Ok((
            CredentialConfig::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file: file.into(),
            },
            CredentialSource::WorkloadIdentity,
        ));
    }
    Ok((
        CredentialConfig::AzureCli { tenant_id: tenant },
        CredentialSource::AzureCli,
    ))
}

fn url(flag: &str, value: Option<&str>) -> Result<Option<Url>, Stop> {
    value
        .map(|v| Url::parse(v).map_err(|e| Stop::Usage(format!("{flag}: {v:?} is not a URL: {e}"))))
        .transpose()
}

/// The client configuration from the flags (and their variables) and the credential.
pub fn config(args: &AuditArgs, credential: CredentialConfig) -> Result<AzureConfig, Stop> {
    let arm = url(
        "--arm-endpoint (LAPSE_ARM_ENDPOINT)",
        args.arm_endpoint.as_deref(),
    )?;
    let graph = url(
        "--graph-endpoint (LAPSE_GRAPH_ENDPOINT)",
        args.graph_endpoint.as_deref(),
    )?;
    let authority = url(
        "--authority-host (AZURE_AUTHORITY_HOST)",
        args.authority_host.as_deref(),
    )?;
    let cloud = if args.azure_cloud.eq_ignore_ascii_case("custom") {
        match (&arm, &graph, &authority) {
            (Some(arm), Some(graph), Some(authority)) => Cloud::Custom {
                arm: arm.clone(),
                graph: graph.clone(),
                authority: authority.clone(),
            },
            _ => {
                return Err(Stop::Usage(
                    "--azure-cloud custom (LAPSE_AZURE_CLOUD): also set --arm-endpoint \
                     (LAPSE_ARM_ENDPOINT), --graph-endpoint (LAPSE_GRAPH_ENDPOINT) and \
                     --authority-host (AZURE_AUTHORITY_HOST)"
                        .into(),
                ));
            }
        }
    } else {
        args.azure_cloud
            .parse::<Cloud>()
            .map_err(|e| Stop::Usage(format!("--azure-cloud (LAPSE_AZURE_CLOUD): {e}")))?
    };
    if args.max_reads_per_second == 0 {
        return Err(Stop::Usage(
            "--max-reads-per-second must be at least 1".into(),
        ));
    }
    let rate = f64::from(args.max_reads_per_second);
    let reads = BucketConfig {
        capacity: args.max_reads_per_second,
        refill_per_second: rate,
    };
    let mut cfg = AzureConfig::new(cloud, credential);
    cfg.arm_endpoint = arm;
    cfg.graph_endpoint = graph;
    cfg.authority_host = authority;
    cfg.ca_bundle = args.azure_ca_bundle.clone();
    cfg.limits = LimitsConfig {
        reads,
        // The audit never writes; a write budget of one guards that.
        writes: BucketConfig {
            capacity: 1,
            refill_per_second: 0.1,
        },
        deletes: BucketConfig {
            capacity: 1,
            refill_per_second: 0.1,
        },
        graph: Some(reads),
        max_in_flight: 8,
    };
    cfg.timeout = Duration::from_secs(30);
    Ok(cfg)
}

/// The audit's Azure client.
pub fn client(args: &AuditArgs) -> anyhow::Result<(AzureClient, CredentialSource)> {
    let (credential, source) = credential(|k| std::env::var(k).ok())?;
    let cfg = config(args, credential)?;
    let client = AzureClient::new(cfg).map_err(|e| Stop::Usage(format!("Azure settings: {e}")))?;
    Ok((client, source))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_chain_takes_a_secret_then_a_token_file_then_the_cli() {
        let base = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            credential(vars(&all)).map(|(_, s)| s).ok()
        };
        assert_eq!(
            with(&[
                ("AZURE_CLIENT_SECRET", "s"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/f")
            ]),
            Some(CredentialSource::ClientSecret)
        );
        assert_eq!(
            with(&[("AZURE_FEDERATED_TOKEN_FILE", "/f")]),
            Some(CredentialSource::WorkloadIdentity)
        );
        assert_eq!(with(&[]), Some(CredentialSource::AzureCli));
        let (cli, _) =
            credential(vars(&[("AZURE_TENANT_ID", "t")])).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli, CredentialConfig::AzureCli { tenant_id: Some(t) } if t == "t"));
        // A half-set secret is a mistake to name, not a reason to fall through to the CLI.
        let err = credential(vars(&[("AZURE_CLIENT_SECRET", "s")])).err();
        assert!(
            matches!(&err, Some(Stop::Usage(m)) if m.contains("AZURE_TENANT_ID")),
            "{err:?}"
        );
    }

    fn args(extra: &[&str]) -> AuditArgs {
        let mut argv = vec!["kubectl-lapse", "audit"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Audit(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_operators_endpoint_settings_point_the_audit() {
        let a = args(&[
            "--arm-endpoint",
            "https://127.0.0.1:8443",
            "--graph-endpoint",
            "https://127.0.0.1:8443",
            "--authority-host",
            "https://127.0.0.1:8443",
            "--max-reads-per-second",
            "5",
        ]);
        let cfg = config(&a, CredentialConfig::AzureCli { tenant_id: None })
            .unwrap_or_else(|e| panic!("{e}"));
        let endpoints = cfg.endpoints().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(endpoints.arm.as_str(), "https://127.0.0.1:8443/");
        assert_eq!(cfg.limits.reads.capacity, 5);
        assert_eq!(cfg.limits.graph.map(|g| g.refill_per_second), Some(5.0));
        let custom = args(&["--azure-cloud", "custom"]);
        assert!(config(&custom, CredentialConfig::AzureCli { tenant_id: None }).is_err());
        let bad = args(&["--azure-cloud", "mars"]);
        assert!(config(&bad, CredentialConfig::AzureCli { tenant_id: None }).is_err());
    }
}
