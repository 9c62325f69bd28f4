//! Object slots and check permits: what a reconcile holds while it works.
//!
//! An object's slot (`transfer.max_objects` of them) is held while its bytes may be
//! read or written: describe, decide, copy. The last writer's check after a write
//! (one HEAD of the source, no bytes) holds a check permit instead: the slot is
//! traded for one, so the next object starts while this one's check is out, and a
//! small object costs the slot two round trips, not three. There are as many check
//! permits as slots, so what a worker holds stays bounded: `max_objects` objects
//! being copied and as many being checked.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{self, GaugeHold};

/// A hold on one object slot, or on none (given back, or not taken yet). The
/// daemon takes one before it receives a message, and hands it to the reconcile of
/// the message's keys; other callers let the reconcile take its own.
#[derive(Debug, Default)]
pub struct Slot {
    held: Option<(OwnedSemaphorePermit, GaugeHold)>,
}

impl Slot {
    /// No slot held: the reconcile takes one when it needs it.
    pub fn none() -> Self {
        Self::default()
    }

    /// A slot taken from the reconciler's [`Slots::objects`] by the caller.
    pub fn from_permit(permit: OwnedSemaphorePermit) -> Self {
        Self {
            held: Some((permit, metrics::hold(&metrics::OBJECTS_IN_FLIGHT, 1))),
        }
    }

    /// Waits for a slot unless one is held.
    pub(super) async fn take(&mut self, slots: &Slots) {
        if self.held.is_none() {
            let permit = Arc::clone(&slots.objects)
                .acquire_owned()
                .await
                .expect("never closed");
            *self = Self::from_permit(permit);
        }
    }

    /// Trades the slot for a check permit: waits for the permit while still holding
    /// the slot (so that no more than `max_objects` checks are ever waited on),
    /// then gives the slot back.
    pub(super) async fn trade_for_check(&mut self, slots: &Slots) -> OwnedSemaphorePermit {
        let check = Arc::clone(&slots.checks)
            .acquire_owned()
            .await
            .expect("never closed");
        self.held = None;
        check
    }
}

/// A reconciler's slots and check permits, shared by its clones.
#[derive(Debug, Clone)]
pub struct Slots {
    pub objects: Arc<Semaphore>,
    checks: Arc<Semaphore>,
}

impl Slots {
    pub fn new(objects: usize) -> Self {
        let objects = objects.max(1);
        Self {
            objects: Arc::new(Semaphore::new(objects)),
            checks: Arc::new(Semaphore::new(objects)),
        }
    }
}
