//! The multipart method: plan the parts, resume or start an upload, move the parts
//! under the shared limits, check the composite ETag, complete.
//!
//! **Plan.** A multipart source's own layout is kept when `preserve_part_layout` is
//! on and the source reveals it (`HeadObject?partNumber=n` for each part), so the
//! target's composite ETag equals the source's. Otherwise the object is re-cut
//! uniformly ([`PartPlan::uniform`]).
//!
//! **Resume.** An incomplete upload of exactly this target key whose parts fit the
//! plan is continued (the one holding the most parts; other uploads of the key are
//! aborted). Its parts are kept only once checked, whatever server or version wrote
//! them: with the source's own layout and an MD5-based source ETag, by the composite
//! ETag before completion (a mismatch starts a fresh upload); otherwise each part is
//! re-read from the source and kept only if its ETag is the MD5 of what was read.
//!
//! **Failure.** A copy that fails because the source changed, or for good, aborts its
//! upload; one that fails for a passing reason (network, throttling, credentials)
//! leaves it to be resumed by the next attempt.

use std::collections::BTreeMap;

use aws_sdk_s3::types::ServerSideEncryption;
use futures::{StreamExt, TryStreamExt};

pub(crate) use super::complete::{complete_verified, Completion, Finished};
pub(crate) use super::listing::{list_parts, list_uploads, parts_present, sizes_in, Listed};
use super::part::{copy_part, Part, PartDone, Uploaded};
use super::plan::is_marker;
use super::{with_write_options, Copied, Copier, Method, PartPlan, TransferError, WriteOptions};
use crate::checksum::UploadChecksum;
use crate::error::ErrorKind;
use crate::etag::ETag;
use crate::metrics::PartResult;
use crate::object::SourceObject;

/// Part HEADs at once while discovering a source's layout.
const LAYOUT_HEADS_AT_ONCE: usize = 16;

pub(super) async fn copy(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let target_kms = copier.etags_opaque(options);
    let stream = copier.settings.stream_parts && !target_kms;
    let plan = plan_for(copier, source, stream).await?;
    // With the source's own layout and an MD5-based ETag, the composite ETag checks
    // every part before completion, earlier parts included: but only where the
    // earlier parts' ETags are MD5s, which a KMS target's are not. Otherwise each
    // earlier part is re-read from the source and checked against its MD5 before
    // it is kept (under KMS it never matches, and the part is sent again).
    let trust_composite = plan.preserved && source.etag_is_content_hash() && !target_kms;
    let checksum = copier.upload_checksum(source, plan.preserved);
    let upload = Upload {
        copier,
        source,
        target_key,
        options,
        plan: &plan,
        trust_composite,
        stream,
        checksum: checksum.as_ref(),
    };

    let resumable = find_resumable(copier, target_key, &plan, checksum.as_ref()).await?;
    if let Some((upload_id, earlier)) = resumable {
        tracing::info!(key = %source.key, upload_id = %upload_id, earlier_parts = earlier.len(), "resuming an interrupted upload");
        match upload.run(&upload_id, &earlier).await {
            Err(TransferError::Verification(reason)) if trust_composite => {
                tracing::warn!(key = %source.key, %reason, "the interrupted upload held parts of another version; starting afresh");
            }
            // The upload fixed its description when it began, maybe for another
            // version of the same size: check what it left before acknowledging.
            Ok(copied) => {
                copier.ensure_described(source, target_key, options).await?;
                return Ok(copied);
            }
            result => return result,
        }
    }
    let (upload_id, encryption) =
        create(copier, source, target_key, options, checksum.as_ref()).await?;
    // A bucket encrypting with KMS by default makes part ETags opaque: streamed parts
    // could not be checked, so they are buffered and sent with Content-MD5, and must
    // then each fit the budget: a plan made for streaming is made again.
    if copier.saw_target_encryption(encryption.as_ref()) && upload.stream {
        let buffered = match plan_for(copier, source, false).await {
            Ok(buffered) => buffered,
            Err(e) => {
                abort(copier, target_key, &upload_id).await;
                return Err(e);
            }
        };
        let upload = Upload {
            plan: &buffered,
            trust_composite: false,
            stream: false,
            ..upload
        };
        return upload.run(&upload_id, &BTreeMap::new()).await;
    }
    upload.run(&upload_id, &BTreeMap::new()).await
}

