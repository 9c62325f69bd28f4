//! Reconciling one key: make the target's copy of K match the source's current K.
//!
//! Events are hints, not instructions (DESIGN §4): whatever arrived, [`Reconciler::reconcile`]
//! looks at both sides as they are now and decides.
//!
//! 1. Filtered by `replicate.include_prefixes` / `exclude_prefixes`: nothing to do.
//! 2. HEAD the source. Gone: delete the target copy if `replicate.deletes` (and it
//!    exists), else nothing to do.
//! 3. HEAD the target key (`target.key_prefix` + K), at the same time as the source.
//!    Same size, and the same ETag or the source ETag recorded in its metadata:
//!    unchanged.
//! 4. Otherwise copy ([`crate::transfer`]), with metadata, tags, storage class and
//!    encryption as configured.
//!
//! A key a listing has just shown missing from the target
//! ([`Reconciler::reconcile_missing`], used by `backfill`) skips the target's HEAD,
//! and, when it is small and stored in one part, the source's too: the copy's GET
//! (`If-Match` the listed ETag) describes the object instead.
//!
//! A source that changes mid-copy (412 on `If-Match`) sends the key back to step 2,
//! a few times at most. Keys rejected by S3 are retried once, after the secret
//! holding them has been re-read.
//!
//! The result is a [`Report`]; a failure carries a [`ReconcileError`] that knows
//! whether it is retryable and whether it is systemic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use serde::Serialize;
use tracing::Instrument;

use crate::aws::{ErrorKind, S3Error, S3Side};
use crate::config::Config;
use crate::metrics;
use crate::transfer::{
    plan, Copied, Copier, Method, SourceObject, TransferError, WriteOptions, SOURCE_ETAG_METADATA,
};

/// How many times a key is started over because its source changed mid-copy.
const SOURCE_CHANGES_TOLERATED: u32 = 3;

/// How many times a key is tried again after a passing failure that the SDK's own
/// retries and the part-level retries did not absorb (a reset connection, throttling).
const TRANSIENT_RETRIES: u32 = 3;

/// What reconciling a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Copied,
    Unchanged,
    Deleted,
    Absent,
    Filtered,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Filtered => "filtered",
            Outcome::Failed => "failed",
        }
    }
}

/// Why a key could not be reconciled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the source object changed {SOURCE_CHANGES_TOLERATED} times during its copy; giving up for now")]
    SourceUnstable,
}

impl From<S3Error> for ReconcileError {
    fn from(e: S3Error) -> Self {
        ReconcileError::Transfer(TransferError::S3(e))
    }
}

impl ReconcileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Transfer(e) => e.kind(),
            ReconcileError::SourceUnstable => ErrorKind::Transient,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether every key would fail the same way (keys rejected, bucket missing).
    pub fn is_systemic(&self) -> bool {
        self.kind().is_systemic()
    }
}

/// The result of reconciling one key.
#[derive(Debug, Clone)]
pub struct Report {
    pub key: String,
    pub outcome: Outcome,
    /// The object's size (copied or unchanged), else 0.
    pub bytes: u64,
    /// Bytes uploaded now: less than `bytes` when an upload was resumed.
    pub bytes_sent: u64,
    pub parts_reused: usize,
    /// How the object was written, when it was.
    pub method: Option<Method>,
    /// The target's ETag, unquoted, when it holds the object.
    pub etag: Option<String>,
    pub duration: Duration,
    pub error: Option<ReconcileError>,
}

impl Report {
    /// The report as one JSON line of `xpsync sync`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut line = serde_json::json!({
            "key": self.key,
            "outcome": self.outcome,
            "bytes": self.bytes,
            "bytes_sent": self.bytes_sent,
            "parts_reused": self.parts_reused,
            "method": self.method,
            "etag": self.etag,
            "duration_ms": self.duration.as_millis() as u64,
        });
        if let Some(error) = &self.error {
            line["error"] = serde_json::json!(error.to_string());
        }
        line
    }
}

