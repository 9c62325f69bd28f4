//! S3's entity tag as a type, never a bare string.
//!
//! S3 sends ETags quoted (`"9e10…"`), listings and events sometimes unquoted; an
//! [`ETag`] holds the value without quotes, compares by it, and gives it back
//! quoted where HTTP wants an entity tag (`If-Match`, a completed part).
//!
//! What an ETag *says* depends on how the object was written: for a plain or
//! SSE-S3 object stored in one PUT it is the MD5 of the bytes; for a multipart one,
//! `md5(md5(part 1) ‖ … ‖ md5(part N))-N` ([`ETag::composite`]); under SSE-KMS or
//! SSE-C it is 32 hex digits that are no hash of the bytes at all. So
//! [`ETag::is_md5`] tells only the *shape*; whether the digits may be compared with
//! a local MD5 is the encryption's to say, not the ETag's.

use std::fmt;

use base64::Engine as _;
use md5::{Digest, Md5};

/// An entity tag, held without its quotes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// From S3's form, quoted or not.
    pub fn new(value: &str) -> Self {
        Self(value.trim_matches('"').to_owned())
    }

    /// From an optional header or field; `None` for a missing or empty one.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        value.map(Self::new).filter(|e| !e.0.is_empty())
    }

    /// The ETag S3 gives bytes whose MD5 is `digest`.
    pub fn from_md5(digest: &[u8]) -> Self {
        Self(hex::encode(digest))
    }

    /// The MD5 ETag of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_md5(&Md5::digest(bytes))
    }

    /// The value, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, quoted, as HTTP headers carry it.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Whether it has the shape of a plain MD5 (32 hex digits). An SSE-KMS or
    /// SSE-C ETag has this shape too.
    pub fn is_md5(&self) -> bool {
        self.0.len() == 32 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The part count of a multipart ETag (`…-N`); None for a single-part one.
    pub fn part_count(&self) -> Option<u32> {
        let (_, count) = self.0.rsplit_once('-')?;
        count.parse().ok()
    }

    /// The 16 bytes of an MD5-shaped ETag.
    pub fn md5_bytes(&self) -> Option<[u8; 16]> {
        if !self.is_md5() {
            return None;
        }
        hex::decode(&self.0).ok()?.try_into().ok()
    }

    /// Base64 of the MD5, as Content-MD5 wants it, for an MD5-shaped ETag.
    pub fn content_md5(&self) -> Option<String> {
        self.md5_bytes()
            .map(|digest| base64::engine::general_purpose::STANDARD.encode(digest))
    }

    /// S3's multipart ETag, `md5(concat(md5(part_i)))-N`, from the parts' MD5
    /// ETags in part order. None if any part's ETag is not MD5-shaped.
    pub fn composite<'a>(parts: impl IntoIterator<Item = &'a ETag>) -> Option<ETag> {
        let mut hasher = Md5::new();
        let mut count = 0usize;
        for part in parts {
            hasher.update(part.md5_bytes()?);
            count += 1;
        }
        Some(Self(format!("{}-{count}", hex::encode(hasher.finalize()))))
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl serde::Serialize for ETag {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ETag {
    /// Quoted or not, as [`ETag::new`].
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Ok(Self::new(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_dropped_and_given_back() {
        let etag = ETag::new("\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(etag.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(etag.quoted(), "\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(etag, ETag::new("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(ETag::parse(Some("\"\"")), None);
        assert_eq!(ETag::parse(None), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(ETag::new("\"abc-12\"").part_count(), Some(12));
        let md5 = ETag::new("d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5.part_count(), None);
        assert!(md5.is_md5());
        assert!(!ETag::new("d41d8cd98f00b204e9800998ecf8427e-2").is_md5());
        assert!(!ETag::new("not hex at all, but 32 long......").is_md5());
        assert_eq!(
            md5.content_md5().as_deref(),
            Some("1B2M2Y8AsgTpgAmY7PhCfg==")
        );
        assert_eq!(ETag::of_bytes(b""), md5);
    }

    #[test]
    fn composite_matches_s3s_formula() {
        let a = ETag::of_bytes(b"hello ");
        let b = ETag::of_bytes(b"world");
        let mut outer = Md5::new();
        outer.update(Md5::digest(b"hello "));
        outer.update(Md5::digest(b"world"));
        let expected = format!("{}-2", hex::encode(outer.finalize()));
        assert_eq!(ETag::composite([&a, &b]).unwrap().as_str(), expected);
        assert_eq!(ETag::composite([&ETag::new("not-an-md5")]), None);
    }
}
