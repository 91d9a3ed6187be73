//! AccessPolicies as `azure-role` and `check` read them: from YAML (a directory, a file or
//! stdin; multi-document, `kind: List` too) or from the cluster, each remembering where it came
//! from so that every error can name the file, the document and the policy.

use std::path::Path;

use anyhow::{Context as _, bail};
use kube::api::{Api, ListParams};
use lapse_api::v1alpha1::{AccessPolicy, AccessPolicySpec};
use serde::Deserialize as _;

/// One AccessPolicy and where it was read.
#[derive(Clone, Debug)]
pub struct SourcedPolicy {
    /// `dir/file.yaml`, `dir/file.yaml (document 2)`, `stdin` or `cluster`.
    pub origin: String,
    pub name: String,
    pub spec: AccessPolicySpec,
}

impl SourcedPolicy {
    /// `file.yaml: AccessPolicy NAME`, the prefix of every message about this policy.
    pub fn label(&self) -> String {
        format!("{}: AccessPolicy {}", self.origin, self.name)
    }
}

/// Reads every AccessPolicy under `arg`: `-` is stdin, a directory means each `*.yaml`,
/// `*.yml` and `*.json` file in it (not its subdirectories), in name order.
pub fn from_arg(arg: &str) -> anyhow::Result<Vec<SourcedPolicy>> {
    let mut out = Vec::new();
    let mut files = 0usize;
    if arg == "-" {
        let text =
            std::io::read_to_string(std::io::stdin()).context("--policies -: reading stdin")?;
        files += 1;
        out.extend(parse("stdin", &text)?);
    } else {
        let path = Path::new(arg);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("--policies: reading directory {arg}"))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            entries.sort();
            for file in entries {
                files += 1;
                out.extend(read_file(&file)?);
            }
        } else if path.is_file() {
            files += 1;
            out.extend(read_file(path)?);
        } else {
            bail!("--policies: {arg} is neither a directory, a file nor `-` (stdin)");
        }
    }
    if out.is_empty() {
        bail!(
            "--policies: no AccessPolicy (apiVersion lapse.dev/v1alpha1) in {arg} ({files} file{} read{})",
            if files == 1 { "" } else { "s" },
            if arg == "-" || Path::new(arg).is_file() {
                ""
            } else {
                ": *.yaml, *.yml and *.json"
            }
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    for p in &out {
        if let Some(first) = seen.insert(p.name.clone(), p.origin.clone()) {
            bail!(
                "AccessPolicy {} is defined twice: in {first} and in {} (a cluster has one object per name)",
                p.name,
                p.origin
            );
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<SourcedPolicy>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--policies: reading {}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// The AccessPolicies of one YAML (or JSON) stream; other kinds are skipped.
pub fn parse(origin: &str, text: &str) -> anyhow::Result<Vec<SourcedPolicy>> {
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            serde_yaml_ng::Value::deserialize(doc)
                .with_context(|| format!("{origin}: document {} is not YAML", i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let several = docs.len() > 1;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let at = if several {
            format!("{origin} (document {})", i + 1)
        } else {
            origin.to_owned()
        };
        collect(&at, doc, &mut out)?;
    }
    Ok(out)
}

fn collect(
    at: &str,
    doc: serde_yaml_ng::Value,
    out: &mut Vec<SourcedPolicy>,
) -> anyhow::Result<()> {
    if doc.is_null() {
        return Ok(());
    }
    let field = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (kind, api_version) = (field("kind"), field("apiVersion"));
    if kind == "List" {
        let items = doc
            .get("items")
            .and_then(|v| v.as_sequence())
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            collect(&format!("{at} items[{i}]"), item, out)?;
        }
        return Ok(());
    }
    if kind != "AccessPolicy" || !api_version.starts_with("lapse.dev/") {
        return Ok(());
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{at}: AccessPolicy without metadata.name"))?;
    if api_version != "lapse.dev/v1alpha1" {
        bail!("{at}: AccessPolicy {name}: apiVersion {api_version} is not lapse.dev/v1alpha1");
    }
    let policy: AccessPolicy = serde_yaml_ng::from_value(doc).with_context(|| {
        format!("{at}: AccessPolicy {name} does not match the AccessPolicy schema")
    })?;
    out.push(SourcedPolicy {
        origin: at.to_owned(),
        name,
        spec: policy.spec,
    });
    Ok(())
}

/// Every AccessPolicy in the cluster.
pub async fn from_cluster(client: kube::Client) -> anyhow::Result<Vec<SourcedPolicy>> {
    let api: Api<AccessPolicy> = Api::all(client);
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing AccessPolicies in the cluster (or pass --policies DIR)")?;
    Ok(list
        .items
        .into_iter()
        .map(|p| SourcedPolicy {
            origin: "cluster".to_owned(),
            name: p.metadata.name.unwrap_or_default(),
            spec: p.spec,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: lapse.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: NAME\nspec:\n  namespaces: [demo]\n  identities: [/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi]\n  roles: [Reader]\n  scopes: [/subscriptions/s/resourceGroups/rg]\n  maxDuration: 1h\n";

    fn policy(name: &str) -> String {
        POLICY.replace("NAME", name)
    }

    #[test]
    fn multi_document_streams_and_lists_keep_their_origin() -> anyhow::Result<()> {
        let text = format!(
            "{}---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: x}}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {}\n",
            policy("a"),
            serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&policy("b"))?)?
        );
        let got = parse("p.yaml", &text)?;
        let names: Vec<_> = got
            .iter()
            .map(|p| (p.name.as_str(), p.origin.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "p.yaml (document 1)"),
                ("b", "p.yaml (document 4) items[0]")
            ]
        );
        assert_eq!(got[0].spec.roles, ["Reader"]);
        assert_eq!(parse("one.yaml", &policy("c"))?[0].origin, "one.yaml");
        Ok(())
    }

    #[test]
    fn errors_name_the_file_document_and_policy() {
        let broken = policy("bad").replace("  roles: [Reader]\n", "");
        let e = format!("{:#}", parse("p.yaml", &broken).unwrap_err());
        assert!(e.contains("p.yaml: AccessPolicy bad does not match"), "{e}");
        assert!(e.contains("roles"), "{e}");
        let e = format!(
            "{:#}",
            parse("p.yaml", &format!("{}---\n: : :\n", policy("a"))).unwrap_err()
        );
        assert!(e.contains("p.yaml: document 2 is not YAML"), "{e}");
        let e = format!(
            "{:#}",
            parse("p.yaml", &policy("old").replace("v1alpha1", "v1beta9")).unwrap_err()
        );
        assert!(
            e.contains("AccessPolicy old: apiVersion lapse.dev/v1beta9"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_is_read_in_name_order_and_duplicates_are_refused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("lapse-policies-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("b.yaml"), policy("two"))?;
        std::fs::write(dir.join("a.yml"), policy("one"))?;
        std::fs::write(dir.join("notes.txt"), "not read")?;
        let got = from_arg(&dir.to_string_lossy())?;
        assert_eq!(
            got.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        std::fs::write(dir.join("c.yaml"), policy("one"))?;
        let e = from_arg(&dir.to_string_lossy()).unwrap_err().to_string();
        assert!(e.contains("AccessPolicy one is defined twice"), "{e}");
        std::fs::remove_dir_all(&dir)?;
        let e = from_arg("/no/such/dir").unwrap_err().to_string();
        assert!(e.contains("neither a directory"), "{e}");
        Ok(())
    }
}
