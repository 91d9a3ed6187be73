//! Azure management locks (`Microsoft.Authorization/locks`) as lapse sees them. A `CanNotDelete`
//! or `ReadOnly` lock at or above a scope lets a role assignment be created there but not
//! deleted (`409 ScopeLocked`), and one on a managed identity does the same to its federated
//! credentials: lapse must not create what it could not remove (DESIGN §12 "Locks").

use std::fmt;

/// A lock's level.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockLevel {
    /// Reads and writes allowed, deletes refused.
    CanNotDelete,
    /// Reads only.
    ReadOnly,
    /// Any other level Azure reports (`NotSpecified`, or one this version does not know): it
    /// is treated as a lock.
    Other(String),
}

impl LockLevel {
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("CanNotDelete") {
            Self::CanNotDelete
        } else if s.eq_ignore_ascii_case("ReadOnly") {
            Self::ReadOnly
        } else {
            Self::Other(s.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::CanNotDelete => "CanNotDelete",
            Self::ReadOnly => "ReadOnly",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One management lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManagementLock {
    /// Full ID: `{scope}/providers/Microsoft.Authorization/locks/{name}`.
    pub id: String,
    pub name: String,
    pub level: LockLevel,
    pub notes: Option<String>,
}

impl fmt::Display for ManagementLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.level)
    }
}

/// What is known of the locks that apply to a grant's scopes and identity.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LockObservation {
    /// Not looked at, or a look failed: a grant does not activate (it waits and retries).
    #[default]
    Unknown,
    /// Every scope and the identity were looked at; these locks apply (none: empty). Sorted,
    /// without duplicates (one lock above two scopes is listed once).
    Known(Vec<ManagementLock>),
}

impl LockObservation {
    /// Builds a known observation from the locks listed at each scope.
    pub fn known(locks: impl IntoIterator<Item = ManagementLock>) -> Self {
        let mut v: Vec<ManagementLock> = locks.into_iter().collect();
        v.sort_by_key(|l| l.id.to_ascii_lowercase());
        v.dedup_by(|a, b| a.id.eq_ignore_ascii_case(&b.id));
        Self::Known(v)
    }
}

/// What a `ScopeLocked` refusal says is locked: the scopes quoted after `following scope(s)
/// are locked:` in ARM's message (`'a'` or `'a','b'`). Empty when the message does not say.
pub fn locked_scopes(message: &str) -> Vec<String> {
    const MARKER: &str = "are locked:";
    let Some(at) = message.find(MARKER) else {
        return Vec::new();
    };
    let rest = &message[at + MARKER.len()..];
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix('\'') else {
        return Vec::new();
    };
    let Some(end) = rest.find("'.").or_else(|| rest.rfind('\'')) else {
        return Vec::new();
    };
    rest[..end]
        .split("','")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(id: &str) -> ManagementLock {
        ManagementLock {
            id: id.into(),
            name: id.rsplit('/').next().unwrap_or(id).into(),
            level: LockLevel::CanNotDelete,
            notes: None,
        }
    }

    #[test]
    fn a_lock_seen_from_two_scopes_is_listed_once() {
        let a = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/locks/a";
        let obs = LockObservation::known([lock(a), lock(&a.to_uppercase()), lock("/x/b")]);
        let LockObservation::Known(v) = obs else {
            panic!("known")
        };
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn levels_parse_case_insensitively_and_keep_unknown_ones() {
        assert_eq!(LockLevel::parse("canNotDelete"), LockLevel::CanNotDelete);
        assert_eq!(LockLevel::parse("ReadOnly"), LockLevel::ReadOnly);
        assert_eq!(LockLevel::parse("NotSpecified").to_string(), "NotSpecified");
    }

    #[test]
    fn the_locked_scopes_are_read_from_arms_message() {
        let m = "role assignment x at /s: The scope '/s/providers/Microsoft.Authorization/roleAssignments/x' cannot perform delete operation because following scope(s) are locked: '/subscriptions/s/resourceGroups/rg'. Please remove the lock and try again.";
        assert_eq!(locked_scopes(m), ["/subscriptions/s/resourceGroups/rg"]);
        let two = "... are locked: '/a','/a/b'. Please remove the lock and try again.";
        assert_eq!(locked_scopes(two), ["/a", "/a/b"]);
        assert!(locked_scopes("The scope is locked").is_empty());
    }
}
