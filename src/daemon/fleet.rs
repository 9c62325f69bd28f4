//! The daemon's side of a fleet copy (DESIGN §10, [`crate::fleet`]): sending a
//! split's ranges and check, copying a range, looking at an upload.
//!
//! Each step ends in messages sent before the one in hand is deleted, so a worker
//! killed at any point loses at most the range it held: its message comes back.

use super::Daemon;
use crate::fleet::{self, CheckWork, RangeWork, Split};
use crate::metrics::{self, MessageResult, Outcome, RangeResult, SplitResult};
use crate::object::SourceObject;
use crate::queue::{Outgoing, Received, MAX_BATCH};
use crate::transfer::{CheckOutcome, RangeOutcome};

/// Times the missing ranges of a split are sent again before it is given up.
const MAX_RESENDS: u32 = 5;

impl Daemon {
    /// Sends a split's ranges and its first, delayed check; only the check if the
    /// upload is another splitter's, joined (that splitter sends the ranges: sending
    /// them again would copy the object twice; were that splitter gone before it sent
    /// them, the check finds no progress and sends the missing ranges). True if all
    /// were sent.
    pub(super) async fn send_split(&self, key: &str, split: &Split) -> bool {
        let check = &split.check;
        if split.joined {
            let sent = self.send_check(key, check).await;
            if sent {
                SplitResult::Merged.count();
                tracing::info!(upload_id = %check.upload_id, "joined another splitter's upload of this version: only a check is sent");
            }
            return sent;
        }
        let ranges = check.ranges();
        let sent = self.send_ranges(key, check, &ranges).await && self.send_check(key, check).await;
        if sent {
            tracing::info!(ranges = ranges.len(), upload_id = %check.upload_id, "split for the fleet");
        } else {
            // No message names the upload for sure: give it up, so that the key's
            // message, coming back, splits afresh rather than joining an upload
            // whose ranges nobody sends.
            let target_key = self.reconciler.target_key(key);
            self.reconciler
                .copier()
                .abandon(&target_key, &check.upload_id)
                .await;
        }
        sent
    }

    async fn send_ranges(&self, key: &str, check: &CheckWork, ranges: &[(u32, u32)]) -> bool {
        let bucket = &self.config.source.bucket;
        let messages: Vec<Outgoing> = ranges
            .iter()
            .map(|&(first, last)| Outgoing {
                body: fleet::message(bucket, key, "range", &check.range(first, last)),
                ..Outgoing::default()
            })
            .collect();
        self.send_all(&messages).await
    }

    async fn send_check(&self, key: &str, check: &CheckWork) -> bool {
        let message = Outgoing {
            body: fleet::message(&self.config.source.bucket, key, "check", check),
            delay: Some(self.config.transfer.split_check_delay),
            ..Outgoing::default()
        };
        self.send_all(&[message]).await
    }

    /// Sends `key` again as a key message: reconciled from the start.
    async fn send_key(&self, key: &str) -> bool {
        let body =
            serde_json::json!({"xpsync": 1, "bucket": self.config.source.bucket, "key": key});
        let message = Outgoing {
            body: body.to_string(),
            ..Outgoing::default()
        };
        self.send_all(&[message]).await
    }

    async fn send_all(&self, messages: &[Outgoing]) -> bool {
        for batch in messages.chunks(MAX_BATCH) {
            let failed = self.queue.send_batch(batch).await;
            if let Some((_, why)) = failed.first() {
                tracing::warn!(error = %why, "could not send the fleet's messages; the message in hand will come back");
                return false;
            }
        }
        true
    }

    /// Acknowledges `message` if `done`, else lets it come back.
    async fn settle(&self, message: &Received, done: bool, what: &str) {
        if done {
            self.deleter.delete(&message.id, &message.receipt);
            self.finish(MessageResult::Deleted, what);
        } else {
            let delay = super::retry_delay(message.receive_count);
            self.release(message, delay).await;
            self.finish(
                MessageResult::Retried,
                &format!("{what}: not finished, comes back"),
            );
        }
    }

    /// The upload is given up and the key sent again from the start. `first_only`:
    /// only if this call gave it up (the ranges of one upload all see the source
    /// change; one key message is enough).
    async fn restart(&self, key: &str, upload_id: &str, why: &str, first_only: bool) -> bool {
        let target_key = self.reconciler.target_key(key);
        let gave_up = self
            .reconciler
            .copier()
            .abandon(&target_key, upload_id)
            .await;
        if first_only && !gave_up {
            return true;
        }
        tracing::info!(%why, "gave the split's upload up; the key starts over");
        SplitResult::Restarted.count();
        self.send_key(key).await
    }

