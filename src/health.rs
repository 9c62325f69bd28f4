//! What the process says about itself: alive, and ready or not, and why.
//!
//! The daemon sets the state; `/healthz` and `/readyz` read it. Ready means
//! configured, credentials loaded, and neither paused by the breaker nor shutting
//! down; the `xpsync_ready` gauge mirrors it for alerting.

use std::sync::atomic::{AtomicBool, Ordering};
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
    alive: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            readiness: Mutex::new(Readiness::Starting),
            alive: AtomicBool::new(true),
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

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The receive loop has stopped for a reason other than shutdown.
    pub fn set_dead(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}
