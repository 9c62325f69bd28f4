//! Moving one object's bytes from the source to the target, verified.
//!
//! [`Copier::copy`] takes a source object as HEAD described it and writes it to a
//! target key, by one of two methods:
//!
//! - **put** ([`put`]): objects up to `multipart_threshold` that the source stored in
//!   one part: one GET, one PutObject with Content-MD5. Where the source's ETag is
//!   the MD5 of its bytes, it is the Content-MD5, and the GET's body streams straight
//!   into the PUT, neither buffered nor hashed here.
//! - **multipart** ([`multipart`]): everything else. Parts flow from ranged GETs to
//!   UploadPart calls, at most `transfer.max_parts` at once across all objects (the
//!   `part_slots` semaphore) and at most `transfer.memory_limit` bytes buffered at
//!   once ([`budget::MemoryBudget`]). Nothing touches the local disk.
//!
//! Every GET carries `If-Match` with the source ETag HEAD (or a listing) saw, so
//! bytes of two versions are never mixed: a 412 surfaces as
//! [`ErrorKind::PreconditionFailed`] and the caller starts over. (A listing without
//! ETags leaves one whole-object GET without `If-Match`: its own ETag header then
//! names the version of the bytes it returns.) A PUT or buffered part carries Content-MD5; a streamed part
//! ([`stream`]) is checked by its ETag, the MD5 of what S3 stored. Before an object is
//! committed (PutObject sent, or CompleteMultipartUpload), its expected ETag is
//! checked against the source's wherever the two can be equal; after, the target's
//! ETag is checked against the expected one (the source's for a streamed PUT, else
//! the one computed locally). A target object that fails the
//! last check is deleted rather than left claiming a version it does not hold.
//!
//! The source ETag is also written to the target's user metadata
//! (`xpsync-source-etag`), so that where the two ETags cannot be equal (SSE-KMS, a
//! re-cut layout) a later reconcile still knows which version the target holds.

pub mod budget;
mod multipart;
pub mod plan;
mod put;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::aws::{ErrorKind, S3Error, S3Side};
use crate::config::{Config, TransferConfig};

pub use budget::MemoryBudget;
pub use plan::PartPlan;

/// The user-metadata key holding the source ETag a target copy was made from.
pub const SOURCE_ETAG_METADATA: &str = "xpsync-source-etag";

/// How many times one part's GET + upload is tried before the copy fails.
const PART_ATTEMPTS: u32 = 4;

/// A source object as HEAD described it.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    /// As S3 gives it, with quotes.
    pub etag: String,
    pub head: HeadObjectOutput,
}

impl SourceObject {
    pub fn new(key: &str, head: HeadObjectOutput) -> Self {
        Self {
            key: key.to_owned(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head.e_tag().unwrap_or_default().to_owned(),
            head,
        }
    }

    /// Whether the source ETag is derived from the bytes (MD5 or composite MD5):
    /// not for SSE-KMS or SSE-C objects.
    pub fn etag_is_content_hash(&self) -> bool {
        let kms = matches!(
            self.head.server_side_encryption(),
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        );
        !kms && self.head.sse_customer_algorithm().is_none()
    }

    /// Part count if the source stored the object in parts.
    pub fn multipart_count(&self) -> Option<u32> {
        plan::multipart_count(&self.etag)
    }
}

/// What is written along with the bytes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<DateTime>,
    /// Copy the source's tags (read by the copy, only if the object has any).
    pub copy_tags: bool,
    pub storage_class: Option<StorageClass>,
    pub sse: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
}

impl WriteOptions {
    /// Whether the target's ETags will be MD5s of what was sent.
    fn target_etag_is_md5(&self) -> bool {
        !matches!(
            self.sse,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        )
    }
}

/// How an object was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Put,
    Multipart,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Put => "put",
            Method::Multipart => "multipart",
        }
    }
}

/// A verified copy.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The target's ETag, unquoted.
    pub etag: String,
    pub method: Method,
    /// Bytes uploaded by this copy (less than the size when parts were resumed).
    pub bytes_sent: u64,
    pub parts_reused: usize,
}

/// A copy failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("source returned {got} bytes for part {part}, expected {expected}")]
    ShortRead {
        part: usize,
        got: u64,
        expected: u64,
    },
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("{0}")]
    Unsupported(String),
}

