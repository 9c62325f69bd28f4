//! What the process says about itself: ready or not, and why.
//!
//! The daemon sets the state; `/readyz` reads it. (`/healthz` needs no state: the
//! receive loop runs in the daemon's main task, so if it ends, the process ends.)
//! Ready means
//! configured, credentials loaded, and neither paused by the breaker nor shutting
//! down; the `xpsync_ready` gauge mirrors it for alerting.

use std::sync::Mutex;

use serde::Serialize;

use crate::metrics;

/// Why the process is not ready, or that it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Readiness {
    Starting,
    Ready,
    /// Every copy failed the same systemic way: receiving is paused.
    Paused(String),
    ShuttingDown,
}

/// Shared by the daemon and the HTTP server.
#[derive(Debug)]
pub struct Health {
    readiness: Mutex<Readiness>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            readiness: Mutex::new(Readiness::Starting),
        }
    }
}

impl Health {
    pub fn readiness(&self) -> Readiness {
        self.readiness.lock().expect("never poisoned").clone()
    }

    pub fn set(&self, readiness: Readiness) {
        let mut current = self.readiness.lock().expect("never poisoned");
        // Once shutting down, nothing makes the process ready again.
        if *current != Readiness::ShuttingDown {
            metrics::READY.set(i64::from(readiness == Readiness::Ready));
            *current = readiness;
        }
    }
}
