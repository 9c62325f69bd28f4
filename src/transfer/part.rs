//! One part of a multipart copy: take a part slot, reserve its memory, then move
//! its bytes, retrying passing failures by reading its range again.
//!
//! A part is streamed ([`super::stream`]) from its ranged GET into UploadPart and
//! checked by the ETag S3 returns (the MD5 of what it stored, which must equal the
//! MD5 of what was read); or buffered whole and sent with Content-MD5, where
//! streaming is off, the target's part ETags are opaque (KMS), or an interrupted
//! upload's part must be checked against the source's bytes before it is kept.

use std::ops::Range;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use tokio::sync::OwnedSemaphorePermit;

use super::stream::ReadFailure;
use super::{md5_of, Copier, TransferError};
use crate::checksum::{self, Value};
use crate::checksum_values;
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::metrics::{self, PartResult};
use crate::object::SourceObject;
use crate::retry::Policy;

/// A part in the upload, done.
pub(crate) struct PartDone {
    pub number: usize,
    /// What the target returned: opaque under KMS.
    pub etag: ETag,
    /// Its additional checksum as the target verified it, where one was sent.
    pub checksum: Option<Value>,
    /// The MD5 of the bytes read for it, where known.
    pub md5: Option<ETag>,
    /// Bytes uploaded for it now: 0 when an earlier upload's part was kept.
    pub sent: u64,
}

/// One part of an upload.
pub(crate) struct Part<'a> {
    pub upload_id: &'a str,
    pub number: usize,
    pub range: Range<u64>,
    /// This part in an interrupted upload, to be checked before reuse.
    pub earlier: Option<Uploaded>,
    /// The upload's checksum algorithm, which its parts carry.
    pub checksum: Option<ChecksumAlgorithm>,
}

/// A part as the target holds it: its ETag, and its checksum where the upload was
/// created with one (the ETag of a KMS target's part is opaque; the checksum is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uploaded {
    pub etag: ETag,
    pub checksum: Option<Value>,
}

/// One part: take a slot, reserve its memory, then move it, retrying on passing
/// failures by reading its range again (a streamed body cannot be replayed).
///
/// A part is streamed when `stream` allows, and buffered whole (then sent with
/// Content-MD5) when an earlier upload's part must be checked against the source's
/// bytes before it is kept: its ETag is the MD5 of what was read.
pub(crate) async fn copy_part(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    part: Part<'_>,
    stream: bool,
) -> Result<PartDone, TransferError> {
    let slot = part_slot(copier).await;
    copy_part_in_slot(copier, source, target_key, (part, slot), stream).await
}

/// One of the worker's part slots (`transfer.max_parts`), held until dropped.
pub(crate) async fn part_slot(copier: &Copier) -> OwnedSemaphorePermit {
    std::sync::Arc::clone(&copier.part_slots)
        .acquire_owned()
        .await
        .expect("the part semaphore is never closed")
}