/// Reconciles keys between the two sides. Cheap to clone; clones share the
/// transfer limits.
#[derive(Clone, Debug)]
pub struct Reconciler {
    source: S3Side,
    target: S3Side,
    copier: Copier,
    config: std::sync::Arc<Config>,
    /// Keys being reconciled now. S3 sends duplicate events, often together: a
    /// second reconcile of a key waits for the first, then finds nothing to do.
    in_progress: KeyLocks,
}

impl Reconciler {
    pub fn new(source: S3Side, target: S3Side, config: std::sync::Arc<Config>) -> Self {
        let copier = Copier::new(source.clone(), target.clone(), &config);
        Self {
            source,
            target,
            copier,
            config,
            in_progress: KeyLocks::default(),
        }
    }

    pub fn copier(&self) -> &Copier {
        &self.copier
    }

    /// The target key for a source key.
    pub fn target_key(&self, key: &str) -> String {
        format!("{}{}", self.config.target.key_prefix, key)
    }

    /// Checks that both buckets answer with the current keys (a one-key listing):
    /// the breaker's test of whether a systemic failure is over. Rejected keys make
    /// their secret be re-read before the next probe.
    pub async fn probe(&self) -> Result<(), S3Error> {
        // ListObjectsV2 rather than HeadBucket: it needs s3:ListBucket, which the
        // policies grant, on every S3 implementation alike.
        for side in [&self.source, &self.target] {
            let request = side
                .client
                .list_objects_v2()
                .bucket(&side.bucket)
                .max_keys(1);
            side.observe("ListObjectsV2", request.send().await)?;
        }
        Ok(())
    }

    /// Makes the target's copy of `key` match the source's, and says what it did.
    pub async fn reconcile(&self, key: &str) -> Report {
        let span = tracing::info_span!("reconcile", key);
        self.reconcile_inner(key, None).instrument(span).await
    }

    /// As [`Reconciler::reconcile`], for a key a listing has just shown missing from
    /// the target, and on the source as `size` bytes with ETag `etag` (if the
    /// listing gave one): its first
    /// attempt sends no HEAD to the target, and none to the source either when the
    /// object can be copied by one GET and one PUT (the GET then describes it).
    /// Should the key have arrived on the target meanwhile, it is copied again,
    /// which is harmless.
    pub async fn reconcile_missing(&self, key: &str, size: u64, etag: Option<&str>) -> Report {
        let span = tracing::info_span!("reconcile", key);
        let listed = Listed {
            size,
            etag: etag.map(str::to_owned),
        };
        self.reconcile_inner(key, Some(listed))
            .instrument(span)
            .await
    }

