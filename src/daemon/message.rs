//! One received message, from parse to acknowledgement.
//!
//! A task parses the message ([`crate::event`]), reconciles its keys, and then:
//!
//! - every key reconciled: the message is deleted (batched by the [`super::ack`]);
//! - a test event: deleted;
//! - poison: sent to the dead-letter queue with its reason, then deleted;
//! - any key failed: the message is released with a visibility that grows with its
//!   receive count, so that it comes back later and, after the queue's
//!   `maxReceiveCount`, SQS moves it to the dead-letter queue.
//!
//! While its keys are worked on, a heartbeat extends the message's visibility,
//! never past SQS's 12 hours. What became of it is logged and counted in one place,
//! [`Daemon::finish`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::DateTime;
use tracing::Instrument;

use super::Daemon;
use crate::config::MAX_VISIBILITY;
use crate::event::{self, KeyEvent, Parsed};
use crate::fleet::{Step, Verdict, MAX_RESTARTS};
use crate::metrics::{self, MessageResult, SplitResult};
use crate::object::SourceObject;
use crate::queue::Received;
use crate::reconcile::{Hint, Outcome, Report, Slot};
use crate::retry;

impl Daemon {
    /// Handles one message; `trial` when it is the breaker's half-open trial.
    pub(super) async fn handle(self: Arc<Self>, message: Received, mut slot: Slot, trial: bool) {
        let span = tracing::info_span!(
            "message",
            message_id = %message.id,
            receive_count = message.receive_count
        );
        async {
            match event::parse(&message.body, &self.routes.buckets()) {
                Parsed::Test => {
                    self.deleter.delete(&message);
                    self.finish(MessageResult::Ignored, "an S3 test event; deleted");
                }
                Parsed::Poison(reason) => self.dead_letter(&message, &reason).await,
                Parsed::Newer(version) => {
                    self.release(&message, NEWER_FORMAT_WAIT).await;
                    self.finish(
                        MessageResult::Retried,
                        &format!("an xpsync message of format {version}, newer than this worker's: left for a newer worker"),
                    );
                }
                Parsed::Keys(keys) => self.reconcile(&message, &keys, &mut slot).await,
                Parsed::Range { bucket, key, work } => {
                    let span = tracing::info_span!("range", key, first_part = work.first_part);
                    let fleet = self.routes.fleet();
                    let step = match self.routes.of(&bucket, &key) {
                        Err(why) => Some(Step::dead_letter(why)),
                        Ok(_) if fleet.has_range_queue() && message.queue_url == self.queue.url => {
                            let why = "it came on the main queue; ranges travel on the range queue";
                            Some(fleet.hand_back(&message.body, why).await)
                        }
                        Ok(route) => match fleet.ranges.take(work.part_sizes.len()) {
                            Some(_held) => {
                                let copying = route.fleet.copy_range(&key, &work);
                                self.work_on(&message, copying).instrument(span).await
                            }
                            None => {
                                let why = "this worker holds all the ranges its parts can copy";
                                Some(fleet.hand_back(&message.body, why).await)
                            }
                        },
                    };
                    self.carry_out(&message, step).await;
                }
                Parsed::Check { bucket, key, work } => {
                    let span = tracing::info_span!("check", key);
                    let step = match self.routes.of(&bucket, &key) {
                        Err(why) => Some(Step::dead_letter(why)),
                        Ok(route) => {
                            let checking = route.fleet.check_split(&key, &work);
                            self.work_on(&message, checking).instrument(span).await
                        }
                    };
                    self.carry_out(&message, step).await;
                }
            }
            if trial {
                // Whatever it came to has been recorded; if nothing was, another
                // message may be tried.
                self.breaker.trial_over();
            }
        }
        .instrument(span)
        .await
    }

    /// Carries out a step of the fleet's work on `message` (None: the grace period
    /// ended first, and the message was released).
    async fn carry_out(&self, message: &Received, step: Option<Step>) {
        let Some(step) = step else { return };
        if let Some(signal) = step.signal {
            self.breaker.record_work(signal, &self.health);
        }
        match step.verdict {
            Verdict::Done(what) => {
                self.deleter.delete(message);
                self.finish(MessageResult::Deleted, &what);
            }
            Verdict::Retry(what) => {
                self.release(message, retry_delay(message.receive_count))
                    .await;
                self.finish(MessageResult::Retried, &what);
            }
            Verdict::DeadLetter(why) => self.dead_letter(message, &why).await,
            Verdict::Release(what) => {
                self.release(message, Duration::ZERO).await;
                self.finish(MessageResult::Retried, &what);
            }
        }
    }

