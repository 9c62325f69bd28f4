//! `xpsync run`: the receive loop, per-message handling, heartbeats, acknowledgement,
//! backoff, the systemic-failure breaker, and graceful shutdown.
//!
//! **Flow.** The loop takes capacity first: a permit of `transfer.max_objects` per
//! message, taken *before* the receive, so a received message never waits idle while
//! its visibility runs down. It long-polls for as many messages as it holds permits
//! (at most 10) and hands each to a task tracked by a [`TaskTracker`]. A task parses
//! the message ([`crate::event`]), reconciles its keys ([`Reconciler`]), and then:
//!
//! - every key reconciled: the message is deleted (batched by the [`Deleter`]);
//! - a test event: deleted;
//! - poison: sent to the dead-letter queue with its reason, then deleted;
//! - any key failed: the message is released with a visibility that grows with its
//!   receive count, so that it comes back later and, after the queue's
//!   `maxReceiveCount`, SQS moves it to the dead-letter queue.
//!
//! While a message is being worked on, a heartbeat extends its visibility, never
//! past SQS's 12 hours.
//!
//! **Breaker.** When [`BREAKER_THRESHOLD`] keys in a row fail systemically (keys
//! rejected, bucket missing), receiving pauses and `/readyz` says why; a probe
//! (HeadBucket on both sides, re-reading secrets) retries with backoff and resumes
//! receiving once it passes. Messages are not received meanwhile, so they are not
//! pushed into the dead-letter queue by an outage.
//!
//! **Shutdown.** On SIGTERM or SIGINT, `/readyz` fails and receiving stops. In-flight
//! messages get `shutdown.grace_period`; what still runs then is cancelled and its
//! message made visible at once for another worker. One log line sums it up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_s3::primitives::DateTime;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::aws::ErrorKind;
use crate::config::{Config, MAX_VISIBILITY};
use crate::event::{self, KeyEvent, Parsed};
use crate::health::{Health, Readiness};
use crate::queue::{Deleter, Queue, Received, MAX_BATCH};
use crate::reconcile::{Outcome, Reconciler, Report};
use crate::{aws, http, metrics};

/// Systemic failures in a row that pause receiving.
pub const BREAKER_THRESHOLD: u32 = 3;

/// How often the queues' depths are read.
const DEPTH_INTERVAL: Duration = Duration::from_secs(15);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let health = Arc::new(Health::default());
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen = {}", config.server.listen))?;
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        Arc::clone(&health),
        http_stop.clone(),
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), Arc::clone(&health)));

    let (source, target) = aws::connect(&config).await?;
    let queue = Queue::connect(&config).await?;
    match &queue.dead_letter_url {
        Some(url) => tracing::info!(queue = %queue.url, dead_letter_queue = %url, "connected"),
        None => {
            tracing::warn!(queue = %queue.url, "no dead-letter queue: poison messages will be retried instead")
        }
    }
    tokio::spawn(poll_depths(queue.clone(), http_stop.clone()));
    let (deleter, deleter_task) = Deleter::spawn(queue.clone());

    let daemon = Arc::new(Daemon {
        reconciler: Reconciler::new(source, target, Arc::clone(&config)),
        queue,
        deleter,
        health: Arc::clone(&health),
        slots: Arc::new(Semaphore::new(config.transfer.max_objects)),
        breaker: Breaker::default(),
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        handled: AtomicU64::new(0),
        released: AtomicU64::new(0),
        config: Arc::clone(&config),
    });
    health.set(Readiness::Ready);
    tracing::info!(listen = %config.server.listen, "xpsync is running");

    Arc::clone(&daemon).receive_loop(shutdown).await;

    let in_flight = daemon.tracker.len();
    let handled_before = daemon.handled.load(Ordering::SeqCst);
    daemon.tracker.close();
    let grace = config.shutdown.grace_period;
    if tokio::time::timeout(grace, daemon.tracker.wait())
        .await
        .is_err()
    {
        daemon.hard_stop.cancel();
        daemon.tracker.wait().await;
    }
    let finished = daemon.handled.load(Ordering::SeqCst) - handled_before;
    let released = daemon.released.load(Ordering::SeqCst);
    let Daemon { deleter, .. } = Arc::into_inner(daemon).expect("every task has ended");
    drop(deleter);
    let _ = deleter_task.await;
    tracing::info!(
        in_flight_at_signal = in_flight,
        finished_in_grace = finished,
        released,
        "shutdown complete: {finished} of {in_flight} in-flight messages finished within the grace period, {released} released for another worker"
    );
    http_stop.cancel();
    http.await.context("the HTTP server task")??;
    Ok(())
}

