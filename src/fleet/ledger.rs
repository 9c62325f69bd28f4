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

use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, TryStreamExt};

use super::marker::{marker, with_room_for_the_tag};
use super::message::{parts_per_range, CheckWork, RangeWork, Split};
use crate::error::ErrorKind;
use crate::etag::ETag;
use crate::object::SourceObject;
use crate::transfer::multipart::{self, Completion};
use crate::transfer::part::{copy_part, Part, Uploaded};
use crate::transfer::plan::{PartPlan, MARKER_PART};
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
    /// Parts still missing (1-based numbers), with how many are present.
    Missing { present: u32, missing: Vec<u32> },
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
    copier: &'a Copier,
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
    /// memory budget). It is tagged with the version it copies: a marker part,
    /// [`MARKER_PART`], never completed, whose content is the source's ETag and whose
    /// size derives from it ([`marker`]). Only uploads carrying this version's marker
    /// are joined, the first initiated winning: an upload begun for another version
    /// (of the same size and layout) is never mixed into this one.
    pub async fn split(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<Option<Split>, TransferError> {
        let etag = source.etag.clone().ok_or_else(|| {
            TransferError::Unsupported("the source names no ETag for the object".into())
        })?;
        let (mine, encryption) =
            multipart::create(self.copier, source, target_key, options).await?;
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
            stalled: 0,
            resends: 0,
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
        let (body, content_md5) = marker(etag);
        let length = body.len() as u64;
        let target = self.copier.target();
        let request = target
            .client
            .upload_part()
            .bucket(&target.bucket)
            .key(target_key)
            .upload_id(mine)
            .part_number(MARKER_PART as i32)
            .content_md5(content_md5)
            .set_checksum_algorithm(self.copier.part_checksum())
            .body(body.into())
            .customize()
            .config_override(self.copier.part_upload_config(length));
        target.observe("UploadPart", request.send().await)?;
        match self.marker_part(target_key, mine).await {
            Ok(Some((_, Some(_)))) => {}
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

    /// The first upload of `target_key` (before `before`, if given) that carries
    /// the marker of version `etag`: the one upload of that version all splitters
    /// and ranges work for. Uploads are taken in the order S3 lists them as
    /// initiated, ties by upload id, so a duplicate event that comes mid-copy joins
    /// the upload under way rather than undoing it. Two splitters of one version
    /// that each listed before the other's marker was in both keep their uploads;
    /// the ranges of the later one find the first here and give theirs up
    /// ([`Self::copy_range`]).
    pub async fn first_marked(
        &self,
        target_key: &str,
        before: Option<&str>,
        etag: &ETag,
        opaque: bool,
    ) -> Result<Option<String>, TransferError> {
        let mut uploads = match multipart::list_uploads(self.copier, target_key).await {
            Ok(uploads) => uploads,
            // Not allowed to list: each splitter keeps its own upload.
            Err(TransferError::S3(e)) if e.operation_refused() => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(before) = before {
            // Not listed (gone, or not listed yet): every other upload comes first.
            if let Some(at) = uploads.iter().position(|id| id == before) {
                uploads.truncate(at);
            }
            uploads.retain(|id| id != before);
        }
        for upload in uploads {
            if self
                .carries_marker(target_key, &upload, etag, opaque)
                .await?
            {
                return Ok(Some(upload));
            }
        }
        Ok(None)
    }

    /// Whether `upload` carries the marker of version `etag`: its size, and (where
    /// the target's ETags are MD5s) its ETag.
    async fn carries_marker(
        &self,
        target_key: &str,
        upload: &str,
        etag: &ETag,
        opaque: bool,
    ) -> Result<bool, TransferError> {
        let listed = match self.marker_part(target_key, upload).await {
            Ok(listed) => listed,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let (body, _) = marker(etag);
        Ok(listed.is_some_and(|(size, listed_etag)| {
            size == body.len() as u64 && (opaque || listed_etag == Some(ETag::of_bytes(&body)))
        }))
    }

    /// The marker part of `upload` as the target lists it: its size and ETag.
    async fn marker_part(
        &self,
        target_key: &str,
        upload: &str,
    ) -> Result<Option<(u64, Option<ETag>)>, crate::error::S3Error> {
        let target = self.copier.target();
        let request = target
            .client
            .list_parts()
            .bucket(&target.bucket)
            .key(target_key)
            .upload_id(upload)
            .part_number_marker((MARKER_PART - 1).to_string())
            .max_parts(1);
        let parts = target.observe("ListParts", request.send().await)?;
        Ok(parts
            .parts()
            .iter()
            .find(|part| part.part_number() == Some(MARKER_PART as i32))
            .map(|part| {
                let size = part.size().unwrap_or(0).max(0) as u64;
                (size, ETag::parse(part.e_tag()))
            }))
    }

    /// Copies the parts of `work` into its upload. `opaque`: the target is
    /// asked for SSE-KMS (its part ETags are opaque).
    pub async fn copy_range(
        &self,
        key: &str,
        target_key: &str,
        work: &RangeWork,
        opaque: bool,
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
        let mut start = work.first_byte;
        let parts: Vec<(usize, std::ops::Range<u64>)> = work
            .part_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let range = start..start + size;
                start += size;
                (work.first_part as usize + i, range)
            })
            .collect();
        let copied = futures::stream::iter(parts)
            .map(|(number, range)| {
                let part = Part {
                    upload_id: &work.upload_id,
                    number,
                    range,
                    earlier: None,
                };
                copy_part(self.copier, &source, target_key, part, stream)
            })
            .buffer_unordered(self.copier.settings().max_parts)
            .try_fold(0u64, |bytes, done| async move { Ok(bytes + done.sent) })
            .await;
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
        parts.remove(&MARKER_PART);
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
            return Ok(CheckOutcome::Missing {
                present: parts.len() as u32,
                missing,
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
            },
        )
        .await;
        let etag = match completion {
            Ok(Completion::Written(etag)) => etag,
            Ok(Completion::Refused(why)) => return Ok(CheckOutcome::Mismatch(why)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
            Err(e) => return Err(e),
        };
        // Begun by whichever splitter won, maybe for another version of the same
        // size: what it records must be this version.
        self.copier
            .ensure_described(source, target_key, options)
            .await?;
        self.abort_duplicates(target_key, source, opaque).await;
        Ok(CheckOutcome::Completed(Copied {
            etag,
            method: Method::Multipart,
            bytes_sent: 0,
            parts_reused: 0,
        }))
    }

    /// After a split completed: aborts any other upload of its version still there
    /// (a duplicate splitter's whose abort failed, one begun just now); their
    /// ranges then find them gone. Failures only leave them to the lifecycle rule.
    async fn abort_duplicates(&self, target_key: &str, source: &SourceObject, opaque: bool) {
        let Some(etag) = &source.etag else { return };
        let Ok(uploads) = multipart::list_uploads(self.copier, target_key).await else {
            return;
        };
        for id in uploads {
            if matches!(
                self.carries_marker(target_key, &id, etag, opaque).await,
                Ok(true)
            ) {
                tracing::info!(upload_id = %id, "aborting another upload of the version just completed");
                multipart::abort(self.copier, target_key, &id).await;
            }
        }
    }

    /// Gives up an upload (a changed source, another layout); true if this call
    /// did, false if it was gone already.
    pub async fn abandon(&self, target_key: &str, upload_id: &str) -> bool {
        multipart::abort(self.copier, target_key, upload_id).await
    }
}
