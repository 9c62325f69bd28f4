//! `xpsync run`: the receive loop, and graceful shutdown.
//!
//! **Flow.** A receive loop takes capacity first: a permit of `transfer.max_objects`
//! per message, taken *before* the receive, so a received message never waits idle
//! while its visibility runs down. A key's message gives its permit back once its
//! object is written: the last writer's check, a HEAD, holds a check permit of its
//! own, so the next message is copying meanwhile ([`crate::reconcile::Slot`]).
//! There is one loop per ten permits (at most four),
//! so that several receives are in flight while many permits are free. Each
//! long-polls for as many messages as it holds permits (at most 10) and hands each
//! to a task tracked by a [`TaskTracker`]. With a range queue (`queue.range_url`),
//! one more loop receives the fleet's ranges, as many as this worker's parts copy
//! at once ([`crate::fleet::Ranges`]), with no object slot: keys and checks keep
//! coming while ranges run. Without one, ranges come on the main queue, and its
//! loops receive nothing while the worker holds all the ranges it can copy. What a task
//! does with its message (reconcile, acknowledge, release, dead-letter, heartbeat) is
//! [`message`]'s; batched deletes are [`ack`]'s; pausing on systemic failure is the
//! [`breaker`]'s.
//!
//! **Shutdown.** [`run`] is handed a [`CancellationToken`] (the binary cancels it on
//! SIGTERM or SIGINT; a test may cancel it whenever it likes). Then `/readyz` fails
//! and receiving stops. In-flight messages get `shutdown.grace_period`, counted from
//! the signal (a long poll already sent is waited out within it); what still
//! runs then is cancelled and its message made visible at once for another worker.
//! One log line sums it up.

mod ack;
mod breaker;
mod message;
mod routes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::health::{Health, Readiness};
use crate::protection::Protection;
use crate::queue::{Queue, MAX_BATCH};
use crate::reconcile::Slot;
use crate::{http, metrics, retry};

use ack::Deleter;
pub use breaker::BREAKER_THRESHOLD;
use breaker::{Breaker, Gate};
pub use message::retry_delay;
use routes::Routes;

/// Prints the metrics as CloudWatch EMF until `stop`, if `cloudwatch.emf` is set.
fn spawn_emf(config: &Config, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let c = &config.cloudwatch;
    c.emf.then(|| {
        let publishing =
            metrics::emf::publish(c.namespace.clone(), c.stack.clone(), c.interval, stop);
        tokio::spawn(publishing)
    })
}

/// How often the queues' depths are read.
const DEPTH_INTERVAL: Duration = Duration::from_secs(15);

/// Runs the daemon until `shutdown` is cancelled, serving `/healthz`, `/readyz`
/// and `/metrics` on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let health = Arc::new(Health::default());
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        Arc::clone(&health),
        http_stop.clone(),
    ));
    // Whatever ends this function ends the server and the depth poller too.
    let _stop_http = http_stop.clone().drop_guard();
    tokio::spawn({
        let (shutdown, health) = (shutdown.clone(), Arc::clone(&health));
        async move {
            shutdown.cancelled().await;
            health.set(Readiness::ShuttingDown);
        }
    });

    let queue = Queue::connect(&config).await?;
    let routes = Routes::connect(&config, &queue).await?;
    match &queue.dead_letter_url {
        Some(url) => {
            tracing::info!(queue = %queue.url, dead_letter_queue = %url, range_queue = queue.range_url.as_deref().unwrap_or("none: ranges travel on the main queue"), "connected")
        }
        None => {
            tracing::warn!(queue = %queue.url, "no dead-letter queue: poison messages will be retried instead")
        }
    }
    tokio::spawn(poll_depths(queue.clone(), http_stop.clone()));
    let emf = spawn_emf(&config, http_stop.clone());
    let (deleter, deleter_task) = Deleter::spawn(queue.clone());

    tracing::info!(routes = ?routes.names(), source_buckets = ?routes.buckets(), "routes");
    let slots = Arc::clone(&routes.reconciler().slots().objects);
    let daemon = Arc::new(Daemon {
        routes,
        queue,
        deleter,
        health: Arc::clone(&health),
        slots,
        breaker: Breaker::default(),
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        handled: AtomicU64::new(0),
        released: AtomicU64::new(0),
        protection: Protection::from_env(http_stop.clone()),
        config: Arc::clone(&config),
    });
    if !shutdown.is_cancelled() {
        health.set(Readiness::Ready);
    }
    tracing::info!(listen = %config.server.listen, "xpsync is running");

    // The grace period runs from the signal: the receive loops may first wait out a
    // long poll already sent (up to `queue.wait_time`), and ECS kills the task
    // `stopTimeout` after the signal whatever they do.
    let ((), signalled) = tokio::join!(Arc::clone(&daemon).receive_loop(&shutdown), async {
        shutdown.cancelled().await;
        tokio::time::Instant::now()
    });
    tracing::info!("shutting down: no new messages; in-flight copies get the grace period");

    daemon.drain(signalled, deleter_task).await;
    http_stop.cancel();
    if let Some(emf) = emf {
        // Its last lines: what the final interval counted.
        let _ = emf.await;
    }
    http.await.context("the HTTP server task")??;
    Ok(())
}

