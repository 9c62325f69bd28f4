//! Completing a multipart upload, checked before and after: the one completion of
//! the multipart copy and of a fleet split.

use std::collections::BTreeMap;

use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};

use super::part::Uploaded;
use super::{Copier, TransferError, WriteOptions};
use crate::checksum::{Checksum, UploadChecksum, Value};
use crate::error::S3Error;
use crate::etag::ETag;
use crate::object::SourceObject;
use crate::{checksum_values, set_checksum};

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
    /// The checksum the upload was created with.
    pub checksum: Option<&'a UploadChecksum>,
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
/// must be the expected one (a target object that is not is deleted). A full-object
/// checksum is checked by S3 itself at completion; a composite one kept from the
/// source (its layout and algorithm) must come out as the source's, or the object is
/// deleted likewise. The one completion of the multipart copy and of a fleet split.
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
    let output = complete(copier, &upload, parts).await?;
    if let Some(why) = checksum_differs(&upload, &output) {
        copier.discard(upload.target_key).await;
        return Err(TransferError::Verification(why));
    }
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

/// Where the source's composite checksum is kept (its layout, its algorithm), why
/// the completed object's differs; None where it is the same or not kept.
fn checksum_differs(
    upload: &Finished<'_>,
    output: &CompleteMultipartUploadOutput,
) -> Option<String> {
    let source = upload.source.checksum.as_ref()?;
    let kept = upload.preserved
        && !source.full_object
        && upload
            .checksum
            .is_some_and(|c| c.algorithm == source.algorithm);
    let written = Checksum::from_response(checksum_values!(output), output.checksum_type());
    let written = written.filter(|_| kept)?;
    (written.digest() != source.digest()).then(|| {
        format!(
            "the copy's {} checksum is {}, but the source's is {}",
            source.algorithm.as_str(),
            written.value,
            source.value
        )
    })
}

/// Completes an upload with `parts` (number, ETag, checksum) in order, and a
/// full-object checksum where the upload was created with one.
async fn complete<'a>(
    copier: &Copier,
    upload: &Finished<'_>,
    parts: impl Iterator<Item = (&'a usize, &'a Uploaded)>,
) -> Result<CompleteMultipartUploadOutput, S3Error> {
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .map(|(number, part)| {
                    let builder = CompletedPart::builder()
                        .part_number(*number as i32)
                        .e_tag(part.etag.quoted());
                    set_checksum!(builder, part.checksum.as_ref()).build()
                })
                .collect(),
        ))
        .build();
    let request = copier
        .target
        .client
        .complete_multipart_upload()
        .bucket(&copier.target.bucket)
        .key(upload.target_key)
        .upload_id(upload.upload_id)
        .multipart_upload(completed);
    let whole = upload.checksum.and_then(|c| {
        let value = c.full_object.clone()?;
        let algorithm = c.algorithm.clone();
        Some(Value { algorithm, value })
    });
    let request = match &whole {
        Some(_) => request.checksum_type(ChecksumType::FullObject),
        None => request,
    };
    let request = set_checksum!(request, whole.as_ref());
    copier
        .target
        .observe("CompleteMultipartUpload", request.send().await)
}