    /// Logs and counts what became of a message.
    pub(super) fn finish(&self, result: MessageResult, what: &str) {
        match result {
            MessageResult::DeadLettered => tracing::warn!(result = result.as_str(), "{what}"),
            _ => tracing::info!(result = result.as_str(), "{what}"),
        }
        result.count();
        self.handled.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) async fn dead_letter(&self, message: &Received, reason: &str) {
        match self.queue.dead_letter(message, reason).await {
            Ok(()) => self.finish(
                MessageResult::DeadLettered,
                &format!("moved to the dead-letter queue: {reason}"),
            ),
            Err(e) => {
                tracing::error!(%reason, error = %e, "could not dead-letter a message; it will come back");
                self.release(message, retry_delay(message.receive_count))
                    .await;
                self.finish(MessageResult::Retried, "left to come back");
            }
        }
    }

    /// Runs `work` for `message`, its visibility extended by a heartbeat and the
    /// task protected once it outlasts the grace period. None if the grace period
    /// ended first: the message is then released for another worker.
    pub(super) async fn work_on<T>(
        &self,
        message: &Received,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            done = work => Some(done),
            never = self.heartbeat(message) => match never {},
            never = self.protect_after_grace() => match never {},
            () = self.hard_stop.cancelled() => {
                tracing::info!("shutting down: releasing the message for another worker");
                self.release(message, Duration::ZERO).await;
                self.released.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }

    async fn reconcile(&self, message: &Received, keys: &[KeyEvent], slot: &mut Slot) {
        if let Some(why) = keys.iter().find_map(restarted_too_often) {
            SplitResult::GivenUp.count();
            self.dead_letter(message, &why).await;
            return;
        }
        let mut routes = Vec::with_capacity(keys.len());
        for key in keys {
            match self.routes.of(&key.bucket, &key.key) {
                Ok(route) => routes.push(route),
                Err(why) => return self.dead_letter(message, &why).await,
            }
        }
        let work = async {
            let mut reports = Vec::with_capacity(keys.len());
            for (key, route) in keys.iter().zip(&routes) {
                let hint = match &key.created {
                    Some((size, etag)) => {
                        Hint::Described(SourceObject::listed(&key.key, *size, etag.clone()))
                    }
                    None => Hint::Nothing,
                };
                let report = route
                    .reconciler
                    .reconcile_in(slot, &key.key, hint, key.tags)
                    .await;
                reports.push(report);
            }
            reports
        };
        let Some(reports) = self.work_on(message, work).await else {
            return;
        };

        for report in &reports {
            self.breaker.record(report, &self.health);
        }
        let errors: Vec<_> = reports.iter().filter_map(Report::error).collect();
        if errors.is_empty() {
            for ((key, report), route) in keys.iter().zip(&reports).zip(&routes) {
                observe_latency(key, report, message, &route.name);
            }
            // Split objects: their ranges and check must be sent before the key's
            // message goes.
            for ((key, report), route) in keys.iter().zip(&reports).zip(&routes) {
                if let Ok(crate::reconcile::Done {
                    split: Some(split), ..
                }) = &report.result
                {
                    let restarts = key.restart.as_ref().map_or(0, |r| r.count);
                    // Received before, or dead-lettered and replayed (a fresh
                    // message, received once): its splitter may have died before
                    // sending anything, so a join sends a check.
                    let returned = message.receive_count > 1
                        || message.attributes.contains_key(crate::queue::REPLAY_COUNT);
                    let fleet = &route.fleet;
                    if !fleet
                        .send_split(&report.key, split, restarts, returned)
                        .await
                    {
                        let delay = retry_delay(message.receive_count);
                        self.release(message, delay).await;
                        self.finish(
                            MessageResult::Retried,
                            "a split's messages could not be sent; the message comes back",
                        );
                        return;
                    }
                }
            }
            self.deleter.delete(message);
            self.finish(MessageResult::Deleted, "every key reconciled; deleted");
        } else if errors.iter().all(|e| e.is_verdict()) {
            // Wrong with these objects, and wrong every time: no use retrying.
            let reason = reports
                .iter()
                .filter_map(|r| Some(format!("{}: {}", r.key, r.error()?)))
                .collect::<Vec<_>>()
                .join("; ");
            self.dead_letter(message, &reason).await;
        } else {
            let delay = retry_delay(message.receive_count);
            self.release(message, delay).await;
            self.finish(
                MessageResult::Retried,
                &format!(
                    "a key failed; the message comes back in {}",
                    humantime::format_duration(delay)
                ),
            );
        }
    }

    /// Once the work has run longer than the shutdown grace period, so that a stop
    /// would lose it, holds the task's scale-in protection until dropped (when the
    /// work ends). Never returns.
    async fn protect_after_grace(&self) -> std::convert::Infallible {
        tokio::time::sleep(self.config.shutdown.grace_period).await;
        let _held = self.protection.hold();
        std::future::pending().await
    }

    /// Keeps the message hidden while its keys are worked on. Never returns.
    async fn heartbeat(&self, message: &Received) -> std::convert::Infallible {
        let received = Instant::now();
        let timeout = self.queue.visibility_timeout;
        let interval = (timeout / 2).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(interval).await;
            // SQS counts the 12 hours from the first receive; keep a minute spare.
            let left = MAX_VISIBILITY.saturating_sub(received.elapsed() + Duration::from_secs(60));
            if left.is_zero() {
                tracing::warn!(
                    "the message reached SQS's 12-hour visibility limit; it will reappear"
                );
                return std::future::pending().await;
            }
            if let Err(e) = self
                .queue
                .change_visibility(message, timeout.min(left))
                .await
            {
                tracing::warn!(error = %e, "could not extend the message's visibility");
            }
        }
    }

