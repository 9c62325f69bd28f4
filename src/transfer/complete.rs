//! Completing a multipart upload, checked before and after: the one completion of
//! the multipart copy and of a fleet split.

use std::collections::BTreeMap;

use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::part::Uploaded;
use super::{Copier, TransferError, WriteOptions};
use crate::error::S3Error;
use crate::etag::ETag;
use crate::object::SourceObject;

/// An upload whose every part is in, to be completed.
pub(crate) struct Finished<'a> {
    pub source: &'a SourceObject,
    pub target_key: &'a str,
    pub upload_id: &'a str,
    /// Every part's number, target ETag and checksum.
    pub parts: &'a BTreeMap<usize, Uploaded>,
    /// The object's ETag as the bytes sent compose it; None where it is not known
    /// (the target's ETags are opaque).
    pub expected: Option<&'a ETag>,
    /// The parts are the source's own layout.
    pub preserved: bool,
    pub options: &'a WriteOptions,
}

/// What completing an upload came to, short of an error.
pub(crate) enum Completion {
    /// Completed, and the target's ETag checked: returned.
    Written(ETag),
    /// Not completed: its parts compose another ETag than the source's.
    Refused(String),
}

/// Completes an upload, checked before and after: where the layout is the source's
/// own and the source's ETag is a hash of its content, the parts must compose that
/// ETag, or nothing is committed; after CompleteMultipartUpload, the target's ETag
/// must be the expected one (a target object that is not is deleted). The one
/// completion of the multipart copy and of a fleet split.
pub(crate) async fn complete_verified(
    copier: &Copier,
    upload: Finished<'_>,
) -> Result<Completion, TransferError> {
    let source = upload.source;
    if let (true, Some(expected), Some(source_etag)) = (
        upload.preserved && source.etag_is_content_hash(),
        upload.expected,
        &source.etag,
    ) {
        if expected != source_etag {
            return Ok(Completion::Refused(format!(
                "the parts compose ETag {expected}, but the source's is {source_etag}"
            )));
        }
    }
    let parts = upload.parts.iter();
    let output = complete(copier, upload.target_key, upload.upload_id, parts).await?;
    let etag = copier
        .check_written(
            upload.target_key,
            output.e_tag(),
            output.server_side_encryption(),
            upload.options,
            upload.expected,
        )
        .await?;
    Ok(Completion::Written(etag))
}

/// Completes an upload with `parts` (number, ETag) in order.
async fn complete<'a>(
    copier: &Copier,
    target_key: &str,
    upload_id: &str,
    parts: impl Iterator<Item = (&'a usize, &'a Uploaded)>,
) -> Result<CompleteMultipartUploadOutput, S3Error> {
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .map(|(number, part)| {
                    CompletedPart::builder()
                        .part_number(*number as i32)
                        .e_tag(part.etag.quoted())
                        .set_checksum_crc32_c(part.checksum.clone())
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
    copier
        .target
        .observe("CompleteMultipartUpload", request.send().await)
}
