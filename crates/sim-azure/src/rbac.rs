//! Azure RBAC action matching: `*` wildcards anywhere in an action pattern, case-insensitive;
//! an action is allowed by a permission when an `actions` entry matches and no `notActions`
//! entry does.

/// Whether `action` matches `pattern` (`*` matches any run of characters, case-insensitive).
pub(crate) fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<u8> = pattern.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let a: Vec<u8> = action.bytes().map(|b| b.to_ascii_lowercase()).collect();
    glob(&p, &a)
}

fn glob(p: &[u8], a: &[u8]) -> bool {
    // Iterative wildcard matching with single backtrack point (classic algorithm).
    let (mut pi, mut ai) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi] == a[ai] {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether a permission (actions minus notActions) allows `action`.
pub(crate) fn permits<A: AsRef<str>, N: AsRef<str>>(
    actions: &[A],
    not_actions: &[N],
    action: &str,
) -> bool {
    actions.iter().any(|p| action_matches(p.as_ref(), action))
        && !not_actions
            .iter()
            .any(|p| action_matches(p.as_ref(), action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_azure() {
        assert!(action_matches(
            "*",
            "Microsoft.Storage/storageAccounts/read"
        ));
        assert!(action_matches(
            "*/read",
            "Microsoft.Storage/storageAccounts/read"
        ));
        assert!(!action_matches(
            "*/read",
            "Microsoft.Storage/storageAccounts/write"
        ));
        assert!(action_matches(
            "Microsoft.Authorization/*",
            "microsoft.authorization/roleAssignments/write"
        ));
        assert!(action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/roleAssignments/read"
        ));
    }

    #[test]
    fn not_actions_subtract_from_actions() {
        let contributor = crate::roles::built_in_role_definitions()
            .iter()
            .find(|r| r.name == "Contributor")
            .unwrap();
        assert!(permits(
            contributor.actions,
            contributor.not_actions,
            "Microsoft.Storage/storageAccounts/write"
        ));
        assert!(!permits(
            contributor.actions,
            contributor.not_actions,
            "Microsoft.Authorization/roleAssignments/write"
        ));
    }
}