    pub(super) async fn release(&self, message: &Received, delay: Duration) {
        if let Err(e) = self.queue.change_visibility(message, delay).await {
            tracing::warn!(error = %e, "could not release the message; it reappears when its visibility ends");
        }
    }
}

/// Why a key the fleet started over too often ends here, dead-lettered: its split
/// cannot succeed (DESIGN §10: every split ends).
fn restarted_too_often(key: &KeyEvent) -> Option<String> {
    let restart = key.restart.as_ref().filter(|r| r.count >= MAX_RESTARTS)?;
    Some(format!(
        "{}: its split was started over {} times without completing; the last time because {}",
        key.key, restart.count, restart.why
    ))
}

fn observe_latency(key: &KeyEvent, report: &Report, message: &Received, route: &str) {
    if !matches!(
        report.outcome(),
        Outcome::Copied | Outcome::Deleted | Outcome::MetadataUpdated
    ) {
        return;
    }
    if let Some(at) = key.time.or(message.sent_at) {
        let now = DateTime::from(std::time::SystemTime::now());
        let seconds = now.as_secs_f64() - at.as_secs_f64();
        metrics::REPLICATION_LATENCY
            .with_label_values(&[route])
            .observe(seconds.max(0.0));
    }
}

/// How long a message of a newer format stays hidden before it is offered again,
/// for a newer worker of a rolling deploy to take.
const NEWER_FORMAT_WAIT: Duration = Duration::from_secs(60);

/// Visibility given to a message whose keys failed: 10 s, doubled per receive, at
/// most 15 minutes.
pub fn retry_delay(receive_count: u32) -> Duration {
    retry::backoff(
        receive_count,
        Duration::from_secs(10),
        Duration::from_secs(900),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_started_over_too_often_is_given_up_saying_why() {
        let event = |count| KeyEvent {
            bucket: "source".into(),
            key: "big".into(),
            time: None,
            tags: crate::reconcile::Tags::Skip,
            created: None,
            restart: Some(crate::fleet::Restart {
                count,
                why: "its upload is gone".into(),
            }),
        };
        assert_eq!(restarted_too_often(&event(MAX_RESTARTS - 1)), None);
        let why = restarted_too_often(&event(MAX_RESTARTS)).expect("given up");
        assert!(
            why.starts_with("big: ") && why.contains("its upload is gone"),
            "{why}"
        );
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(4), Duration::from_secs(80));
        assert_eq!(retry_delay(9), Duration::from_secs(900));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(900));
    }
}
