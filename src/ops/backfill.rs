//! `xpsync backfill`: bring the target up to the source from the two listings.
//!
//! The listings are streamed and merged ([`compare`]), so memory does not grow with
//! the bucket: at most `concurrency` copies or batches are in flight, and the
//! listing is read only as fast as they finish. Each key a reconcile would act on
//! (missing, different, and, with `replicate.deletes`, extra) is then either
//! enqueued for the daemons as an xpsync message, in batches of 10, or reconciled
//! here through the same engine as the daemon's. `--dry-run` only lists them.

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{json, Value};

use super::compare::{compare, Comparison, Status};
use super::progress::Progress;
use super::Ops;
use crate::config::Config;
use crate::error::S3Error;
use crate::fleet::Native;
use crate::object::SourceObject;
use crate::queue::{Outgoing, Queue, MAX_BATCH};
use crate::reconcile::{Hint, Outcome, Reconciler, Report, Tags};

/// What to do with the keys that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send an xpsync message per key to the queue, for the daemons.
    Enqueue,
    /// Reconcile each key here and now.
    Copy,
}

/// Counts over the whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillSummary {
    pub source_keys: u64,
    pub target_keys: u64,
    /// Keys a reconcile would act on.
    pub differing: u64,
    /// Their source size.
    pub differing_bytes: u64,
    pub enqueued: u64,
    pub copied: u64,
    pub deleted: u64,
    /// Keys whose bytes matched but whose description was updated in place.
    pub metadata_updated: u64,
    /// Keys found in order by the time they were reconciled.
    pub unchanged: u64,
    pub bytes_copied: u64,
    pub failed: u64,
    /// Differing keys left out because they were written less than `--min-age` ago.
    pub recent: u64,
    /// Source keys archived and not on the target: counted apart, not as drift;
    /// acted on only with `replicate.archived = "restore"`.
    pub archived: u64,
}

impl BackfillSummary {
    /// The summary in CloudWatch's embedded metric format: one JSON line that
    /// CloudWatch Logs turns into metrics (namespace `xpsync/sweep`, dimension
    /// `Bucket`), so a scheduled sweep needs no Pushgateway.
    pub fn to_emf(&self, bucket: &str) -> Value {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        json!({
            "_aws": {
                "Timestamp": millis,
                "CloudWatchMetrics": [{
                    "Namespace": "xpsync/sweep",
                    "Dimensions": [["Bucket"]],
                    "Metrics": [
                        {"Name": "DifferingKeys", "Unit": "Count"},
                        {"Name": "ArchivedKeys", "Unit": "Count"},
                        {"Name": "DifferingBytes", "Unit": "Bytes"},
                        {"Name": "Enqueued", "Unit": "Count"},
                        {"Name": "Failed", "Unit": "Count"},
                    ],
                }],
            },
            "Bucket": bucket,
            "DifferingKeys": self.differing,
            "ArchivedKeys": self.archived,
            "DifferingBytes": self.differing_bytes,
            "Enqueued": self.enqueued,
            "Failed": self.failed,
        })
    }
}

/// Where the differing keys go.
pub enum Action<'a> {
    DryRun,
    Enqueue(&'a Queue),
    Copy(&'a Reconciler),
}

/// One finished unit of work.
enum Finished {
    Reconciled(Box<Report>),
    Sent {
        count: u64,
        failed: Vec<(String, String)>,
    },
}

/// What one backfill covers and does.
pub struct Scope<'a> {
    /// Only keys under this source prefix.
    pub prefix: &'a str,
    pub action: Action<'a>,
    /// Copies or message batches at once (the copying reconciler's slots: see
    /// [`crate::reconcile::Reconciler::with_slots`]).
    pub concurrency: usize,
    /// Leave out source objects written less than this long ago: they are in
    /// flight (their events are on the way), not drift.
    pub min_age: Option<std::time::Duration>,
}

/// Runs the backfill; `report` gets a JSON line per differing key on a dry run, and
/// per failure otherwise. The listing feeds work while fewer than `concurrency`
/// units are in flight; each unit that ends is tallied.
pub async fn backfill(
    ops: &Ops,
    scope: Scope<'_>,
    mut report: impl FnMut(&Value),
) -> Result<BackfillSummary, S3Error> {
    let config = &*ops.config;
    let comparisons = compare(&ops.source, &ops.target, config, scope.prefix);
    futures::pin_mut!(comparisons);
    let newer_than = scope.min_age.map(|age| unix_now() - age.as_secs() as i64);
    let mut summary = BackfillSummary::default();
    let mut progress = Progress::new();
    let mut in_flight: FuturesUnordered<BoxFuture<'_, Finished>> = FuturesUnordered::new();
    let mut batch: Vec<String> = Vec::with_capacity(MAX_BATCH);
    let mut listed_all = false;
    // A copy gives its slot back for its last-writer check (a HEAD, no bytes):
    // keys in their check are in flight beside the `concurrency` being copied.
    let most = match scope.action {
        Action::Copy(_) => 2 * scope.concurrency,
        _ => scope.concurrency,
    };
    loop {
        while !listed_all && in_flight.len() < most {
            let Some(c) = comparisons.try_next().await? else {
                listed_all = true;
                break;
            };
            if !summary.count_listed(&c, config, newer_than) {
                continue;
            }
            if let Some(work) = start(&scope.action, c, config, &mut batch, &mut report) {
                in_flight.push(work);
            }
        }
        if let (true, false, Action::Enqueue(queue)) = (listed_all, batch.is_empty(), &scope.action)
        {
            in_flight.push(send(queue, config, std::mem::take(&mut batch)).boxed());
        }
        match in_flight.next().await {
            Some(done) => summary.tally(done, &mut report),
            None if listed_all => break,
            None => continue,
        }
        progress.update(|| summary.progress_line());
    }
    progress.finish();
    Ok(summary)
}

