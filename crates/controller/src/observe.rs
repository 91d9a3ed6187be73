//! Everything the decision core reads that comes from outside: policies, namespace labels,
//! role names, the identity's principal.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use lapse_api::lease::IdentityObservation;
use lapse_api::policy::NamedPolicy;
use lapse_api::role::{RoleCatalogue, RoleRef};
use lapse_api::v1alpha1::AccessPolicy;
use lapse_api::validate::{Identity, validate_policy};
use lapse_azure::AzureClient;
use uuid::Uuid;

/// Validated policies, re-validated only when a policy's resourceVersion changes.
#[derive(Debug)]
pub struct PolicyCache {
    store: Store<AccessPolicy>,
    cache: Mutex<HashMap<String, (Option<String>, NamedPolicy)>>,
}

impl PolicyCache {
    pub fn new(store: Store<AccessPolicy>) -> Self {
        Self {
            store,
            cache: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Store<AccessPolicy> {
        &self.store
    }

    pub fn snapshot(&self) -> Vec<NamedPolicy> {
        let live = self.store.state();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|name, _| live.iter().any(|p| &p.name_any() == name));
        live.iter()
            .map(|p| {
                let name = p.name_any();
                let rv = p.resource_version();
                match cache.get(&name) {
                    Some((cached_rv, policy)) if *cached_rv == rv => policy.clone(),
                    _ => {
                        let policy = NamedPolicy {
                            name: name.clone(),
                            rules: validate_policy(&p.spec).map_err(|e| e.to_string()),
                        };
                        cache.insert(name, (rv, policy.clone()));
                        policy
                    }
                }
            })
            .collect()
    }
}

/// Labels of a namespace from the namespace reflector.
pub fn namespace_labels(
    store: &Store<Namespace>,
    namespace: &str,
) -> std::collections::BTreeMap<String, String> {
    store
        .get(&ObjectRef::<Namespace>::new(namespace))
        .map(|ns| ns.meta().labels.clone().unwrap_or_default())
        .unwrap_or_default()
}

/// How long a resolved principal ID is trusted. An identity deleted and created again under
/// the same name gets a new principal; after this long, new role assignments go to it.
const PRINCIPAL_TTL: Duration = Duration::from_secs(600);

/// Role names and principals learned from Azure. Role look-ups go through the Azure client's
/// role cache (found names 10 minutes, unknown ones 1 minute): the one place that decides how
/// often Azure is asked.
#[derive(Debug)]
pub struct Resolver {
    catalogue: RwLock<RoleCatalogue>,
    /// Identity key → principal ID and when it was looked up.
    principals: Mutex<HashMap<String, (Uuid, Instant)>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            catalogue: RwLock::new(RoleCatalogue::builtin()),
            principals: Mutex::default(),
        }
    }
}

impl Resolver {
    pub fn catalogue(&self) -> RoleCatalogue {
        self.catalogue
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Looks up role names the catalogue does not know, each in the subscriptions it may be
    /// defined in. A failed look-up leaves the name unknown, which policy evaluation refuses.
    /// Returns the (subscription, name) pairs Azure answered it does not know.
    pub async fn resolve_names(
        &self,
        azure: &AzureClient,
        wanted: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut missing = Vec::new();
        for (subscription, name) in wanted {
            let known = {
                let c = self
                    .catalogue
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.resolve(&RoleRef::Name(name.clone())).is_ok()
            };
            if known {
                continue;
            }
            match azure.role_definition_by_name(subscription, name).await {
                Ok(Some(def)) => {
                    self.catalogue
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(&def.role_name, def.guid);
                }
                Ok(None) => missing.push((subscription.clone(), name.clone())),
                Err(e) => {
                    tracing::warn!(role = %name, %subscription, error = %e, "looking up a role definition")
                }
            }
        }
        missing
    }

    /// A principal ID looked up less than [`PRINCIPAL_TTL`] before `now`.
    fn cached_principal(&self, key: &str, now: Instant) -> Option<Uuid> {
        self.principals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < PRINCIPAL_TTL)
            .map(|(p, _)| *p)
    }

    fn remember_principal(&self, key: String, principal: Uuid, now: Instant) {
        self.principals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (principal, now));
    }

    /// The principal (object) ID role assignments go to.
    pub async fn identity(&self, azure: &AzureClient, identity: &Identity) -> IdentityObservation {
        let key = match identity {
            Identity::ServicePrincipal(id) => {
                return IdentityObservation::Resolved { principal_id: *id };
            }
            Identity::ManagedIdentity(id) => id.key().to_owned(),
            Identity::Application(id) => format!("/applications/{id}"),
        };
        if let Some(principal_id) = self.cached_principal(&key, Instant::now()) {
            return IdentityObservation::Resolved { principal_id };
        }
        let found = match identity {
            Identity::ManagedIdentity(id) => match azure.get_managed_identity(id).await {
                Ok(Some(mi)) => Ok(Some(mi.principal_id)),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            Identity::Application(object_id) => match azure.get_application(object_id).await {
                Ok(Some(app)) => match azure.service_principal_of_app(&app.app_id).await {
                    Ok(Some(sp)) => Ok(Some(sp.id)),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            Identity::ServicePrincipal(_) => Ok(None),
        };
        match found {
            Ok(Some(p)) => {
                self.remember_principal(key, p, Instant::now());
                IdentityObservation::Resolved { principal_id: p }
            }
            Ok(None) => IdentityObservation::NotFound {
                code: "NotFound".into(),
                message: format!(
                    "{} does not exist (or has no service principal)",
                    identity.display_name()
                ),
            },
            Err(e) => {
                tracing::warn!(identity = %identity.display_name(), error = %e, "resolving the identity's principal");
                IdentityObservation::Unknown
            }
        }
    }
}

/// A Kubernetes timestamp as the core's `DateTime<Utc>`.
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0);
    chrono::DateTime::from_timestamp(t.0.as_second(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolved_principal_is_looked_up_again_after_its_ttl() {
        let r = Resolver::default();
        let (key, p) = ("/subscriptions/s/resourcegroups/rg/x", Uuid::from_u128(7));
        let t0 = Instant::now();
        assert_eq!(r.cached_principal(key, t0), None);
        r.remember_principal(key.to_owned(), p, t0);
        assert_eq!(
            r.cached_principal(key, t0 + Duration::from_secs(1)),
            Some(p)
        );
        // An identity re-created under the same name has a new principal: ask Azure again.
        assert_eq!(r.cached_principal(key, t0 + PRINCIPAL_TTL), None);
    }
}
