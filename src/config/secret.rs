//! Values of the configuration that are more than strings: a [`Secret`] that is never
//! printed, the target's server-side encryption ([`Sse`]), which decides whether
//! its ETags can be MD5s of the bytes, and what becomes of archived sources
//! ([`Archived`], [`RestoreTier`]).

use std::fmt;

use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that must never be printed: logs, errors and `check-config` see `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for handing to the SDK and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// The server-side encryption the target is asked for (`target.sse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sse {
    /// `""`: none asked; the bucket's default encryption applies.
    #[default]
    BucketDefault,
    /// `"AES256"`: SSE-S3.
    Aes256,
    /// `"aws:kms"`: SSE-KMS, with `target.sse_kms_key_id` or the account's S3 key.
    Kms,
}

impl Sse {
    const NAMES: [(&'static str, Sse); 3] = [
        ("", Sse::BucketDefault),
        ("AES256", Sse::Aes256),
        ("aws:kms", Sse::Kms),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, sse)| *sse == self)
            .map_or("", |(name, _)| name)
    }

    /// Whether the target's ETags are asked to be opaque (no MD5 of the bytes).
    /// A bucket's default encryption may still make them so: the copier learns that
    /// from the target's answers ([`crate::transfer::Copier::etags_opaque`]).
    pub fn etags_opaque(self) -> bool {
        self == Sse::Kms
    }

    /// The `x-amz-server-side-encryption` header to send, if any.
    pub fn header(self) -> Option<ServerSideEncryption> {
        match self {
            Sse::BucketDefault => None,
            Sse::Aes256 => Some(ServerSideEncryption::Aes256),
            Sse::Kms => Some(ServerSideEncryption::AwsKms),
        }
    }
}

impl Serialize for Sse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, sse)| *sse)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "is {value:?}, but must be \"\", \"AES256\" or \"aws:kms\""
                ))
            })
    }
}

/// The additional checksum every part carries (`target.checksum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartChecksum {
    /// CRC32C: a streamed part sends it as a trailer, computed as its bytes flow,
    /// so S3 checks every part (an Object Lock bucket demands it), and ListParts
    /// gives it back, which a KMS target's opaque ETags cannot.
    #[default]
    Crc32c,
    /// None: for S3-compatible servers that refuse additional checksums. Streamed
    /// parts are then checked by their ETags alone, and an Object Lock target
    /// refuses them.
    None,
}

/// What becomes of an archived source object (`replicate.archived`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archived {
    /// Counted as `archived` and left: its message is deleted, never dead-lettered.
    #[default]
    Skip,
    /// RestoreObject, once; the object is copied when its restore completes.
    Restore,
}

/// The most days `replicate.restore_days` may keep a restored copy.
pub const MAX_RESTORE_DAYS: u32 = 30_000;

/// The retrieval tier of a restore (`replicate.restore_tier`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreTier {
    /// Hours (Glacier: 5-12, Deep Archive: up to 48); the cheapest.
    #[default]
    Bulk,
    Standard,
    /// Minutes; Glacier Flexible Retrieval only.
    Expedited,
}

impl RestoreTier {
    pub fn sdk(self) -> aws_sdk_s3::types::Tier {
        match self {
            RestoreTier::Bulk => aws_sdk_s3::types::Tier::Bulk,
            RestoreTier::Standard => aws_sdk_s3::types::Tier::Standard,
            RestoreTier::Expedited => aws_sdk_s3::types::Tier::Expedited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_reads_and_writes_s3s_names() {
        for (name, sse) in Sse::NAMES {
            assert_eq!(sse.as_str(), name);
            let read: Sse = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(read, sse);
        }
        let wrong = serde_json::from_value::<Sse>(serde_json::json!("aes")).unwrap_err();
        assert!(wrong.to_string().starts_with("is \"aes\", but must be"));
        assert!(Sse::Kms.etags_opaque() && !Sse::Aes256.etags_opaque());
    }
}