impl Daemon {
    /// After the signal: waits for the messages in hand until the grace period
    /// (from `signalled`) ends, cancels what still runs (its messages are released),
    /// flushes the acknowledgements, and sums it up in one line.
    async fn drain(
        self: Arc<Self>,
        signalled: tokio::time::Instant,
        deleter_task: tokio::task::JoinHandle<()>,
    ) {
        let in_flight = self.tracker.len();
        let handled_before = self.handled.load(Ordering::SeqCst);
        self.tracker.close();
        let grace = self.config.shutdown.grace_period;
        if tokio::time::timeout_at(signalled + grace, self.tracker.wait())
            .await
            .is_err()
        {
            self.hard_stop.cancel();
            self.tracker.wait().await;
        }
        let finished = self.handled.load(Ordering::SeqCst) - handled_before;
        let released = self.released.load(Ordering::SeqCst);
        let Daemon { deleter, .. } = Arc::into_inner(self).expect("every task has ended");
        drop(deleter);
        let _ = deleter_task.await;
        tracing::info!(
            in_flight_at_signal = in_flight,
            finished_in_grace = finished,
            released,
            "shutdown complete: {finished} of {in_flight} in-flight messages finished within the grace period, {released} released for another worker"
        );
    }
}

/// The worker's state, shared by the receive loop and every message task.
struct Daemon {
    config: Arc<Config>,
    /// Each route's reconciler and part in the fleet's splits; they share the
    /// copy limits (slots, parts, memory) of this process.
    routes: Routes,
    queue: Queue,
    /// Acknowledges handled messages in batches.
    deleter: Deleter,
    /// What `/readyz` reports.
    health: Arc<Health>,
    /// The reconciler's object slots (`transfer.max_objects`): one is taken before
    /// a message is received, and held until the message is deleted or released,
    /// or, for a key's message, until its object is written: the last writer's
    /// check then holds a check permit instead ([`crate::reconcile::Slot`]).
    slots: Arc<Semaphore>,
    /// Pauses receiving while every copy fails the same systemic way.
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
    /// ECS scale-in protection, held while a copy outlasts the grace period.
    protection: Protection,
}

/// What a receive loop does next.
enum Next {
    Receive { most: usize, trial: bool },
    Again,
    Stop,
}

/// What one receive came to.
enum Took {
    /// Messages, handed on.
    Messages,
    /// None came.
    Nothing,
    /// The receive failed: the loop backs off.
    Failed(crate::error::SqsError),
    /// Shutdown came first.
    Stopped,
}

/// How long a worker that has just shared a range's parts waits before it receives
/// again, so that a worker already waiting takes them ([`crate::fleet::share`]).
const AFTER_SHARING: Duration = Duration::from_secs(1);

/// At most this many receive calls in flight at once, one per ten message slots:
/// a receive is a round trip, and while one is out, slots freed meanwhile wait.
const MAX_RECEIVERS: usize = 4;

impl Daemon {
    /// Receives with one loop per ten message slots (at most [`MAX_RECEIVERS`]),
    /// until `shutdown`.
    async fn receive_loop(self: Arc<Self>, shutdown: &CancellationToken) {
        let receivers = (self.config.transfer.max_objects / MAX_BATCH).clamp(1, MAX_RECEIVERS);
        let loops = (0..receivers).map(|n| Arc::clone(&self).receiver(shutdown, n == 0));
        let ranges = self
            .routes
            .fleet()
            .has_range_queue()
            .then(|| Arc::clone(&self).range_receiver(shutdown));
        let ranges = async {
            if let Some(ranges) = ranges {
                ranges.await;
            }
        };
        tokio::join!(futures::future::join_all(loops), ranges);
    }

