//! Bringing a target object's description up to the source's without moving its
//! bytes across the border.
//!
//! Rewriting an object in place with new metadata keeps a single-part object's
//! ETag, and a tag edit changes no ETag at all: a reconcile that compared only
//! sizes and ETags would leave the target's old Content-Type or tags forever. When
//! the bytes match but the description does not, the target object is copied onto
//! itself within its own partition (`CopyObject` with `MetadataDirective=REPLACE`,
//! carrying the full write options as a fresh copy would, since REPLACE drops what
//! is not re-sent; a multipart copy above 5 GiB). Its tags are kept by that copy,
//! and set to the source's by [`Copier::sync_tags`] when a tag event asks.

use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, MetadataDirective, Tag, Tagging, TaggingDirective,
};

use super::{with_write_options, Copier, PartPlan, TransferError, WriteOptions};
use crate::error::S3Error;
use crate::etag::ETag;
use crate::object::{SourceObject, TargetObject};

/// The largest object one CopyObject may copy.
const COPY_OBJECT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// The part size of a multipart copy within the target.
const COPY_PART_SIZE: u64 = 1024 * 1024 * 1024;

impl Copier {
    /// Rewrites the target object `target_key` (as `target` describes it) with the
    /// description and options of a fresh copy of `source`, within the target's
    /// partition. `CopySourceIfMatch` its ETag: a 412 means another writer came first.
    pub async fn update_description(
        &self,
        source: &SourceObject,
        target: &TargetObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<(), TransferError> {
        let copy_source = format!("{}/{}", self.target.bucket, encode_key(target_key));
        let if_match = target.etag.as_ref().map(ETag::quoted);
        if target.size <= COPY_OBJECT_LIMIT {
            let request = self
                .target
                .client
                .copy_object()
                .bucket(&self.target.bucket)
                .key(target_key)
                .copy_source(&copy_source)
                .set_copy_source_if_match(if_match)
                .metadata_directive(MetadataDirective::Replace)
                .tagging_directive(TaggingDirective::Copy);
            let request = with_write_options!(request, options, source.etag.as_ref(), None);
            self.target.observe("CopyObject", request.send().await)?;
            return Ok(());
        }
        self.copy_in_parts(source, target, target_key, options, &copy_source)
            .await
    }

    /// A multipart copy of the target object onto itself, for objects above 5 GiB.
    async fn copy_in_parts(
        &self,
        source: &SourceObject,
        target: &TargetObject,
        target_key: &str,
        options: &WriteOptions,
        copy_source: &str,
    ) -> Result<(), TransferError> {
        let side = &self.target;
        let tagging = self.target_tags(target_key).await?;
        let request = side
            .client
            .create_multipart_upload()
            .bucket(&side.bucket)
            .key(target_key);
        let request = with_write_options!(request, options, source.etag.as_ref(), tagging);
        let created = side.observe("CreateMultipartUpload", request.send().await)?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let plan =
            PartPlan::uniform(target.size, COPY_PART_SIZE).map_err(TransferError::Unsupported)?;
        let mut parts = Vec::with_capacity(plan.len());
        for (number, range) in plan.parts() {
            let request = side
                .client
                .upload_part_copy()
                .bucket(&side.bucket)
                .key(target_key)
                .upload_id(&upload_id)
                .part_number(number as i32)
                .copy_source(copy_source)
                .set_copy_source_if_match(target.etag.as_ref().map(ETag::quoted))
                .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1));
            let copied = match side.observe("UploadPartCopy", request.send().await) {
                Ok(copied) => copied,
                Err(e) => {
                    self.abort_upload(target_key, &upload_id).await;
                    return Err(e.into());
                }
            };
            let etag = copied
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_owned();
            parts.push(
                CompletedPart::builder()
                    .part_number(number as i32)
                    .e_tag(etag)
                    .build(),
            );
        }
        let request = side
            .client
            .complete_multipart_upload()
            .bucket(&side.bucket)
            .key(target_key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        side.observe("CompleteMultipartUpload", request.send().await)?;
        Ok(())
    }

