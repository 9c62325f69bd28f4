//! The additional checksum each write carries ([`crate::checksum`]): S3 checks it,
//! and an Object Lock bucket refuses a write without one (or Content-MD5).
//!
//! A part carries the checksum of its upload's algorithm, computed by the SDK as the
//! bytes flow (a trailer for a streamed body, a header for a buffered one). An
//! upload's algorithm is the source's where the copy can carry the source's
//! checksum ([`Copier::upload_checksum`]), else `target.checksum`.

use aws_sdk_s3::types::ChecksumAlgorithm;

use super::Copier;
use crate::checksum::{Checksum, UploadChecksum};
use crate::config::PartChecksum;
use crate::object::SourceObject;

impl Copier {
    /// The configuration of an UploadPart of `length` bytes: its timeouts, and,
    /// where the part carries a checksum (`checksum`), the SDK asked to compute it,
    /// which it does only when asked per request, its clients leaving checksums to
    /// xpsync (DESIGN §8).
    pub(crate) fn part_upload_config(
        &self,
        length: u64,
        checksum: bool,
    ) -> aws_sdk_s3::config::Builder {
        let config = self.upload_timeouts(length);
        match checksum {
            true => config.request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported,
            ),
            false => config,
        }
    }

    /// The additional checksum parts carry where the source's is not kept
    /// (`target.checksum`).
    pub(crate) fn part_checksum(&self) -> Option<ChecksumAlgorithm> {
        match self.checksum {
            PartChecksum::Crc32c => Some(ChecksumAlgorithm::Crc32C),
            PartChecksum::None => None,
        }
    }

    /// The source's full-object checksum for a single PUT to carry; none where
    /// checksums are off (`target.checksum = "none"`).
    pub(crate) fn put_checksum<'a>(&self, source: &'a SourceObject) -> Option<&'a Checksum> {
        self.part_checksum()?;
        source.checksum.as_ref().filter(|c| c.full_object)
    }

    /// The checksum an upload of `source` is created with: the source's own
    /// algorithm where its checksum can be kept (full-object, whatever the parts; or
    /// composite, in the source's own layout, `preserved`), else the configured
    /// one, composite.
    pub(crate) fn upload_checksum(
        &self,
        source: &SourceObject,
        preserved: bool,
    ) -> Option<UploadChecksum> {
        // `target.checksum = "none"`: a target that refuses checksums gets none.
        self.part_checksum()?;
        match &source.checksum {
            Some(c) if c.full_object && c.combinable() => Some(UploadChecksum {
                algorithm: c.algorithm.clone(),
                full_object: Some(c.value.clone()),
            }),
            Some(c) if !c.full_object && preserved => Some(UploadChecksum {
                algorithm: c.algorithm.clone(),
                full_object: None,
            }),
            _ => self.part_checksum().map(|algorithm| UploadChecksum {
                algorithm,
                full_object: None,
            }),
        }
    }
}

impl Copier {
    /// Deletes a target object that failed verification, so that it does not
    /// claim a source version it does not hold. Best effort: failure is logged.
    pub(super) async fn discard(&self, target_key: &str) {
        let request = self
            .target
            .client
            .delete_object()
            .bucket(&self.target.bucket)
            .key(target_key);
        if let Err(e) = self.target.observe("DeleteObject", request.send().await) {
            tracing::error!(key = target_key, error = %e, "could not delete a target object that failed verification");
        }
    }
}

/// Base64 of the MD5 of `bytes` (for Content-MD5) and the ETag it makes.
pub(crate) fn md5_of(bytes: &[u8]) -> (String, crate::etag::ETag) {
    let etag = crate::etag::ETag::of_bytes(bytes);
    let content_md5 = etag.content_md5().expect("an MD5 ETag");
    (content_md5, etag)
}
