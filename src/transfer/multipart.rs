//! The multipart method: plan the parts, resume or start an upload, move the parts
//! under the shared limits, check the composite ETag, complete.
//!
//! **Plan.** A multipart source's own layout is kept when `preserve_part_layout` is
//! on and the source reveals it (`HeadObject?partNumber=n` for each part), so the
//! target's composite ETag equals the source's. Otherwise the object is re-cut
//! uniformly ([`PartPlan::uniform`]).
//!
//! **Resume.** An incomplete upload of exactly this target key is continued when
//! its parts fit the plan and it was initiated after the current source version was
//! written: its parts were then read with `If-Match` on that version, so they hold
//! its bytes. Other uploads of the key (older versions, other layouts) are aborted.
//!
//! **Failure.** A copy that fails because the source changed, or for good, aborts its
//! upload; one that fails for a passing reason (network, throttling, credentials)
//! leaves it to be resumed by the next attempt.

use std::collections::BTreeMap;
use std::ops::Range;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use futures::{StreamExt, TryStreamExt};

use super::plan::{composite_etag, is_md5, unquote};
use super::{
    md5_of, part_backoff, with_write_options, Copied, Copier, Method, PartPlan, SourceObject,
    TransferError, WriteOptions, PART_ATTEMPTS,
};
use crate::aws::ErrorKind;
use crate::metrics;

/// An upload initiated this soon after the source's Last-Modified is not resumed:
/// Last-Modified has one-second resolution, and the two partitions' clocks differ.
const RESUME_MARGIN_SECS: i64 = 2;

/// Part HEADs at once while discovering a source's layout.
const LAYOUT_HEADS_AT_ONCE: usize = 16;

pub(super) async fn copy(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let plan = plan_for(copier, source).await?;
    if !copier.budget.fits(plan.largest_part()) {
        return Err(TransferError::Unsupported(format!(
            "the object needs parts of {} bytes, more than transfer.memory_limit ({} bytes)",
            plan.largest_part(),
            copier.budget.limit()
        )));
    }

    let (upload_id, reused) = match find_resumable(copier, source, target_key, &plan).await? {
        Some(found) => found,
        None => (create(copier, source, target_key, options).await?, BTreeMap::new()),
    };
    if !reused.is_empty() {
        tracing::info!(key = %source.key, upload_id = %upload_id, parts_reused = reused.len(), "resuming an interrupted upload");
    }
    metrics::PARTS
        .with_label_values(&["reused"])
        .inc_by(reused.len() as u64);

    let result = finish(copier, source, target_key, options, &plan, &upload_id, &reused).await;
    if let Err(e) = &result {
        if matches!(e.kind(), ErrorKind::PreconditionFailed | ErrorKind::Permanent)
            || matches!(e, TransferError::Verification(_))
        {
            abort(copier, target_key, &upload_id).await;
        }
    }
    result
}

async fn finish(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    plan: &PartPlan,
    upload_id: &str,
    reused: &BTreeMap<usize, String>,
) -> Result<Copied, TransferError> {
    let todo: Vec<(usize, Range<u64>)> = plan
        .parts()
        .filter(|(number, _)| !reused.contains_key(number))
        .collect();
    let bytes_sent: u64 = todo.iter().map(|(_, r)| r.end - r.start).sum();
    let uploaded: Vec<(usize, String)> = futures::stream::iter(todo)
        .map(|(number, range)| copy_part(copier, source, target_key, upload_id, number, range))
        .buffer_unordered(copier.settings.max_parts)
        .try_collect()
        .await?;

    let mut parts = reused.clone();
    parts.extend(uploaded);
    let expected = composite_etag(parts.values().map(String::as_str));
    if plan.preserved && source.etag_is_content_hash() {
        if let Some(expected) = &expected {
            if expected != unquote(&source.etag) {
                return Err(TransferError::Verification(format!(
                    "the parts compose ETag {expected}, but the source's is {}",
                    source.etag
                )));
            }
        }
    }

    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(number, etag)| {
                    CompletedPart::builder()
                        .part_number(*number as i32)
                        .e_tag(etag)
                        .build()
                })
                .collect(),
        ))
        .build();
    let request = copier
        .target
        .client
        .complete_multipart_upload()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .upload_id(upload_id)
        .multipart_upload(completed);
    let output = copier
        .target
        .observe("CompleteMultipartUpload", request.send().await)?;
    let etag = unquote(output.e_tag().unwrap_or_default()).to_owned();
    let encrypted_with_kms = matches!(
        output.server_side_encryption(),
        Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
    );
    if let Some(expected) = expected {
        if options.target_etag_is_md5() && !encrypted_with_kms && etag != expected {
            copier.discard(target_key).await;
            return Err(TransferError::Verification(format!(
                "the target completed with ETag {etag}, but its parts compose {expected}"
            )));
        }
    }
    Ok(Copied {
        etag,
        method: Method::Multipart,
        bytes_sent,
        parts_reused: reused.len(),
    })
}