/// One object's multipart copy into one upload.
struct Upload<'a> {
    copier: &'a Copier,
    source: &'a SourceObject,
    target_key: &'a str,
    options: &'a WriteOptions,
    plan: &'a PartPlan,
    trust_composite: bool,
    /// Parts flow from GET to UploadPart without being buffered whole.
    stream: bool,
    /// The checksum the upload was created with.
    checksum: Option<&'a UploadChecksum>,
}

impl Upload<'_> {
    /// Moves the parts not already in `earlier`, checks, completes. An upload that
    /// fails because the source changed, or for good, is aborted; one that fails
    /// for a passing reason is left to be resumed.
    async fn run(
        &self,
        upload_id: &str,
        earlier: &BTreeMap<usize, Uploaded>,
    ) -> Result<Copied, TransferError> {
        let result = self.finish(upload_id, earlier).await;
        if let Err(e) = &result {
            if matches!(
                e.kind(),
                ErrorKind::PreconditionFailed | ErrorKind::Permanent | ErrorKind::Denied
            ) || matches!(e, TransferError::Verification(_))
            {
                abort(self.copier, self.target_key, upload_id).await;
            }
        }
        result
    }

    async fn finish(
        &self,
        upload_id: &str,
        earlier: &BTreeMap<usize, Uploaded>,
    ) -> Result<Copied, TransferError> {
        let (copier, source, target_key) = (self.copier, self.source, self.target_key);
        let mut done: Vec<PartDone> = futures::stream::iter(self.plan.parts())
            .map(|(number, range)| {
                let earlier = earlier.get(&number).cloned();
                async move {
                    match earlier {
                        Some(earlier) if self.trust_composite => {
                            PartResult::Reused.count();
                            Ok(PartDone {
                                number,
                                md5: Some(earlier.etag.clone()),
                                etag: earlier.etag,
                                checksum: earlier.checksum,
                                sent: 0,
                            })
                        }
                        earlier => {
                            let part = Part {
                                upload_id,
                                number,
                                range,
                                earlier,
                                checksum: self.checksum.map(|c| c.algorithm.clone()),
                            };
                            copy_part(copier, source, target_key, part, self.stream).await
                        }
                    }
                }
            })
            .buffer_unordered(copier.settings.max_parts)
            .try_collect()
            .await?;
        done.sort_unstable_by_key(|p| p.number);
        let bytes_sent = done.iter().map(|p| p.sent).sum();
        let parts_reused = done.iter().filter(|p| p.sent == 0).count();
        // The object's ETag is composed from the MD5s of the bytes read, not from the
        // ETags the target returned: under KMS those are opaque.
        let md5s: Option<Vec<ETag>> = done.iter().map(|p| p.md5.clone()).collect();
        let expected = md5s.as_ref().and_then(ETag::composite);
        let parts: BTreeMap<usize, Uploaded> = done
            .into_iter()
            .map(|p| {
                let uploaded = Uploaded {
                    etag: p.etag,
                    checksum: p.checksum,
                };
                (p.number, uploaded)
            })
            .collect();

        let finished = Finished {
            source,
            target_key,
            upload_id,
            parts: &parts,
            expected: expected.as_ref(),
            preserved: self.plan.preserved,
            options: self.options,
            checksum: self.checksum,
        };
        let etag = match complete_verified(copier, finished).await? {
            Completion::Written(etag) => etag,
            Completion::Refused(why) => return Err(TransferError::Verification(why)),
        };
        Ok(Copied {
            etag,
            method: Method::Multipart,
            bytes_sent,
            parts_reused,
        })
    }
}

