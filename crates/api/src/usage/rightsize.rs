//! `RightSize`: a narrower role that allows everything a lease did. A role is narrower than the
//! granted one when every action pattern it allows the granted role allows too (its `notActions`
//! respected), and not the reverse.

use super::action_matches;

/// A role's control-plane permissions (`permissions[].actions` / `notActions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePermissions {
    pub name: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}

impl RolePermissions {
    /// Whether the role allows `action` (an action, or a pattern read literally).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
            && !self.not_actions.iter().any(|p| action_matches(p, action))
    }

    /// How broad the role reads: wildcard segments weigh more than listed actions.
    fn breadth(&self) -> (usize, usize) {
        let wildcards = self
            .actions
            .iter()
            .map(|a| a.split('/').filter(|s| *s == "*").count())
            .sum();
        (wildcards, self.actions.len())
    }

    /// Whether every action pattern of `other` is one this role allows (`*` in `other` read as a
    /// literal segment, which only this role's own `*` matches).
    fn covers(&self, other: &RolePermissions) -> bool {
        other.actions.iter().all(|a| self.allows(a))
            && self
                .not_actions
                .iter()
                .all(|n| other.not_actions.iter().any(|m| action_matches(n, m)) || !other.allows(n))
    }
}

/// The roles among `candidates` that are narrower than `granted` and allow every one of
/// `performed`, the tightest first (fewest wildcards, then fewest action patterns).
pub fn narrower_roles(
    granted: &RolePermissions,
    candidates: &[RolePermissions],
    performed: &[&str],
) -> Vec<String> {
    let mut out: Vec<&RolePermissions> = candidates
        .iter()
        .filter(|c| c.name != granted.name)
        .filter(|c| granted.covers(c) && !c.covers(granted))
        .filter(|c| performed.iter().all(|a| c.allows(a)))
        .collect();
    out.sort_by(|a, b| {
        a.breadth()
            .cmp(&b.breadth())
            .then_with(|| a.name.cmp(&b.name))
    });
    out.into_iter().map(|c| c.name.clone()).collect()
}
