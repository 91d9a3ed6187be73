//! `azure.env` and `azure-ca.pem` for the sandbox: what the operator and `az`-style tools need
//! to reach the simulator.

use std::path::Path;

use crate::error::SimAzureError;
use crate::handle::SimAzureHandle;

fn write_file(path: &Path, contents: &str) -> Result<(), SimAzureError> {
    std::fs::write(path, contents).map_err(|source| SimAzureError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

pub(crate) fn write(
    sim: &SimAzureHandle,
    dir: &Path,
    oidc_issuer: &str,
) -> Result<(), SimAzureError> {
    std::fs::create_dir_all(dir).map_err(|source| SimAzureError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_path = dir.join("azure-ca.pem");
    write_file(&ca_path, sim.ca_pem())?;
    let ca_abs = std::path::absolute(&ca_path).unwrap_or(ca_path);
    let operator = sim.operator_credentials();
    let vars = [
        ("AZURE_TENANT_ID", sim.tenant_id()),
        (
            "AZURE_SUBSCRIPTION_ID",
            sim.subscription_id().unwrap_or_default(),
        ),
        (
            "AZURE_CLIENT_ID",
            operator
                .as_ref()
                .map(|c| c.client_id.clone())
                .unwrap_or_default(),
        ),
        (
            "AZURE_CLIENT_SECRET",
            operator
                .as_ref()
                .and_then(|c| c.client_secret.clone())
                .unwrap_or_default(),
        ),
        ("AZURE_AUTHORITY_HOST", sim.url().to_owned()),
        ("LAPSE_ARM_ENDPOINT", sim.url().to_owned()),
        ("LAPSE_GRAPH_ENDPOINT", sim.url().to_owned()),
        ("LAPSE_AZURE_CA_BUNDLE", ca_abs.display().to_string()),
        ("LAPSE_OIDC_ISSUER", oidc_issuer.to_owned()),
    ];
    let mut text = String::from(
        "# Written by lapse sim-azure: source this file to reach the simulated tenant.\n",
    );
    for (k, v) in vars {
        text.push_str(&format!("export {k}={}\n", shell_quote(&v)));
    }
    write_file(&dir.join("azure.env"), &text)
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_survive_a_shell() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