    /// A range beyond what this worker can copy at once ([`super::ranges`]): sent
    /// again for another worker, then deleted here.
    pub(super) async fn hand_back(&self, message: &Received) {
        let again = Outgoing {
            body: message.body.clone(),
            ..Outgoing::default()
        };
        if self.send_all(&[again]).await {
            RangeResult::HandedBack.count();
            self.deleter.delete(&message.id, &message.receipt);
            self.finish(
                MessageResult::Deleted,
                "range handed back: this worker holds all the ranges its parts can copy",
            );
        } else {
            self.release(message, std::time::Duration::ZERO).await;
            self.finish(MessageResult::Retried, "range released for another worker");
        }
    }

    pub(super) async fn copy_range(&self, message: &Received, key: &str, work: &RangeWork) {
        let target_key = self.reconciler.target_key(key);
        let copying = self.reconciler.copier().copy_range(
            key,
            &target_key,
            work,
            self.reconciler.target_asks_kms(),
        );
        let Some(outcome) = self.work_on(message, copying).await else {
            return;
        };
        let parts = format!("parts {} to {}", work.first_part, work.last_part);
        let wrote = match &outcome {
            Ok(RangeOutcome::Copied { .. }) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err((e.kind(), e.to_string())),
        };
        self.breaker.record_work(wrote, &self.health);
        match outcome {
            Ok(RangeOutcome::Copied { bytes }) => {
                RangeResult::Copied.count();
                tracing::info!(bytes, "range copied: {parts}");
                self.check_if_filled(key, &target_key, work).await;
                self.settle(message, true, "range copied").await;
            }
            Ok(RangeOutcome::Superseded { aborted }) => {
                RangeResult::Superseded.count();
                if aborted {
                    SplitResult::Merged.count();
                }
                self.settle(
                    message,
                    true,
                    "range of an upload that gave way to another of its version",
                )
                .await;
            }
            Ok(RangeOutcome::UploadGone) => {
                RangeResult::UploadGone.count();
                self.settle(message, true, "range of an upload that is gone")
                    .await;
            }
            Ok(RangeOutcome::SourceChanged) => {
                RangeResult::SourceChanged.count();
                let sent = self
                    .restart(key, &work.upload_id, "the source changed", true)
                    .await;
                self.settle(message, sent, "range of a source that changed")
                    .await;
            }
            Err(e) => {
                RangeResult::Failed.count();
                tracing::warn!(error = %e, kind = e.kind().as_str(), "range failed: {parts}");
                self.settle(message, false, "range failed").await;
            }
        }
    }

    /// If `work`'s range was the last the upload lacked, sends its check at once
    /// (the delayed check stays a safety net). Two workers finishing together may
    /// both send one: the second finds the upload completed and the key up to date.
    async fn check_if_filled(&self, key: &str, target_key: &str, work: &RangeWork) {
        match self.reconciler.copier().filled(target_key, work).await {
            Ok(Some(check)) => {
                let message = Outgoing {
                    body: fleet::message(&self.config.source.bucket, key, "check", &check),
                    ..Outgoing::default()
                };
                if self.send_all(&[message]).await {
                    tracing::info!(upload_id = %work.upload_id, "every part is in: checking the upload now");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not list the upload's parts; the delayed check will")
            }
        }
    }

    pub(super) async fn check_split(&self, message: &Received, key: &str, work: &CheckWork) {
        let Some(looked) = self.work_on(message, self.look(key, work)).await else {
            return;
        };
        match looked {
            Ok(done) => self.settle(message, done, "split checked").await,
            // Given up: the check goes to the dead-letter queue, saying why.
            Err(why) => self.dead_letter(message, &why).await,
        }
    }

    /// Looks at the upload of `work`: true when the check message is done with,
    /// false when it is to come back, an error when the split is given up.
    async fn look(&self, key: &str, work: &CheckWork) -> Result<bool, String> {
        let target_key = self.reconciler.target_key(key);
        let source = match self.reconciler.head_source(key).await {
            Ok(source) => source,
            Err(e) => {
                tracing::warn!(error = %e, "could not HEAD the source of a split");
                self.breaker
                    .record_work(Err((e.kind, e.to_string())), &self.health);
                return Ok(false);
            }
        };
        let source = match source {
            Some(source)
                if source.etag.as_ref().map(|e| e.as_str()) == Some(work.etag.as_str()) =>
            {
                source
            }
            _ => {
                let why = "the source changed or is gone";
                return Ok(self.restart(key, &work.upload_id, why, false).await);
            }
        };
        let options = self.reconciler.write_options(&source);
        let copier = self.reconciler.copier();
        let checked = copier
            .check_split(&source, &target_key, work, &options)
            .await;
        let wrote = match &checked {
            Ok(CheckOutcome::Completed(_)) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err((e.kind(), e.to_string())),
        };
        self.breaker.record_work(wrote, &self.health);
        match checked {
            Ok(CheckOutcome::Completed(copied)) => {
                Ok(self.completed(key, &source, copied.etag).await)
            }
            Ok(CheckOutcome::Missing { present, missing }) => {
                self.missing(key, work, present, &missing).await
            }
            Ok(CheckOutcome::Gone) => Ok(self.gone(key, &target_key, work).await),
            Ok(CheckOutcome::Mismatch(why)) => {
                Ok(self.restart(key, &work.upload_id, &why, false).await)
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = e.kind().as_str(), "could not check a split's upload");
                Ok(false)
            }
        }
    }

