//! Reconciling one key: make the target's copy of K match the source's current K.
//!
//! Events are hints, not instructions (DESIGN §4): whatever arrived,
//! [`Reconciler::reconcile`] looks at both sides as they are now and decides. Each
//! attempt runs three steps:
//!
//! 1. **Describe.** HEAD the source and the target key (`target.key_prefix` + K) at
//!    once. A key a listing has just shown missing from the target
//!    ([`Hint::Listed`], from `backfill`) skips the target's HEAD,
//!    and, when it is small and stored in one part, the source's too: a GET
//!    (`If-Match` the listed ETag) is opened and its headers describe the object.
//! 2. **Decide.** Filtered by `replicate.include_prefixes` / `exclude_prefixes`:
//!    nothing to do. The source gone: delete the target copy if `replicate.deletes`
//!    (and it exists), else nothing. The target holding the same size and the same
//!    ETag, or the source ETag recorded in its metadata: unchanged, or its
//!    description and tags brought up to date in place, within the target's
//!    partition (`metadata_updated`). The source archived: `archived`
//!    ([`crate::archive`]), its restore asked for if so configured.
//! 3. **Copy** ([`crate::transfer`]), with metadata, tags, storage class and
//!    encryption as configured, handing on the GET if one is open; or, for an object
//!    of at least `transfer.split_threshold` in the daemon, **split** it for the
//!    fleet ([`crate::fleet`]), whose ranges and checks come back through
//!    [`Reconciler::copy_range`] and [`Reconciler::check_split`].
//!
//! A source that changes mid-copy (412 on `If-Match`) sends the key back to step 1,
//! a few times at most. Keys rejected by S3 are retried once, after the secret
//! holding them has been re-read; passing failures a few times, with backoff. A
//! refusal of one object is that object's verdict ([`verdict`]).
//!
//! The result is a [`Report`] around a `Result`: an outcome with what was moved, or
//! a [`ReconcileError`] that knows its [`ErrorKind`]. [`Report::emit`] logs and
//! counts it, once.

use std::time::{Duration, Instant};

use aws_sdk_s3::types::StorageClass;
use tracing::Instrument;

use crate::aws::S3Side;
use crate::config::Config;
use crate::error::{ErrorKind, S3Error};
use crate::keylocks::KeyLocks;
use crate::metrics;
use crate::object::{SourceObject, TargetObject};
use crate::retry;
use crate::transfer::{Copier, TransferError, WriteOptions};

use crate::metrics::RestartReason;
pub use crate::metrics::{Method, Outcome};

mod fleet;
mod hint;
mod report;
mod slot;
mod source;
mod verdict;
pub use fleet::SplitChecked;
pub use hint::{Hint, Tags};
pub use report::{Done, ReconcileError, Report};
pub use slot::{Slot, Slots};
use source::answered_for_head;
pub(crate) use source::{head, head_source};

/// S3's longest key, in UTF-8 bytes.
const MAX_KEY_LENGTH: usize = 1024;

/// How many times a key is started over because its source changed mid-copy.
pub(crate) const SOURCE_CHANGES_TOLERATED: u32 = 3;

/// How many times a key is tried again after a passing failure that the SDK's own
/// retries and the part-level retries did not absorb (a reset connection, throttling).
const TRANSIENT_RETRIES: u32 = 3;

