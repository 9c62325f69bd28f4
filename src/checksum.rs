//! S3's additional checksums (`x-amz-checksum-*`): the one a source object carries,
//! and the one its copy is written with.
//!
//! S3 keeps at most one additional checksum per object, of one algorithm (CRC32,
//! CRC32C, CRC64NVME, SHA-1, SHA-256), of one of two types:
//!
//! - **full object**: of the whole object's bytes, whatever its parts (a single
//!   PUT's; a multipart upload's where it was created `FULL_OBJECT`, CRCs only; S3's
//!   own CRC64NVME on objects uploaded without one);
//! - **composite**: of the parts' own checksums, `…-N` (a multipart upload's, by
//!   default): it depends on the part layout.
//!
//! A copy carries the source's algorithm and value where it can be the same: a
//! full-object checksum always (a single PUT sends it, a multipart upload is created
//! `FULL_OBJECT` and completed with it), so S3 itself checks the copy's bytes against
//! the source's checksum; a composite one when the source's part layout is kept (its
//! parts then carry that algorithm, and the composite the target computes must equal
//! the source's). Elsewhere (a re-cut composite), parts carry `target.checksum`.

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
use base64::Engine as _;

/// A checksum S3 keeps with an object, as a HEAD or whole-object GET with checksum
/// mode answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// The base64 digest; a composite one ends in `-N`.
    pub value: String,
    /// Of the whole object's bytes; else composite, of its parts' checksums.
    pub full_object: bool,
}

/// A response's checksum headers, named as the SDK names them.
pub struct Headers<'a> {
    pub crc32: Option<&'a str>,
    pub crc32c: Option<&'a str>,
    pub crc64nvme: Option<&'a str>,
    pub sha1: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub kind: Option<&'a ChecksumType>,
}

/// The [`Headers`] of a HEAD, GET or CompleteMultipartUpload output.
#[macro_export]
macro_rules! checksum_headers {
    ($output:expr) => {
        $crate::checksum::Headers {
            crc32: $output.checksum_crc32(),
            crc32c: $output.checksum_crc32_c(),
            crc64nvme: $output.checksum_crc64_nvme(),
            sha1: $output.checksum_sha1(),
            sha256: $output.checksum_sha256(),
            kind: $output.checksum_type(),
        }
    };
}

impl Checksum {
    /// The checksum the headers name, if any.
    pub fn from_headers(h: Headers<'_>) -> Option<Self> {
        let (algorithm, value) = [
            (ChecksumAlgorithm::Crc32, h.crc32),
            (ChecksumAlgorithm::Crc32C, h.crc32c),
            (ChecksumAlgorithm::Crc64Nvme, h.crc64nvme),
            (ChecksumAlgorithm::Sha1, h.sha1),
            (ChecksumAlgorithm::Sha256, h.sha256),
        ]
        .into_iter()
        .find_map(|(algorithm, value)| Some((algorithm, value.filter(|v| !v.is_empty())?)))?;
        let full_object = match h.kind {
            Some(ChecksumType::FullObject) => true,
            Some(ChecksumType::Composite) => false,
            // Not typed (an older server): S3's composite values end in `-N`.
            _ => !value.contains('-'),
        };
        Some(Self {
            algorithm,
            value: value.to_owned(),
            full_object,
        })
    }

    /// Whether S3 can take this algorithm for a whole multipart upload
    /// (`FULL_OBJECT`): the CRCs only.
    pub fn combinable(&self) -> bool {
        matches!(
            self.algorithm,
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32C | ChecksumAlgorithm::Crc64Nvme
        )
    }

    /// The value without a composite's `-N`.
    pub fn digest(&self) -> &str {
        self.value.split('-').next().unwrap_or_default()
    }
}

/// The checksum a multipart upload is created with: its parts carry `algorithm`,
/// and, `full_object`, the whole object is checked at completion against the
/// source's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algorithm: ChecksumAlgorithm,
    /// The source's full-object value, to complete with.
    pub full_object: Option<String>,
}

impl UploadChecksum {
    /// The upload's `ChecksumType`.
    pub fn kind(&self) -> ChecksumType {
        match self.full_object {
            Some(_) => ChecksumType::FullObject,
            None => ChecksumType::Composite,
        }
    }
}

/// The base64 `algorithm` digest of `bytes`, as S3 gives it for a part; None for
/// an algorithm not computed here.
pub fn of(algorithm: &ChecksumAlgorithm, bytes: &[u8]) -> Option<String> {
    // The checksums crate reads "md5" as CRC32.
    if *algorithm == ChecksumAlgorithm::Md5 {
        return None;
    }
    let name = algorithm.as_str().to_ascii_lowercase();
    let algorithm: aws_smithy_checksums::ChecksumAlgorithm = name.parse().ok()?;
    let mut checksum = algorithm.into_impl();
    checksum.update(bytes);
    Some(base64::engine::general_purpose::STANDARD.encode(checksum.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(crc32c: Option<&'a str>, kind: Option<&'a ChecksumType>) -> Headers<'a> {
        Headers {
            crc32: None,
            crc32c,
            crc64nvme: None,
            sha1: None,
            sha256: None,
            kind,
        }
    }

    #[test]
    fn a_checksum_is_full_object_or_composite() {
        let single = Checksum::from_headers(headers(Some("yZRlqg=="), None)).unwrap();
        assert!(single.full_object && single.combinable());
        let composite = Checksum::from_headers(headers(Some("abcd-3"), None)).unwrap();
        assert!(!composite.full_object);
        assert_eq!(composite.digest(), "abcd");
        let typed = Checksum::from_headers(headers(Some("abcd"), Some(&ChecksumType::Composite)));
        assert!(!typed.unwrap().full_object);
        assert!(Checksum::from_headers(headers(None, None)).is_none());
    }

    #[test]
    fn digests_are_those_s3_gives() {
        // S3's documented values for b"hello world".
        let crc32c = of(&ChecksumAlgorithm::Crc32C, b"hello world").unwrap();
        assert_eq!(crc32c, "yZRlqg==");
        let crc32 = of(&ChecksumAlgorithm::Crc32, b"hello world").unwrap();
        assert_eq!(crc32, "DUoRhQ==");
        assert!(of(&ChecksumAlgorithm::Sha256, b"").is_some());
    }
}