    /// Checks what a write left on the target (`xpsync-source-etag`, and the
    /// description when replicated) against `source`, and brings it up to date in
    /// place where it differs: an upload begun for an older version of the same
    /// layout carries that version's description.
    pub async fn ensure_described(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<(), TransferError> {
        let target = self.head_target(target_key).await?;
        let stale = !target.holds(source)
            || target
                .recorded_source_etag
                .as_ref()
                .is_some_and(|recorded| Some(recorded) != source.etag.as_ref())
            || options.copy_description && target.description != options.description;
        if stale {
            tracing::info!(
                recorded = ?target.recorded_source_etag,
                "the resumed upload was begun for another version; correcting its description"
            );
            self.update_description(source, &target, target_key, options)
                .await?;
        }
        Ok(())
    }

    /// After a split's upload was completed (`written`, its ETag): if the copy
    /// records another source version than `source`'s (the upload was begun for
    /// it), deletes the copy and says why. Its bytes are that version's, whatever
    /// its parts looked like. A copy another writer has put there since is not this
    /// completion's to judge, and stays.
    pub async fn discard_other_version(
        &self,
        source: &SourceObject,
        target_key: &str,
        written: &ETag,
    ) -> Result<Option<String>, TransferError> {
        let target = self.head_target(target_key).await?;
        if target.etag.as_ref() != Some(written) {
            return Ok(None);
        }
        let recorded = target.recorded_source_etag;
        let Some(recorded) = recorded.filter(|r| Some(r) != source.etag.as_ref()) else {
            return Ok(None);
        };
        self.discard(target_key).await;
        Ok(Some(format!(
            "the completed upload was begun for source version {recorded}, not {:?}: discarded, never relabelled",
            source.etag
        )))
    }

    /// The target's copy as a HEAD describes it.
    async fn head_target(&self, target_key: &str) -> Result<TargetObject, S3Error> {
        let request = self
            .target
            .client
            .head_object()
            .bucket(&self.target.bucket)
            .key(target_key);
        let head = self.target.observe("HeadObject", request.send().await)?;
        Ok(TargetObject::from_head(&head))
    }

    /// Sets the target's tags to the source's; true if they differed.
    pub async fn sync_tags(&self, source_key: &str, target_key: &str) -> Result<bool, S3Error> {
        let (source, target) = tokio::join!(
            tags(&self.source, source_key),
            tags(&self.target, target_key)
        );
        let (mut source, mut target) = (source?, target?);
        source.sort_by(|a, b| a.key().cmp(b.key()));
        target.sort_by(|a, b| a.key().cmp(b.key()));
        if source == target {
            return Ok(false);
        }
        let side = &self.target;
        if source.is_empty() {
            let request = side
                .client
                .delete_object_tagging()
                .bucket(&side.bucket)
                .key(target_key);
            side.observe("DeleteObjectTagging", request.send().await)?;
        } else {
            let tagging = Tagging::builder()
                .set_tag_set(Some(source))
                .build()
                .map_err(|e| {
                    S3Error::new(
                        side.side,
                        "PutObjectTagging",
                        crate::error::ErrorKind::Permanent,
                        e.to_string(),
                    )
                })?;
            let request = side
                .client
                .put_object_tagging()
                .bucket(&side.bucket)
                .key(target_key)
                .tagging(tagging);
            side.observe("PutObjectTagging", request.send().await)?;
        }
        Ok(true)
    }

    /// The target object's tags, URL-encoded for `x-amz-tagging`; None if none.
    async fn target_tags(&self, target_key: &str) -> Result<Option<String>, S3Error> {
        let tags = tags(&self.target, target_key).await?;
        if tags.is_empty() {
            return Ok(None);
        }
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        for tag in &tags {
            encoded.append_pair(tag.key(), tag.value());
        }
        Ok(Some(encoded.finish()))
    }

    async fn abort_upload(&self, target_key: &str, upload_id: &str) {
        let request = self
            .target
            .client
            .abort_multipart_upload()
            .bucket(&self.target.bucket)
            .key(target_key)
            .upload_id(upload_id);
        if let Err(e) = self
            .target
            .observe("AbortMultipartUpload", request.send().await)
        {
            tracing::warn!(key = target_key, upload_id, error = %e, "could not abort an upload");
        }
    }
}

async fn tags(side: &crate::aws::S3Side, key: &str) -> Result<Vec<Tag>, S3Error> {
    let request = side
        .client
        .get_object_tagging()
        .bucket(&side.bucket)
        .key(key);
    let output = side.observe("GetObjectTagging", request.send().await)?;
    Ok(output.tag_set().to_vec())
}

/// A key as `x-amz-copy-source` wants it: percent-encoded, slashes kept.
fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                encoded.push(byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::encode_key;

    #[test]
    fn copy_source_keys_are_percent_encoded_with_their_slashes() {
        assert_eq!(encode_key("a/b c+d/中"), "a/b%20c%2Bd/%E4%B8%AD");
    }
}
