//! Per-object locks: two grants sharing one Azure object never decide about it at the same
//! time (one ending while the other starts to rely on it), nor does the sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lapse_api::lease::ObjectKey;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default, Clone)]
pub struct KeyLocks {
    map: Arc<Mutex<HashMap<ObjectKey, Arc<AsyncMutex<()>>>>>,
}

/// Holds a set of key locks; released on drop.
#[derive(Debug)]
pub struct KeyGuards {
    _guards: Vec<OwnedMutexGuard<()>>,
    keys: Vec<ObjectKey>,
    locks: KeyLocks,
}

impl KeyLocks {
    /// Locks every key, in sorted order so two callers can never deadlock.
    pub async fn lock(&self, keys: &[ObjectKey]) -> KeyGuards {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for k in &keys {
            let m = {
                let mut map = self
                    .map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.entry(k.clone()).or_default().clone()
            };
            guards.push(m.lock_owned().await);
        }
        KeyGuards {
            _guards: guards,
            keys,
            locks: self.clone(),
        }
    }
}

impl Drop for KeyGuards {
    fn drop(&mut self) {
        // Forget entries nobody else holds or waits for, so the map does not grow forever.
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self._guards.clear();
        for k in &self.keys {
            if map.get(k).is_some_and(|m| Arc::strong_count(m) == 1) {
                map.remove(k);
            }
        }
    }
}
