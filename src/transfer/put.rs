//! The put method: one GET, one PutObject with Content-MD5.
//!
//! [`streamed`]: where the source's ETag is the MD5 of its bytes (stored in one part,
//! not under SSE-KMS or SSE-C), that ETag *is* the Content-MD5: the GET's body flows
//! straight into the PutObject, unbuffered and unhashed, and S3 refuses the upload
//! (BadDigest) unless what it received is exactly the source's version. Such a body
//! cannot be replayed, so a failed attempt is retried here by reading the object
//! again.
//!
//! [`buffered`]: otherwise the object is read whole, hashed, checked against its
//! ETag where that is an MD5, and sent with the MD5 computed.

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::stream::{self, STREAM_WINDOW};
use super::{
    md5_of, with_write_options, Copied, Copier, Method, OpenGet, TransferError, WriteOptions,
};
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::metrics;
use crate::object::SourceObject;
use crate::retry::Policy;
use crate::set_checksum;

/// Streams the object from its GET (`open`, or one sent here) into a PutObject
/// whose Content-MD5 is the source's ETag.
pub(super) async fn streamed(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    open: Option<OpenGet>,
) -> Result<Copied, TransferError> {
    let etag = source
        .content_md5()
        .expect("streamed only where the ETag is the MD5");
    let (mut first, _window) = match open {
        Some(open) => (Some(open.output), open.window),
        None => (
            None,
            copier.budget.reserve(source.size.min(STREAM_WINDOW)).await,
        ),
    };
    Policy::PART
        .run(&source.key, || {
            let opened = first.take();
            async move {
                let get = match opened {
                    Some(get) => get,
                    None => copier.get(source, None).await?,
                };
                stream_into_put(copier, source, etag, get, target_key, options).await
            }
        })
        .await
}

/// Sends the GET's body on into a PutObject whose Content-MD5 is `etag`, then
/// checks the target's ETag.
async fn stream_into_put(
    copier: &Copier,
    source: &SourceObject,
    etag: &ETag,
    get: GetObjectOutput,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    // A server that ignores If-Match still names the version it sent.
    if let Some(sent) = ETag::parse(get.e_tag()).filter(|sent| sent != etag) {
        return Err(S3Error::new(
            copier.source.side,
            "GetObject",
            ErrorKind::PreconditionFailed,
            format!("asked for ETag {etag}, got {sent}"),
        )
        .into());
    }
    // Without a Content-Length (a chunked reply) the PUT's length checks the body.
    if let Some(length) = get.content_length().filter(|&l| l != source.size as i64) {
        return Err(TransferError::ShortRead {
            part: 1,
            got: length.max(0) as u64,
            expected: source.size,
        });
    }
    let tag_count = get.tag_count().map(|c| c.max(0) as u32).or(Some(0));
    let tagging = copier.source_tags(source, options, tag_count).await?;
    let content_md5 = etag.content_md5().expect("an MD5 ETag");
    // Under `transfer.max_bandwidth` the body goes through the cap, a chunk at a time.
    let body = match copier.bandwidth.capped() {
        true => stream::tee(get.body, source.size, copier.bandwidth.clone()).0,
        false => get.body,
    };
    // S3 refuses the body (BadDigest, a passing failure) unless it is the source's.
    send(
        copier,
        source,
        target_key,
        options,
        tagging,
        (content_md5, etag.clone()),
        body,
    )
    .await
}

/// Reads the object whole (from `open`, or a GET sent here) within the memory
/// budget, hashes it, checks it against its ETag where that is an MD5, and sends it
/// with the MD5 computed.
pub(super) async fn buffered(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    open: Option<OpenGet>,
) -> Result<Copied, TransferError> {
    // The open GET's window is given back before the whole object is waited for:
    // holding one part of the budget while waiting for more could deadlock it.
    let opened = open.map(|open| open.output);
    let _reservation = copier.budget.reserve(source.size).await;
    let get = match opened {
        Some(get) => get,
        None => copier.get(source, None).await?,
    };
    let tag_count = get.tag_count().map(|c| c.max(0) as u32).or(Some(0));
    let bytes = copier.collect(get, source.size, 1).await?;
    put_bytes(copier, source, bytes, tag_count, target_key, options).await
}

async fn put_bytes(
    copier: &Copier,
    source: &SourceObject,
    bytes: Bytes,
    tag_count: Option<u32>,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let tagging = copier.source_tags(source, options, tag_count).await?;
    let (content_md5, md5) = md5_of(&bytes);
    if let Some(etag) = source.content_md5().filter(|etag| **etag != md5) {
        return Err(TransferError::Verification(format!(
            "the source's bytes have MD5 {md5}, but its ETag is {etag}"
        )));
    }
    send(
        copier,
        source,
        target_key,
        options,
        tagging,
        (content_md5, md5),
        ByteStream::from(bytes),
    )
    .await
}

/// Sends the PutObject of `body` (the object's `source.size` bytes) with its
/// Content-MD5 and the source's full-object checksum, then checks the target's ETag
/// against the expected one.
async fn send(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    tagging: Option<String>,
    (content_md5, expected): (String, ETag),
    body: ByteStream,
) -> Result<Copied, TransferError> {
    let request = copier
        .target
        .client
        .put_object()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .content_md5(content_md5)
        .content_length(source.size as i64)
        .body(body);
    // The source's full-object checksum goes along: S3 checks the bytes against it,
    // and the copy keeps it ([`crate::checksum`]).
    let request = set_checksum!(request, copier.put_checksum(source));
    // Content-MD5 guards the body; a SHA-256 payload signature would only cost CPU.
    let request = with_write_options!(request, options, source.etag.as_ref(), tagging)
        .customize()
        .disable_payload_signing()
        .config_override(copier.upload_timeouts(source.size));
    let output = copier.target.observe("PutObject", request.send().await)?;
    metrics::BYTES_SENT.inc_by(source.size);
    let etag = copier
        .check_written(
            target_key,
            output.e_tag(),
            output.server_side_encryption(),
            options,
            Some(&expected),
        )
        .await?;
    Ok(Copied {
        etag,
        method: Method::Put,
        bytes_sent: source.size,
        parts_reused: 0,
    })
}
