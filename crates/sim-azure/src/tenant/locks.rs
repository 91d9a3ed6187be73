//! Management locks (`Microsoft.Authorization/locks`): a `CanNotDelete` or `ReadOnly` lock at a
//! scope applies to the scope and everything below it. ARM enforces them at its front door,
//! after RBAC: a delete at or below either level, and a write at or below a `ReadOnly` lock,
//! answer `409 ScopeLocked` naming the locked scopes, whether or not the object exists. Lock
//! operations themselves are not subject to locks.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Tenant;
use crate::api_error::ApiError;
use crate::ids::{self, key};

/// A lock's level (`NotSpecified` is refused on write, as Azure does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockLevel {
    /// Authorized users can read and modify, not delete.
    CanNotDelete,
    /// Authorized users can only read.
    ReadOnly,
}

impl LockLevel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CanNotDelete => "CanNotDelete",
            Self::ReadOnly => "ReadOnly",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("CanNotDelete") {
            Some(Self::CanNotDelete)
        } else if s.eq_ignore_ascii_case("ReadOnly") {
            Some(Self::ReadOnly)
        } else {
            None
        }
    }
}

/// A management lock.
#[derive(Debug, Clone)]
pub(crate) struct MgmtLock {
    /// The scope it is placed at, as written.
    pub scope: String,
    pub name: String,
    pub level: LockLevel,
    pub notes: Option<String>,
    /// `owners` as written (`[{"applicationId": ...}]`).
    pub owners: Option<Value>,
}

impl MgmtLock {
    pub fn id(&self) -> String {
        lock_id(&self.scope, &self.name)
    }

    pub fn json(&self) -> Value {
        let mut properties = json!({ "level": self.level.as_str() });
        if let Some(n) = &self.notes {
            properties["notes"] = Value::String(n.clone());
        }
        if let Some(o) = &self.owners {
            properties["owners"] = o.clone();
        }
        json!({
            "properties": properties,
            "id": self.id(),
            "type": "Microsoft.Authorization/locks",
            "name": self.name,
        })
    }
}

/// The ID of lock `name` at `scope`.
pub(crate) fn lock_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/locks/{name}",
        scope.trim_end_matches('/')
    )
}

/// The operation a lock may refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockedOp {
    Write,
    Delete,
}

/// Which locks a list returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockListing {
    /// No filter: locks at the scope, above it and below it.
    All,
    /// `$filter=atScope()`: the locks that apply at the scope (at it and above it).
    AtScope,
}

/// The locks of the tenant, by lower-cased lock ID.
pub(crate) type Locks = BTreeMap<String, MgmtLock>;

impl Tenant {
    /// Creates or replaces a lock: `201` when new, `200` when replaced.
    pub fn put_lock(&mut self, lock: MgmtLock) -> (StatusCode, MgmtLock) {
        let k = key(&lock.id());
        let status = match self.locks.get(&k) {
            // A replaced lock keeps the casing of its first write.
            Some(old) => {
                let mut lock = lock;
                lock.scope.clone_from(&old.scope);
                lock.name.clone_from(&old.name);
                self.locks.insert(k.clone(), lock);
                StatusCode::OK
            }
            None => {
                self.locks.insert(k.clone(), lock);
                StatusCode::CREATED
            }
        };
        (status, self.locks[&k].clone())
    }

    pub fn get_lock(&self, scope: &str, name: &str) -> Option<&MgmtLock> {
        self.locks.get(&key(&lock_id(scope, name)))
    }

    pub fn delete_lock(&mut self, scope: &str, name: &str) -> Option<MgmtLock> {
        self.locks.remove(&key(&lock_id(scope, name)))
    }

    /// The locks a list at `scope` returns, in ID order.
    pub fn list_locks(&self, scope: &str, listing: LockListing) -> Vec<&MgmtLock> {
        self.locks
            .values()
            .filter(|l| {
                ids::is_at_or_above(&l.scope, scope)
                    || (listing == LockListing::All && ids::is_at_or_above(scope, &l.scope))
            })
            .collect()
    }

