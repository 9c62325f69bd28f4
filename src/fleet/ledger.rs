//! The target's multipart upload as a split's ledger (DESIGN §10): split an object
//! into an upload and its ranges, copy one range, look at the upload and complete it.
//! [`Ledger`] borrows the [`Copier`], whose parts, uploads and checks it uses.
//!
//! **Split.** The plan is the one a multipart copy would use (the source's layout,
//! or a uniform cut). An upload is created with the object's description and tagged
//! with the version it copies; then the key's uploads are listed and the first of
//! this version (as initiated, ties by upload id) wins, so duplicate events do not
//! make two splitters copy one object twice: a splitter that lost aborts its own
//! upload and joins the winner, whose own splitter sends the ranges.
//!
//! **Range.** First the key's uploads are listed again: two splitters that each
//! listed before the other had tagged its upload both kept their own, and the
//! ranges of the later one give it up here. Then each part is copied as any part
//! is ([`super::part`]): `If-Match` the source ETag, streamed and checked by its
//! ETag, or buffered with Content-MD5 under KMS. A 412 means the source changed; a
//! missing upload, that the work is over.
//!
//! **Check.** ListParts is the ledger. Every part present with its planned size:
//! where the source's own layout was kept and ETags are MD5s, the composite must be
//! the source's ETag; then CompleteMultipartUpload, the written ETag checked, and the
//! recorded source ETag and description checked (the upload may have been begun by
//! another splitter). A part of another size means another layout, so another
//! version: the upload is given up.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::marker::{marker, with_room_for_the_tag};
use super::message::{parts_per_range, CheckWork, RangeWork, Split};
use super::share::{PartRange, Unstarted};
use crate::checksum::UploadChecksum;
use crate::error::ErrorKind;
use crate::etag::ETag;
use crate::metrics::PartResult;
use crate::object::SourceObject;
use crate::transfer::multipart::{self, Completion};
use crate::transfer::part::{copy_part_in_slot, Part, Uploaded};
use crate::transfer::plan::{is_marker, PartPlan, MARKER_PART, MARKER_PARTS};
use crate::transfer::{Copied, Copier, Method, TransferError, WriteOptions};

/// What copying a range came to.
#[derive(Debug)]
pub enum RangeOutcome {
    /// Every part of it is in the upload, checked.
    Copied { bytes: u64 },
    /// The source no longer holds the version the upload copies.
    SourceChanged,
    /// The upload is gone: completed by a check, or given up.
    UploadGone,
    /// An earlier upload carries the same version ([`Copier::first_marked`]): this
    /// one was given up (`aborted`: by this call) and its ranges are not copied.
    Superseded { aborted: bool },
}

/// What looking at an upload came to.
#[derive(Debug)]
pub enum CheckOutcome {
    /// Complete and verified.
    Completed(Copied),
    /// Parts still missing (1-based numbers), with how many are present and when
    /// the marker part was last written (a range still at work writes it again).
    Missing {
        present: u32,
        missing: Vec<u32>,
        stamp: Option<i64>,
    },
    /// The upload is gone.
    Gone,
    /// The upload holds what this version's layout cannot: it is to be given up.
    Mismatch(String),
}

/// What tagging a new upload found.
enum Tagged {
    /// The target keeps the ledger; the first upload of this version before the
    /// new one, if any.
    Ledger { earlier: Option<String> },
    /// The target cannot be a split's ledger, and why.
    NoLedger(String),
}

/// A split's ledger: the target's multipart uploads, through the [`Copier`].
pub struct Ledger<'a> {
    pub(super) copier: &'a Copier,
    /// Set once the target has listed an upload's parts without their ETags (some
    /// S3-compatible servers), or refused to list them: it cannot be a split's
    /// ledger, so nothing is split until the process restarts.
    no_ledger: &'a AtomicBool,
}

impl<'a> Ledger<'a> {
    pub fn new(copier: &'a Copier, no_ledger: &'a AtomicBool) -> Self {
        Self { copier, no_ledger }
    }

