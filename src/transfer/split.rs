//! The transfer side of a fleet copy (DESIGN §10, [`crate::fleet`]): split an
//! object into an upload and its ranges, copy one range, look at the upload.
//!
//! **Split.** The plan is the one a multipart copy would use (the source's layout,
//! or a uniform cut). An upload is created with the object's description; then the
//! key's uploads are listed and the lowest upload id wins, so duplicate events do not
//! make two splitters copy one object twice: a splitter that lost aborts its own
//! upload and works for the winner.
//!
//! **Range.** Each part is copied as any part is ([`super::part`]): `If-Match` the
//! source ETag, streamed and checked by its ETag, or buffered with Content-MD5 under
//! KMS. A 412 means the source changed; a missing upload, that the work is over.
//!
//! **Check.** ListParts is the ledger. Every part present with its planned size:
//! where the source's own layout was kept and ETags are MD5s, the composite must be
//! the source's ETag; then CompleteMultipartUpload, the written ETag checked, and the
//! recorded source ETag and description checked (the upload may have been begun by
//! another splitter). A part of another size means another layout, so another
//! version: the upload is given up.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};

use super::part::{copy_part, Part};
use super::{multipart, Copied, Copier, Method, TransferError, WriteOptions};
use crate::error::ErrorKind;
use crate::etag::ETag;
use crate::fleet::{parts_per_range, CheckWork, RangeWork};
use crate::object::SourceObject;

/// What copying a range came to.
#[derive(Debug)]
pub enum RangeOutcome {
    /// Every part of it is in the upload, checked.
    Copied { bytes: u64 },
    /// The source no longer holds the version the upload copies.
    SourceChanged,
    /// The upload is gone: completed by a check, or given up.
    UploadGone,
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

impl Copier {
    /// Whether an object of `size` bytes is copied by the fleet rather than here.
    pub fn splits(&self, size: u64) -> bool {
        let threshold = self.settings.split_threshold.as_u64();
        threshold > 0 && size >= threshold
    }

    /// Creates (or joins) the upload of `source` at `target_key` and returns the
    /// first check of it, which names its layout and ranges.
    pub async fn split(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<CheckWork, TransferError> {
        let etag = source.etag.clone().ok_or_else(|| {
            TransferError::Unsupported("the source names no ETag for the object".into())
        })?;
        let stream = self.settings.stream_parts && !self.target_is_kms(options);
        let plan = multipart::plan_for(self, source, stream).await?;
        let (mine, encryption) = multipart::create(self, source, target_key, options).await?;
        self.saw_target_encryption(encryption.as_ref());
        let uploads = match multipart::list_uploads(self, target_key).await {
            Ok(uploads) => uploads,
            Err(TransferError::S3(e)) if e.kind == ErrorKind::Permanent => Vec::new(),
            Err(e) => return Err(e),
        };
        let winner = uploads
            .into_iter()
            .chain([mine.clone()])
            .min()
            .expect("at least this splitter's upload");
        if winner != mine {
            tracing::info!(upload_id = %winner, "another splitter's upload came first; working for it");
            multipart::abort(self, target_key, &mine).await;
        }
        let part_sizes = plan.sizes().to_vec();
        let per = parts_per_range(&part_sizes, self.settings.split_range_size.as_u64());
        Ok(CheckWork {
            upload_id: winner,
            etag: etag.as_str().to_owned(),
            part_sizes,
            parts_per_range: per,
            parts_present: None,
        })
    }

    /// Copies the parts of `work` into its upload. `target_kms`: the target is
    /// asked for SSE-KMS (its part ETags are opaque).
    pub async fn copy_range(
        &self,
        key: &str,
        target_key: &str,
        work: &RangeWork,
        target_kms: bool,
    ) -> Result<RangeOutcome, TransferError> {
        let source = SourceObject::listed(key, 0, Some(ETag::new(&work.etag)));
        let stream = self.settings.stream_parts && !target_kms && !self.target_kms_seen();
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
                copy_part(self, &source, target_key, part, stream)
            })
            .buffer_unordered(self.settings.max_parts)
            .try_fold(0u64, |bytes, done| async move { Ok(bytes + done.sent) })
            .await;
        match copied {
            Ok(bytes) => Ok(RangeOutcome::Copied { bytes }),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => Ok(RangeOutcome::SourceChanged),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(RangeOutcome::UploadGone),
            Err(e) => Err(e),
        }
    }

    /// Looks at the upload of `work` for `source` (HEADed just now, still the
    /// version `work.etag`), and completes it if every part is there.
    pub async fn check_split(
        &self,
        source: &SourceObject,
        target_key: &str,
        work: &CheckWork,
        options: &WriteOptions,
    ) -> Result<CheckOutcome, TransferError> {
        let parts = match multipart::list_parts(self, target_key, &work.upload_id).await {
            Ok(parts) => parts,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
            Err(e) => return Err(e),
        };
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
        let etags: BTreeMap<usize, ETag> = parts.into_iter().map(|(n, (_, e))| (n, e)).collect();
        let opaque = self.target_is_kms(options);
        let expected = if opaque {
            None
        } else {
            ETag::composite(etags.values())
        };
        let kept_layout = source.part_count() == Some(count as u32);
        if let (Some(expected), Some(etag), true, true) = (
            &expected,
            &source.etag,
            kept_layout,
            source.etag_is_content_hash(),
        ) {
            if expected != etag {
                return Ok(CheckOutcome::Mismatch(format!(
                    "the parts compose ETag {expected}, but the source's is {etag}"
                )));
            }
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                etags
                    .iter()
                    .map(|(n, etag)| {
                        CompletedPart::builder()
                            .part_number(*n as i32)
                            .e_tag(etag.quoted())
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let request = self
            .target
            .client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(target_key)
            .upload_id(&work.upload_id)
            .multipart_upload(completed);
        let output = match self
            .target
            .observe("CompleteMultipartUpload", request.send().await)
        {
            Ok(output) => output,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(CheckOutcome::Gone),
            Err(e) => return Err(e.into()),
        };
        let etag = self
            .check_written(
                target_key,
                output.e_tag(),
                output.server_side_encryption(),
                options,
                expected.as_ref(),
            )
            .await?;
        // Begun by whichever splitter won, maybe for another version of the same
        // size: what it records must be this version.
        self.ensure_described(source, target_key, options).await?;
        Ok(CheckOutcome::Completed(Copied {
            etag,
            method: Method::Multipart,
            bytes_sent: 0,
            parts_reused: 0,
        }))
    }

    /// Gives up an upload (a changed source, another layout); true if this call
    /// did, false if it was gone already.
    pub async fn abandon(&self, target_key: &str, upload_id: &str) -> bool {
        multipart::abort(self, target_key, upload_id).await
    }
}
