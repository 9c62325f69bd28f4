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
use crate::aws::S3Side;
use crate::config::Config;
use crate::error::S3Error;
use crate::etag::ETag;
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
pub struct Summary {
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
}

impl Summary {
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
                        {"Name": "DifferingBytes", "Unit": "Bytes"},
                        {"Name": "Enqueued", "Unit": "Count"},
                        {"Name": "Failed", "Unit": "Count"},
                    ],
                }],
            },
            "Bucket": bucket,
            "DifferingKeys": self.differing,
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
enum Done {
    Reconciled(Report),
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
    /// Copies or message batches at once.
    pub concurrency: usize,
    /// Leave out source objects written less than this long ago: they are in
    /// flight (their events are on the way), not drift.
    pub min_age: Option<std::time::Duration>,
}

/// Runs the backfill; `report` gets a JSON line per differing key on a dry run, and
/// per failure otherwise.
pub async fn backfill(
    source: &S3Side,
    target: &S3Side,
    config: &Config,
    scope: Scope<'_>,
    mut report: impl FnMut(&Value),
) -> Result<Summary, S3Error> {
    let Scope {
        prefix,
        action,
        concurrency,
        min_age,
    } = scope;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let newer_than = min_age.map(|age| now - age.as_secs() as i64);
    let comparisons = compare(source, target, config, prefix);
    futures::pin_mut!(comparisons);
    let mut summary = Summary::default();
    let mut progress = Progress::new();
    let mut in_flight: FuturesUnordered<BoxFuture<'_, Done>> = FuturesUnordered::new();
    let mut batch: Vec<String> = Vec::with_capacity(MAX_BATCH);
    let mut listed_all = false;

    loop {
        while !listed_all && in_flight.len() < concurrency {
            let Some(c) = comparisons.try_next().await? else {
                listed_all = true;
                break;
            };
            summary.source_keys += u64::from(c.source_size.is_some());
            summary.target_keys += u64::from(c.target_size.is_some());
            if !acts_on(&c, config) {
                continue;
            }
            if let (Some(limit), Some(modified)) = (newer_than, c.source_modified) {
                if modified > limit {
                    summary.recent += 1;
                    continue;
                }
            }
            summary.differing += 1;
            summary.differing_bytes += c.source_size.unwrap_or(0);
            match action {
                Action::DryRun => report(&json!(c)),
                Action::Copy(reconciler) => {
                    let reconciler = reconciler.clone();
                    in_flight.push(
                        async move {
                            Done::Reconciled(match (c.status, c.source_size) {
                                (Status::Missing, Some(size)) => {
                                    // Some servers list no ETags: parse() gives None.
                                    let etag = ETag::parse(c.source_etag.as_deref());
                                    let listed = SourceObject::listed(&c.key, size, etag);
                                    reconciler
                                        .reconcile(&c.key, Hint::Listed(listed), Tags::Skip)
                                        .await
                                }
                                _ => {
                                    reconciler
                                        .reconcile(&c.key, Hint::Nothing, Tags::Skip)
                                        .await
                                }
                            })
                        }
                        .boxed(),
                    );
                }
                Action::Enqueue(queue) => {
                    batch.push(c.key);
                    if batch.len() == MAX_BATCH {
                        in_flight.push(send(queue, config, std::mem::take(&mut batch)).boxed());
                    }
                }
            }
        }
        if listed_all && !batch.is_empty() {
            if let Action::Enqueue(queue) = action {
                in_flight.push(send(queue, config, std::mem::take(&mut batch)).boxed());
            }
        }
        let Some(done) = in_flight.next().await else {
            if listed_all {
                break;
            }
            continue;
        };
        match done {
            Done::Reconciled(r) => match r.outcome() {
                Outcome::Copied => {
                    summary.copied += 1;
                    summary.bytes_copied += r.bytes();
                }
                Outcome::Deleted => summary.deleted += 1,
                Outcome::MetadataUpdated => summary.metadata_updated += 1,
                // Backfill's reconciler copies whole; it never splits.
                Outcome::Split => {}
                Outcome::Failed => {
                    summary.failed += 1;
                    report(&r.to_json());
                }
                Outcome::Unchanged | Outcome::Absent | Outcome::Filtered => summary.unchanged += 1,
            },
            Done::Sent { count, failed } => {
                summary.enqueued += count - failed.len() as u64;
                summary.failed += failed.len() as u64;
                for (key, error) in failed {
                    report(&json!({"key": key, "outcome": "failed", "error": error}));
                }
            }
        }
        progress.update(|| {
            format!(
                "listed {} source and {} target keys; {} differ; {} copied, {} enqueued, {} failed",
                summary.source_keys,
                summary.target_keys,
                summary.differing,
                summary.copied,
                summary.enqueued,
                summary.failed
            )
        });
    }
    progress.finish();
    Ok(summary)
}

/// Whether a reconcile of this key would do something.
fn acts_on(c: &Comparison, config: &Config) -> bool {
    match c.status {
        Status::Missing | Status::Different | Status::Unknown => true,
        Status::Extra => config.replicate.deletes,
        Status::Same | Status::Filtered => false,
    }
}

/// Sends one batch of xpsync messages; failures come back with their key.
async fn send(queue: &Queue, config: &Config, keys: Vec<String>) -> Done {
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
    Done::Sent {
        count: keys.len() as u64,
        failed,
    }
}