    /// Whether an object of `size` bytes is copied by the fleet rather than here.
    pub fn copies_by_fleet(&self, size: u64) -> bool {
        let threshold = self.copier.settings().split_threshold.as_u64();
        threshold > 0 && size >= threshold && !self.no_ledger.load(Ordering::Relaxed)
    }

    /// Creates (or joins) the upload of `source` at `target_key` and returns the
    /// first check of it, which names its layout and ranges, and whether it joined
    /// another splitter's upload. None if the target lists an upload's parts
    /// without their ETags: it cannot be the ledger, the upload is given up and the
    /// object is to be copied by this worker, as below the threshold.
    ///
    /// The upload is created first, so its answer tells whether the target encrypts
    /// with KMS before the parts are planned (parts to be buffered must fit the
    /// memory budget). It is tagged with the version it copies: two marker parts,
    /// [`MARKER_PARTS`], never completed, whose content is the source's ETag and
    /// whose size derives from it ([`marker`]). Only uploads carrying this version's marker
    /// are joined, the first initiated winning: an upload begun for another version
    /// (of the same size and layout) is never mixed into this one.
    /// A split upload's checksum: `target.checksum`, composite, as its ranges send.
    fn checksum(&self) -> Option<UploadChecksum> {
        let algorithm = self.copier.part_checksum()?;
        Some(UploadChecksum {
            algorithm,
            full_object: None,
        })
    }

