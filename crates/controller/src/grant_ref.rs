//! A grant by namespace and name: the key of every per-grant map (claims, locks, clocks,
//! metrics). Its own module so that everything can name a grant without depending on
//! everything else.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A grant by namespace and name.
///
/// One shared allocation (`namespace/name`): the operator keeps a grant's reference in about
/// nine maps at once (claims, lease clock, written versions, quota, metrics, ...), and a clone
/// is a reference count, where two strings per copy cost about 0.35 KiB per live lease
/// (docs/performance.md).
#[derive(Clone)]
pub struct GrantRef {
    /// `namespace/name`: a namespace never contains `/`.
    text: Arc<str>,
    /// Where the name starts in `text`.
    name_at: u32,
}

impl GrantRef {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        let (namespace, name) = (namespace.as_ref(), name.as_ref());
        let text: Arc<str> = format!("{namespace}/{name}").into();
        // Kubernetes names and namespaces are at most 253 bytes; saturate rather than panic.
        let name_at = u32::try_from(namespace.len() + 1).unwrap_or(u32::MAX);
        Self { text, name_at }
    }

    pub fn namespace(&self) -> &str {
        self.text
            .get(..(self.name_at as usize).saturating_sub(1))
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.text.get(self.name_at as usize..).unwrap_or_default()
    }
}

impl PartialEq for GrantRef {
    fn eq(&self, other: &Self) -> bool {
        self.name_at == other.name_at && self.text == other.text
    }
}

impl Eq for GrantRef {}

impl Hash for GrantRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name_at.hash(state);
        self.text.hash(state);
    }
}

/// By namespace, then name.
impl Ord for GrantRef {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.namespace(), self.name()).cmp(&(other.namespace(), other.name()))
    }
}

impl PartialOrd for GrantRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for GrantRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRef")
            .field("namespace", &self.namespace())
            .field("name", &self.name())
            .finish()
    }
}

impl std::fmt::Display for GrantRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_and_name_come_back_as_given() {
        let g = GrantRef::new("payments", "nightly-backup");
        assert_eq!((g.namespace(), g.name()), ("payments", "nightly-backup"));
        assert_eq!(g.to_string(), "payments/nightly-backup");
        assert_eq!(g, GrantRef::new("payments", "nightly-backup"));
        assert_ne!(g, GrantRef::new("payments", "nightly"));
    }

    /// Ordered as the (namespace, name) pair, not as the joined text: `a-b/x` joins below
    /// `a/x` (`-` sorts before `/`), but namespace `a` comes first.
    #[test]
    fn ordered_by_namespace_then_name() {
        let mut v = [
            GrantRef::new("a-b", "x"),
            GrantRef::new("a", "y"),
            GrantRef::new("a", "x"),
        ];
        v.sort();
        let got: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["a/x", "a/y", "a-b/x"]);
    }
}