impl TransferError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransferError::S3(e) => e.kind,
            TransferError::ShortRead { .. } | TransferError::Verification(_) => {
                ErrorKind::Transient
            }
            TransferError::Unsupported(_) => ErrorKind::Permanent,
        }
    }
}

/// Copies objects from one side to the other within shared concurrency and memory
/// limits. Cheap to clone; clones share the limits.
#[derive(Clone, Debug)]
pub struct Copier {
    source: S3Side,
    target: S3Side,
    settings: TransferConfig,
    /// Bytes buffered by all part transfers together (`transfer.memory_limit`).
    budget: MemoryBudget,
    /// Part transfers at once across all objects (`transfer.max_parts`); taken
    /// before a part's GET is sent.
    part_slots: Arc<Semaphore>,
}

impl Copier {
    pub fn new(source: S3Side, target: S3Side, config: &Config) -> Self {
        Self {
            source,
            target,
            settings: config.transfer.clone(),
            budget: MemoryBudget::new(config.transfer.memory_limit.as_u64()),
            part_slots: Arc::new(Semaphore::new(config.transfer.max_parts)),
        }
    }

    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Writes `source` to `target_key`, verified.
    pub async fn copy(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
    ) -> Result<Copied, TransferError> {
        let single_part = source.multipart_count().is_none();
        if source.size == 0
            || (single_part && source.size <= self.settings.multipart_threshold.as_u64())
        {
            put::copy(self, source, target_key, options).await
        } else {
            multipart::copy(self, source, target_key, options).await
        }
    }

    /// Whether [`Copier::copy_listed`] can copy an object a listing showed as `size`
    /// bytes with ETag `etag`: stored in one part, up to `multipart_threshold`.
    pub fn copies_listed(&self, size: u64, etag: Option<&str>) -> bool {
        put::listed_streamable(size, etag, self.settings.multipart_threshold.as_u64())
    }

    /// Copies an object known from a listing (see [`Copier::copies_listed`])
    /// without a HEAD: the GET, `If-Match` the listed ETag, describes the object,
    /// and `options` derives what to write from that. `Ok(None)`: the key is gone;
    /// [`ErrorKind::PreconditionFailed`]: it is no longer as listed.
    pub async fn copy_listed(
        &self,
        key: &str,
        size: u64,
        etag: Option<&str>,
        target_key: &str,
        options: &(dyn Fn(&SourceObject) -> WriteOptions + Sync),
    ) -> Result<Option<(SourceObject, Copied)>, TransferError> {
        put::copy_listed(self, key, size, etag, target_key, options).await
    }

    /// GETs `range` (or the whole object) of the source version `source.etag`,
    /// checking the length. Memory for it must already be reserved.
    async fn get_bytes(
        &self,
        source: &SourceObject,
        range: Option<std::ops::Range<u64>>,
        part: usize,
    ) -> Result<Bytes, TransferError> {
        Ok(self.get_bytes_and_tag_count(source, range, part).await?.0)
    }

    /// As [`Copier::get_bytes`], with the GET's `x-amz-tagging-count`.
    async fn get_bytes_and_tag_count(
        &self,
        source: &SourceObject,
        range: Option<std::ops::Range<u64>>,
        part: usize,
    ) -> Result<(Bytes, Option<i32>), TransferError> {
        let expected = range.as_ref().map(|r| r.end - r.start);
        let output = self.get(source, range).await?;
        self.collect(output, expected, part).await
    }

    /// Reads a GET's body whole, checking its length against `expected` (or the
    /// response's Content-Length); with the GET's `x-amz-tagging-count`.
    async fn collect(
        &self,
        output: aws_sdk_s3::operation::get_object::GetObjectOutput,
        expected: Option<u64>,
        part: usize,
    ) -> Result<(Bytes, Option<i32>), TransferError> {
        let expected =
            expected.unwrap_or_else(|| output.content_length().unwrap_or(0).max(0) as u64);
        let tag_count = output.tag_count();
        let body = output.body.collect().await.map_err(|e| S3Error {
            side: self.source.side,
            operation: "GetObject",
            kind: ErrorKind::Transient,
            message: format!("reading the body: {e}"),
        })?;
        let bytes = body.into_bytes();
        if bytes.len() as u64 != expected {
            return Err(TransferError::ShortRead {
                part,
                got: bytes.len() as u64,
                expected,
            });
        }
        Ok((bytes, tag_count))
    }
}

