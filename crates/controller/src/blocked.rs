//! A delete a management lock refuses (`409 ScopeLocked`), named by its lock. ARM's refusal
//! names only the locked scopes; `RevocationBlocked` and its Event should say which lock to
//! remove, so the locks that apply at the object are read and named instead (docs/runbook.md,
//! "LapseRevocationBlocked"). The core carries this message whole into both.

use lapse_api::lease::{Action, Failure, FicTarget, Observed};
use lapse_api::lock::ManagementLock;
use lapse_azure::AzureError;

use crate::context::Context;

/// A failed delete as the core should see it: `failure` itself unless `e` is `ScopeLocked`;
/// then the locks that apply at the object's scope (a federated credential's: its identity),
/// inherited ones included, are listed and named in the message. One ARM read per refused
/// delete; a refused delete is retried with backoff, so this is never a storm.
pub async fn delete_failed(
    ctx: &Context,
    action: &Action,
    e: &AzureError,
    failure: Failure,
) -> Observed {
    let (true, Some(scope), Failure::Terminal { code, message }) =
        (e.is_scope_locked(), lock_scope(action), &failure)
    else {
        return Observed::DeleteFailed(failure);
    };
    let listed = ctx.azure.list_locks(scope).await.map_err(|le| {
        tracing::warn!(%scope, error = %le, "listing the management locks that refuse a delete");
        le.to_string()
    });
    Observed::DeleteFailed(Failure::Terminal {
        code: code.clone(),
        message: locks_message(&e.locked_scopes(), message, listed),
    })
}

/// Where the locks that refuse a delete apply: a role assignment's scope, a managed identity
/// (an app registration is not an ARM resource and has no locks).
fn lock_scope(action: &Action) -> Option<&str> {
    match action {
        Action::DeleteRoleAssignment { scope, .. } => Some(scope),
        Action::DeleteFic {
            target: FicTarget::ManagedIdentity(id),
            ..
        } => Some(id.as_str()),
        _ => None,
    }
}

/// `management lock "no-delete" (CanNotDelete, <its ID>) blocks the delete`; when the locks
/// could not be read (or none is listed any more), the locked scopes ARM named (else its whole
/// message) and why. Never ARM's `are locked:` phrase, so the core keeps it whole.
fn locks_message(
    scopes: &[String],
    azure_message: &str,
    listed: Result<Vec<ManagementLock>, String>,
) -> String {
    let fallback = if scopes.is_empty() {
        azure_message.to_owned()
    } else {
        format!("locked scope(s) {}", scopes.join(", "))
    };
    match listed {
        Ok(mut locks) if !locks.is_empty() => {
            locks.dedup_by(|a, b| a.id.eq_ignore_ascii_case(&b.id));
            let named: Vec<String> = locks
                .iter()
                .map(|l| format!("{:?} ({}, {})", l.name, l.level, l.id))
                .collect();
            if let [one] = named.as_slice() {
                format!("management lock {one} blocks the delete")
            } else {
                format!("management locks {} block the delete", named.join(", "))
            }
        }
        Ok(_) => format!(
            "{fallback}; no management lock is listed there now (removed since?): the next retry \
             will tell"
        ),
        Err(why) => format!("{fallback}; the lock could not be read: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use lapse_api::arm::ArmId;
    use lapse_api::lease::ObjectKey;
    use lapse_api::lock::LockLevel;

    use super::*;

    const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

    fn lock(name: &str, level: LockLevel) -> ManagementLock {
        ManagementLock {
            id: format!("{RG}/providers/Microsoft.Authorization/locks/{name}"),
            name: name.into(),
            level,
            notes: None,
        }
    }

    fn scopes() -> Vec<String> {
        vec![RG.to_owned()]
    }

    #[test]
    fn the_lock_is_named_with_its_level_and_id() {
        let m = locks_message(
            &scopes(),
            "azure's words",
            Ok(vec![lock("no-delete", LockLevel::CanNotDelete)]),
        );
        assert_eq!(
            m,
            format!(
                "management lock \"no-delete\" (CanNotDelete, {RG}/providers/Microsoft.Authorization/locks/no-delete) blocks the delete"
            )
        );
        let two = locks_message(
            &scopes(),
            "",
            Ok(vec![
                lock("a", LockLevel::CanNotDelete),
                lock("a", LockLevel::CanNotDelete),
                lock("b", LockLevel::ReadOnly),
            ]),
        );
        assert!(
            two.starts_with("management locks \"a\" (CanNotDelete, ")
                && two.contains(", \"b\" (ReadOnly, ")
                && two.ends_with("locks/b) block the delete"),
            "{two}"
        );
    }

    #[test]
    fn without_the_lock_the_scopes_stay_and_say_why() {
        let m = locks_message(&scopes(), "azure's words", Err("403 Forbidden".into()));
        assert_eq!(
            m,
            format!("locked scope(s) {RG}; the lock could not be read: 403 Forbidden")
        );
        let gone = locks_message(&scopes(), "", Ok(Vec::new()));
        assert!(
            gone.starts_with(&format!(
                "locked scope(s) {RG}; no management lock is listed"
            )),
            "{gone}"
        );
        // ARM named no scope: its whole message stands.
        let bare = locks_message(&[], "The scope is locked.", Err("timeout".into()));
        assert_eq!(
            bare,
            "The scope is locked.; the lock could not be read: timeout"
        );
        // Never ARM's phrase: the core would cut the message back to the scopes.
        for m in [m, gone, bare] {
            assert!(lapse_api::lock::locked_scopes(&m).is_empty(), "{m}");
        }
    }

    #[test]
    fn locks_are_read_at_the_scope_or_the_managed_identity() {
        let mi = ArmId::parse(&format!(
            "{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let key = ObjectKey::Fic {
            target: mi.key().to_owned(),
            issuer: "https://issuer".into(),
            subject: "system:serviceaccount:ns:sa".into(),
        };
        let ra = Action::DeleteRoleAssignment {
            schedule_start: None,
            key: key.clone(),
            scope: RG.into(),
            name: uuid::Uuid::nil(),
            id: String::new(),
        };
        assert_eq!(lock_scope(&ra), Some(RG));
        let fic = |target| Action::DeleteFic {
            key: key.clone(),
            target,
            name: "lapse-x".into(),
        };
        assert_eq!(
            lock_scope(&fic(FicTarget::ManagedIdentity(mi.clone()))),
            Some(mi.as_str())
        );
        assert_eq!(
            lock_scope(&fic(FicTarget::Application(uuid::Uuid::nil()))),
            None
        );
    }
}
