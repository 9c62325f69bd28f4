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

/// One checksum value and its algorithm: a part's, as S3 lists or returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub algorithm: ChecksumAlgorithm,
    pub value: String,
}

/// The checksum values of a response, named as the SDK names them; S3 answers one.
pub struct Values<'a> {
    pub crc32: Option<&'a str>,
    pub crc32c: Option<&'a str>,
    pub crc64nvme: Option<&'a str>,
    pub sha1: Option<&'a str>,
    pub sha256: Option<&'a str>,
}

/// The [`Values`] of an output or listed part that has the five getters.
#[macro_export]
macro_rules! checksum_values {
    ($output:expr) => {
        $crate::checksum::Values {
            crc32: $output.checksum_crc32(),
            crc32c: $output.checksum_crc32_c(),
            crc64nvme: $output.checksum_crc64_nvme(),
            sha1: $output.checksum_sha1(),
            sha256: $output.checksum_sha256(),
        }
    };
}

/// Sets `value` (a [`Value`] or [`Checksum`]) on a request or part builder, by the
/// setter of its algorithm: the builders share these setters but no trait.
#[macro_export]
macro_rules! set_checksum {
    ($builder:expr, $value:expr) => {{
        let builder = $builder;
        match $value {
            Some(v) => {
                let value = v.value.clone();
                match v.algorithm {
                    aws_sdk_s3::types::ChecksumAlgorithm::Crc32 => builder.checksum_crc32(value),
                    aws_sdk_s3::types::ChecksumAlgorithm::Crc32C => builder.checksum_crc32_c(value),
                    aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme => {
                        builder.checksum_crc64_nvme(value)
                    }
                    aws_sdk_s3::types::ChecksumAlgorithm::Sha1 => builder.checksum_sha1(value),
                    aws_sdk_s3::types::ChecksumAlgorithm::Sha256 => builder.checksum_sha256(value),
                    _ => builder,
                }
            }
            None => builder,
        }
    }};
}

impl Values<'_> {
    /// The one value the response carries, if any.
    pub fn first(self) -> Option<Value> {
        [
            (ChecksumAlgorithm::Crc32, self.crc32),
            (ChecksumAlgorithm::Crc32C, self.crc32c),
            (ChecksumAlgorithm::Crc64Nvme, self.crc64nvme),
            (ChecksumAlgorithm::Sha1, self.sha1),
            (ChecksumAlgorithm::Sha256, self.sha256),
        ]
        .into_iter()
        .find_map(|(algorithm, value)| {
            let value = value.filter(|v| !v.is_empty())?.to_owned();
            Some(Value { algorithm, value })
        })
    }
}

impl Checksum {
    /// The checksum a response names, of the type it says (`x-amz-checksum-type`).
    pub fn from_response(values: Values<'_>, kind: Option<&ChecksumType>) -> Option<Self> {
        let Value { algorithm, value } = values.first()?;
        let full_object = match kind {
            Some(ChecksumType::FullObject) => true,
            Some(ChecksumType::Composite) => false,
            // Not typed (an older server): S3's composite values end in `-N`.
            _ => !value.contains('-'),
        };
        Some(Self {
            algorithm,
            value,
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

    fn crc32c(value: Option<&str>) -> Values<'_> {
        Values {
            crc32: None,
            crc32c: value,
            crc64nvme: None,
            sha1: None,
            sha256: None,
        }
    }

    #[test]
    fn a_checksum_is_full_object_or_composite() {
        let single = Checksum::from_response(crc32c(Some("yZRlqg==")), None).unwrap();
        assert!(single.full_object && single.combinable());
        let composite = Checksum::from_response(crc32c(Some("abcd-3")), None).unwrap();
        assert!(!composite.full_object);
        assert_eq!(composite.digest(), "abcd");
        let typed = Checksum::from_response(crc32c(Some("abcd")), Some(&ChecksumType::Composite));
        assert!(!typed.unwrap().full_object);
        assert!(Checksum::from_response(crc32c(None), None).is_none());
        assert!(Checksum::from_response(crc32c(Some("")), None).is_none());
    }

    #[test]
    fn digests_are_those_s3_gives() {
        // The CRC32C and CRC32 of b"hello world", as S3 shows them.
        let crc32c = of(&ChecksumAlgorithm::Crc32C, b"hello world").unwrap();
        assert_eq!(crc32c, "yZRlqg==");
        let crc32 = of(&ChecksumAlgorithm::Crc32, b"hello world").unwrap();
        assert_eq!(crc32, "DUoRhQ==");
        assert!(of(&ChecksumAlgorithm::Sha256, b"").is_some());
        assert!(of(&ChecksumAlgorithm::Md5, b"").is_none());
    }
}