/// The source's own layout if it is to be and can be kept, else a uniform cut.
async fn plan_for(copier: &Copier, source: &SourceObject) -> Result<PartPlan, TransferError> {
    if let (Some(count), true) = (
        source.multipart_count(),
        copier.settings.preserve_part_layout,
    ) {
        match discover_layout(copier, source, count).await? {
            Some(sizes) if sizes.iter().all(|&s| copier.budget.fits(s)) => {
                return Ok(PartPlan::from_layout(sizes))
            }
            Some(_) => tracing::info!(
                key = %source.key,
                "the source's parts are larger than transfer.memory_limit; re-cutting them"
            ),
            None => tracing::info!(
                key = %source.key,
                "the source does not reveal its part layout; re-cutting the object"
            ),
        }
    }
    PartPlan::uniform(source.size, copier.settings.part_size.as_u64())
        .map_err(TransferError::Unsupported)
}

/// Each part's size, from `HeadObject?partNumber=n`; None when the server does not
/// answer per part (it then ignores `partNumber` and describes the whole object).
async fn discover_layout(
    copier: &Copier,
    source: &SourceObject,
    count: u32,
) -> Result<Option<Vec<u64>>, TransferError> {
    // No If-Match here: some servers answer a part's HEAD with that part's ETag, not
    // the object's. A change of version is caught by the parts' GETs, and a layout
    // read across two versions by the composite ETag check before completion.
    let head_part = |number: u32| async move {
        let request = copier
            .source
            .client
            .head_object()
            .bucket(&copier.source.bucket)
            .key(&source.key)
            .part_number(number as i32);
        let output = copier.source.observe("HeadObject", request.send().await)?;
        Ok::<_, TransferError>((
            output.parts_count(),
            output.content_length().unwrap_or(0).max(0) as u64,
        ))
    };
    let (parts_count, first) = head_part(1).await?;
    if parts_count != Some(count as i32) {
        return Ok(None);
    }
    let mut sizes = vec![first];
    let rest: Vec<(Option<i32>, u64)> = futures::stream::iter(2..=count)
        .map(head_part)
        .buffered(LAYOUT_HEADS_AT_ONCE)
        .try_collect()
        .await?;
    sizes.extend(rest.into_iter().map(|(_, size)| size));
    if sizes.iter().sum::<u64>() != source.size {
        return Ok(None);
    }
    Ok(Some(sizes))
}

/// An incomplete upload of `target_key` that can be continued, with its parts'
/// ETags; every other upload of the key is aborted.
async fn find_resumable(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    plan: &PartPlan,
) -> Result<Option<(String, BTreeMap<usize, String>)>, TransferError> {
    let mut uploads = list_uploads(copier, target_key).await?;
    uploads.sort_by(|a, b| b.1.cmp(&a.1));
    let not_before = source
        .last_modified
        .map(|t| DateTime::from_secs(t.secs() + RESUME_MARGIN_SECS));
    let mut resumable = None;
    for (upload_id, initiated) in uploads {
        let fresh = match (not_before, initiated) {
            (Some(not_before), Some(initiated)) => initiated >= not_before,
            _ => false,
        };
        if fresh && resumable.is_none() {
            let parts = list_parts(copier, target_key, &upload_id).await?;
            if parts
                .iter()
                .all(|(number, (size, _))| plan.part_size(*number) == Some(*size))
            {
                let etags = parts.into_iter().map(|(n, (_, etag))| (n, etag)).collect();
                resumable = Some((upload_id, etags));
                continue;
            }
        }
        abort(copier, target_key, &upload_id).await;
    }
    Ok(resumable)
}