    /// The range queue's receive loop: as many range messages as this worker's
    /// parts copy at once ([`crate::fleet::Ranges`]), while the breaker is closed.
    /// Ranges take no object slot: the main queue's loops go on receiving keys
    /// and checks meanwhile. A receive that finds the queue empty has a range at
    /// work here share its parts not yet started ([`crate::fleet::share`]).
    async fn range_receiver(self: Arc<Self>, shutdown: &CancellationToken) {
        let queue = self.queue.range_queue();
        let mut failures = 0u32;
        loop {
            let room = self.routes.fleet().ranges.room();
            if room == 0 || self.breaker.cause().is_some() {
                tokio::select! {
                    () = self.routes.fleet().ranges.wait_for_room(Duration::from_millis(200)) => {}
                    () = shutdown.cancelled() => return,
                }
                continue;
            }
            let took = self
                .receive(&queue, room.min(MAX_BATCH), Vec::new(), false, shutdown)
                .await;
            // No range waits for any worker: one at work here shares its parts not
            // yet started, and this loop lets the workers already waiting take
            // them first.
            if matches!(took, Took::Nothing) && self.routes.fleet().share_a_range().await {
                tokio::select! {
                    () = tokio::time::sleep(AFTER_SHARING) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if !self.after_receive(took, &mut failures, shutdown).await {
                return;
            }
        }
    }

    /// What a receive came to, for its loop: backs off after a failure. False once
    /// the loop is to stop.
    async fn after_receive(
        &self,
        took: Took,
        failures: &mut u32,
        shutdown: &CancellationToken,
    ) -> bool {
        match took {
            Took::Messages | Took::Nothing => *failures = 0,
            Took::Failed(e) => {
                *failures += 1;
                let pause =
                    retry::backoff(*failures, Duration::from_secs(1), Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?pause, "receiving failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => return false,
                }
            }
            Took::Stopped => return false,
        }
        true
    }

    /// One receive loop: gate, take permits, receive. Only the `primary` one probes
    /// and takes the half-open trial message; the others receive only while the
    /// breaker is closed.
    async fn receiver(self: Arc<Self>, shutdown: &CancellationToken, primary: bool) {
        let mut receive_failures = 0u32;
        loop {
            let (most, trial) = match self.gate(shutdown, primary).await {
                Next::Receive { most, trial } => (most, trial),
                Next::Again => continue,
                Next::Stop => return,
            };
            let Some(permits) = self.permits(most, trial, shutdown).await else {
                return;
            };
            let most = permits.len();
            let took = self
                .receive(&self.queue, most, permits, trial, shutdown)
                .await;
            if !self
                .after_receive(took, &mut receive_failures, shutdown)
                .await
            {
                return;
            }
        }
    }

    /// Whether to receive now, and how many: none while the breaker is open (the
    /// primary loop probes then), or while this worker holds all the ranges it can
    /// copy and they travel on this queue; one, the trial, while it is half-open.
    async fn gate(&self, shutdown: &CancellationToken, primary: bool) -> Next {
        let room = match self.routes.fleet().has_range_queue() {
            true => MAX_BATCH,
            false => self.routes.fleet().ranges.room(),
        };
        if room == 0 {
            tokio::select! {
                () = self.routes.fleet().ranges.wait_for_room(Duration::from_millis(200)) => {}
                () = shutdown.cancelled() => return Next::Stop,
            }
            return Next::Again;
        }
        let gate = match (primary, self.breaker.cause()) {
            (true, _) => self.breaker.gate(),
            (false, None) => Gate::Receive,
            (false, Some(_)) => Gate::Wait,
        };
        let most = match gate {
            Gate::Receive => room.min(MAX_BATCH),
            Gate::Trial => 1,
            Gate::Probe(pause) => {
                self.probe_after(pause, shutdown).await;
                return match shutdown.is_cancelled() {
                    true => Next::Stop,
                    false => Next::Again,
                };
            }
            Gate::Wait => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = shutdown.cancelled() => return Next::Stop,
                }
                return Next::Again;
            }
        };
        let trial = most == 1 && self.breaker.cause().is_some();
        Next::Receive { most, trial }
    }

    /// Up to `most` message slots: waits for the first, takes the others free now.
    /// None on shutdown.
    async fn permits(
        &self,
        most: usize,
        trial: bool,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => {
                if trial {
                    self.breaker.trial_over();
                }
                return None;
            }
        };
        let mut permits = vec![first];
        while permits.len() < most {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    /// One receive of up to `most` messages from `queue`, each handed to a task
    /// with its object slot, one of `permits` (a range takes none).
    async fn receive(
        self: &Arc<Self>,
        queue: &Queue,
        most: usize,
        permits: Vec<OwnedSemaphorePermit>,
        trial: bool,
        shutdown: &CancellationToken,
    ) -> Took {
        let receive = queue.receive(most);
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            () = shutdown.cancelled() => {
                // SQS may already have handed this batch out: wait for it, and
                // give what came back at once, rather than leave it hidden for
                // the whole visibility timeout.
                if let Ok(messages) = receive.await {
                    for message in &messages {
                        self.release(message, Duration::ZERO).await;
                    }
                }
                return Took::Stopped;
            }
        };
        // A trial that brought no message is over: another may be tried.
        if trial && received.as_ref().map_or(true, Vec::is_empty) {
            self.breaker.trial_over();
        }
        match received {
            Ok(messages) if messages.is_empty() => Took::Nothing,
            Ok(messages) => {
                let mut permits = permits.into_iter();
                for message in messages {
                    let slot = permits.next().map_or_else(Slot::none, Slot::from_permit);
                    self.tracker
                        .spawn(Arc::clone(self).handle(message, slot, trial));
                }
                Took::Messages
            }
            Err(e) => Took::Failed(e),
        }
    }

    /// Waits `pause`, then probes both buckets: passing, the breaker half-opens.
    async fn probe_after(&self, pause: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
        match self.routes.probe().await {
            Ok(()) => self.breaker.probe_passed(),
            Err(e) => {
                tracing::warn!(error = %e, "the probe failed; receiving stays paused");
                self.breaker.probe_failed();
            }
        }
    }
}

async fn poll_depths(queue: Queue, stop: CancellationToken) {
    loop {
        let queues = [
            Some(("main", queue.url.as_str())),
            queue.dead_letter_url.as_deref().map(|u| ("dead_letter", u)),
            queue.range_url.as_deref().map(|u| ("ranges", u)),
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
