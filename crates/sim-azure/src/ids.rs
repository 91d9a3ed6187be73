//! ARM ID helpers. ARM IDs are case-insensitive: keys are lower-cased without a trailing slash.

/// The comparison key of an ARM ID or scope.
pub(crate) fn key(id: &str) -> String {
    let trimmed = id.trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    if lower.is_empty() {
        "/".to_owned()
    } else {
        lower
    }
}

/// Whether `ancestor` is `scope` or one of its parents (segment-wise, case-insensitive).
/// Allocation-free: it runs for every assignment on every RBAC decision and list.
pub(crate) fn is_at_or_above(ancestor: &str, scope: &str) -> bool {
    let a = ancestor.trim_end_matches('/').as_bytes();
    let s = scope.trim_end_matches('/').as_bytes();
    if a.is_empty() {
        return true;
    }
    s.len() >= a.len()
        && s[..a.len()].eq_ignore_ascii_case(a)
        && (s.len() == a.len() || s[a.len()] == b'/')
}

/// Whether two ARM IDs are the same (case-insensitive, trailing slash ignored).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Path segments without empty ones.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `s` is a GUID in its 8-4-4-4-12 hex form.
pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// Subscription ID of a subscription-rooted scope.
pub(crate) fn subscription_of(scope: &str) -> Option<&str> {
    let mut parts = scope.split('/').filter(|s| !s.is_empty());
    match (parts.next(), parts.next()) {
        (Some(first), Some(sub)) if first.eq_ignore_ascii_case("subscriptions") => Some(sub),
        _ => None,
    }
}

/// Case-insensitive search for `needle` as a path part; returns (before, after).
pub(crate) fn split_at_ci<'a>(path: &'a str, needle: &str) -> Option<(&'a str, &'a str)> {
    let lower = path.to_ascii_lowercase();
    let idx = lower.find(&needle.to_ascii_lowercase())?;
    Some((&path[..idx], &path[idx + needle.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_is_segment_wise_and_case_insensitive() {
        assert!(is_at_or_above(
            "/subscriptions/S1",
            "/subscriptions/s1/resourceGroups/rg"
        ));
        assert!(is_at_or_above("/subscriptions/s1/", "/subscriptions/s1"));
        assert!(!is_at_or_above("/subscriptions/s1", "/subscriptions/s10"));
        assert!(!is_at_or_above(
            "/subscriptions/s1/resourceGroups/rg",
            "/subscriptions/s1"
        ));
    }

    #[test]
    fn guid_shape() {
        assert!(is_guid("05c5a614-a7d6-4502-b150-c2fb455033ff"));
        assert!(!is_guid("05c5a614a7d64502b150c2fb455033ff"));
        assert!(!is_guid("not-a-guid"));
    }
}