/// The work for one differing key: its reconcile, or a batch of messages once
/// `batch` is full; None while it waits in the batch, or on a dry run (reported).
fn start<'a>(
    action: &Action<'a>,
    c: Comparison,
    config: &'a Config,
    batch: &mut Vec<String>,
    report: &mut impl FnMut(&Value),
) -> Option<BoxFuture<'a, Finished>> {
    match *action {
        Action::DryRun => {
            report(&json!(c));
            None
        }
        Action::Copy(reconciler) => {
            let reconciler = reconciler.clone();
            let hint = match (c.status, c.source_size) {
                // Some servers list no ETags: parse() gives None.
                (Status::Missing, Some(size)) => {
                    let etag = c.source_etag.clone();
                    Hint::Listed(SourceObject::listed(&c.key, size, etag))
                }
                _ => Hint::Nothing,
            };
            let work = async move { reconciler.reconcile(&c.key, hint, Tags::Skip).await };
            Some(
                work.map(|report| Finished::Reconciled(Box::new(report)))
                    .boxed(),
            )
        }
        Action::Enqueue(queue) => {
            batch.push(c.key);
            (batch.len() == MAX_BATCH).then(|| send(queue, config, std::mem::take(batch)).boxed())
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

impl BackfillSummary {
    /// Counts a key as listed; true if a reconcile would act on it and it is not
    /// too recent (written after `newer_than`, seconds since the epoch).
    fn count_listed(&mut self, c: &Comparison, config: &Config, newer_than: Option<i64>) -> bool {
        self.source_keys += u64::from(c.source_size.is_some());
        self.target_keys += u64::from(c.target_size.is_some());
        if c.status == Status::Archived {
            self.archived += 1;
            return config.replicate.archived == crate::config::Archived::Restore;
        }
        if !acts_on(c, config) {
            return false;
        }
        if let (Some(limit), Some(modified)) = (newer_than, c.source_modified) {
            if modified > limit {
                self.recent += 1;
                return false;
            }
        }
        self.differing += 1;
        self.differing_bytes += c.source_size.unwrap_or(0);
        true
    }

    /// Counts one finished unit of work; failures are reported.
    fn tally(&mut self, done: Finished, report: &mut impl FnMut(&Value)) {
        match done {
            Finished::Reconciled(r) => match r.outcome() {
                Outcome::Copied => {
                    self.copied += 1;
                    self.bytes_copied += r.bytes();
                }
                Outcome::Deleted => self.deleted += 1,
                Outcome::MetadataUpdated => self.metadata_updated += 1,
                // Backfill's reconciler copies whole; it never splits.
                Outcome::Split => {}
                Outcome::Failed => {
                    self.failed += 1;
                    report(&r.to_json());
                }
                Outcome::Unchanged | Outcome::Absent | Outcome::Filtered => self.unchanged += 1,
                // Counted when listed; a restore asked for is the daemon's to finish.
                Outcome::Archived => {}
            },
            Finished::Sent { count, failed } => {
                self.enqueued += count - failed.len() as u64;
                self.failed += failed.len() as u64;
                for (key, error) in failed {
                    report(&json!({"key": key, "outcome": "failed", "error": error}));
                }
            }
        }
    }

    fn progress_line(&self) -> String {
        format!(
            "listed {} source and {} target keys; {} differ; {} copied, {} enqueued, {} failed",
            self.source_keys,
            self.target_keys,
            self.differing,
            self.copied,
            self.enqueued,
            self.failed
        )
    }
}

/// Whether a reconcile of this key would do something.
fn acts_on(c: &Comparison, config: &Config) -> bool {
    match c.status {
        Status::Missing | Status::Different | Status::Unknown => true,
        Status::Extra => config.replicate.deletes,
        Status::Same | Status::Filtered | Status::Archived => false,
    }
}

/// Sends one batch of xpsync messages; failures come back with their key.
async fn send(queue: &Queue, config: &Config, keys: Vec<String>) -> Finished {
    let messages: Vec<Outgoing> = keys
        .iter()
        .map(|key| Outgoing {
            body: Native::key(&config.source.bucket, key).body(),
            attributes: vec![("xpsync-origin".to_owned(), "backfill".to_owned())],
            delay: None,
        })
        .collect();
    let failed = queue
        .send_batch(&messages)
        .await
        .into_iter()
        .map(|(i, error)| (keys[i].clone(), error))
        .collect();
    Finished::Sent {
        count: keys.len() as u64,
        failed,
    }
}