/// Uploads of exactly `target_key`, with their initiation times.
async fn list_uploads(
    copier: &Copier,
    target_key: &str,
) -> Result<Vec<(String, Option<DateTime>)>, TransferError> {
    let target = &copier.target;
    let mut found = Vec::new();
    let (mut key_marker, mut upload_id_marker) = (None, None);
    loop {
        let request = target
            .client
            .list_multipart_uploads()
            .bucket(&target.bucket)
            .prefix(target_key)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take());
        let output = target.observe("ListMultipartUploads", request.send().await)?;
        for upload in output.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                if key == target_key {
                    found.push((id.to_owned(), upload.initiated().copied()));
                }
            }
        }
        if output.is_truncated() != Some(true) {
            return Ok(found);
        }
        key_marker = output.next_key_marker().map(str::to_owned);
        upload_id_marker = output.next_upload_id_marker().map(str::to_owned);
        if key_marker.is_none() {
            return Ok(found);
        }
    }
}

/// The parts of an upload: number → (size, ETag).
async fn list_parts(
    copier: &Copier,
    target_key: &str,
    upload_id: &str,
) -> Result<BTreeMap<usize, (u64, String)>, TransferError> {
    let target = &copier.target;
    let mut parts = BTreeMap::new();
    let mut marker = None;
    loop {
        let request = target
            .client
            .list_parts()
            .bucket(&target.bucket)
            .key(target_key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.take());
        let output = target.observe("ListParts", request.send().await)?;
        for part in output.parts() {
            if let (Some(number), Some(etag)) = (part.part_number(), part.e_tag()) {
                let size = part.size().unwrap_or(0).max(0) as u64;
                parts.insert(number as usize, (size, etag.to_owned()));
            }
        }
        if output.is_truncated() != Some(true) {
            return Ok(parts);
        }
        marker = output.next_part_number_marker().map(str::to_owned);
        if marker.is_none() {
            return Ok(parts);
        }
    }
}

async fn create(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<String, TransferError> {
    let request = copier
        .target
        .client
        .create_multipart_upload()
        .bucket(&copier.target.bucket)
        .key(target_key);
    let request = with_write_options!(request, options, &source.etag);
    let output = copier
        .target
        .observe("CreateMultipartUpload", request.send().await)?;
    output
        .upload_id()
        .map(str::to_owned)
        .ok_or_else(|| TransferError::Verification("CreateMultipartUpload returned no upload id".into()))
}

async fn abort(copier: &Copier, target_key: &str, upload_id: &str) {
    let request = copier
        .target
        .client
        .abort_multipart_upload()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .upload_id(upload_id);
    match copier
        .target
        .observe("AbortMultipartUpload", request.send().await)
    {
        Ok(_) => tracing::debug!(key = target_key, upload_id, "aborted an upload"),
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(key = target_key, upload_id, error = %e, "could not abort an upload"),
    }
}

/// One part: take a slot, reserve its bytes, then GET and upload it, retrying the
/// pair on passing failures (the GET is repeated: a streamed body cannot be replayed).
async fn copy_part(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    upload_id: &str,
    number: usize,
    range: Range<u64>,
) -> Result<(usize, String), TransferError> {
    let _slot = copier
        .part_slots
        .acquire()
        .await
        .expect("the part semaphore is never closed");
    let _reservation = copier.budget.reserve(range.end - range.start).await;
    let mut attempt = 1;
    loop {
        match try_part(copier, source, target_key, upload_id, number, range.clone()).await {
            Ok(etag) => {
                metrics::PARTS.with_label_values(&["uploaded"]).inc();
                return Ok((number, etag));
            }
            Err(e) if e.kind() == ErrorKind::Transient && attempt < PART_ATTEMPTS => {
                tracing::warn!(key = %source.key, part = number, attempt, error = %e, "part failed; retrying");
                tokio::time::sleep(part_backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_part(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    upload_id: &str,
    number: usize,
    range: Range<u64>,
) -> Result<String, TransferError> {
    let bytes = copier.get_bytes(source, Some(range), number).await?;
    let (content_md5, md5_hex) = md5_of(&bytes);
    let length = bytes.len() as u64;
    let request = copier
        .target
        .client
        .upload_part()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .upload_id(upload_id)
        .part_number(number as i32)
        .content_md5(content_md5)
        .content_length(length as i64)
        .body(ByteStream::from(bytes));
    let output = copier.target.observe("UploadPart", request.send().await)?;
    metrics::BYTES_SENT.inc_by(length);
    let etag = output.e_tag().unwrap_or_default().to_owned();
    if is_md5(&etag) && unquote(&etag) != md5_hex {
        return Err(TransferError::Verification(format!(
            "part {number}: the target stored ETag {etag} for bytes with MD5 {md5_hex}"
        )));
    }
    Ok(etag)
}
