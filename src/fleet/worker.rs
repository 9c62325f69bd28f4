//! The daemon's side of a fleet copy: sending a split's ranges and check, copying a
//! range, looking at an upload. Each returns a [`Step`]: what becomes of the message
//! in hand ([`Verdict`]) and what the work says of the service, for the breaker; the
//! daemon carries it out, as for any message.
//!
//! Each step ends in messages sent before the one in hand is deleted, so a worker
//! killed at any point loses at most the range it held: its message comes back.

use std::sync::Arc;
use std::time::Duration;

use super::message::{CheckWork, Native, RangeWork, Split};
use super::ranges::Ranges;
use super::share::Unstarted;
use super::RangeOutcome;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::metrics::{RangeResult, SplitResult};
use crate::queue::{Outgoing, Queue, MAX_BATCH};
use crate::reconcile::{Reconciler, SplitChecked};

/// Times the missing ranges of a split are sent again, with no part arriving in
/// between, before it is given up.
const MAX_RESENDS: u32 = 5;

/// How long a share of a range's parts may take to send ([`Worker::share_a_range`]):
/// the range starts none of its parts meanwhile.
const SHARE_SEND_LIMIT: Duration = Duration::from_secs(10);

/// Visibility timeouts without a new part before the missing ranges are sent
/// again: a range whose worker died has come back by itself long before.
const STALLED_TIMEOUTS: u32 = 3;

/// What becomes of the message in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done with: deleted. What it came to, for the log.
    Done(String),
    /// Not finished: it comes back later, with backoff.
    Retry(String),
    /// Given up: to the dead-letter queue, saying why.
    DeadLetter(String),
    /// Made visible at once, for another worker.
    Release(String),
}

/// One step of the fleet's work on a message.
#[derive(Debug)]
pub struct Step {
    pub verdict: Verdict,
    /// What the work says of the service, for the breaker: `Ok(wrote)`, or the
    /// failure's kind and words; None when it says nothing.
    pub signal: Option<Result<bool, (ErrorKind, String)>>,
}

impl Step {
    /// The message is wrong every time: it goes to the dead-letter queue.
    pub fn dead_letter(why: String) -> Self {
        Self {
            verdict: Verdict::DeadLetter(why),
            signal: None,
        }
    }

    fn settle(done: bool, what: &str) -> Self {
        let verdict = if done {
            Verdict::Done(what.to_owned())
        } else {
            Verdict::Retry(format!("{what}: not finished, comes back"))
        };
        Self {
            verdict,
            signal: None,
        }
    }
}

/// A worker's part in the fleet's splits.
#[derive(Debug)]
pub struct Worker {
    reconciler: Reconciler,
    /// Where checks and restarted keys are sent.
    queue: Queue,
    /// Where ranges are sent: the range queue, or the main queue if there is none.
    range_queue: Queue,
    /// The source bucket that every message names.
    bucket: String,
    /// How long a check waits before it looks (`transfer.split_check_delay`).
    check_delay: Duration,
    /// How long a received message stays hidden (`queue.visibility_timeout`): a range
    /// held by a worker that died comes back after it.
    visibility_timeout: Duration,
    /// How many range messages this worker holds at once.
    pub ranges: Arc<Ranges>,
}

impl Worker {
    pub fn new(reconciler: Reconciler, queue: Queue, config: &Config) -> Self {
        Self {
            reconciler,
            range_queue: queue.range_queue(),
            queue,
            bucket: config.source.bucket.clone(),
            check_delay: config.transfer.split_check_delay,
            visibility_timeout: config.queue.visibility_timeout,
            ranges: Ranges::new(config.transfer.max_parts),
        }
    }

    /// The worker's part in another route's splits: the same queues, and the same
    /// ranges in hand (the worker's parts copy every route's).
    pub fn for_route(&self, reconciler: Reconciler, config: &Config) -> Self {
        Self {
            reconciler,
            queue: self.queue.clone(),
            range_queue: self.range_queue.clone(),
            bucket: config.source.bucket.clone(),
            check_delay: self.check_delay,
            visibility_timeout: self.visibility_timeout,
            ranges: Arc::clone(&self.ranges),
        }
    }