/// Reconciles keys between the two sides. Cheap to clone; clones share the
/// transfer limits.
#[derive(Clone, Debug)]
pub struct Reconciler {
    source: S3Side,
    target: S3Side,
    copier: Copier,
    config: std::sync::Arc<Config>,
    /// Keys being reconciled now, one reconcile of a key at a time.
    in_progress: KeyLocks,
    /// Object slots (`transfer.max_objects`) and last-writer check permits.
    slots: Slots,
    /// Objects of at least `transfer.split_threshold` are split for the fleet
    /// rather than copied here (the daemon, which has a queue to send ranges to).
    splits: bool,
    /// Set once the target is found unable to keep a split's ledger
    /// ([`crate::fleet::Ledger`]): nothing is split from then on.
    no_ledger: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Reconciler {
    pub fn new(source: S3Side, target: S3Side, config: std::sync::Arc<Config>) -> Self {
        let copier = Copier::new(source.clone(), target.clone(), &config);
        let slots = Slots::new(config.transfer.max_objects);
        Self {
            source,
            target,
            copier,
            config,
            in_progress: KeyLocks::default(),
            slots,
            splits: false,
            no_ledger: Default::default(),
        }
    }

    /// A reconciler of another route (`config`, between `source` and `target`),
    /// sharing this one's slots and transfer limits.
    pub fn for_route(
        &self,
        source: S3Side,
        target: S3Side,
        config: std::sync::Arc<Config>,
    ) -> Self {
        Self {
            copier: self
                .copier
                .for_route(source.clone(), target.clone(), &config),
            source,
            target,
            config,
            in_progress: KeyLocks::default(),
            no_ledger: Default::default(),
            ..self.clone()
        }
    }

    /// The same, splitting objects of at least `transfer.split_threshold` for the
    /// fleet instead of copying them here.
    pub fn splitting(mut self) -> Self {
        self.splits = true;
        self
    }

    /// The same, with `objects` slots instead of `transfer.max_objects`
    /// (`backfill --concurrency`).
    pub fn with_slots(mut self, objects: usize) -> Self {
        self.slots = Slots::new(objects);
        self
    }

    /// Its object slots: the daemon takes one before it receives a message.
    pub fn slots(&self) -> &Slots {
        &self.slots
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

    /// Makes the target's copy of `key` match the source's, and says what it did:
    /// the one entry for every command. `hint` is what is known of the key already
    /// (a listing's or an event's description saves round trips); `tags` whether
    /// the tags are compared too, which a HEAD does not show (tag events, `sync`).
    pub async fn reconcile(&self, key: &str, hint: Hint, tags: Tags) -> Report {
        self.reconcile_in(&mut Slot::none(), key, hint, tags).await
    }

    /// The same, in `slot` (taken if it holds none); the slot is given back once the
    /// object's bytes are written, before the last writer's check.
    pub async fn reconcile_in(&self, slot: &mut Slot, key: &str, hint: Hint, tags: Tags) -> Report {
        let span = tracing::info_span!("reconcile", route = %self.config.scope.name, key);
        // Boxed: the reconcile is a deep future, and its callers' would be deeper.
        Box::pin(self.run(slot, key, hint, tags).instrument(span)).await
    }

    async fn run(&self, slot: &mut Slot, key: &str, hint: Hint, tags: Tags) -> Report {
        let started = Instant::now();
        let target_key_length = self.target_key(key).len();
        let result = if !self.config.is_replicated(key) {
            Ok(Done::of(Outcome::Filtered))
        } else if target_key_length > MAX_KEY_LENGTH {
            // The key's verdict, before any request: no write could take it.
            Err(ReconcileError::Transfer(TransferError::Unsupported(format!(
                "the target key (target.key_prefix + the key) would be {target_key_length} bytes, over S3's {MAX_KEY_LENGTH}"
            ))))
        } else {
            self.attempts(slot, key, hint, tags).await
        };
        let report = Report {
            key: key.to_owned(),
            duration: started.elapsed(),
            result,
        };
        report.emit(&self.config.scope.name);
        report
    }

    /// Attempts the key until it is done, or fails for good.
    async fn attempts(
        &self,
        slot: &mut Slot,
        key: &str,
        mut hint: Hint,
        tags: Tags,
    ) -> Result<Done, ReconcileError> {
        let mut source_changes = 0;
        let mut keys_reread = false;
        let mut transient_retries = 0;
        loop {
            let hint = std::mem::take(&mut hint);
            let mut error = match self.attempt(slot, key, hint, tags).await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            match error.kind() {
                ErrorKind::PreconditionFailed => {
                    source_changes += 1;
                    let reason = match &error {
                        ReconcileError::Superseded(reason) => *reason,
                        _ => RestartReason::SourceChanged,
                    };
                    reason.count();
                    let when = match reason {
                        RestartReason::SourceChanged => "during the copy",
                        RestartReason::ChangedAfterWrite => "under the write",
                        RestartReason::ReappearedAfterDelete => "under the delete",
                    };
                    tracing::info!(
                        attempt = source_changes,
                        reason = reason.as_str(),
                        "the source changed {when}; starting over"
                    );
                    if source_changes >= SOURCE_CHANGES_TOLERATED {
                        return Err(ReconcileError::SourceUnstable);
                    }
                }
                // Keys S3 named as rejected have marked the secret stale; a HEAD's 403
                // names nothing, so it is confirmed first: a refusal of this object
                // is its verdict (or the policy's), else one more try.
                ErrorKind::Auth if !keys_reread => {
                    keys_reread = true;
                    if self.confirm_rejection(key, &mut error).await {
                        return Err(error);
                    }
                }
                ErrorKind::Denied => {
                    self.judge_refusal(key, &mut error).await;
                    return Err(error);
                }
                ErrorKind::Transient if transient_retries < TRANSIENT_RETRIES => {
                    transient_retries += 1;
                    let pause = retry::backoff(
                        transient_retries,
                        Duration::from_secs(1),
                        Duration::from_secs(4),
                    );
                    tracing::info!(error = %error, retry_in = ?pause, "a passing failure; trying the key again");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// Describe, decide, copy: once, in a slot, holding the key. The slot comes
    /// first, always: a task never waits for a slot while it holds a key, for
    /// another task may hold a slot while it waits for that key (a duplicate event,
    /// received with the slot this one's check gave back). Between attempts the key
    /// is let go.
    async fn attempt(
        &self,
        slot: &mut Slot,
        key: &str,
        hint: Hint,
        tags: Tags,
    ) -> Result<Done, ReconcileError> {
        slot.take(&self.slots).await;
        let _only_one = self.in_progress.lock(key).await;
        let target_key = self.target_key(key);

        let (source, target, open) = self.describe(key, &target_key, hint).await?;

        // Decide.
        let Some(source) = source else {
            let target_exists = target.map(|t| t.is_some());
            return self.source_gone(slot, key, target_exists).await;
        };
        let options = self.write_options(&source);
        if let Some(Some(target)) = &target {
            if target.holds(&source) {
                let updated = self
                    .update_in_place(&source, target, &target_key, &options, tags)
                    .await?;
                let outcome = if updated {
                    Outcome::MetadataUpdated
                } else {
                    Outcome::Unchanged
                };
                return Ok(Done {
                    bytes: source.size,
                    etag: target.etag.clone(),
                    ..Done::of(outcome)
                });
            }
        }

        if source.access.is_archived() {
            return self.archived(&source).await;
        }

        // Copy, or split for the fleet.
        // An SSE-C object is copied whole here: its reads need the key it was found
        // to want, which range messages do not carry.
        if self.splits && self.ledger().copies_by_fleet(source.size) && !source.sse_c() {
            if let Some(split) = self.ledger().split(&source, &target_key, &options).await? {
                return Ok(Done {
                    bytes: source.size,
                    split: Some(split),
                    ..Done::of(Outcome::Split)
                });
            }
        }
        let bytes = metrics::hold(&metrics::BYTES_IN_FLIGHT, source.size as i64);
        let started = Instant::now();
        let copied = self
            .copier
            .copy(&source, &target_key, &options, open)
            .await?;
        drop(bytes);
        // The last writer makes sure the source still holds what it wrote: another
        // worker may have copied a newer version meanwhile, which this write undid.
        // The check holds no bytes: the slot goes to the next object meanwhile.
        let _check = slot.trade_for_check(&self.slots).await;
        let now = head_source(&self.source, key).await?;
        if now.and_then(|now| now.etag) != source.etag {
            return Err(ReconcileError::Superseded(RestartReason::ChangedAfterWrite));
        }
        Ok(Done::copied(source.size, copied, started))
    }

    /// Describe: the source as it is now (None: gone), the target when it was
    /// HEADed now (`Some(None)`: missing), and a GET of the source already answered
    /// where the hint let one be opened.
    async fn describe(
        &self,
        key: &str,
        target_key: &str,
        hint: Hint,
    ) -> Result<Described, ReconcileError> {
        Ok(match hint {
            Hint::Listed(mut listed) if self.copier.may_open(&listed) => {
                match self.copier.open(&mut listed).await {
                    Ok(Some(open)) => (Some(listed), None, Some(open)),
                    Ok(None) => (None, None, None),
                    // Archived (a HEAD tells whether it is being restored), or SSE-C.
                    Err(e) if answered_for_head(&e) => {
                        (head_source(&self.source, key).await?, None, None)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Hint::Listed(_) => (head_source(&self.source, key).await?, None, None),
            // The GET and the target's HEAD at once: one round trip for both.
            Hint::Described(mut described) if self.copier.may_open(&described) => {
                let (opened, target) = tokio::join!(
                    self.copier.open(&mut described),
                    head(&self.target, target_key)
                );
                let target = target?.map(|head| TargetObject::from_head(&head));
                match opened {
                    Ok(Some(open)) => (Some(described), Some(target), Some(open)),
                    Ok(None) => (None, Some(target), None),
                    Err(e) if answered_for_head(&e) => {
                        (head_source(&self.source, key).await?, Some(target), None)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Both HEADs at once: on a slow link, one round trip instead of two.
            Hint::Described(_) | Hint::Nothing => {
                let (source, target) = tokio::join!(
                    head_source(&self.source, key),
                    head(&self.target, target_key)
                );
                let target = target?.map(|head| TargetObject::from_head(&head));
                (source?, Some(target), None)
            }
        })
    }

    /// The source's `key` as a HEAD describes it now; None if it is gone.
    pub async fn head_source(&self, key: &str) -> Result<Option<SourceObject>, S3Error> {
        head_source(&self.source, key).await
    }

    /// Records on the target copy of `key`, found to hold the source's bytes in
    /// another layout (`backfill --adopt`), the source's ETag, description and tags,
    /// inside the target's partition: no bytes cross the border.
    pub async fn record_adopted(&self, key: &str) -> Result<(), ReconcileError> {
        let target_key = self.target_key(key);
        let (source, target) = tokio::join!(
            head_source(&self.source, key),
            head(&self.target, &target_key)
        );
        let (Some(source), Some(target)) = (source?, target?) else {
            // Gone meanwhile: what to do is a backfill's to decide.
            return Ok(());
        };
        let target = TargetObject::from_head(&target);
        let options = self.write_options(&source);
        self.copier
            .update_description(&source, &target, &target_key, &options)
            .await?;
        if self.config.replicate.tags {
            self.copier.sync_tags(key, &target_key).await?;
        }
        Ok(())
    }

    /// The target holds the source's bytes: bring its description (and, when
    /// `tags`, its tags) up to the source's within the target's partition. True if
    /// anything changed.
    async fn update_in_place(
        &self,
        source: &SourceObject,
        target: &TargetObject,
        target_key: &str,
        options: &WriteOptions,
        tags: Tags,
    ) -> Result<bool, ReconcileError> {
        let mut updated = false;
        let described = source.description.as_ref();
        let stale =
            self.config.replicate.metadata && described.is_some_and(|d| *d != target.description);
        if stale {
            tracing::info!("the bytes match but the description does not; updating it in place");
            self.copier
                .update_description(source, target, target_key, options)
                .await?;
            updated = true;
        }
        if tags == Tags::Compare && self.config.replicate.tags {
            updated |= self.copier.sync_tags(&source.key, target_key).await?;
        }
        Ok(updated)
    }

    /// The source key is gone: delete the target copy if `replicate.deletes` and it
    /// exists (`target_exists`, or a HEAD when that is not known).
    async fn source_gone(
        &self,
        slot: &mut Slot,
        key: &str,
        target_exists: Option<bool>,
    ) -> Result<Done, ReconcileError> {
        if !self.config.replicate.deletes {
            return Ok(Done::of(Outcome::Absent));
        }
        let target_key = self.target_key(key);
        let exists = match target_exists {
            Some(exists) => exists,
            None => head(&self.target, &target_key).await?.is_some(),
        };
        if !exists {
            return Ok(Done::of(Outcome::Absent));
        }
        let request = self
            .target
            .client
            .delete_object()
            .bucket(&self.target.bucket)
            .key(&target_key);
        self.target.observe("DeleteObject", request.send().await)?;
        // Another worker may have copied a re-created object meanwhile, which this
        // delete undid: the key is then reconciled again.
        let _check = slot.trade_for_check(&self.slots).await;
        if head_source(&self.source, key).await?.is_some() {
            return Err(ReconcileError::Superseded(
                RestartReason::ReappearedAfterDelete,
            ));
        }
        Ok(Done::of(Outcome::Deleted))
    }

    /// Metadata, tags, storage class and encryption for the target copy (the tags
    /// themselves are read by the copy, and only if the object has any).
    pub fn write_options(&self, source: &SourceObject) -> WriteOptions {
        let replicate = &self.config.replicate;
        let target = &self.config.target;
        let mut options = WriteOptions::default();
        if replicate.metadata {
            options.description = source.description.clone().unwrap_or_default();
            options.copy_description = true;
        }
        options.copy_tags = replicate.tags;
        if !target.storage_class.is_empty() {
            options.storage_class = Some(StorageClass::from(target.storage_class.as_str()));
        }
        options.sse = target.sse.header();
        if !target.sse_kms_key_id.is_empty() {
            options.sse_kms_key_id = Some(target.sse_kms_key_id.clone());
        }
        options
    }
}

/// What describing a key found: the source (None: gone), the target if it was
/// HEADed (`Some(None)`: missing), and a GET of the source already answered.
type Described = (
    Option<SourceObject>,
    Option<Option<TargetObject>>,
    Option<crate::transfer::OpenGet>,
);