    /// ARM's lock check of `op` on the object `target` (its full ID): `409 ScopeLocked` naming
    /// the locked scopes at or above it.
    pub fn check_locks(&self, target: &str, op: LockedOp) -> Result<(), ApiError> {
        let mut scopes: Vec<&str> = self
            .locks
            .values()
            .filter(|l| ids::is_at_or_above(&l.scope, target))
            .filter(|l| op == LockedOp::Delete || l.level == LockLevel::ReadOnly)
            .map(|l| l.scope.as_str())
            .collect();
        scopes.dedup_by(|a, b| ids::same(a, b));
        if scopes.is_empty() {
            return Ok(());
        }
        let word = match op {
            LockedOp::Write => "write",
            LockedOp::Delete => "delete",
        };
        Err(ApiError::arm(
            StatusCode::CONFLICT,
            "ScopeLocked",
            format!(
                "The scope '{target}' cannot perform {word} operation because following scope(s) are locked: '{}'. Please remove the lock and try again.",
                scopes.join("','")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;

    fn tenant() -> Tenant {
        Tenant::from_seed(&Seed::sandbox_default()).unwrap()
    }

    fn lock(scope: &str, name: &str, level: LockLevel) -> MgmtLock {
        MgmtLock {
            scope: scope.into(),
            name: name.into(),
            level,
            notes: None,
            owners: None,
        }
    }

    #[test]
    fn a_lock_applies_at_and_below_its_scope_and_lists_with_inheritance() {
        let mut w = tenant();
        let sub = "/subscriptions/s1";
        let rg = format!("{sub}/resourceGroups/rg");
        let res = format!("{rg}/providers/Microsoft.Storage/storageAccounts/a");
        w.put_lock(lock(&rg, "rg-lock", LockLevel::CanNotDelete));
        w.put_lock(lock(&res, "res-lock", LockLevel::ReadOnly));
        w.put_lock(lock(sub, "sub-lock", LockLevel::CanNotDelete));
        let names = |v: Vec<&MgmtLock>| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(w.list_locks(&rg, LockListing::AtScope)),
            ["sub-lock", "rg-lock"]
        );
        assert_eq!(
            names(w.list_locks(&rg, LockListing::All)),
            ["sub-lock", "rg-lock", "res-lock"]
        );
        let other = format!("{sub}/resourceGroups/rg2");
        assert_eq!(
            names(w.list_locks(&other, LockListing::AtScope)),
            ["sub-lock"]
        );
        assert_eq!(
            names(w.list_locks("/subscriptions/s10", LockListing::All)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn deletes_are_refused_under_either_level_writes_only_under_read_only() {
        let mut w = tenant();
        let rg = "/subscriptions/s1/resourceGroups/rg";
        let target = format!("{rg}/providers/Microsoft.Authorization/roleAssignments/x");
        assert!(w.check_locks(&target, LockedOp::Delete).is_ok());
        w.put_lock(lock(rg, "no-delete", LockLevel::CanNotDelete));
        let e = w.check_locks(&target, LockedOp::Delete).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::CONFLICT, "ScopeLocked")
        );
        assert_eq!(
            e.message,
            format!(
                "The scope '{target}' cannot perform delete operation because following scope(s) are locked: '{rg}'. Please remove the lock and try again."
            )
        );
        assert!(w.check_locks(&target, LockedOp::Write).is_ok());
        w.put_lock(lock(rg, "read-only", LockLevel::ReadOnly));
        let e = w.check_locks(&target, LockedOp::Write).unwrap_err();
        assert!(
            e.message.contains("cannot perform write operation"),
            "{}",
            e.message
        );
        w.delete_lock(rg, "NO-DELETE");
        w.delete_lock(rg, "read-only");
        assert!(w.check_locks(&target, LockedOp::Delete).is_ok());
    }
}
