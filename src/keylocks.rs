//! One reconcile of a key at a time within a process.
//!
//! S3 sends duplicate events, often together (and the emulator sends two per
//! completed multipart upload): a second reconcile of a key waits for the first,
//! then finds nothing to do, instead of copying the object twice. Entries exist
//! only while a key is held or awaited, so the map does not grow with the bucket.
//! (Workers of a fleet do not share this; they rely on the last-writer check.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One async mutex per key in use; entries go when no one holds or awaits them.
#[derive(Clone, Debug, Default)]
pub struct KeyLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds a key; releases (and forgets it when no one else waits) on drop.
pub struct KeyGuard {
    key: String,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = Arc::clone(
            self.locks
                .lock()
                .expect("never poisoned")
                .entry(key.to_owned())
                .or_default(),
        );
        KeyGuard {
            key: key.to_owned(),
            locks: Arc::clone(&self.locks),
            _guard: mutex.lock_owned().await,
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().expect("never poisoned");
        // The map's reference and this guard's are the only ones: no one waits.
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 2)
        {
            locks.remove(&self.key);
        }
    }
}
