//! The breaker: when every copy fails the same way, stop taking messages.
//!
//! **Closed** (normal): [`BREAKER_THRESHOLD`] failures in a row that are systemic
//! (keys rejected, a bucket missing, a secret that cannot be read), or refusals of
//! an operation that passes on no key (a policy refusing writes, say), open it. One
//! object's verdict (a listed per-object code, a refusal of that object alone) is
//! never counted, however many come in a row: it says nothing of the service.
//!
//! **Open**: no message is received; `/readyz` reports the cause; a probe (a
//! listing of both buckets, reading the keys again) is tried after a pause that
//! doubles with each probe and each trip, so a fault that keeps coming back is
//! tried less and less often.
//!
//! **Half-open**: a passing probe proves only that reads work: writes may still be
//! refused (a bucket policy requiring an encryption header, say). So exactly one
//! message is taken. A key copied or deleted closes the breaker; a failure opens it
//! again, its pause doubled; a key found unchanged proves nothing, and another
//! single message is taken. Messages are thus not pushed into the dead-letter queue
//! by an outage, one receive per probe at most.

use std::sync::Mutex;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::health::{Health, Readiness};
use crate::metrics;
use crate::reconcile::{Outcome, Report};
use crate::retry;

/// Failures in a row that pause receiving.
pub const BREAKER_THRESHOLD: u32 = 3;

/// The longest pause between probes.
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum State {
    Closed {
        in_a_row: u32,
    },
    Open {
        cause: String,
        /// Times it opened since it was last closed.
        trips: u32,
        /// Probes failed since it opened.
        probes: u32,
    },
    HalfOpen {
        cause: String,
        trips: u32,
        /// A trial message is out.
        trial: bool,
    },
}

/// What the receive loop may do now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Receive as usual.
    Receive,
    /// Probe, after this pause.
    Probe(Duration),
    /// Receive one message: the half-open trial (now marked as out).
    Trial,
    /// A trial is out: wait for its outcome.
    Wait,
}

/// Shared by the receive loop and the message tasks.
#[derive(Debug)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Closed { in_a_row: 0 }),
        }
    }
}

impl Breaker {
    /// Records what reconciling a key came to.
    pub(super) fn record(&self, report: &Report, health: &Health) {
        if report.error().is_some_and(|e| e.is_verdict()) {
            // One object's verdict: it says nothing of the service.
            return;
        }
        let result = match report.error() {
            Some(e) => Err((e.kind(), e.to_string())),
            None => Ok(matches!(
                report.outcome(),
                Outcome::Copied | Outcome::Deleted | Outcome::MetadataUpdated
            )),
        };
        self.record_work(result, health);
    }

    /// Records what a unit of work (a key, a range, a check) came to: `Ok(true)`
    /// when it wrote to the target, `Ok(false)` when it only looked, or the kind and
    /// text of its error.
    pub(super) fn record_work(&self, result: Result<bool, (ErrorKind, String)>, health: &Health) {
        let mut state = self.state.lock().expect("never poisoned");
        // A refusal that no key was seen to escape may be a policy refusing the
        // operation on every key: it counts, and its message is retried, not
        // dead-lettered, until the breaker holds.
        let counts = |kind: ErrorKind| kind.is_systemic() || kind == ErrorKind::Denied;
        match &mut *state {
            State::Closed { in_a_row } => match result {
                Err((kind, cause)) if counts(kind) => {
                    *in_a_row += 1;
                    if *in_a_row >= BREAKER_THRESHOLD {
                        tracing::error!(%cause, "every copy fails the same way; pausing receiving until it is fixed");
                        Self::trip(&mut state, kind, cause, 1, health);
                    }
                }
                Err((ErrorKind::Transient, _)) => {}
                _ => *in_a_row = 0,
            },
            // Messages taken before it opened: they say nothing of the probe.
            State::Open { .. } => {}
            State::HalfOpen { trips, .. } => {
                let trips = *trips;
                match result {
                    Err((kind, cause)) => {
                        tracing::warn!(%cause, "the trial message failed too; receiving stays paused");
                        Self::trip(&mut state, kind, cause, trips + 1, health);
                    }
                    Ok(true) => {
                        tracing::info!("a trial message was written: receiving again");
                        *state = State::Closed { in_a_row: 0 };
                        health.set(Readiness::Ready);
                    }
                    // Unchanged, absent or filtered: reads work, writes unproven.
                    Ok(false) => {
                        if let State::HalfOpen { trial, .. } = &mut *state {
                            *trial = false;
                        }
                    }
                }
            }
        }
    }

    fn trip(state: &mut State, kind: ErrorKind, cause: String, trips: u32, health: &Health) {
        metrics::BREAKER_TRIPS
            .with_label_values(&[kind.as_str()])
            .inc();
        health.set(Readiness::Paused(cause.clone()));
        *state = State::Open {
            cause,
            trips,
            probes: 0,
        };
    }

