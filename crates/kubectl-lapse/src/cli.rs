//! The command line: global flags (kubectl's connection flags and `-o`), the commands, and the
//! documented exit codes. Parsing only; each command lives in its own module.
//!
//! A new command group (an `audit`, say) adds a variant to [`Command`], a module beside the
//! others and one arm in `main.rs`; nothing else here needs to change.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, for `--help` and docs/kubectl-lapse.md.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: the API server could not be reached or refused the call, an object was not found
  2  usage: unknown command or flag, or a flag value that cannot be parsed
  3  refused: lapse does not or would not grant it: no AccessPolicy allows the request (checked
     client-side, with the operator's own evaluation), the grant ended Denied, Failed, Revoked or
     Expired while waiting, or the caller may not approve or deny it;
     audit: findings of a --fail-on kind exist
  4  timed out: --wait gave up before the grant became Active";

/// kubectl plugin for lapse: just-in-time, time-bound Azure access through AccessGrants.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-lapse",
    bin_name = "kubectl lapse",
    version,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags, and the output format. Every command takes them.
#[derive(Debug, Args, Clone, Default)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`)
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (list and pending)
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Act as this user, as `kubectl --as` does (impersonation)
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act as this group, repeatable, as `kubectl --as-group` does
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Output format: a table or text for people (default), or the objects as json or yaml
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Output>,
}

/// `-o`: what to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List AccessGrants: identity, roles, phase, time left and requester
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// One grant's story: requested, allowed, approved, activated, its Azure objects, ended
    Describe(NameArgs),
    /// Ask for access: build an AccessGrant from flags, check it against the AccessPolicies,
    /// create it
    #[command(after_help = REQUEST_HELP)]
    Request(RequestArgs),
    /// Extend a grant's lease (`--by 30m` or `--until TIME`)
    Extend(ExtendArgs),
    /// End a grant's lease now (sets spec.revoked; the grant stays as the record)
    Revoke(NameArgs),
    /// Grants waiting for an approval the caller may give
    Pending,
    /// Approve a grant (an AccessApproval of the caller's, for its current generation)
    Approve(DecideArgs),
    /// Deny a grant (an AccessApproval of the caller's); a comment is required
    Deny(DenyArgs),
    /// What a namespace may request: per AccessPolicy covering it, identities, roles, scopes,
    /// durations, approval and break-glass
    Policies,
    /// Audit Azure for credential paths outside lapse: standing role assignments, federated
    /// credentials lapse did not create, long-lived secrets, orphaned and overstaying objects
    #[command(after_help = AUDIT_HELP)]
    Audit(AuditArgs),
    /// Shell completion script: bash, zsh, fish or powershell
    Completion(CompletionArgs),
    /// Print the plugin's version
    Version,
}

const REQUEST_HELP: &str = "\
Identity (--identity), one of:
  /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>
                      a user-assigned managed identity, by its full resource ID
  sp:<object-id>      a service principal (enterprise application) by object ID (also sp/<id>)
  app:<object-id>     an app registration by object ID (also app/<id>)
The short form mi/<name> that `list` shows is not accepted: it does not say which subscription
and resource group the identity is in.

Lease: --for DURATION (Go syntax: 90s, 30m, 1h30m), or --until TIME (RFC 3339), or both (the
earlier end wins); --from TIME starts it later (phase Scheduled until then).

Examples:
  kubectl lapse request nightly --identity /subscriptions/…/userAssignedIdentities/backup-runner \\
      --role Reader@/subscriptions/…/resourceGroups/payments-rg --service-account backup-runner \\
      --for 1h --justification 'OPS-7 nightly backup' --wait
  kubectl lapse request fix --identity sp:3fa85f64-5717-4562-b3fc-2c963f66afa6 \\
      --role 'Storage Blob Data Reader@/subscriptions/…/storageAccounts/data' --for 30m --dry-run";

const AUDIT_HELP: &str = "\
Azure credentials, the first that is set:
  AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET    a service principal's secret
  AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE    workload identity
  otherwise the Azure CLI's login (az login; AZURE_TENANT_ID picks the tenant)
