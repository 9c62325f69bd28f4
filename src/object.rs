//! The objects xpsync reasons about, as plain values.
//!
//! A [`SourceObject`] is what is known of the source's current version of a key:
//! its size and ETag, how it is encrypted, its description (the headers and user
//! metadata that are replicated), and how many tags it has. A HEAD fills it, and so
//! can a listing entry, an S3 event or a GET's headers; what a source does not tell
//! stays unknown (`None`), which is not the same as "none". A listing says nothing
//! of the encryption, so a listed object's 32-hex ETag is not taken for an MD5
//! until a GET or a HEAD has said the object is not under SSE-KMS or SSE-C.
//!
//! A [`TargetObject`] is what a HEAD of the target key tells, including the source
//! ETag a copy recorded in its metadata.

use crate::archive::Access;
use crate::checksum::Checksum;
use crate::checksum_values;
use std::collections::HashMap;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::types::ServerSideEncryption;

use crate::etag::ETag;

/// The user-metadata key holding the source ETag a target copy was made from.
pub const SOURCE_ETAG_METADATA: &str = "xpsync-source-etag";

/// S3's limit on user metadata: the UTF-8 bytes of every key and value together.
pub const USER_METADATA_LIMIT: usize = 2048;

/// How an object's bytes are encrypted at rest, as far as its ETag is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// None, or SSE-S3 (AES256): the ETag is derived from the bytes.
    Plain,
    /// SSE-KMS or DSSE-KMS: the ETag is opaque.
    Kms,
    /// SSE-C: the ETag is opaque.
    CustomerKey,
}

impl Encryption {
    /// From the `x-amz-server-side-encryption` and SSE-C headers of a response.
    pub fn from_headers(sse: Option<&ServerSideEncryption>, customer: Option<&str>) -> Self {
        match (sse, customer) {
            (_, Some(_)) => Encryption::CustomerKey,
            (Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse), _) => {
                Encryption::Kms
            }
            _ => Encryption::Plain,
        }
    }

    /// Whether ETags of objects so encrypted are MD5s of what was written.
    pub fn etag_is_md5(self) -> bool {
        self == Encryption::Plain
    }
}

/// The replicated description of an object: standard headers and user metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Description {
    /// User metadata, without xpsync's own key.
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<DateTime>,
    /// `x-amz-website-redirect-location`: a website bucket's redirect for the key.
    pub website_redirect_location: Option<String>,
}

macro_rules! description_from {
    ($output:expr) => {{
        let o = $output;
        let mut metadata = o.metadata().cloned().unwrap_or_default();
        metadata.remove(SOURCE_ETAG_METADATA);
        Description {
            metadata,
            content_type: o.content_type().map(str::to_owned),
            content_encoding: o.content_encoding().map(str::to_owned),
            content_language: o.content_language().map(str::to_owned),
            content_disposition: o.content_disposition().map(str::to_owned),
            cache_control: o.cache_control().map(str::to_owned),
            expires: o
                .expires_string()
                .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok()),
            website_redirect_location: o.website_redirect_location().map(str::to_owned),
        }
    }};
}

/// What is known of the source's current version of a key.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    /// None: the source named none (a listing without ETags).
    pub etag: Option<ETag>,
    /// None: not known yet (a listing or an event).
    pub encryption: Option<Encryption>,
    /// None: not known yet.
    pub description: Option<Description>,
    /// How many tags it has; None: not known (a HEAD does not say).
    pub tag_count: Option<u32>,
    /// Whether its bytes can be read now; a listing or an event cannot say, and a
    /// GET answers it ([`crate::archive`]).
    pub access: Access,
    /// Stored in S3 Intelligent-Tiering (whose archive tiers restore without days).
    pub intelligent_tiering: bool,
    /// Its additional checksum, where S3 keeps one; None: none, or not known yet.
    pub checksum: Option<Checksum>,
}

