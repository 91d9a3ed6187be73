//! `lapse-sandbox audit`: sim-azure's audit log as aligned lines a person can read — time,
//! who (by name where the sandbox knows it), method, a shortened path, and the answer.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::state::{IDENTITY_API_VERSION, SandboxState};

/// One request sim-azure saw (the fields this command prints).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub time: DateTime<Utc>,
    pub principal: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub error_code: Option<String>,
    /// Set when the simulator made the change itself (`pim-expiry`: PIM ended a schedule).
    #[serde(default)]
    pub origin: Option<String>,
}

impl Entry {
    /// Changes to Azure: PUT, PATCH, DELETE, and POSTs other than token requests.
    pub fn is_write(&self) -> bool {
        match self.method.as_str() {
            "PUT" | "PATCH" | "DELETE" => true,
            "POST" => !self.path.contains("/oauth2/"),
            _ => false,
        }
    }
}

/// Reads the whole log from the simulator's admin endpoint, oldest first.
pub async fn fetch(state: &SandboxState) -> anyhow::Result<Vec<Entry>> {
    let url = state
        .azure_url()?
        .join("admin/audit")
        .context("building the audit URL")?;
    let resp = state
        .http
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    resp.json()
        .await
        .with_context(|| format!("parsing the audit log from {url}"))
}

/// Names for the principals the sandbox knows: the operator (by object ID from its token and
/// by client ID) and every user-assigned identity of the subscription. Best effort: a lookup
/// that fails leaves IDs as they are.
pub async fn principal_names(state: &SandboxState) -> HashMap<String, String> {
    let mut names = HashMap::new();
    if let Ok(client_id) = state.env("AZURE_CLIENT_ID") {
        names.insert(client_id.to_owned(), "lapse-operator".to_owned());
    }
    let Ok(token) = state.operator_token().await else {
        return names;
    };
    if let Some(oid) = token_claim(&token, "oid") {
        names.insert(oid, "lapse-operator".to_owned());
    }
    let Ok(sub) = state.env("AZURE_SUBSCRIPTION_ID") else {
        return names;
    };
    let path =
        format!("/subscriptions/{sub}/providers/Microsoft.ManagedIdentity/userAssignedIdentities");
    if let Ok((200, list)) = state.arm_get(&token, &path, IDENTITY_API_VERSION).await {
        for mi in list
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = mi.get("name").and_then(Value::as_str) else {
                continue;
            };
            for key in ["/properties/principalId", "/properties/clientId"] {
                if let Some(id) = mi.pointer(key).and_then(Value::as_str) {
                    names.insert(id.to_owned(), format!("mi/{name}"));
                }
            }
        }
    }
    names
}

/// A string claim of a JWT, read without verifying it (display only).
fn token_claim(jwt: &str, claim: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(claim).and_then(Value::as_str).map(str::to_owned)
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Path segments longer than this are cut.
const LONG_SEGMENT: usize = 28;

/// Drops what every line would repeat: the subscription, `resourceGroups`, `providers/<ns>`;
/// GUIDs are cut to their first 8 characters, other long names to their start.
/// `/subscriptions/S/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a/providers/
/// Microsoft.Authorization/roleAssignments/G` → `rg/storageAccounts/a/roleAssignments/G8…`.
pub fn shorten_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let seg = segments[i];
        let lower = seg.to_ascii_lowercase();
        if (lower == "subscriptions" || lower == "providers") && i + 1 < segments.len() {
            i += 2;
            continue;
        }
        if lower == "resourcegroups" {
            i += 1;
            continue;
        }
        if is_guid(seg) {
            out.push(format!("{}…", &seg[..8]));
        } else if seg.chars().count() > LONG_SEGMENT {
            // Derived names (FICs) are long hashes; their start identifies them.
            out.push(format!(
                "{}…",
                seg.chars().take(LONG_SEGMENT - 4).collect::<String>()
            ));
        } else {
            out.push(seg.to_owned());
        }
        i += 1;
    }
    if out.is_empty() {
        "/".to_owned()
    } else {
        out.join("/")
    }
}

/// The entries as aligned lines: time, principal, method, path, status and error code.
pub fn render(entries: &[Entry], names: &HashMap<String, String>) -> Vec<String> {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let who = match &e.principal {
                Some(p) => names.get(p).cloned().unwrap_or_else(|| {
                    if is_guid(p) {
                        format!("{}…", &p[..8])
                    } else {
                        p.clone()
                    }
                }),
                None => e
                    .origin
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |o| format!("({o})")),
            };
            let answer = match &e.error_code {
                Some(code) => format!("{} {code}", e.status),
                None => e.status.to_string(),
            };
            [
                e.time.format("%H:%M:%S%.3f").to_string(),
                who,
                e.method.clone(),
                shorten_path(&e.path),
                answer,
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(widths.iter()) {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
            line.push_str(&row[4]);
            line
        })
        .collect()
}