struct Daemon {
    config: Arc<Config>,
    reconciler: Reconciler,
    queue: Queue,
    deleter: Deleter,
    health: Arc<Health>,
    /// Messages in hand at once (`transfer.max_objects`); a permit is taken before
    /// receiving and held until the message is deleted or released.
    slots: Arc<Semaphore>,
    breaker: Breaker,
    /// Every message task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// Cancelled when the grace period is over: in-flight work stops and its
    /// message is made visible at once.
    hard_stop: CancellationToken,
    /// Messages finished (deleted, dead-lettered or released after failure).
    handled: AtomicU64,
    /// Messages released unfinished at shutdown.
    released: AtomicU64,
}

impl Daemon {
    async fn receive_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut receive_failures = 0u32;
        loop {
            if self.breaker.is_open() {
                self.recover(&shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
            let first = tokio::select! {
                permit = Arc::clone(&self.slots).acquire_owned() => permit.expect("never closed"),
                () = shutdown.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let received = tokio::select! {
                received = self.queue.receive(permits.len()) => received,
                () = shutdown.cancelled() => return,
            };
            match received {
                Ok(messages) => {
                    receive_failures = 0;
                    for (message, permit) in messages.into_iter().zip(permits) {
                        self.tracker
                            .spawn(Arc::clone(&self).handle(message, permit));
                    }
                }
                Err(e) => {
                    receive_failures += 1;
                    let pause = backoff(
                        receive_failures,
                        Duration::from_secs(1),
                        Duration::from_secs(30),
                    );
                    tracing::warn!(error = %e, retry_in = ?pause, "receiving failed");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Probes with backoff until the systemic failure is gone (or shutdown).
    async fn recover(&self, shutdown: &CancellationToken) {
        let mut attempt = 0;
        while let Some(cause) = self.breaker.cause() {
            attempt += 1;
            let pause = backoff(attempt, Duration::from_secs(1), Duration::from_secs(30));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            match self.reconciler.probe().await {
                Ok(()) => {
                    tracing::info!(%cause, "the systemic failure is gone; receiving again");
                    self.breaker.close();
                    self.health.set(Readiness::Ready);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "still failing systemically; receiving stays paused")
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, message: Received, _slot: OwnedSemaphorePermit) {
        let span = tracing::info_span!(
            "message",
            message_id = %message.id,
            receive_count = message.receive_count
        );
        async {
            match event::parse(&message.body, &self.config.source.bucket) {
                Parsed::Test => {
                    tracing::info!("an S3 test event; deleting it");
                    metrics::MESSAGES.with_label_values(&["ignored"]).inc();
                    self.deleter.delete(&message.id, &message.receipt);
                    self.handled.fetch_add(1, Ordering::SeqCst);
                }
                Parsed::Poison(reason) => self.dead_letter(&message, &reason).await,
                Parsed::Keys(keys) => self.reconcile(&message, &keys).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) {
        match self.queue.dead_letter(message, reason).await {
            Ok(()) => {
                tracing::warn!(%reason, "poison message moved to the dead-letter queue");
                metrics::MESSAGES
                    .with_label_values(&["dead_lettered"])
                    .inc();
            }
            Err(e) => {
                tracing::error!(%reason, error = %e, "could not dead-letter a poison message; it will come back");
                self.release(message, retry_delay(message.receive_count))
                    .await;
            }
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
    }

    async fn reconcile(&self, message: &Received, keys: &[KeyEvent]) {
        let work = async {
            let mut reports = Vec::with_capacity(keys.len());
            for key in keys {
                reports.push(self.reconciler.reconcile(&key.key).await);
            }
            reports
        };
        let reports = tokio::select! {
            reports = work => reports,
            never = self.heartbeat(&message.receipt) => match never {},
            () = self.hard_stop.cancelled() => {
                tracing::info!("shutting down: releasing the message for another worker");
                self.release(message, Duration::ZERO).await;
                self.released.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };

        for report in &reports {
            self.breaker.record(report, &self.health);
        }
        if reports.iter().all(|r| r.error.is_none()) {
            for (key, report) in keys.iter().zip(&reports) {
                observe_latency(key, report, message);
            }
            metrics::MESSAGES.with_label_values(&["deleted"]).inc();
            self.deleter.delete(&message.id, &message.receipt);
        } else {
            let delay = retry_delay(message.receive_count);
            tracing::info!(retry_in = ?delay, "a key failed; the message will come back");
            metrics::MESSAGES.with_label_values(&["retried"]).inc();
            self.release(message, delay).await;
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps the message hidden while its keys are worked on. Never returns.
    async fn heartbeat(&self, receipt: &str) -> std::convert::Infallible {
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
                .change_visibility(receipt, timeout.min(left))
                .await
            {
                tracing::warn!(error = %e, "could not extend the message's visibility");
            }
        }
    }

    async fn release(&self, message: &Received, delay: Duration) {
        if let Err(e) = self.queue.change_visibility(&message.receipt, delay).await {
            tracing::warn!(error = %e, "could not release the message; it reappears when its visibility ends");
        }
    }
}

fn observe_latency(key: &KeyEvent, report: &Report, message: &Received) {
    if !matches!(report.outcome, Outcome::Copied | Outcome::Deleted) {
        return;
    }
    if let Some(at) = key.time.or(message.sent_at) {
        let now = DateTime::from(std::time::SystemTime::now());
        let seconds = now.as_secs_f64() - at.as_secs_f64();
        metrics::REPLICATION_LATENCY.observe(seconds.max(0.0));
    }
}

/// Visibility given to a message whose keys failed: 10 s, doubled per receive, at
/// most 15 minutes.
pub fn retry_delay(receive_count: u32) -> Duration {
    backoff(
        receive_count,
        Duration::from_secs(10),
        Duration::from_secs(900),
    )
}

fn backoff(attempt: u32, first: Duration, max: Duration) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(max)
}

/// Counts systemic failures in a row; opens after [`BREAKER_THRESHOLD`].
#[derive(Debug, Default)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    in_a_row: u32,
    open: Option<String>,
}

impl Breaker {
    fn record(&self, report: &Report, health: &Health) {
        let mut state = self.state.lock().expect("never poisoned");
        match &report.error {
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

    fn is_open(&self) -> bool {
        self.cause().is_some()
    }

    fn cause(&self) -> Option<String> {
        self.state.lock().expect("never poisoned").open.clone()
    }

    fn close(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        state.open = None;
        state.in_a_row = 0;
    }
}

async fn watch_signals(shutdown: CancellationToken, health: Arc<Health>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "shutting down: no new messages; in-flight copies get the grace period"
    );
    health.set(Readiness::ShuttingDown);
    shutdown.cancel();
}

async fn poll_depths(queue: Queue, stop: CancellationToken) {
    loop {
        let queues = [
            Some(("main", queue.url.as_str())),
            queue.dead_letter_url.as_deref().map(|u| ("dead_letter", u)),
        ];
        for (name, url) in queues.into_iter().flatten() {
            match queue.depth(url).await {
                Ok((visible, in_flight, delayed)) => {
                    for (state, value) in [
                        ("visible", visible),
                        ("in_flight", in_flight),
                        ("delayed", delayed),
                    ] {
                        metrics::QUEUE_MESSAGES
                            .with_label_values(&[name, state])
                            .set(value);
                    }
                }
                Err(e) => {
                    tracing::debug!(queue = name, error = %e, "could not read the queue's depth")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(DEPTH_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(4), Duration::from_secs(80));
        assert_eq!(retry_delay(9), Duration::from_secs(900));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(900));
    }
}
