//! A grant by namespace and name: the key of every per-grant map (claims, locks, clocks,
//! metrics). Its own module so that everything can name a grant without depending on
//! everything else.

/// A grant by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for GrantRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