    pub async fn split(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<Option<Split>, TransferError> {
        let etag = source.etag.clone().ok_or_else(|| {
            TransferError::Unsupported("the source names no ETag for the object".into())
        })?;
        // One byte first: bytes that cannot be read (a KMS key refusing kms:Decrypt)
        // are the key's verdict here, before any upload or range message exists.
        self.copier.probe_read(source).await?;
        let checksum = self.checksum();
        let (mine, encryption) =
            multipart::create(self.copier, source, target_key, options, checksum.as_ref()).await?;
        self.copier.saw_target_encryption(encryption.as_ref());
        let opaque = self.copier.etags_opaque(options);
        let stream = self.copier.settings().stream_parts && !opaque;
        let planned = match multipart::plan_for(self.copier, source, stream).await {
            Ok(plan) => self.with_room_for_the_tag(plan, source.size, stream),
            Err(e) => Err(e),
        };
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                multipart::abort(self.copier, target_key, &mine).await;
                return Err(e);
            }
        };
        let mut winner = mine.clone();
        match self.tag(target_key, &mine, &etag, opaque).await {
            Ok(Tagged::Ledger { earlier }) => winner = earlier.unwrap_or(winner),
            Ok(Tagged::NoLedger(why)) => {
                multipart::abort(self.copier, target_key, &mine).await;
                if !self.no_ledger.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{why}, so it cannot be a split's ledger: objects over transfer.split_threshold are copied whole by the worker that receives them, until this process restarts");
                }
                return Ok(None);
            }
            Err(e) => {
                multipart::abort(self.copier, target_key, &mine).await;
                return Err(e);
            }
        }
        if winner != mine {
            tracing::info!(upload_id = %winner, "another splitter's upload of this version came first; working for it");
            multipart::abort(self.copier, target_key, &mine).await;
        }
        let part_sizes = plan.sizes().to_vec();
        let per = parts_per_range(
            &part_sizes,
            self.copier.settings().split_range_size.as_u64(),
        );
        let joined = winner != mine;
        let check = CheckWork {
            upload_id: winner,
            etag: etag.clone(),
            part_sizes,
            parts_per_range: per,
            preserved: plan.preserved,
            target_kms: opaque,
            parts_present: None,
            stamp: None,
            stalled: 0,
            resends: 0,
            restarts: 0,
        };
        Ok(Some(Split { check, joined }))
    }

    /// The split's plan, with room for its tag ([`with_room_for_the_tag`]); a re-cut
    /// plan's parts, when they are to be buffered, must fit the budget.
    fn with_room_for_the_tag(
        &self,
        plan: PartPlan,
        size: u64,
        stream: bool,
    ) -> Result<PartPlan, TransferError> {
        let min_part = self.copier.settings().part_size.as_u64();
        let plan =
            with_room_for_the_tag(plan, size, min_part).map_err(TransferError::Unsupported)?;
        let budget = self.copier.budget();
        if !stream && !budget.fits(plan.largest_part()) {
            return Err(budget.too_large_to_buffer(plan.largest_part()));
        }
        Ok(plan)
    }

    /// Tags upload `mine` with version `etag` (its marker part), makes sure the
    /// target lists it back with its ETag (the ledger a split needs), and finds the
    /// first upload of this version before it ([`Self::first_marked`]).
    async fn tag(
        &self,
        target_key: &str,
        mine: &str,
        etag: &ETag,
        opaque: bool,
    ) -> Result<Tagged, TransferError> {
        // Part 9,999 first: an upload lists as this version's once part 10,000
        // is there, and then carries both.
        for number in MARKER_PARTS {
            self.write_marker(target_key, mine, etag, number).await?;
        }
        match self.marker_parts(target_key, mine).await {
            Ok(listed) if listed.get(&MARKER_PART).is_some_and(|m| m.etag.is_some()) => {}
            Ok(_) => {
                return Ok(Tagged::NoLedger(
                    "the target lists an upload's parts without their ETags".into(),
                ))
            }
            Err(e) if e.operation_refused() => {
                return Ok(Tagged::NoLedger(format!(
                "the target refuses to list an upload's parts (s3:ListMultipartUploadParts): {e}"
            )))
            }
            Err(e) => return Err(e.into()),
        }
        let earlier = self
            .first_marked(target_key, Some(mine), etag, opaque)
            .await?;
        Ok(Tagged::Ledger { earlier })
    }

    /// Writes upload `upload`'s marker part `number` for version `etag`: to tag
    /// it, and part 10,000 again, the same bytes, as the sign of a range still at
    /// work ([`Self::stamp`]).
    async fn write_marker(
        &self,
        target_key: &str,
        upload: &str,
        etag: &ETag,
        number: usize,
    ) -> Result<(), crate::error::S3Error> {
        let (body, content_md5) = marker(etag, number);
        let length = body.len() as u64;
        let target = self.copier.target();
        let checksum = self.copier.part_checksum();
        let request = target
            .client
            .upload_part()
            .bucket(&target.bucket)
            .key(target_key)
            .upload_id(upload)
            .part_number(number as i32)
            .content_md5(content_md5)
            .set_checksum_algorithm(checksum.clone())
            .body(body.into())
            .customize()
            .config_override(self.copier.part_upload_config(length, checksum.is_some()));
        target.observe("UploadPart", request.send().await)?;
        Ok(())
    }

    /// While a range's parts copy, every `every` in which none of them finished
    /// (a part slower than that, over a slow link), writes the upload's marker part
    /// again: its time in ListParts tells the split's check that a worker is still
    /// at it, so a slow range is never taken for a lost one and sent again
    /// ([`CheckOutcome::Missing`]'s `stamp`). One small request per `every`, and
    /// only while no part arrives. Returns only once the upload is gone.
    async fn stamp(
        &self,
        target_key: &str,
        work: &RangeWork,
        finished: &AtomicU64,
        every: Duration,
    ) {
        let mut seen = 0;
        loop {
            tokio::time::sleep(every).await;
            let now = finished.load(Ordering::SeqCst);
            if now == seen {
                let written =
                    self.write_marker(target_key, &work.upload_id, &work.etag, MARKER_PART);
                match written.await {
                    // Completed or given up meanwhile: the parts still in flight
                    // are for nothing, and the range ends.
                    Err(e) if e.kind == ErrorKind::NotFound => return,
                    Err(e) => {
                        tracing::warn!(upload_id = %work.upload_id, error = %e, "could not mark the range as still at work");
                    }
                    Ok(()) => {}
                }
            }
            seen = now;
        }
    }

    /// Copies the parts of range `work` into its upload, as `range` hands them
    /// out ([`Unstarted`]). `opaque`: the target is
    /// asked for SSE-KMS (its part ETags are opaque). `stamp_every`: how often a
    /// range none of whose parts finish marks its upload as still at work
    /// ([`Self::stamp`]).
    pub async fn copy_range(
        &self,
        key: &str,
        target_key: &str,
        (work, range): (&RangeWork, &Arc<Unstarted>),
        (opaque, stamp_every): (bool, Duration),
    ) -> Result<RangeOutcome, TransferError> {
        let version = work.etag.clone();
        let opaque = opaque || work.target_kms;
        if let Some(winner) = self
            .first_marked(target_key, Some(&work.upload_id), &version, opaque)
            .await?
        {
            tracing::info!(upload_id = %work.upload_id, %winner, "another upload of this version came first; giving this one up");
            let aborted = self.abandon(target_key, &work.upload_id).await;
            return Ok(RangeOutcome::Superseded { aborted });
        }
        let source = SourceObject::listed(key, 0, Some(version));
        let stream = self.copier.settings().stream_parts && !opaque && !self.copier.opaque_seen();
        // A range sent again (its worker slow, or gone) sends only the parts the
        // upload lacks: one present with its planned size was written by a worker
        // reading this version (If-Match), and S3 checked its bytes on the way in.
        let numbers = work.first_part as usize..=work.last_part as usize;
        let present = multipart::sizes_in(self.copier, target_key, &work.upload_id, numbers).await;
        let present = match present {
            Ok(present) => present,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(RangeOutcome::UploadGone),
            Err(e) => return Err(e),
        };
        let mut start = work.first_byte;
        let parts: Vec<PartRange> = work
            .part_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let range = start..start + size;
                start += size;
                (work.first_part as usize + i, range)
            })
            .filter(|(number, range)| {
                let there = present.get(number) == Some(&(range.end - range.start));
                if there {
                    PartResult::Reused.count();
                }
                !there
            })
            .collect();
        // A part is taken once a part slot is free: those not yet taken may be
        // shared with an idle worker ([`super::share`]).
        range.fill(parts).await;
        let finished = AtomicU64::new(0);
        let copied = range
            .parts(self.copier)
            .map(|(slot, (number, range))| {
                let part = Part {
                    upload_id: &work.upload_id,
                    number,
                    range,
                    earlier: None,
                    checksum: self.copier.part_checksum(),
                };
                copy_part_in_slot(self.copier, &source, target_key, (part, slot), stream)
            })
            .buffer_unordered(self.copier.settings().max_parts)
            .inspect_ok(|_| {
                finished.fetch_add(1, Ordering::SeqCst);
            })
            .try_fold(0u64, |bytes, done| async move { Ok(bytes + done.sent) });
        let copied = tokio::select! {
            copied = copied => copied,
            () = self.stamp(target_key, work, &finished, stamp_every) => {
                return Ok(RangeOutcome::UploadGone);
            }
        };
        match copied {
            Ok(bytes) => Ok(RangeOutcome::Copied { bytes }),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => Ok(RangeOutcome::SourceChanged),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(RangeOutcome::UploadGone),
            Err(e) => Err(e),
        }
    }

    /// After a range: the check of its upload if every part of the layout is there
    /// now, so the object is completed at once rather than at the delayed check.
    pub async fn filled(
        &self,
        target_key: &str,
        work: &RangeWork,
    ) -> Result<Option<CheckWork>, TransferError> {
        let count = work.layout_parts as usize;
        let last = work.last_part as usize;
        if count == 0 || last > count {
            return Ok(None);
        }
        // The parts after this range first: until the last ranges are in, some are
        // missing there, and one page says so; only then the parts up to it.
        let id = &work.upload_id;
        let tail = multipart::parts_present(self.copier, target_key, id, last + 1..=count).await?;
        let Some(tail) = tail else { return Ok(None) };
        let Some(mut sizes) =
            multipart::parts_present(self.copier, target_key, id, 1..=last).await?
        else {
            return Ok(None);
        };
        sizes.extend(tail);
        Ok(work.check_of_full(sizes))
    }

    /// Looks at the upload of `work` for `source` (HEADed just now, still the
    /// version `work.etag`), and completes it if every part is there.
    pub async fn check(
        &self,
        source: &SourceObject,
        target_key: &str,
        work: &CheckWork,
        options: &WriteOptions,
    ) -> Result<CheckOutcome, TransferError> {
        let parts = match multipart::list_parts(self.copier, target_key, &work.upload_id).await {
            Ok(parts) => parts,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
            Err(e) => return Err(e),
        };
        let mut parts = parts;
        let planned = work.part_sizes.len();
        parts.retain(|number, _| !is_marker(*number, planned));
        for (number, (size, _)) in &parts {
            match work.part_sizes.get(number - 1) {
                Some(planned) if planned == size => {}
                _ => {
                    return Ok(CheckOutcome::Mismatch(format!(
                        "part {number} of the upload has {size} bytes, which the split's layout does not"
                    )))
                }
            }
        }
        let count = work.part_sizes.len();
        let missing: Vec<u32> = (1..=count)
            .filter(|n| !parts.contains_key(n))
            .map(|n| n as u32)
            .collect();
        if !missing.is_empty() {
            let stamp = match self.marker_parts(target_key, &work.upload_id).await {
                Ok(markers) => markers.get(&MARKER_PART).and_then(|marker| marker.stamp),
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
                Err(e) => return Err(e.into()),
            };
            return Ok(CheckOutcome::Missing {
                present: parts.len() as u32,
                missing,
                stamp,
            });
        }
        let etags: BTreeMap<usize, Uploaded> =
            parts.into_iter().map(|(n, (_, part))| (n, part)).collect();
        let opaque = work.target_kms || self.copier.etags_opaque(options);
        // Where the ETags are MD5s, the listed parts' ETags compose the object's.
        let expected = if opaque {
            None
        } else {
            ETag::composite(etags.values().map(|part| &part.etag))
        };
        let completion = multipart::complete_verified(
            self.copier,
            multipart::Finished {
                source,
                target_key,
                upload_id: &work.upload_id,
                parts: &etags,
                expected: expected.as_ref(),
                preserved: work.preserved,
                options,
                checksum: self.checksum().as_ref(),
            },
        )
        .await;
        let etag = match completion {
            Ok(Completion::Written(etag)) => etag,
            Ok(Completion::Refused(why)) => return Ok(CheckOutcome::Mismatch(why)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
            Err(e) => return Err(e),
        };
        if let Some(why) = self.settle(source, target_key, options, &etag).await? {
            return Ok(CheckOutcome::Mismatch(why));
        }
        self.abort_duplicates(target_key, source, opaque).await;
        Ok(CheckOutcome::Completed(Copied {
            etag,
            method: Method::Multipart,
            bytes_sent: 0,
            parts_reused: 0,
        }))
    }

    /// After a completion: the upload was begun by whichever splitter won, for this
    /// version, or its bytes cannot be told from another's (under KMS, or re-cut):
    /// another's is discarded, never relabelled (why is returned; the key then starts
    /// over). Then its description and tags, fixed when it began, are made the
    /// source's now (a change made mid-split joined it).
    async fn settle(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
        written: &ETag,
    ) -> Result<Option<String>, TransferError> {
        let copier = self.copier;
        let other = copier.discard_other_version(source, target_key, written);
        if let Some(why) = other.await? {
            return Ok(Some(why));
        }
        copier.ensure_described(source, target_key, options).await?;
        if options.copy_tags {
            copier.sync_tags(&source.key, target_key).await?;
        }
        Ok(None)
    }

    /// Gives up an upload (a changed source, another layout); true if this call
    /// did, false if it was gone already.
    pub async fn abandon(&self, target_key: &str, upload_id: &str) -> bool {
        multipart::abort(self.copier, target_key, upload_id).await
    }
}
