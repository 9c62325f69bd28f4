//! Moving one object's bytes from the source to the target, verified.
//!
//! [`Copier::copy`] takes a [`SourceObject`] and writes it to a target key. One
//! function, [`Copier::way`], chooses how:
//!
//! - **streamed put** ([`put`]): an object up to `multipart_threshold`, stored in one
//!   part, whose ETag is the MD5 of its bytes and so the PUT's Content-MD5: the GET's
//!   body flows into the PutObject unbuffered, and S3 refuses any other version.
//! - **buffered put** ([`put`]): the same, where the ETag is no MD5 (SSE-KMS, SSE-C):
//!   read whole within the memory budget, hashed, sent with the MD5 computed.
//! - **multipart** ([`multipart`]): everything else. Parts flow from ranged GETs to
//!   UploadPart calls, at most `transfer.max_parts` at once across all objects (the
//!   `part_slots` semaphore) and at most `transfer.memory_limit` bytes buffered at
//!   once ([`budget::MemoryBudget`]). Nothing touches the local disk.
//!
//! The copy may be handed a GET already open ([`OpenGet`], from [`Copier::open`]): a
//! key a listing described is read without a HEAD, one round trip less.
//!
//! Every GET carries `If-Match` with the source ETag that described the object, so
//! bytes of two versions are never mixed: a 412 surfaces as
//! [`ErrorKind::PreconditionFailed`] and the caller starts over. (A listing without
//! ETags leaves one whole-object GET without `If-Match`: its own ETag header then
//! names the version of the bytes it returns.) A PUT or buffered part carries
//! Content-MD5; a streamed part ([`stream`]) is checked by its ETag, the MD5 of what
//! S3 stored. Before an object is committed (PutObject sent, or
//! CompleteMultipartUpload), its expected ETag is checked against the source's
//! wherever the two can be equal; after, the target's ETag is checked against the
//! expected one. A target object that fails the last check is deleted rather than
//! left claiming a version it does not hold.
//!
//! The source ETag is also written to the target's user metadata
//! (`xpsync-source-etag`): where the ETags cannot be equal (SSE-KMS, a re-cut) it
//! names the version the target holds. [`describe`] updates a description in place;
//! a fleet split ([`crate::fleet::Ledger`]) copies its ranges with these parts.

pub mod bandwidth;
pub mod budget;
mod complete;
mod describe;
mod integrity;
mod listing;
pub(crate) mod multipart;
pub(crate) mod part;
pub mod plan;
mod put;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::types::{ChecksumMode, ServerSideEncryption, StorageClass};
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;

use crate::aws::S3Side;
use crate::config::{Config, PartChecksum, TimeoutsConfig, TransferConfig};
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::object::{
    Description, Encryption, SourceObject, SOURCE_ETAG_METADATA, USER_METADATA_LIMIT,
};
use crate::retry;

pub use crate::metrics::Method;
pub use bandwidth::Bandwidth;
pub use budget::MemoryBudget;
pub(crate) use integrity::md5_of;
pub use plan::PartPlan;

/// What is written along with the bytes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Headers and user metadata; empty when metadata is not replicated.
    pub description: Description,
    /// Whether the description is replicated (`replicate.metadata`).
    pub copy_description: bool,
    /// Whether the source's ETag is recorded in the metadata (`xpsync-source-etag`);
    /// dropped only where it would not fit and the ETags will be equal anyway.
    pub skip_source_etag: bool,
    /// Copy the source's tags (read by the copy, only if the object has any).
    pub copy_tags: bool,
    pub storage_class: Option<StorageClass>,
    pub sse: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
}

impl WriteOptions {
    /// Whether the target's ETags will be MD5s of what was sent, as far as the
    /// request decides (a bucket's default encryption may still make them opaque).
    fn target_etag_is_md5(&self) -> bool {
        !matches!(
            self.sse,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        )
    }
}

/// A verified copy.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The target's ETag.
    pub etag: ETag,
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

impl retry::Kind for TransferError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransferError::S3(e) => e.kind,
            TransferError::ShortRead { .. } | TransferError::Verification(_) => {
                ErrorKind::Transient
            }
            TransferError::Unsupported(_) => ErrorKind::Permanent,
        }
    }
}

impl TransferError {
    pub fn kind(&self) -> ErrorKind {
        retry::Kind::kind(self)
    }

    /// One object's final verdict ([`S3Error::is_verdict`]), or what xpsync cannot
    /// copy: no retry would do better.
    pub fn is_verdict(&self) -> bool {
        match self {
            TransferError::S3(e) => e.is_verdict(),
            e => e.kind() == ErrorKind::Permanent,
        }
    }
}