impl SourceObject {
    /// As a listing (or an event) shows it: size and ETag, nothing else.
    pub fn listed(key: &str, size: u64, etag: Option<ETag>) -> Self {
        Self {
            key: key.to_owned(),
            size,
            etag,
            encryption: None,
            description: None,
            tag_count: None,
            access: Access::Readable,
            intelligent_tiering: false,
            checksum: None,
        }
    }

    /// Whether it is known to be stored with a customer-provided key (SSE-C): its
    /// reads carry the source's key.
    pub fn sse_c(&self) -> bool {
        self.encryption == Some(Encryption::CustomerKey)
    }

    /// As a HEAD describes it.
    pub fn from_head(key: &str, head: &HeadObjectOutput) -> Self {
        Self {
            key: key.to_owned(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: ETag::parse(head.e_tag()),
            encryption: Some(Encryption::from_headers(
                head.server_side_encryption(),
                head.sse_customer_algorithm(),
            )),
            description: Some(description_from!(head)),
            tag_count: None,
            access: Access::from_head(head),
            intelligent_tiering: head.storage_class()
                == Some(&aws_sdk_s3::types::StorageClass::IntelligentTiering),
            checksum: Checksum::from_response(checksum_values!(head), head.checksum_type()),
        }
    }

    /// Completes what is known from the headers of a GET of the whole object. Its
    /// length (when it gives one), ETag, encryption, description and tag count are
    /// the version it returns.
    pub fn learn_from_get(&mut self, get: &GetObjectOutput) {
        if let Some(length) = get.content_length() {
            self.size = length.max(0) as u64;
        }
        if let Some(etag) = ETag::parse(get.e_tag()) {
            self.etag = Some(etag);
        }
        self.encryption = Some(Encryption::from_headers(
            get.server_side_encryption(),
            get.sse_customer_algorithm(),
        ));
        self.description = Some(description_from!(get));
        self.tag_count = Some(get.tag_count().unwrap_or(0).max(0) as u32);
        self.checksum = Checksum::from_response(checksum_values!(get), get.checksum_type());
    }

    /// The part count if the source stored the object in parts.
    pub fn part_count(&self) -> Option<u32> {
        self.etag.as_ref()?.part_count()
    }

    /// Whether the ETag is known to be derived from the bytes (the MD5, or the
    /// composite of the parts' MD5s): not under SSE-KMS or SSE-C, and not unknown.
    pub fn etag_is_content_hash(&self) -> bool {
        self.etag.is_some() && self.encryption.is_some_and(Encryption::etag_is_md5)
    }

    /// The ETag as the MD5 of the whole object, where it is one.
    pub fn content_md5(&self) -> Option<&ETag> {
        self.etag
            .as_ref()
            .filter(|e| e.is_md5() && self.etag_is_content_hash())
    }
}

/// What a HEAD of the target key tells.
#[derive(Debug, Clone)]
pub struct TargetObject {
    pub size: u64,
    pub etag: Option<ETag>,
    /// The source ETag the copy recorded (`xpsync-source-etag`).
    pub recorded_source_etag: Option<ETag>,
    pub encryption: Encryption,
    pub description: Description,
}

impl TargetObject {
    pub fn from_head(head: &HeadObjectOutput) -> Self {
        Self {
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: ETag::parse(head.e_tag()),
            recorded_source_etag: recorded_source_etag(head),
            encryption: Encryption::from_headers(
                head.server_side_encryption(),
                head.sse_customer_algorithm(),
            ),
            description: description_from!(head),
        }
    }

    /// Whether it holds the source's version: the same size, and the same ETag or
    /// the source ETag recorded when it was copied.
    pub fn holds(&self, source: &SourceObject) -> bool {
        let Some(source_etag) = &source.etag else {
            return false;
        };
        self.size == source.size
            && (self.recorded_source_etag.as_ref() == Some(source_etag)
                || self.etag.as_ref() == Some(source_etag))
    }
}

/// The source ETag a target copy records having been made from, if any.
pub fn recorded_source_etag(head: &HeadObjectOutput) -> Option<ETag> {
    ETag::parse(
        head.metadata()
            .and_then(|m| m.get(SOURCE_ETAG_METADATA))
            .map(String::as_str),
    )
}