impl Copier {
    /// GETs `range` (or the whole object) of the source version `source.etag`:
    /// `If-Match` makes S3 refuse (412) if the key now holds another version. An
    /// empty ETag (a listing that gave none) sends no `If-Match`: only whole-object
    /// GETs do that, whose response's ETag names the version read.
    async fn get(
        &self,
        source: &SourceObject,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, S3Error> {
        let request = self
            .source
            .client
            .get_object()
            .bucket(&self.source.bucket)
            .key(&source.key)
            .set_if_match((!source.etag.is_empty()).then(|| source.etag.clone()))
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)));
        self.source.observe("GetObject", request.send().await)
    }

    /// The source's tags, URL-encoded as the `x-amz-tagging` header wants; None if
    /// there are none or they are not copied. `tag_count` is what a GET said
    /// (`x-amz-tagging-count`, absent when there are no tags); None reads them.
    async fn source_tags(
        &self,
        source: &SourceObject,
        options: &WriteOptions,
        tag_count: Option<Option<i32>>,
    ) -> Result<Option<String>, S3Error> {
        if !options.copy_tags || matches!(tag_count, Some(None | Some(0))) {
            return Ok(None);
        }
        let request = self
            .source
            .client
            .get_object_tagging()
            .bucket(&self.source.bucket)
            .key(&source.key);
        let output = self
            .source
            .observe("GetObjectTagging", request.send().await)?;
        if output.tag_set().is_empty() {
            return Ok(None);
        }
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        for tag in output.tag_set() {
            encoded.append_pair(tag.key(), tag.value());
        }
        Ok(Some(encoded.finish()))
    }

    /// Checks a freshly written target object: its ETag (unquoted, returned) must be
    /// `expected`, unless KMS made it opaque. One that fails is deleted.
    async fn check_written(
        &self,
        target_key: &str,
        etag: Option<&str>,
        sse: Option<&ServerSideEncryption>,
        options: &WriteOptions,
        expected: Option<&str>,
    ) -> Result<String, TransferError> {
        let etag = plan::unquote(etag.unwrap_or_default()).to_owned();
        let opaque = !options.target_etag_is_md5()
            || matches!(
                sse,
                Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
            );
        match expected {
            Some(expected) if !opaque && etag != expected => {
                self.discard(target_key).await;
                Err(TransferError::Verification(format!(
                    "the target stored ETag {etag}, but the bytes sent make {expected}"
                )))
            }
            _ => Ok(etag),
        }
    }

    /// Deletes a target object that failed verification, so that it does not
    /// claim a source version it does not hold. Best effort: failure is logged.
    async fn discard(&self, target_key: &str) {
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

/// Base64 of the MD5 of `bytes` (for Content-MD5) and its hex (the expected ETag).
fn md5_of(bytes: &[u8]) -> (String, String) {
    use base64::Engine as _;
    use md5::{Digest, Md5};
    let digest = Md5::digest(bytes);
    (
        base64::engine::general_purpose::STANDARD.encode(digest),
        hex::encode(digest),
    )
}

/// Backoff before retry `attempt` (1-based) of a part.
fn part_backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.saturating_sub(1)).min(16))
}

/// Sets the [`WriteOptions`] on a PutObject or CreateMultipartUpload request: the
/// two builders share these setters but no trait.
macro_rules! with_write_options {
    ($request:expr, $options:expr, $source_etag:expr, $tagging:expr) => {{
        let o = $options;
        let mut metadata = o.metadata.clone();
        metadata.insert(
            $crate::transfer::SOURCE_ETAG_METADATA.to_owned(),
            $crate::transfer::plan::unquote($source_etag).to_owned(),
        );
        $request
            .set_metadata(Some(metadata))
            .set_content_type(o.content_type.clone())
            .set_content_encoding(o.content_encoding.clone())
            .set_content_language(o.content_language.clone())
            .set_content_disposition(o.content_disposition.clone())
            .set_cache_control(o.cache_control.clone())
            .set_expires(o.expires)
            .set_tagging($tagging)
            .set_storage_class(o.storage_class.clone())
            .set_server_side_encryption(o.sse.clone())
            .set_ssekms_key_id(o.sse_kms_key_id.clone())
    }};
}
use with_write_options;