/// How an object is written: chosen by [`Copier::way`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    StreamedPut,
    BufferedPut,
    Multipart,
}

/// A GET of a whole source object, sent and answered, its body not yet read; with
/// the memory window its body will stream through.
pub struct OpenGet {
    output: GetObjectOutput,
    window: budget::Reservation,
}

/// Copies objects from one side to the other within shared concurrency and memory
/// limits. Cheap to clone; clones share the limits.
#[derive(Clone, Debug)]
pub struct Copier {
    source: S3Side,
    target: S3Side,
    settings: TransferConfig,
    /// The additional checksum of every part (`target.checksum`).
    checksum: PartChecksum,
    /// Bytes buffered by all part transfers together (`transfer.memory_limit`).
    budget: MemoryBudget,
    /// Part transfers at once, all objects together (`transfer.max_parts`).
    part_slots: Arc<Semaphore>,
    /// Source bytes read a second, all copies together (`transfer.max_bandwidth`).
    pub(crate) bandwidth: Bandwidth,
    /// How long a request may go unanswered (`[timeouts]`).
    timeouts: TimeoutsConfig,
    /// Set once the target has answered a write as encrypted with KMS (a bucket's
    /// default encryption): its ETags are opaque from then on.
    target_kms_seen: Arc<AtomicBool>,
}

impl Copier {
    pub fn new(source: S3Side, target: S3Side, config: &Config) -> Self {
        Self {
            source,
            target,
            settings: config.transfer.clone(),
            checksum: config.target.checksum,
            budget: MemoryBudget::new(config.transfer.memory_limit.as_u64()),
            part_slots: Arc::new(Semaphore::new(config.transfer.max_parts)),
            bandwidth: Bandwidth::new(config.transfer.max_bandwidth.map(|b| b.as_u64())),
            target_kms_seen: Arc::new(AtomicBool::new(false)),
            timeouts: config.timeouts.clone(),
        }
    }

    /// A copier between other buckets (a route's), sharing this one's limits:
    /// parts, memory and bandwidth are the worker's, every route together.
    /// A route with a weight has a cap of its own, its share of the worker's.
    pub fn for_route(&self, source: S3Side, target: S3Side, config: &Config) -> Self {
        let bandwidth = match config.scope.own_bandwidth {
            true => Bandwidth::new(config.transfer.max_bandwidth.map(|b| b.as_u64())),
            false => self.bandwidth.clone(),
        };
        Self {
            source,
            target,
            bandwidth,
            checksum: config.target.checksum,
            target_kms_seen: Arc::new(AtomicBool::new(false)),
            ..self.clone()
        }
    }

    /// The timeouts of an upload of `length` bytes: its answer comes only once the
    /// whole body is sent, so its time to first byte grows with its length.
    pub(crate) fn upload_timeouts(&self, length: u64) -> aws_sdk_s3::config::Builder {
        let first_byte = self.timeouts.upload_first_byte(length);
        aws_sdk_s3::config::Builder::default()
            .timeout_config(self.timeouts.sdk_with_first_byte(first_byte))
    }

    /// The transfer settings (`[transfer]`).
    pub(crate) fn settings(&self) -> &TransferConfig {
        &self.settings
    }

    /// The target side: its client and bucket.
    pub(crate) fn target(&self) -> &S3Side {
        &self.target
    }

    /// Whether the target's ETags for a write with `options` are opaque, no MD5 of
    /// the bytes: SSE-KMS asked for, or seen as the bucket's default. Then parts are
    /// buffered and sent with Content-MD5, and copies are recognised by the source
    /// ETag recorded in their metadata.
    pub fn etags_opaque(&self, options: &WriteOptions) -> bool {
        !options.target_etag_is_md5() || self.opaque_seen()
    }

    /// Whether the target has answered a write as encrypted with KMS (a bucket's
    /// default encryption), whatever was asked.
    pub(crate) fn opaque_seen(&self) -> bool {
        self.target_kms_seen.load(Ordering::Relaxed)
    }

    /// Reads the encryption a target response reports; true (and remembered) when
    /// it makes the ETags opaque.
    pub(crate) fn saw_target_encryption(&self, sse: Option<&ServerSideEncryption>) -> bool {
        let opaque = !Encryption::from_headers(sse, None).etag_is_md5();
        if opaque && !self.target_kms_seen.swap(true, Ordering::Relaxed) {
            tracing::info!("the target encrypts with KMS: its ETags are opaque, so parts are sent with Content-MD5 and checked by it");
        }
        opaque
    }

    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// How `source` is written.
    fn way(&self, source: &SourceObject) -> Way {
        let one_part = source.part_count().is_none();
        if source.size == 0
            || (one_part && source.size <= self.settings.multipart_threshold.as_u64())
        {
            if source.size > 0 && source.content_md5().is_some() {
                Way::StreamedPut
            } else if self.budget.fits(source.size) {
                Way::BufferedPut
            } else {
                // Held whole it would not fit the budget: in parts, it does.
                Way::Multipart
            }
        } else {
            Way::Multipart
        }
    }