    async fn reconcile_inner(&self, key: &str, listed: Option<Listed>) -> Report {
        let started = Instant::now();
        let _only_one = self.in_progress.lock(key).await;
        metrics::OBJECTS_IN_FLIGHT.inc();
        let mut report = Report {
            key: key.to_owned(),
            outcome: Outcome::Filtered,
            bytes: 0,
            bytes_sent: 0,
            parts_reused: 0,
            method: None,
            etag: None,
            duration: Duration::ZERO,
            error: None,
        };
        if self.config.is_replicated(key) {
            let mut source_changes = 0;
            let mut keys_reread = false;
            let mut transient_retries = 0;
            let mut listed = listed;
            loop {
                let attempt = self.attempt(key, listed.take(), &mut report).await;
                match attempt {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                        source_changes += 1;
                        tracing::info!(
                            attempt = source_changes,
                            "the source changed during the copy; starting over"
                        );
                        if source_changes >= SOURCE_CHANGES_TOLERATED {
                            report.outcome = Outcome::Failed;
                            report.error = Some(ReconcileError::SourceUnstable);
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Auth && !keys_reread => {
                        // observe() has marked the secret stale: one more try with keys re-read.
                        keys_reread = true;
                    }
                    Err(e)
                        if e.kind() == ErrorKind::Transient
                            && transient_retries < TRANSIENT_RETRIES =>
                    {
                        transient_retries += 1;
                        let pause = Duration::from_millis(500 * 2u64.pow(transient_retries));
                        tracing::info!(error = %e, retry_in = ?pause, "a passing failure; trying the key again");
                        tokio::time::sleep(pause).await;
                    }
                    Err(e) => {
                        report.outcome = Outcome::Failed;
                        report.error = Some(e);
                        break;
                    }
                }
            }
        }
        report.duration = started.elapsed();
        metrics::OBJECTS_IN_FLIGHT.dec();
        metrics::OBJECTS
            .with_label_values(&[report.outcome.as_str()])
            .inc();
        match &report.error {
            None => tracing::info!(
                outcome = report.outcome.as_str(),
                size = report.bytes,
                bytes_sent = report.bytes_sent,
                duration_ms = report.duration.as_millis() as u64,
                "reconciled"
            ),
            Some(e) => {
                metrics::ERRORS
                    .with_label_values(&["reconcile", e.kind().as_str()])
                    .inc();
                tracing::warn!(outcome = "failed", error = %e, kind = e.kind().as_str(), "reconcile failed")
            }
        }
        report
    }

    async fn attempt(
        &self,
        key: &str,
        listed: Option<Listed>,
        report: &mut Report,
    ) -> Result<(), ReconcileError> {
        let target_key = self.target_key(key);
        let (found, target) = match &listed {
            Some(listed)
                if self
                    .copier
                    .copies_listed(listed.size, listed.etag.as_deref()) =>
            {
                return self.copy_listed(key, listed, report).await;
            }
            Some(_) => (head(&self.source, key).await?, None),
            // Both HEADs at once: on a slow link, one round trip instead of two.
            None => {
                let (source, target) =
                    tokio::join!(head(&self.source, key), head(&self.target, &target_key));
                (source?, target?)
            }
        };
        let Some(found) = found else {
            // Known only when HEADed just now; a listing may be out of date.
            let target_exists = listed.is_none().then_some(target.is_some());
            return self.source_gone(key, report, target_exists).await;
        };
        let source = SourceObject::new(key, found);
        report.bytes = source.size;
        if let Some(target) = target {
            if holds(&target, &source) {
                report.outcome = Outcome::Unchanged;
                report.etag = target.e_tag().map(|e| plan::unquote(e).to_owned());
                return Ok(());
            }
        }

        let options = self.write_options(&source);
        let started = Instant::now();
        metrics::BYTES_IN_FLIGHT.add(source.size as i64);
        let copied = self.copier.copy(&source, &target_key, &options).await;
        metrics::BYTES_IN_FLIGHT.sub(source.size as i64);
        record_copy(report, source.size, copied?, started);
        Ok(())
    }

    /// Copies a key as listed, without HEADs ([`Copier::copy_listed`]).
    async fn copy_listed(
        &self,
        key: &str,
        listed: &Listed,
        report: &mut Report,
    ) -> Result<(), ReconcileError> {
        let target_key = self.target_key(key);
        let options = |source: &SourceObject| self.write_options(source);
        let started = Instant::now();
        metrics::BYTES_IN_FLIGHT.add(listed.size as i64);
        let copied = self
            .copier
            .copy_listed(
                key,
                listed.size,
                listed.etag.as_deref(),
                &target_key,
                &options,
            )
            .await;
        metrics::BYTES_IN_FLIGHT.sub(listed.size as i64);
        match copied? {
            Some((source, copied)) => {
                report.bytes = source.size;
                record_copy(report, source.size, copied, started);
                Ok(())
            }
            None => self.source_gone(key, report, None).await,
        }
    }

    /// The source key is gone: delete the target copy if `replicate.deletes` and it
    /// exists (`target_exists`, or a HEAD when that is not known).
    async fn source_gone(
        &self,
        key: &str,
        report: &mut Report,
        target_exists: Option<bool>,
    ) -> Result<(), ReconcileError> {
        report.outcome = Outcome::Absent;
        if !self.config.replicate.deletes {
            return Ok(());
        }
        let target_key = self.target_key(key);
        let exists = match target_exists {
            Some(exists) => exists,
            None => head(&self.target, &target_key).await?.is_some(),
        };
        if exists {
            let request = self
                .target
                .client
                .delete_object()
                .bucket(&self.target.bucket)
                .key(&target_key);
            self.target.observe("DeleteObject", request.send().await)?;
            report.outcome = Outcome::Deleted;
        }
        Ok(())
    }

    /// Metadata, tags, storage class and encryption for the target copy (the tags
    /// themselves are read by the copy, and only if the object has any).
    fn write_options(&self, source: &SourceObject) -> WriteOptions {
        let replicate = &self.config.replicate;
        let target = &self.config.target;
        let mut options = WriteOptions::default();
        if replicate.metadata {
            let h = &source.head;
            options.metadata = h.metadata().cloned().unwrap_or_default();
            options.metadata.remove(SOURCE_ETAG_METADATA);
            options.content_type = h.content_type().map(str::to_owned);
            options.content_encoding = h.content_encoding().map(str::to_owned);
            options.content_language = h.content_language().map(str::to_owned);
            options.content_disposition = h.content_disposition().map(str::to_owned);
            options.cache_control = h.cache_control().map(str::to_owned);
            options.expires = h
                .expires_string()
                .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok());
        }
        options.copy_tags = replicate.tags;
        if !target.storage_class.is_empty() {
            options.storage_class = Some(StorageClass::from(target.storage_class.as_str()));
        }
        if !target.sse.is_empty() {
            options.sse = Some(ServerSideEncryption::from(target.sse.as_str()));
        }
        if !target.sse_kms_key_id.is_empty() {
            options.sse_kms_key_id = Some(target.sse_kms_key_id.clone());
        }
        options
    }
}