/// The source's own layout if it is to be and can be kept, else a uniform cut.
/// Parts that are to be buffered (`stream` false) must each fit the memory budget;
/// a streamed part holds only a window of it, whatever its size.
pub(crate) async fn plan_for(
    copier: &Copier,
    source: &SourceObject,
    stream: bool,
) -> Result<PartPlan, TransferError> {
    let fits = |size: u64| stream || copier.budget.fits(size);
    if let (Some(count), true) = (source.part_count(), copier.settings.preserve_part_layout) {
        match discover_layout(copier, source, count).await? {
            Some(sizes) if sizes.iter().all(|&s| fits(s)) => {
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
    let plan = PartPlan::uniform(source.size, copier.settings.part_size.as_u64())
        .map_err(TransferError::Unsupported)?;
    if !fits(plan.largest_part()) {
        return Err(copier.budget.too_large_to_buffer(plan.largest_part()));
    }
    Ok(plan)
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
        let request = copier.source.sse_c_head(source.sse_c(), request).await;
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

/// The incomplete upload of `target_key` whose parts fit the plan, holding the most
/// parts, with its parts' ETags; every other upload of the key is aborted. An
/// upload created with another checksum than `checksum` (another algorithm or type,
/// an older release's, a source whose checksum changed) is not resumed: S3 would
/// refuse parts or a completion that do not match it.
async fn find_resumable(
    copier: &Copier,
    target_key: &str,
    plan: &PartPlan,
    checksum: Option<&UploadChecksum>,
) -> Result<Option<(String, BTreeMap<usize, Uploaded>)>, TransferError> {
    let mut best: Option<(String, BTreeMap<usize, Uploaded>)> = None;
    let uploads = match list_uploads(copier, target_key).await {
        Ok(uploads) => uploads,
        // Resuming saves work but is never needed: a server that cannot list
        // uploads (some S3-compatible ones) gets a fresh upload every time.
        Err(TransferError::S3(e)) if e.kind == ErrorKind::Permanent => {
            tracing::debug!(error = %e, "cannot list interrupted uploads; not resuming");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    for Listed {
        id: upload_id,
        checksum: created_with,
    } in uploads
    {
        if !created_with.matches(checksum) {
            abort(copier, target_key, &upload_id).await;
            continue;
        }
        let parts = list_parts(copier, target_key, &upload_id).await?;
        // A fleet split's upload carries version marker parts beyond the plan: they
        // are no part of the object, and such an upload is resumed like any other.
        let fits = parts
            .iter()
            .filter(|(number, _)| !is_marker(**number, plan.len()))
            .all(|(number, (size, _))| plan.part_size(*number) == Some(*size));
        if fits && best.as_ref().is_none_or(|(_, b)| parts.len() > b.len()) {
            if let Some((replaced, _)) = best.take() {
                abort(copier, target_key, &replaced).await;
            }
            let etags = parts.into_iter().map(|(n, (_, part))| (n, part)).collect();
            best = Some((upload_id, etags));
        } else {
            abort(copier, target_key, &upload_id).await;
        }
    }
    Ok(best)
}

/// Starts an upload; returns its id and the encryption the target applies.
pub(crate) async fn create(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    checksum: Option<&UploadChecksum>,
) -> Result<(String, Option<ServerSideEncryption>), TransferError> {
    let request = copier
        .target
        .client
        .create_multipart_upload()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .set_checksum_algorithm(checksum.map(|c| c.algorithm.clone()))
        .set_checksum_type(checksum.map(UploadChecksum::kind));
    let tagging = copier.source_tags(source, options, None).await?;
    let request = with_write_options!(request, options, source.etag.as_ref(), tagging);
    let output = copier
        .target
        .observe("CreateMultipartUpload", request.send().await)?;
    let upload_id = output.upload_id().map(str::to_owned).ok_or_else(|| {
        TransferError::Verification("CreateMultipartUpload returned no upload id".into())
    })?;
    Ok((upload_id, output.server_side_encryption().cloned()))
}

/// Aborts an upload; true if this call did (not gone already, no error).
pub(crate) async fn abort(copier: &Copier, target_key: &str, upload_id: &str) -> bool {
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
        Ok(_) => {
            tracing::debug!(key = target_key, upload_id, "aborted an upload");
            true
        }
        Err(e) if e.kind == ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(key = target_key, upload_id, error = %e, "could not abort an upload");
            false
        }
    }
}
