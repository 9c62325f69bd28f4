//! The ledger's lookups of a key's uploads by the version marker they carry
//! ([`super::marker`]): which upload of a version came first, and the duplicates to
//! abort once one is completed.

use std::collections::BTreeMap;

use super::ledger::Ledger;
use super::marker::marker;
use crate::checksum::{self, Value};
use crate::checksum_values;
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::object::SourceObject;
use crate::transfer::multipart;
use crate::transfer::plan::{MARKER_PART, MARKER_PARTS};
use crate::transfer::TransferError;

/// A marker part as ListParts shows it.
pub(super) struct Listed {
    size: u64,
    pub etag: Option<ETag>,
    checksum: Option<Value>,
    /// When it was last written (milliseconds since the epoch, as S3 lists it).
    pub stamp: Option<i64>,
}

impl Listed {
    /// Whether this is marker part `number` of version `etag`: its size, and its
    /// ETag where the target's ETags are MD5s, else its checksum where the upload
    /// keeps one (under KMS: 16 bits of size and 32 of CRC32C).
    fn is_of(&self, etag: &ETag, number: usize, opaque: bool) -> bool {
        let (body, _) = marker(etag, number);
        let same_checksum = self
            .checksum
            .as_ref()
            .is_none_or(|c| checksum::of(&c.algorithm, &body).as_ref() == Some(&c.value));
        let same_bytes = opaque || self.etag == Some(ETag::of_bytes(&body));
        self.size == body.len() as u64 && same_bytes && same_checksum
    }
}

/// Whether the marker parts `listed` of an upload are of version `etag`: part
/// 10,000 must be, and part 9,999 too where the upload carries it (as this
/// release's uploads do: [`MARKER_PARTS`]; one begun by an earlier release may
/// carry part 10,000 alone).
fn carries(listed: &BTreeMap<usize, Listed>, etag: &ETag, opaque: bool) -> bool {
    listed.contains_key(&MARKER_PART)
        && listed
            .iter()
            .all(|(number, part)| part.is_of(etag, *number, opaque))
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

    /// Whether `upload` carries the markers of version `etag` ([`Listed::is_of`]).
    /// Markers that still match another version's are harmless: a completion that
    /// records another version is discarded, never relabelled.
    pub(super) async fn carries_marker(
        &self,
        target_key: &str,
        upload: &str,
        etag: &ETag,
        opaque: bool,
    ) -> Result<bool, TransferError> {
        match self.marker_parts(target_key, upload).await {
            Ok(listed) => Ok(carries(&listed, etag, opaque)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The marker parts of `upload` ([`MARKER_PARTS`]) as the target lists them.
    pub(super) async fn marker_parts(
        &self,
        target_key: &str,
        upload: &str,
    ) -> Result<BTreeMap<usize, Listed>, S3Error> {
        let target = self.copier.target();
        let request = target
            .client
            .list_parts()
            .bucket(&target.bucket)
            .key(target_key)
            .upload_id(upload)
            .part_number_marker((MARKER_PARTS[0] - 1).to_string())
            .max_parts(MARKER_PARTS.len() as i32);
        let parts = target.observe("ListParts", request.send().await)?;
        Ok(parts
            .parts()
            .iter()
            .filter_map(|part| {
                let number = part.part_number()? as usize;
                let listed = Listed {
                    size: part.size().unwrap_or(0).max(0) as u64,
                    etag: ETag::parse(part.e_tag()),
                    checksum: checksum_values!(part).first(),
                    stamp: part.last_modified().and_then(|t| t.to_millis().ok()),
                };
                MARKER_PARTS.contains(&number).then_some((number, listed))
            })
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::ChecksumAlgorithm;

    /// Marker part `number` of `etag` as a KMS target lists it: its size and CRC32C,
    /// its ETag opaque.
    fn listed_under_kms(etag: &ETag, number: usize) -> Listed {
        let (body, _) = marker(etag, number);
        let algorithm = ChecksumAlgorithm::Crc32C;
        Listed {
            size: body.len() as u64,
            etag: Some(ETag::new("opaque")),
            checksum: checksum::of(&algorithm, &body).map(|value| Value { algorithm, value }),
            stamp: None,
        }
    }

    #[test]
    fn an_upload_carries_a_version_by_part_10000_and_by_part_9999_where_it_has_one() {
        let v1 = ETag::new("9e107d9d372bb6826bd81d3542a419d6-3");
        let v2 = ETag::new("e4d909c290d0fb1ca068ffaddf22cbd0-3");
        let listing = |parts: &[(usize, &ETag)]| -> BTreeMap<usize, Listed> {
            parts
                .iter()
                .map(|(n, etag)| (*n, listed_under_kms(etag, *n)))
                .collect()
        };
        // What an earlier release wrote: part 10,000 alone.
        let one = listing(&[(MARKER_PART, &v1)]);
        assert!(carries(&one, &v1, true));
        assert!(!carries(&one, &v2, true));
        // Both, as this release writes them.
        let both = listing(&[(MARKER_PARTS[0], &v1), (MARKER_PART, &v1)]);
        assert!(carries(&both, &v1, true));
        // Part 10,000 of this version beside part 9,999 of another: not this one.
        let mixed = listing(&[(MARKER_PARTS[0], &v2), (MARKER_PART, &v1)]);
        assert!(!carries(&mixed, &v1, true));
        // Part 9,999 alone is no tag.
        assert!(!carries(&listing(&[(MARKER_PARTS[0], &v1)]), &v1, true));
        // Where ETags are MD5s, the listed ETag must be the marker's.
        assert!(!carries(&one, &v1, false), "an opaque ETag is no MD5");
    }
}