/// A source object as a listing showed it.
#[derive(Debug, Clone)]
struct Listed {
    size: u64,
    etag: Option<String>,
}

/// Records a finished copy in the report and the metrics.
fn record_copy(report: &mut Report, size: u64, copied: Copied, started: Instant) {
    metrics::COPY_DURATION
        .with_label_values(&[copied.method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    metrics::BYTES_COPIED.inc_by(size);
    report.outcome = Outcome::Copied;
    report.etag = Some(copied.etag);
    report.bytes_sent = copied.bytes_sent;
    report.parts_reused = copied.parts_reused;
    report.method = Some(copied.method);
}

/// One async mutex per key in use; entries go when no one holds or awaits them.
#[derive(Clone, Debug, Default)]
struct KeyLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds a key; releases (and forgets it when no one else waits) on drop.
struct KeyGuard {
    key: String,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl KeyLocks {
    async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = Arc::clone(
            self.locks
                .lock()
                .expect("never poisoned")
                .entry(key.to_owned())
                .or_default(),
        );
        KeyGuard {
            key: key.to_owned(),
            locks: Arc::clone(&self.locks),
            _guard: mutex.lock_owned().await,
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().expect("never poisoned");
        // The map's reference and this guard's are the only ones: no one waits.
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 2)
        {
            locks.remove(&self.key);
        }
    }
}

/// HEAD `key`; None if it does not exist.
async fn head(side: &S3Side, key: &str) -> Result<Option<HeadObjectOutput>, S3Error> {
    let request = side.client.head_object().bucket(&side.bucket).key(key);
    match side.observe("HeadObject", request.send().await) {
        Ok(head) => Ok(Some(head)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the target object holds the source's current version: same size, and
/// the same ETag or the source ETag recorded when it was copied.
fn holds(target: &HeadObjectOutput, source: &SourceObject) -> bool {
    let same_size = target.content_length().unwrap_or(-1).max(-1) == source.size as i64;
    let source_etag = plan::unquote(&source.etag);
    let recorded = recorded_source_etag(target) == Some(source_etag);
    let same_etag = target
        .e_tag()
        .is_some_and(|e| plan::unquote(e) == source_etag);
    same_size && (recorded || same_etag)
}

/// The source ETag a target copy records having been made from, if any.
pub(crate) fn recorded_source_etag(target: &HeadObjectOutput) -> Option<&str> {
    target
        .metadata()
        .and_then(|m| m.get(SOURCE_ETAG_METADATA))
        .map(String::as_str)
}