pub async fn audit(state: &SandboxState, writes_only: bool) -> anyhow::Result<Vec<String>> {
    let mut entries = fetch(state).await?;
    if writes_only {
        entries.retain(Entry::is_write);
    }
    let names = if entries.iter().any(|e| e.principal.is_some()) {
        principal_names(state).await
    } else {
        HashMap::new()
    };
    Ok(render(&entries, &names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str, path: &str, status: u16, code: Option<&str>) -> Entry {
        Entry {
            time: "2026-11-27T21:30:05.123456Z".parse().unwrap(),
            principal: Some("8d1c9a44-0000-4000-8000-000000000001".into()),
            method: method.into(),
            path: path.into(),
            status,
            error_code: code.map(Into::into),
            origin: None,
        }
    }

    #[test]
    fn paths_lose_the_subscription_and_provider_namespaces() {
        assert_eq!(
            shorten_path(
                "/subscriptions/00000000-0000-4000-8000-00000000a001/resourceGroups/lapse-demo-rg/providers/Microsoft.Storage/storageAccounts/lapsedemodata/providers/Microsoft.Authorization/roleAssignments/3f2a9c1e-1111-5222-8333-444455556666"
            ),
            "lapse-demo-rg/storageAccounts/lapsedemodata/roleAssignments/3f2a9c1e…"
        );
        assert_eq!(
            shorten_path(
                "/subscriptions/00000000-0000-4000-8000-00000000a001/resourcegroups/lapse-demo-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/backup-runner/federatedIdentityCredentials/lapse-demo-x"
            ),
            "lapse-demo-rg/userAssignedIdentities/backup-runner/federatedIdentityCredentials/lapse-demo-x"
        );
        assert_eq!(
            shorten_path("/a/lapse-demo-6f9754e677f65298a8c98bbf97a2936f"),
            "a/lapse-demo-6f9754e677f65…"
        );
        assert_eq!(
            shorten_path("/00000000-0000-4000-8000-00000000e001/oauth2/v2.0/token"),
            "00000000…/oauth2/v2.0/token"
        );
    }

    #[test]
    fn writes_are_changes_not_token_requests_or_reads() {
        assert!(entry("PUT", "/x", 201, None).is_write());
        assert!(entry("DELETE", "/x", 200, None).is_write());
        assert!(
            entry(
                "POST",
                "/v1.0/applications/a/federatedIdentityCredentials",
                201,
                None
            )
            .is_write()
        );
        assert!(!entry("POST", "/t/oauth2/v2.0/token", 200, None).is_write());
        assert!(!entry("GET", "/x", 200, None).is_write());
    }

    #[test]
    fn a_change_the_simulator_made_itself_names_its_origin() {
        let mut expiry = entry(
            "DELETE",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/x",
            200,
            None,
        );
        expiry.principal = None;
        expiry.origin = Some("pim-expiry".into());
        let parsed: Entry = serde_json::from_str(
            r#"{"time":"2026-11-27T21:30:05.123456Z","principal":null,"method":"DELETE","path":"/x","status":200,"errorCode":null,"origin":"pim-expiry"}"#,
        )
        .unwrap();
        assert_eq!(parsed.origin.as_deref(), Some("pim-expiry"));
        assert!(expiry.is_write());
        assert_eq!(
            render(&[expiry], &HashMap::new()),
            ["21:30:05.123  (pim-expiry)  DELETE  rg/roleAssignments/x  200"]
        );
    }

    #[test]
    fn lines_are_aligned_and_name_known_principals() {
        let names = HashMap::from([(
            "8d1c9a44-0000-4000-8000-000000000001".to_owned(),
            "lapse-operator".to_owned(),
        )]);
        let mut unknown = entry("DELETE", "/a/bb", 403, Some("AuthorizationFailed"));
        unknown.principal = Some("11112222-0000-4000-8000-000000000009".into());
        let lines = render(&[entry("PUT", "/a/b/c", 201, None), unknown], &names);
        assert_eq!(
            lines,
            [
                "21:30:05.123  lapse-operator  PUT     a/b/c  201",
                "21:30:05.123  11112222…       DELETE  a/bb   403 AuthorizationFailed",
            ]
        );
    }
}