/// [`copy_part`], in the part slot `_slot` taken already.
pub(crate) async fn copy_part_in_slot(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    (part, _slot): (Part<'_>, OwnedSemaphorePermit),
    stream: bool,
) -> Result<PartDone, TransferError> {
    let stream = stream && part.earlier.is_none();
    let length = part.range.end - part.range.start;
    let what = format!("{} part {}", source.key, part.number);
    let done = Policy::PART
        .run(&what, || async {
            // Decided per attempt: a target found to encrypt with KMS makes a
            // streamed part uncheckable, and the retry buffers it whole, with
            // Content-MD5, holding (and first checking that the budget can hold)
            // the whole part rather than a window.
            let streamed = stream && !copier.opaque_seen();
            if !streamed && !copier.budget.fits(length) {
                return Err(copier.budget.too_large_to_buffer(length));
            }
            let held = if streamed {
                length.min(super::stream::STREAM_WINDOW)
            } else {
                length
            };
            let _reservation = copier.budget.reserve(held).await;
            if streamed {
                stream_part(copier, source, target_key, &part).await
            } else {
                buffer_part(copier, source, target_key, &part).await
            }
        })
        .await?;
    if done.sent == 0 {
        PartResult::Reused.count();
    } else {
        PartResult::Uploaded.count();
    }
    Ok(done)
}

fn upload_part_request(
    copier: &Copier,
    target_key: &str,
    part: &Part<'_>,
    length: u64,
) -> aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder {
    copier
        .target
        .client
        .upload_part()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .upload_id(part.upload_id)
        .part_number(part.number as i32)
        .content_length(length as i64)
        .set_checksum_algorithm(part.checksum.clone())
}

/// Reads the whole part, keeps an earlier upload's part if it holds these bytes,
/// else uploads them with Content-MD5.
async fn buffer_part(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    part: &Part<'_>,
) -> Result<PartDone, TransferError> {
    let length = part.range.end - part.range.start;
    let output = copier.get(source, Some(part.range.clone())).await?;
    let bytes = copier.collect(output, length, part.number).await?;
    let (content_md5, md5) = md5_of(&bytes);
    // The earlier part holds these bytes: by its ETag where that is an MD5, by its
    // checksum where the target's ETags are opaque (KMS).
    let kept = part.earlier.as_ref().filter(|earlier| {
        earlier.etag == md5
            || earlier
                .checksum
                .as_ref()
                .is_some_and(|c| checksum::of(&c.algorithm, &bytes).as_ref() == Some(&c.value))
    });
    if let Some(earlier) = kept {
        return Ok(PartDone {
            number: part.number,
            etag: earlier.etag.clone(),
            checksum: earlier.checksum.clone(),
            md5: Some(md5),
            sent: 0,
        });
    }
    let length = bytes.len() as u64;
    let request = upload_part_request(copier, target_key, part, length)
        .content_md5(content_md5)
        .body(ByteStream::from(bytes))
        .customize()
        .disable_payload_signing()
        .config_override(copier.part_upload_config(length, part.checksum.is_some()));
    let output = copier.target.observe("UploadPart", request.send().await)?;
    metrics::BYTES_SENT.inc_by(length);
    let etag = ETag::new(output.e_tag().unwrap_or_default());
    // Under KMS the ETag is opaque: S3 checked the bytes against Content-MD5.
    let opaque = copier.saw_target_encryption(output.server_side_encryption());
    if !opaque && etag != md5 {
        return Err(TransferError::Verification(format!(
            "part {}: the target stored ETag {etag} for bytes with MD5 {md5}",
            part.number
        )));
    }
    Ok(PartDone {
        number: part.number,
        etag,
        checksum: checksum_values!(output).first(),
        md5: Some(md5),
        sent: length,
    })
}

/// Streams the part from the source's GET into UploadPart, then checks the part's
/// ETag against the MD5 of what was read.
async fn stream_part(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    part: &Part<'_>,
) -> Result<PartDone, TransferError> {
    let length = part.range.end - part.range.start;
    let output = copier.get(source, Some(part.range.clone())).await?;
    let (body, reader) = super::stream::tee(output.body, length, copier.bandwidth.clone());
    let request = upload_part_request(copier, target_key, part, length)
        .body(body)
        .customize()
        .disable_payload_signing()
        .config_override(copier.part_upload_config(length, part.checksum.is_some()));
    let uploaded = request.send().await;
    let read = reader
        .await
        .map_err(|e| TransferError::Verification(format!("the reading task failed: {e}")))?;
    // Whichever side failed first is the one blamed: a source body that broke makes
    // the upload fail too, and an upload refused stops the reading.
    let read = match read {
        Ok(read) => read,
        Err(ReadFailure::Source(message)) => {
            let side = copier.source.side;
            return Err(S3Error::new(side, "GetObject", ErrorKind::Transient, message).into());
        }
        Err(ReadFailure::UploadStopped) => {
            copier.target.observe("UploadPart", uploaded)?;
            return Err(TransferError::Verification(
                "the upload ended before the part's body was sent".into(),
            ));
        }
    };
    let output = copier.target.observe("UploadPart", uploaded)?;
    metrics::BYTES_SENT.inc_by(read.length);
    if read.length != length {
        return Err(TransferError::ShortRead {
            part: part.number,
            got: read.length,
            expected: length,
        });
    }
    let etag = ETag::new(output.e_tag().unwrap_or_default());
    if copier.saw_target_encryption(output.server_side_encryption()) {
        return Err(TransferError::Verification(format!(
            "part {}: the target encrypts with KMS, so a streamed part cannot be checked by its ETag; sending it again with Content-MD5",
            part.number
        )));
    }
    if etag != read.md5 {
        return Err(TransferError::Verification(format!(
            "part {}: the target stored ETag {etag} for streamed bytes with MD5 {}",
            part.number, read.md5
        )));
    }
    Ok(PartDone {
        number: part.number,
        etag,
        checksum: checksum_values!(output).first(),
        md5: Some(read.md5),
        sent: length,
    })
}