They need Reader on the audited subscriptions and Microsoft Graph Application.Read.All.
The endpoints and CA bundle come from the operator's variables (LAPSE_ARM_ENDPOINT,
LAPSE_GRAPH_ENDPOINT, AZURE_AUTHORITY_HOST, LAPSE_AZURE_CA_BUNDLE, LAPSE_AZURE_CLOUD), so the
sandbox's azure.env points the audit at it.

The cluster (the kubeconfig, as every command) says which grants claim lapse's objects and
which AccessPolicies exist; without one, Orphan and Overstay are not checked.

Examples:
  kubectl lapse audit
  kubectl lapse audit --subscription 00000000-0000-0000-0000-000000000001 -o json
  kubectl lapse audit --fail-on StandingRoleAssignment,Orphan,Overstay     # a CI gate
  kubectl lapse audit --suggest -n payments > jit.yaml    # policies and grants to review";

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A subscription to audit (repeatable or comma-separated); default: every subscription
    /// the credentials can see
    #[arg(long = "subscription", value_name = "ID", value_delimiter = ',')]
    pub subscriptions: Vec<String>,
    /// Client secrets and certificates that live longer than this are findings: days (`90d`)
    /// or a Go duration
    #[arg(long, value_name = "AGE", default_value = "90d")]
    pub max_secret_age: String,
    /// Exit 3 when findings of these kinds exist (comma-separated: StandingRoleAssignment,
    /// StandingFederation, LongLivedSecret, Orphan, Overstay, LockedLapseObject, UseAfterEnd,
    /// UseWithoutLease, SensitiveAction, PrivilegeChain, UnusedGrant, RightSize, or all)
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    pub fail_on: Vec<String>,
    /// Print, per standing role assignment, the AccessPolicy and AccessGrant that would replace
    /// it with just-in-time access (YAML on stdout; with -o json, in each finding)
    #[arg(long)]
    pub suggest: bool,
    /// The lease of the suggested grants and the policies' maxDuration (Go duration)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        requires = "suggest"
    )]
    pub suggest_duration: String,
    /// An object of this cluster still there this long after its grant's lease ended is an
    /// Overstay (the operator's --overdue-after is 30s)
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub overstay_after: String,
    /// The operator's cluster name (LAPSE_CLUSTER_NAME); default: read from the markers of
    /// the objects it made for this cluster
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Vec<String>,
    /// The operator's cluster ID (its --cluster-id); default: the kube-system namespace's UID
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// The operator's namespace, where its usage ledger ConfigMap keeps the UseWithoutLease
    /// findings
    #[arg(long, value_name = "NAMESPACE", default_value = "lapse-system")]
    pub operator_namespace: String,
    /// The operator's shard (its --shard), which names its usage ledger ConfigMap
    #[arg(long, value_name = "SHARD")]
    pub shard: Option<String>,
    /// Audit Azure alone, even when a kubeconfig is usable
    #[arg(long)]
    pub no_cluster: bool,
    /// Reads per second the audit may spend, per subscription and on Microsoft Graph (429
    /// answers pause it for their Retry-After)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_reads_per_second: u32,
    /// Azure cloud: public, usgovernment, china, or custom (all three endpoints given)
    #[arg(
        long,
        env = "LAPSE_AZURE_CLOUD",
        value_name = "CLOUD",
        default_value = "public"
    )]
    pub azure_cloud: String,
    /// Azure Resource Manager endpoint (overrides the cloud's)
    #[arg(long, env = "LAPSE_ARM_ENDPOINT", value_name = "URL")]
    pub arm_endpoint: Option<String>,
    /// Microsoft Graph endpoint (overrides the cloud's)
    #[arg(long, env = "LAPSE_GRAPH_ENDPOINT", value_name = "URL")]
    pub graph_endpoint: Option<String>,
    /// Entra authority host (overrides the cloud's)
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_name = "URL")]
    pub authority_host: Option<String>,
    /// Extra PEM CA certificates trusted for ARM, Graph and the token endpoint
    #[arg(long, env = "LAPSE_AZURE_CA_BUNDLE", value_name = "PATH")]
    pub azure_ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only grants in these phases (comma-separated or repeated; e.g. Active,PendingApproval)
    #[arg(long, value_delimiter = ',')]
    pub phase: Vec<String>,
    /// Label selector, as kubectl's -l (e.g. team=payments)
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The AccessGrant's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The AccessGrant's name
    pub name: String,
    /// The workload identity: a managed identity resource ID, sp:<object-id> or app:<object-id>
    #[arg(long, value_name = "IDENTITY")]
    pub identity: String,
    /// A role at a scope, ROLE@SCOPE (repeatable): a role name, GUID or definition ID, and an
    /// ARM scope
    #[arg(long = "role", value_name = "ROLE@SCOPE", required = true)]
    pub roles: Vec<String>,
    /// Federate this ServiceAccount of the namespace with the identity
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// The federated credential's token audience (default api://AzureADTokenExchange)
    #[arg(long, value_name = "AUDIENCE", requires = "service_account")]
    pub audience: Option<String>,
    /// Lease length, a Go duration (30m, 1h30m)
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// The lease starts no earlier than this (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// The lease ends by this instant at the latest (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Why: a ticket, say (policies may require a pattern)
    #[arg(long, value_name = "TEXT")]
    pub justification: Option<String>,
    /// Activate without waiting for approval, where the policy allows break-glass (loud,
    /// bounded, reviewable)
    #[arg(long)]
    pub break_glass: bool,
    /// Print the manifest (yaml, or -o json) and create nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until the grant is Active; print why not when it is refused
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (Go duration)
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub timeout: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["by", "until"])))]
pub struct ExtendArgs {
    /// The AccessGrant's name
    pub name: String,
    /// Extend the lease by this long (Go duration)
    #[arg(long, value_name = "DURATION")]
    pub by: Option<String>,
    /// Extend the lease until this instant (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The AccessGrant's name
    pub name: String,
    /// Why, for the record
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The AccessGrant's name
    pub name: String,
    /// Why (required: the requester reads it)
    #[arg(long, value_name = "TEXT", required = true)]
    pub comment: String,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for `shell` to stdout.
pub fn completion(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    // kubectl finds the plugin as `kubectl-lapse`; shells complete `kubectl-lapse` and, through
    // kubectl's own plugin completion (kubectl_complete-lapse), `kubectl lapse`.
    clap_complete::generate(shell, &mut cmd, "kubectl-lapse", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from([
            "kubectl-lapse",
            "-n",
            "payments",
            "list",
            "--as",
            "bob",
            "--as-group",
            "oncall",
            "--as-group",
            "devs",
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.global.namespace.as_deref(), Some("payments"));
        assert_eq!(cli.global.as_user.as_deref(), Some("bob"));
        assert_eq!(cli.global.as_group, ["oncall", "devs"]);
        assert_eq!(cli.global.output, Some(Output::Json));
    }

    #[test]
    fn deny_needs_a_comment_and_extend_a_target() {
        for args in [
            &["kubectl-lapse", "deny", "g"][..],
            &["kubectl-lapse", "extend", "g"][..],
            &["kubectl-lapse", "request", "g", "--identity", "sp:x"][..],
        ] {
            let err = Cli::try_parse_from(args).err();
            assert_eq!(
                err.map(|e| e.exit_code()),
                Some(2),
                "{args:?} must be a usage error"
            );
        }
    }

    #[test]
    fn audit_takes_repeated_and_comma_separated_lists() {
        let cli = Cli::try_parse_from([
            "kubectl-lapse",
            "audit",
            "--subscription",
            "a,b",
            "--subscription=c",
            "--fail-on",
            "Orphan,Overstay",
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Audit(a) = cli.command else {
            panic!("not audit")
        };
        assert_eq!(a.subscriptions, ["a", "b", "c"]);
        assert_eq!(a.fail_on, ["Orphan", "Overstay"]);
        assert_eq!(a.max_secret_age, "90d");
        assert!(!a.suggest);
        // --suggest-duration only with --suggest.
        let err = Cli::try_parse_from(["kubectl-lapse", "audit", "--suggest-duration", "2h"]).err();
        assert_eq!(err.map(|e| e.exit_code()), Some(2));
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in ["0  success", "2  usage", "3  refused", "4  timed out"] {
            assert!(help.contains(code), "{help}");
        }
    }
}