    /// The upload of `work` is gone. If it gave way to another upload of its version
    /// (a duplicate split), that upload's own check completes the object; else it
    /// was completed by an earlier check, or given up: the key is reconciled as usual.
    async fn gone(&self, key: &str, target_key: &str, work: &CheckWork) -> bool {
        let copier = self.reconciler.copier();
        let kms = work.target_kms || self.reconciler.target_asks_kms();
        let version = crate::etag::ETag::new(&work.etag);
        match copier.first_marked(target_key, None, &version, kms).await {
            Ok(Some(winner)) => {
                tracing::info!(upload_id = %work.upload_id, %winner, "the upload gave way to another of its version; that one's check completes the object");
                true
            }
            Ok(None) => self.send_key(key).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the key's uploads");
                false
            }
        }
    }

    /// Parts are missing: look again later; once no part has arrived for longer than
    /// a visibility timeout (a range held by a worker that died comes back by itself
    /// after that), send the missing ranges again; after [`MAX_RESENDS`] of those,
    /// give the split up.
    async fn missing(
        &self,
        key: &str,
        work: &CheckWork,
        present: u32,
        missing: &[u32],
    ) -> Result<bool, String> {
        let mut next = CheckWork {
            parts_present: Some(present),
            ..work.clone()
        };
        next.stalled = if work.parts_present == Some(present) {
            work.stalled + 1
        } else {
            0
        };
        let waited = self.config.transfer.split_check_delay * next.stalled;
        if waited > self.config.queue.visibility_timeout {
            if work.resends >= MAX_RESENDS {
                let why = format!(
                    "{} parts of the split upload still missing after their ranges were sent again {MAX_RESENDS} times",
                    missing.len()
                );
                self.restart(key, &work.upload_id, &why, false).await;
                return Err(why);
            }
            SplitResult::Resent.count();
            let ranges = work.ranges_of(missing);
            tracing::info!(missing = missing.len(), ranges = ranges.len(), "no part arrived for longer than a visibility timeout; sending the missing ranges again");
            if !self.send_ranges(key, work, &ranges).await {
                return Ok(false);
            }
            next.stalled = 0;
            next.resends += 1;
        }
        Ok(self.send_check(key, &next).await)
    }

    /// A split object is complete: the last writer checks the source still holds
    /// what it copied, then it is counted as any copy.
    async fn completed(&self, key: &str, source: &SourceObject, etag: crate::etag::ETag) -> bool {
        match self.reconciler.head_source(key).await {
            Ok(Some(now)) if now.etag == source.etag => {
                SplitResult::Completed.count();
                metrics::OBJECTS
                    .with_label_values(&[Outcome::Copied.as_str()])
                    .inc();
                metrics::BYTES_COPIED.inc_by(source.size);
                tracing::info!(size = source.size, %etag, "split object completed and verified");
                true
            }
            Ok(_) => self.send_key(key).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not HEAD the source after completing a split");
                false
            }
        }
    }
}
