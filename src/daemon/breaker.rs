//! The breaker: when every copy fails the same systemic way, stop taking messages.
//!
//! [`BREAKER_THRESHOLD`] systemic failures in a row (keys rejected, a bucket
//! missing) open it: the receive loop stops, `/readyz` reports the cause, and a
//! probe retries with backoff until it passes. Messages are not received meanwhile,
//! so an outage does not push the backlog into the dead-letter queue.

use std::sync::Mutex;

use crate::error::ErrorKind;
use crate::health::{Health, Readiness};
use crate::metrics;
use crate::reconcile::Report;

/// Systemic failures in a row that pause receiving.
pub const BREAKER_THRESHOLD: u32 = 3;

/// Counts systemic failures in a row; opens after [`BREAKER_THRESHOLD`].
#[derive(Debug, Default)]
pub(super) struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    in_a_row: u32,
    open: Option<String>,
}

impl Breaker {
    pub(super) fn record(&self, report: &Report, health: &Health) {
        let mut state = self.state.lock().expect("never poisoned");
        match report.error() {
            Some(e) if e.is_systemic() => {
                state.in_a_row += 1;
                if state.in_a_row >= BREAKER_THRESHOLD && state.open.is_none() {
                    let cause = e.to_string();
                    tracing::error!(%cause, "every copy fails the same way; pausing receiving until it is fixed");
                    metrics::BREAKER_TRIPS
                        .with_label_values(&[e.kind().as_str()])
                        .inc();
                    health.set(Readiness::Paused(cause.clone()));
                    state.open = Some(cause);
                }
            }
            Some(e) if e.kind() == ErrorKind::Transient => {}
            _ => state.in_a_row = 0,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.cause().is_some()
    }

    pub(super) fn cause(&self) -> Option<String> {
        self.state.lock().expect("never poisoned").open.clone()
    }

    pub(super) fn close(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        state.open = None;
        state.in_a_row = 0;
    }
}