    /// Whether an object a listing (or an event) describes may be read by one GET,
    /// opened before anything else is known of it ([`Copier::open`]): within the
    /// threshold, and stored in one part if the listing gave an ETag at all.
    pub fn may_open(&self, listed: &SourceObject) -> bool {
        listed.size > 0
            && listed.size <= self.settings.multipart_threshold.as_u64()
            && listed.etag.as_ref().is_none_or(ETag::is_md5)
    }

    /// GETs the whole object `source` describes, `If-Match` its ETag when known,
    /// and completes `source` from the response's headers. `Ok(None)`: the key is
    /// gone. [`ErrorKind::PreconditionFailed`]: it no longer is as described.
    pub async fn open(&self, source: &mut SourceObject) -> Result<Option<OpenGet>, TransferError> {
        let window = self
            .budget
            .reserve(source.size.min(stream::STREAM_WINDOW))
            .await;
        let output = match self.get(source, None).await {
            Ok(output) => output,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let described = source.clone();
        source.learn_from_get(&output);
        let Some(etag) = &source.etag else {
            return Err(TransferError::Unsupported(
                "the source names no ETag for the object: a copy could not be verified".into(),
            ));
        };
        let changed = described.etag.as_ref().is_some_and(|listed| listed != etag);
        if source.size != described.size || changed {
            // A server that ignores If-Match still names what it sent.
            return Err(S3Error::new(
                self.source.side,
                "GetObject",
                ErrorKind::PreconditionFailed,
                format!(
                    "described as {} bytes with ETag {:?}, now {} bytes with ETag {etag}",
                    described.size, described.etag, source.size
                ),
            )
            .into());
        }
        Ok(Some(OpenGet { output, window }))
    }

    /// Writes `source` to `target_key`, verified; `open` is a GET of it already
    /// answered ([`Copier::open`]), used where the chosen way reads it whole.
    pub async fn copy(
        &self,
        source: &SourceObject,
        target_key: &str,
        options: &WriteOptions,
        open: Option<OpenGet>,
    ) -> Result<Copied, TransferError> {
        if source.etag.is_none() {
            return Err(TransferError::Unsupported(
                "the source names no ETag for the object: a copy could not be verified".into(),
            ));
        }
        let way = self.way(source);
        let options = &self.fit_metadata(source, options, way)?;
        match way {
            Way::StreamedPut => put::streamed(self, source, target_key, options, open).await,
            Way::BufferedPut => put::buffered(self, source, target_key, options, open).await,
            // Parts are read by ranged GETs of their own.
            Way::Multipart => {
                // Its window is given back first: the parts reserve their own.
                drop(open);
                multipart::copy(self, source, target_key, options).await
            }
        }
    }

    /// Keeps the user metadata within S3's 2 KiB (keys and values, UTF-8 bytes)
    /// with `xpsync-source-etag` added: where it would not fit, the recorded ETag is
    /// left out if the target's ETag will equal the source's anyway, and otherwise
    /// the copy fails for good, saying why, rather than on every attempt.
    fn fit_metadata<'a>(
        &self,
        source: &SourceObject,
        options: &'a WriteOptions,
        way: Way,
    ) -> Result<std::borrow::Cow<'a, WriteOptions>, TransferError> {
        let size: usize = (options.description.metadata.iter())
            .map(|(key, value)| key.len() + value.len())
            .sum();
        let recorded =
            SOURCE_ETAG_METADATA.len() + source.etag.as_ref().map_or(0, |e| e.as_str().len());
        if size + recorded <= USER_METADATA_LIMIT {
            return Ok(std::borrow::Cow::Borrowed(options));
        }
        let etags_equal =
            way != Way::Multipart && source.content_md5().is_some() && !self.etags_opaque(options);
        if etags_equal {
            let mut options = options.clone();
            options.skip_source_etag = true;
            return Ok(std::borrow::Cow::Owned(options));
        }
        Err(TransferError::Unsupported(format!(
            "the object's user metadata takes {size} bytes, and with {SOURCE_ETAG_METADATA} ({recorded} bytes) \
             it would exceed S3's limit of {USER_METADATA_LIMIT}; the target's ETag cannot equal the source's \
             here (parts, or SSE-KMS), so without it the copy could not be recognised later"
        )))
    }

    /// Reads the first byte of `source`'s version: whether its bytes can be read at
    /// all, before a split sends the fleet after them.
    pub(crate) async fn probe_read(&self, source: &SourceObject) -> Result<(), S3Error> {
        self.get(source, Some(0..1)).await.map(drop)
    }

    /// GETs `range` (or the whole object) of the source version `source.etag`:
    /// `If-Match` makes S3 refuse (412) if the key now holds another version. An
    /// unknown ETag (a listing that gave none) sends no `If-Match`: only whole-object
    /// GETs do that, whose response's ETag names the version read.
    async fn get(
        &self,
        source: &SourceObject,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<GetObjectOutput, S3Error> {
        let request = self
            .source
            .client
            .get_object()
            .bucket(&self.source.bucket)
            .key(&source.key)
            .set_if_match(source.etag.as_ref().map(ETag::quoted))
            // A whole object's GET also says its additional checksum (and the SDK
            // checks the bytes against a full-object one).
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)));
        let request = self.source.sse_c_get(source.sse_c(), request).await;
        self.source.observe("GetObject", request.send().await)
    }

    /// Reads a GET's body whole, checking its length against `expected`.
    async fn collect(
        &self,
        output: GetObjectOutput,
        expected: u64,
        part: usize,
    ) -> Result<Bytes, TransferError> {
        // One buffer of the size reserved: collecting the chunks and joining them
        // would briefly hold the bytes twice.
        let mut buffer = BytesMut::with_capacity(expected as usize);
        let mut body = output.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                S3Error::new(
                    self.source.side,
                    "GetObject",
                    ErrorKind::Transient,
                    format!("reading the body: {e}"),
                )
            })?;
            self.bandwidth.take(chunk.len()).await;
            if (buffer.len() + chunk.len()) as u64 > expected {
                return Err(TransferError::ShortRead {
                    part,
                    got: (buffer.len() + chunk.len()) as u64,
                    expected,
                });
            }
            buffer.extend_from_slice(&chunk);
        }
        if buffer.len() as u64 != expected {
            return Err(TransferError::ShortRead {
                part,
                got: buffer.len() as u64,
                expected,
            });
        }
        Ok(buffer.freeze())
    }

    /// The source's tags, URL-encoded as the `x-amz-tagging` header wants; None if
    /// there are none or they are not copied. A tag count of 0 (`tag_count`, what a
    /// GET just said, else what `source` knows) reads nothing.
    async fn source_tags(
        &self,
        source: &SourceObject,
        options: &WriteOptions,
        tag_count: Option<u32>,
    ) -> Result<Option<String>, S3Error> {
        if !options.copy_tags || tag_count.or(source.tag_count) == Some(0) {
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

    /// Checks a freshly written target object: its ETag (returned) must be
    /// `expected`, unless KMS made it opaque. One that fails is deleted.
    pub(crate) async fn check_written(
        &self,
        target_key: &str,
        etag: Option<&str>,
        sse: Option<&ServerSideEncryption>,
        options: &WriteOptions,
        expected: Option<&ETag>,
    ) -> Result<ETag, TransferError> {
        let etag = ETag::new(etag.unwrap_or_default());
        let opaque = self.saw_target_encryption(sse) || !options.target_etag_is_md5();
        match expected {
            Some(expected) if !opaque && &etag != expected => {
                self.discard(target_key).await;
                Err(TransferError::Verification(format!(
                    "the target stored ETag {etag}, but the bytes sent make {expected}"
                )))
            }
            _ => Ok(etag),
        }
    }
}

/// Sets the [`WriteOptions`] on a PutObject or CreateMultipartUpload request: the
/// two builders share these setters but no trait.
macro_rules! with_write_options {
    ($request:expr, $options:expr, $source_etag:expr, $tagging:expr) => {{
        let o = $options;
        let d = &o.description;
        let mut metadata = d.metadata.clone();
        if let (Some(etag), false) = ($source_etag, o.skip_source_etag) {
            metadata.insert(
                $crate::object::SOURCE_ETAG_METADATA.to_owned(),
                etag.as_str().to_owned(),
            );
        }
        $request
            .set_metadata(Some(metadata))
            .set_content_type(d.content_type.clone())
            .set_content_encoding(d.content_encoding.clone())
            .set_content_language(d.content_language.clone())
            .set_content_disposition(d.content_disposition.clone())
            .set_cache_control(d.cache_control.clone())
            .set_expires(d.expires)
            .set_website_redirect_location(d.website_redirect_location.clone())
            .set_tagging($tagging)
            .set_storage_class(o.storage_class.clone())
            .set_server_side_encryption(o.sse.clone())
            .set_ssekms_key_id(o.sse_kms_key_id.clone())
    }};
}
use with_write_options;
