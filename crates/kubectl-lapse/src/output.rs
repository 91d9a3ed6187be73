//! `-o json|yaml`: objects as the API server returns them, for scripts.

use serde::Serialize;

use crate::cli::Output;

/// Prints `value` as `format` to stdout.
pub fn print<T: Serialize>(format: Output, value: &T) -> anyhow::Result<()> {
    println!("{}", render(format, value)?);
    Ok(())
}

pub fn render<T: Serialize>(format: Output, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Yaml => serde_yaml_ng::to_string(value)?.trim_end().to_owned(),
    })
}

/// A `kind: List` of objects, as `kubectl get -o json` prints several.
pub fn list<T: Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse_back() {
        let v = list(&[serde_json::json!({"kind": "AccessGrant", "metadata": {"name": "a"}})]);
        let json = render(Output::Json, &v).unwrap_or_default();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, v);
        let yaml = render(Output::Yaml, &v).unwrap_or_default();
        let back: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap_or_default();
        assert_eq!(back, v);
    }
}
