//! The ledger's lookups of a key's uploads by the version marker they carry
//! ([`super::marker`]): which upload of a version came first, and the duplicates to
//! abort once one is completed.

use super::ledger::Ledger;
use super::marker::marker;
use crate::checksum::{self, Value};
use crate::checksum_values;
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::object::SourceObject;
use crate::transfer::multipart;
use crate::transfer::plan::MARKER_PART;
use crate::transfer::TransferError;

/// A marker part as ListParts shows it.
pub(super) struct Listed {
    size: u64,
    pub etag: Option<ETag>,
    checksum: Option<Value>,
    /// When it was last written (milliseconds since the epoch, as S3 lists it).
    pub stamp: Option<i64>,
}

impl Ledger<'_> {
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
        let mut uploads: Vec<String> = match multipart::list_uploads(self.copier, target_key).await
        {
            Ok(uploads) => uploads.into_iter().map(|upload| upload.id).collect(),
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

    /// Whether `upload` carries the marker of version `etag`: its size, and its ETag
    /// where the target's ETags are MD5s, else its checksum where the upload keeps
    /// one (under KMS: 16 bits of size and 32 of CRC32C, where the size alone was 16).
    /// A marker that still matches another version's is harmless: a completion that
    /// records another version is discarded, never relabelled.
    pub(super) async fn carries_marker(
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
        Ok(listed.is_some_and(|marker| {
            let same_checksum = marker
                .checksum
                .as_ref()
                .is_none_or(|c| checksum::of(&c.algorithm, &body).as_ref() == Some(&c.value));
            let same_bytes = opaque || marker.etag == Some(ETag::of_bytes(&body));
            marker.size == body.len() as u64 && same_bytes && same_checksum
        }))
    }

    /// The marker part of `upload` as the target lists it.
    pub(super) async fn marker_part(
        &self,
        target_key: &str,
        upload: &str,
    ) -> Result<Option<Listed>, S3Error> {
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
            .map(|part| Listed {
                size: part.size().unwrap_or(0).max(0) as u64,
                etag: ETag::parse(part.e_tag()),
                checksum: checksum_values!(part).first(),
                stamp: part.last_modified().and_then(|t| t.to_millis().ok()),
            }))
    }

    /// After a split completed: aborts any other upload of its version still there
    /// (a duplicate splitter's whose abort failed, one begun just now); their
    /// ranges then find them gone. Failures only leave them to the lifecycle rule.
    pub(super) async fn abort_duplicates(
        &self,
        target_key: &str,
        source: &SourceObject,
        opaque: bool,
    ) {
        let Some(etag) = &source.etag else { return };
        let Ok(uploads) = multipart::list_uploads(self.copier, target_key).await else {
            return;
        };
        for id in uploads.into_iter().map(|upload| upload.id) {
            if matches!(
                self.carries_marker(target_key, &id, etag, opaque).await,
                Ok(true)
            ) {
                tracing::info!(upload_id = %id, "aborting another upload of the version just completed");
                multipart::abort(self.copier, target_key, &id).await;
            }
        }
    }
}