    /// Sends a split's ranges and its first, delayed check. If the upload is
    /// another splitter's, joined, that splitter sends the ranges (sending them again
    /// would copy the object twice) and the check: one check chain per upload. Only
    /// a key message that came back (`returned`: received before, or dead-lettered
    /// and replayed) sends a check then, for its splitter may have died before
    /// sending anything; the check finds
    /// no progress and sends the missing ranges. A duplicate event, on its first
    /// receive, sends nothing: were the first splitter gone, its own message comes
    /// back. True if all were sent.
    /// `restarts`: times the key was started over before (its message says).
    pub async fn send_split(
        &self,
        key: &str,
        split: &Split,
        restarts: u32,
        returned: bool,
    ) -> bool {
        SplitResult::Split.count();
        let check = &CheckWork {
            restarts,
            ..split.check.clone()
        };
        if split.joined && !returned {
            SplitResult::Merged.count();
            tracing::info!(upload_id = %check.upload_id, "joined another splitter's upload of this version: its splitter sends the ranges and the check");
            return true;
        }
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
            self.reconciler.abandon(key, &check.upload_id).await;
        }
        sent
    }

    async fn send_ranges(&self, key: &str, check: &CheckWork, ranges: &[(u32, u32)]) -> bool {
        let messages: Vec<Outgoing> = ranges
            .iter()
            .map(|&(first, last)| Outgoing {
                body: Native::range(&self.bucket, key, check.range(first, last)).body(),
                ..Outgoing::default()
            })
            .collect();
        send_all(&self.range_queue, &messages).await
    }

    async fn send_check(&self, key: &str, check: &CheckWork) -> bool {
        let message = Outgoing {
            body: Native::check(&self.bucket, key, check.clone()).body(),
            delay: Some(self.check_delay),
            ..Outgoing::default()
        };
        self.send_all(&[message]).await
    }

    /// Sends `key` again as a key message, reconciled from the start: its split's
    /// `restarts`th restart, because of `why` (counted, so that it ends).
    async fn send_key(&self, key: &str, restarts: u32, why: &str) -> bool {
        let message = Outgoing {
            body: Native::restart(&self.bucket, key, restarts, why).body(),
            ..Outgoing::default()
        };
        self.send_all(&[message]).await
    }

    async fn send_all(&self, messages: &[Outgoing]) -> bool {
        send_all(&self.queue, messages).await
    }

    /// The upload is given up and the key sent again from the start. `first_only`:
    /// only if this call gave it up (the ranges of one upload all see the source
    /// change; one key message is enough).
    async fn restart(
        &self,
        key: &str,
        (upload_id, restarts): (&str, u32),
        why: &str,
        first_only: bool,
    ) -> bool {
        let gave_up = self.reconciler.abandon(key, upload_id).await;
        if first_only && !gave_up {
            return true;
        }
        tracing::info!(%why, "gave the split's upload up; the key starts over");
        SplitResult::Restarted.count();
        self.send_key(key, restarts, why).await
    }

    /// The range queue was found empty: the range at work here with the most parts
    /// not yet started hands the upper half of them, as a range message, to a
    /// worker waiting on the queue ([`super::share`]). Whether one was sent.
    pub async fn share_a_range(&self) -> bool {
        let Some(range) = self.ranges.fullest() else {
            return false;
        };
        // Two parts left or more: one stays, one goes.
        let shared = range
            .share(1, |share| async {
                let message = Outgoing {
                    body: Native::range(&range.bucket, &range.key, share).body(),
                    ..Outgoing::default()
                };
                // The range's parts wait while it is sent. One that timed out
                // but was delivered costs its parts twice.
                let messages = [message];
                let sending = send_all(&self.range_queue, &messages);
                tokio::time::timeout(SHARE_SEND_LIMIT, sending)
                    .await
                    .unwrap_or(false)
            })
            .await;
        if shared {
            RangeResult::Shared.count();
            tracing::info!(key = %range.key, left = range.left(), "the range queue is empty: shared half of a range's parts not yet started");
        }
        shared
    }

    /// Whether ranges travel on a queue of their own.
    pub fn has_range_queue(&self) -> bool {
        self.range_queue.url != self.queue.url
    }

    /// A range beyond what this worker can copy at once ([`Ranges`]), or one that
    /// came on the main queue while the fleet has a range queue (a replayed dead
    /// letter, or an older worker's): sent to the range queue for another worker,
    /// and deleted here.
    pub async fn hand_back(&self, body: &str, why: &str) -> Step {
        let again = Outgoing {
            body: body.to_owned(),
            ..Outgoing::default()
        };
        let verdict = if send_all(&self.range_queue, &[again]).await {
            RangeResult::HandedBack.count();
            Verdict::Done(format!("range handed back: {why}"))
        } else {
            Verdict::Release("range released for another worker".into())
        };
        Step {
            verdict,
            signal: None,
        }
    }

    /// Copies the parts of a range, and has the upload checked at once if it was
    /// the last one missing.
    pub async fn copy_range(&self, key: &str, work: &RangeWork) -> Step {
        let range = Unstarted::new(&self.bucket, key, work);
        self.ranges.at_work(&range);
        let outcome = self.reconciler.copy_range(key, work, &range).await;
        range.close().await;
        let parts = format!("parts {} to {}", work.first_part, work.last_part);
        let signal = match &outcome {
            Ok(RangeOutcome::Copied { .. }) => Some(Ok(true)),
            Ok(_) => Some(Ok(false)),
            // One object's verdict says nothing of the service.
            Err(e) if e.is_verdict() => None,
            Err(e) => Some(Err((e.kind(), e.to_string()))),
        };
        let step = match outcome {
            Ok(RangeOutcome::Copied { bytes }) => {
                RangeResult::Copied.count();
                tracing::info!(bytes, "range copied: {parts}");
                self.check_if_filled(key, work).await;
                Step::settle(true, "range copied")
            }
            Ok(RangeOutcome::Superseded { aborted }) => {
                RangeResult::Superseded.count();
                if aborted {
                    SplitResult::Merged.count();
                }
                let what = "range of an upload that gave way to another of its version";
                Step::settle(true, what)
            }
            Ok(RangeOutcome::UploadGone) => {
                RangeResult::UploadGone.count();
                Step::settle(true, "range of an upload that is gone")
            }
            Ok(RangeOutcome::SourceChanged) => {
                RangeResult::SourceChanged.count();
                let why = "the source changed";
                let upload = (work.upload_id.as_str(), work.restarts);
                let sent = self.restart(key, upload, why, true).await;
                Step::settle(sent, "range of a source that changed")
            }
            Err(e) if e.is_verdict() => {
                RangeResult::Failed.count();
                self.give_up(key, work, &e.to_string()).await
            }
            Err(e) => {
                RangeResult::Failed.count();
                tracing::warn!(error = %e, kind = e.kind().as_str(), "range failed: {parts}");
                Step::settle(false, "range failed")
            }
        };
        Step { signal, ..step }
    }

    /// A range failed for good (the object's verdict: its bytes cannot be read, or
    /// cannot be written): the split ends, its upload given up, the range message
    /// deleted. The split's check then finds the upload gone and starts the key over
    /// (counted), and the key's own reconcile gives the verdict, once: its first
    /// read is refused ([`crate::fleet::Ledger::split`] reads one byte first) and the
    /// key is dead-lettered with S3's words. A key whose splits keep failing so ends
    /// after [`super::MAX_RESTARTS`]. Never a breaker signal.
    async fn give_up(&self, key: &str, work: &RangeWork, why: &str) -> Step {
        if self.reconciler.abandon(key, &work.upload_id).await {
            SplitResult::Restarted.count();
            tracing::warn!(error = %why, "a range failed for good: the split is given up, and its key is to be reconciled again");
        }
        Step {
            verdict: Verdict::Done(format!("range of a split given up: {why}")),
            signal: None,
        }
    }

    /// If `work`'s range was the last the upload lacked, sends its check at once
    /// (the delayed check stays a safety net). Two workers finishing together may
    /// both send one: the second finds the upload completed and the key up to date.
    async fn check_if_filled(&self, key: &str, work: &RangeWork) {
        match self.reconciler.range_filled(key, work).await {
            Ok(Some(check)) => {
                let message = Outgoing {
                    body: Native::check(&self.bucket, key, check).body(),
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

    /// Looks at a split's upload: completes it, or sends what is missing again, or
    /// starts the key over, or gives the split up.
    pub async fn check_split(&self, key: &str, work: &CheckWork) -> Step {
        let upload = (work.upload_id.as_str(), work.restarts);
        let checked = self.reconciler.check_split(key, work).await;
        let signal = match &checked {
            Ok(SplitChecked::Completed | SplitChecked::ChangedAfterWrite) => Some(Ok(true)),
            // Found before the upload was looked at: it says nothing of the target.
            Ok(SplitChecked::SourceChanged(_)) => None,
            Ok(_) => Some(Ok(false)),
            Err(e) => Some(Err((e.kind(), e.to_string()))),
        };
        let done = match checked {
            Ok(SplitChecked::Completed) => {
                SplitResult::Completed.count();
                true
            }
            Ok(SplitChecked::ChangedAfterWrite) => {
                let why = "the source changed under the completion";
                self.send_key(key, work.restarts, why).await
            }
            Ok(SplitChecked::SourceChanged(why)) => self.restart(key, upload, why, false).await,
            Ok(SplitChecked::Missing {
                present,
                missing,
                stamp,
            }) => self.missing(key, work, (present, stamp), &missing).await,
            Ok(SplitChecked::Gone) => self.gone(key, work).await,
            Ok(SplitChecked::Mismatch(why)) => self.restart(key, upload, &why, false).await,
            Err(e) => {
                tracing::warn!(error = %e, kind = e.kind().as_str(), "could not check a split's upload");
                false
            }
        };
        Step {
            signal,
            ..Step::settle(done, "split checked")
        }
    }

    /// The upload of `work` is gone. If it gave way to another upload of its version
    /// (a duplicate split), that upload's own check completes the object; if the
    /// target holds the version, another check completed it (its tags and
    /// description are settled here); else it was given up: the key starts over,
    /// counted.
    async fn gone(&self, key: &str, work: &CheckWork) -> bool {
        match self.reconciler.upload_of_version(key, work).await {
            Ok(Some(winner)) => {
                tracing::info!(upload_id = %work.upload_id, %winner, "the upload gave way to another of its version; that one's check completes the object");
                true
            }
            // Completed by another check: nothing to start over.
            Ok(None) => match self.reconciler.holds_split(key, work).await {
                Ok(true) => true,
                Ok(false) => {
                    let why = "its upload is gone, and the target does not hold the version";
                    self.send_key(key, work.restarts, why).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look at the key's copy; the check comes back");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not list the key's uploads");
                false
            }
        }
    }

    /// Parts are missing: look again later. A range whose worker died comes back by
    /// itself after a visibility timeout, and a slow worker keeps its range hidden
    /// while it works and writes the upload's marker part again whenever none of
    /// its parts finished for a visibility timeout (`stamp`, the marker's time):
    /// so the missing ranges are sent again only once for [`STALLED_TIMEOUTS`]
    /// visibility timeouts no part has arrived and no worker has said it is at work
    /// (its messages lost, or dead-lettered), and a range sent again sends only the
    /// parts still missing. A new part or a new stamp resets both counts: an
    /// upload that progresses is never given up. After [`MAX_RESENDS`] waves
    /// without either, the split is given up and the key starts over (counted).
    /// True once the next step is sent.
    async fn missing(
        &self,
        key: &str,
        work: &CheckWork,
        (present, stamp): (u32, Option<i64>),
        missing: &[u32],
    ) -> bool {
        let arrived = work.parts_present.is_none_or(|before| present > before);
        let at_work = stamp.is_some() && stamp != work.stamp;
        let progressed = arrived || at_work;
        let mut next = CheckWork {
            parts_present: Some(present),
            stamp,
            stalled: if progressed { 0 } else { work.stalled + 1 },
            resends: if progressed { 0 } else { work.resends },
            ..work.clone()
        };
        let waited = self.check_delay * next.stalled;
        if waited > self.visibility_timeout * STALLED_TIMEOUTS {
            if next.resends >= MAX_RESENDS {
                let why = format!(
                    "{} parts of the split upload still missing after their ranges were sent again {MAX_RESENDS} times",
                    missing.len()
                );
                // The key starts over, counted: a split that never fills ends.
                let upload = (work.upload_id.as_str(), work.restarts);
                return self.restart(key, upload, &why, false).await;
            }
            SplitResult::Resent.count();
            let ranges = work.ranges_of(missing);
            tracing::info!(missing = missing.len(), ranges = ranges.len(), "no part arrived for {STALLED_TIMEOUTS} visibility timeouts; sending the missing ranges again");
            if !self.send_ranges(key, work, &ranges).await {
                return false;
            }
            next.stalled = 0;
            next.resends += 1;
        }
        self.send_check(key, &next).await
    }
}

async fn send_all(queue: &Queue, messages: &[Outgoing]) -> bool {
    for batch in messages.chunks(MAX_BATCH) {
        let failed = queue.send_batch(batch).await;
        if let Some((_, why)) = failed.first() {
            tracing::warn!(error = %why, "could not send the fleet's messages; the message in hand will come back");
            return false;
        }
    }
    true
}
