//! Patterns and bounds shared by the CRD schema and the operator's own validation.
//!
//! Patterns are RE2-compatible (the apiserver evaluates them with Go's `regexp`).

/// An Entra object ID (a GUID).
pub const GUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A Go-style duration without sign: `90s`, `1h30m`, `2h`, `1.5h`.
pub const DURATION_PATTERN: &str = "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// An RFC 3339 timestamp with a mandatory zone (`Z` or an offset). Upper-case `T` and `Z` only:
/// the apiserver's CEL `timestamp()` (Go's parser) refuses the lower-case forms RFC 3339 allows.
pub const TIMESTAMP_PATTERN: &str =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$";

/// An ARM resource ID or scope: starts with `/`, printable ASCII only. The operator parses it
/// fully (segments, `.`/`..`, empty segments) and names the field when it is not well formed.
pub const ARM_ID_PATTERN: &str = "^/[\\x21-\\x7E]*$";

/// A user-assigned managed identity resource ID (case-insensitive, as ARM is).
pub const MANAGED_IDENTITY_PATTERN: &str = "^/[sS][uU][bB][sS][cC][rR][iI][pP][tT][iI][oO][nN][sS]/[^/]+/[rR][eE][sS][oO][uU][rR][cC][eE][gG][rR][oO][uU][pP][sS]/[^/]+/[pP][rR][oO][vV][iI][dD][eE][rR][sS]/[mM][iI][cC][rR][oO][sS][oO][fF][tT]\\.[mM][aA][nN][aA][gG][eE][dD][iI][dD][eE][nN][tT][iI][tT][yY]/[uU][sS][eE][rR][aA][sS][sS][iI][gG][nN][eE][dD][iI][dD][eE][nN][tT][iI][tT][iI][eE][sS]/[^/]+/?$";

/// A Kubernetes ServiceAccount name (DNS-1123 subdomain).
pub const SERVICE_ACCOUNT_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A wall-clock time of day, `HH:MM` on a 24-hour clock (`activeHours.from` and `to`).
pub const CLOCK_TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A ticket checker's name: a Secret key (of the operator's checkers Secret) that is also a
/// plain file name, so no dot first.
pub const TICKET_CHECKER_PATTERN: &str = "^[A-Za-z0-9][-_.A-Za-z0-9]*$";

/// Most groups in `spec.requesterGroups` (and in an approval's `approver.groups`).
pub const MAX_REQUESTER_GROUPS: u32 = 64;

/// A glob over ServiceAccount or namespace names: DNS characters plus `*` and `?`.
pub const NAME_GLOB_PATTERN: &str = "^[a-z0-9*?]([-a-z0-9.*?]*[a-z0-9*?])?$";

/// Longest ARM ID or scope accepted.
pub const MAX_ARM_ID_LEN: u32 = 1024;
/// Longest role reference (a name, a GUID or a full role definition ID).
pub const MAX_ROLE_LEN: u32 = 512;
/// Longest ABAC condition accepted (Azure's own limit is 8 KiB).
pub const MAX_CONDITION_LEN: u32 = 8192;
/// Longest justification.
pub const MAX_JUSTIFICATION_LEN: u32 = 1024;
/// Longest token audience.
pub const MAX_AUDIENCE_LEN: u32 = 512;
/// Most roles in one grant.
pub const MAX_ROLES: u32 = 16;
/// Most entries in any AccessPolicy list.
pub const MAX_POLICY_ENTRIES: u32 = 256;
/// Longest Kubernetes user or group name accepted in `spec.requester` and approvals.
pub const MAX_USERNAME_LEN: u32 = 512;