    /// A message of the half-open trial was handled without a key's outcome (a
    /// test event, poison) or none was received: another may be taken.
    pub(super) fn trial_over(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        if let State::HalfOpen { trial, .. } = &mut *state {
            *trial = false;
        }
    }

    /// What the receive loop may do now; a [`Gate::Trial`] marks the trial as out.
    pub(super) fn gate(&self) -> Gate {
        let mut state = self.state.lock().expect("never poisoned");
        match &mut *state {
            State::Closed { .. } => Gate::Receive,
            State::Open { trips, probes, .. } => Gate::Probe(retry::backoff(
                *trips + *probes,
                Duration::from_secs(1),
                MAX_PROBE_PAUSE,
            )),
            State::HalfOpen { trial: true, .. } => Gate::Wait,
            State::HalfOpen { trial, .. } => {
                *trial = true;
                Gate::Trial
            }
        }
    }

    /// The probe passed: try one message.
    pub(super) fn probe_passed(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        if let State::Open { cause, trips, .. } = &*state {
            tracing::info!(%cause, "the probe passed; taking one message to see whether writes work");
            *state = State::HalfOpen {
                cause: cause.clone(),
                trips: *trips,
                trial: false,
            };
        }
    }

    /// The probe failed: the next one waits longer.
    pub(super) fn probe_failed(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        if let State::Open { probes, .. } = &mut *state {
            *probes += 1;
        }
    }

    /// Why receiving is paused, while it is.
    pub(super) fn cause(&self) -> Option<String> {
        match &*self.state.lock().expect("never poisoned") {
            State::Closed { .. } => None,
            State::Open { cause, .. } | State::HalfOpen { cause, .. } => Some(cause.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{S3Error, Side};
    use crate::reconcile::{ReconcileError, Report};

    fn failed(kind: ErrorKind) -> Report {
        report_of(S3Error::new(
            Side::Target,
            "PutObject",
            kind,
            "AccessDenied: no",
        ))
    }

    fn report_of(error: S3Error) -> Report {
        Report {
            key: "k".into(),
            duration: Duration::ZERO,
            result: Err(ReconcileError::from(error)),
        }
    }

    fn done(outcome: Outcome) -> Report {
        Report {
            key: "k".into(),
            duration: Duration::ZERO,
            result: Ok(crate::reconcile::Done::of(outcome)),
        }
    }

    #[test]
    fn it_opens_after_failures_in_a_row_and_a_transient_one_does_not_reset_them() {
        let (breaker, health) = (Breaker::default(), Health::default());
        breaker.record(&failed(ErrorKind::Auth), &health);
        breaker.record(&failed(ErrorKind::Transient), &health);
        breaker.record(&failed(ErrorKind::Denied), &health);
        assert_eq!(breaker.gate(), Gate::Receive);
        breaker.record(&failed(ErrorKind::Auth), &health);
        assert!(matches!(breaker.gate(), Gate::Probe(_)));
        assert!(matches!(health.readiness(), Readiness::Paused(_)));
    }

    #[test]
    fn one_objects_verdicts_never_open_it_however_many_in_a_row() {
        let (breaker, health) = (Breaker::default(), Health::default());
        let mut refused = S3Error::new(
            Side::Source,
            "GetObject",
            ErrorKind::Denied,
            "AccessDenied: kms:Decrypt",
        );
        refused.per_object = true;
        for _ in 0..BREAKER_THRESHOLD * 3 {
            breaker.record(&failed(ErrorKind::Permanent), &health);
            breaker.record(&report_of(refused.clone()), &health);
        }
        assert_eq!(breaker.gate(), Gate::Receive);
        assert!(matches!(
            health.readiness(),
            Readiness::Starting | Readiness::Ready
        ));
    }

    #[test]
    fn half_open_takes_one_message_and_only_a_write_closes_it() {
        let (breaker, health) = (Breaker::default(), Health::default());
        for _ in 0..BREAKER_THRESHOLD {
            breaker.record(&failed(ErrorKind::Auth), &health);
        }
        let Gate::Probe(first) = breaker.gate() else {
            panic!()
        };
        breaker.probe_passed();
        assert_eq!(breaker.gate(), Gate::Trial);
        assert_eq!(breaker.gate(), Gate::Wait, "one trial at a time");
        breaker.record(&done(Outcome::Unchanged), &health);
        assert_eq!(breaker.gate(), Gate::Trial, "unchanged proves nothing");
        breaker.record(&failed(ErrorKind::Auth), &health);
        let Gate::Probe(second) = breaker.gate() else {
            panic!("a failed trial opens it again")
        };
        assert_eq!(second, first * 2, "the pause doubles across trips");
        breaker.probe_failed();
        let Gate::Probe(third) = breaker.gate() else {
            panic!()
        };
        assert_eq!(third, second * 2);
        breaker.probe_passed();
        assert_eq!(breaker.gate(), Gate::Trial);
        breaker.record(&done(Outcome::Copied), &health);
        assert_eq!(breaker.gate(), Gate::Receive);
        assert_eq!(breaker.cause(), None);
    }
}
