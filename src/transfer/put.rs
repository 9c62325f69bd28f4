//! The put method: one GET, one PutObject with Content-MD5.
//!
//! Where the source's ETag is the MD5 of its bytes (stored in one part, not under
//! SSE-KMS or SSE-C), that ETag *is* the Content-MD5: the GET's body then flows
//! straight into the PutObject, unbuffered and unhashed, and S3 refuses the upload
//! (BadDigest) unless what it received is exactly the source's version. Such a body
//! cannot be replayed, so a failed attempt is retried here by reading the object
//! again. Otherwise the object is read whole, hashed, checked against its ETag where
//! that is an MD5, and sent with the MD5 computed.
//!
//! [`copy_listed`] copies an object a listing has described (size and ETag) without
//! a HEAD: the GET's headers describe it instead, one round trip less per object.

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::plan::{is_md5, unquote};
use super::stream::STREAM_WINDOW;
use super::{
    md5_of, part_backoff, with_write_options, Copied, Copier, Method, SourceObject, TransferError,
    WriteOptions, PART_ATTEMPTS,
};
use crate::aws::{ErrorKind, S3Error};
use crate::metrics;

pub(super) async fn copy(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    if !streamable(source) {
        return buffered(copier, source, target_key, options).await;
    }
    let _reservation = copier.budget.reserve(source.size.min(STREAM_WINDOW)).await;
    retrying(&source.key, || async {
        let output = copier.get(source, None).await?;
        streamed(copier, source, output, target_key, options).await
    })
    .await
}

/// Runs `attempt` again, after a pause, while it fails for a passing reason, up to
/// [`PART_ATTEMPTS`] times: a streamed body cannot be replayed by the SDK.
async fn retrying<T, F, Fut>(key: &str, mut attempt: F) -> Result<T, TransferError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransferError>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(e) if e.kind() == ErrorKind::Transient && tried < PART_ATTEMPTS => {
                tracing::warn!(key, attempt = tried, error = %e, "copy failed; retrying");
                tokio::time::sleep(part_backoff(tried)).await;
                tried += 1;
            }
            result => return result,
        }
    }
}

/// Copies the object a listing showed as `size` bytes with ETag `etag` to
/// `target_key`, with the options `options` derives from it, sending no HEAD: the
/// GET carries `If-Match` with the listed ETag and its headers describe the
/// object. Only for objects [`listed_streamable`] accepts. `Ok(None)`: the key is
/// gone. A 412 means the object changed since it was listed.
///
/// A listing without ETags (some S3-compatible servers) gives `None`: the GET then
/// goes without `If-Match`, which one whole-object GET does not need (its ETag
/// header names the version of the very bytes it returns).
pub(super) async fn copy_listed(
    copier: &Copier,
    key: &str,
    size: u64,
    etag: Option<&str>,
    target_key: &str,
    options: &(dyn Fn(&SourceObject) -> WriteOptions + Sync),
) -> Result<Option<(SourceObject, Copied)>, TransferError> {
    // As S3 gives ETags, quoted: `If-Match` wants an entity tag.
    let quoted = etag.map(|etag| format!("\"{}\"", unquote(etag)));
    let listed = SourceObject {
        key: key.to_owned(),
        size,
        etag: quoted.clone().unwrap_or_default(),
        head: HeadObjectOutput::builder().set_e_tag(quoted).build(),
    };
    let read = retrying(key, || async {
        // Taken per attempt and dropped before any fallback, which reserves its own.
        let _window = copier.budget.reserve(size.min(STREAM_WINDOW)).await;
        let output = match copier.get(&listed, None).await {
            Ok(output) => output,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(ListedRead::Gone),
            Err(e) => return Err(e.into()),
        };
        let mut source = described(key, &output);
        if output.content_length().is_none() {
            source.size = size; // a chunked reply: the PUT's length then checks it
        }
        if source.etag.is_empty() {
            source.etag = listed.etag.clone();
        }
        if source.etag.is_empty() {
            return Err(TransferError::Unsupported(
                "the source names no ETag for the object: a copy could not be verified".into(),
            ));
        }
        let changed = etag.is_some_and(|etag| unquote(&source.etag) != unquote(etag));
        if source.size != size || changed {
            // A server that ignores If-Match still names what it sent.
            return Err(S3Error {
                side: copier.source.side,
                operation: "GetObject",
                kind: ErrorKind::PreconditionFailed,
                message: format!(
                    "listed as {size} bytes with ETag {}, now {} bytes with ETag {}",
                    listed.etag, source.size, source.etag
                ),
            }
            .into());
        }
        let options = options(&source);
        if !streamable(&source) {
            return Ok(ListedRead::General(Box::new((source, options))));
        }
        let copied = streamed(copier, &source, output, target_key, &options).await?;
        Ok(ListedRead::Copied(Box::new((source, copied))))
    })
    .await?;
    match read {
        ListedRead::Gone => Ok(None),
        ListedRead::Copied(copied) => Ok(Some(*copied)),
        // Its ETag is not an MD5 (SSE-KMS, SSE-C), or it is stored in parts (a
        // listing without ETags could not tell): the general path, which reads it
        // whole and hashes it, or keeps its parts and checks the composite ETag.
        ListedRead::General(general) => {
            let (source, options) = *general;
            let copied = copier.copy(&source, target_key, &options).await?;
            Ok(Some((source, copied)))
        }
    }
}

/// What the GET of a listed object found.
enum ListedRead {
    Gone,
    Copied(Box<(SourceObject, Copied)>),
    /// To be copied by [`Copier::copy`], as described by the GET.
    General(Box<(SourceObject, WriteOptions)>),
}

/// Whether a listing's size and ETag are enough to copy an object by the put
/// method without a HEAD: within the threshold, and one part (an MD5-like ETag)
/// if the listing gave an ETag at all.
pub(super) fn listed_streamable(size: u64, etag: Option<&str>, threshold: u64) -> bool {
    size > 0 && size <= threshold && etag.is_none_or(is_md5)
}

/// Whether the source's ETag is the MD5 of its bytes, usable as Content-MD5.
fn streamable(source: &SourceObject) -> bool {
    source.size > 0 && source.etag_is_content_hash() && is_md5(&source.etag)
}

/// The object as a GET's headers describe it.
fn described(key: &str, get: &GetObjectOutput) -> SourceObject {
    let head = HeadObjectOutput::builder()
        .set_content_length(get.content_length())
        .set_e_tag(get.e_tag().map(str::to_owned))
        .set_metadata(get.metadata().cloned())
        .set_content_type(get.content_type().map(str::to_owned))
        .set_content_encoding(get.content_encoding().map(str::to_owned))
        .set_content_language(get.content_language().map(str::to_owned))
        .set_content_disposition(get.content_disposition().map(str::to_owned))
        .set_cache_control(get.cache_control().map(str::to_owned))
        .set_expires_string(get.expires_string().map(str::to_owned))
        .set_server_side_encryption(get.server_side_encryption().cloned())
        .set_sse_customer_algorithm(get.sse_customer_algorithm().map(str::to_owned))
        .set_storage_class(get.storage_class().cloned())
        .build();
    SourceObject::new(key, head)
}

/// Sends the GET's body on into a PutObject whose Content-MD5 is the source's
/// ETag, then checks the target's ETag.
async fn streamed(
    copier: &Copier,
    source: &SourceObject,
    get: GetObjectOutput,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let etag = unquote(&source.etag);
    // A server that ignores If-Match still names the version it sent.
    if let Some(sent) = get.e_tag().filter(|sent| unquote(sent) != etag) {
        return Err(S3Error {
            side: copier.source.side,
            operation: "GetObject",
            kind: ErrorKind::PreconditionFailed,
            message: format!("asked for ETag {etag}, got {sent}"),
        }
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
    let tagging = copier
        .source_tags(source, options, Some(get.tag_count()))
        .await?;
    let content_md5 = {
        use base64::Engine as _;
        let digest = hex::decode(etag).expect("is_md5 checked the ETag is hex");
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    // S3 refuses the body (BadDigest, a passing failure) unless it is the source's.
    send(
        copier,
        source,
        target_key,
        options,
        tagging,
        (content_md5, etag.to_owned()),
        get.body,
    )
    .await
}

/// Reads the object whole, then sends it as [`put_bytes`] does.
async fn buffered(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let _reservation = copier.budget.reserve(source.size).await;
    let (bytes, tag_count) = copier.get_bytes_and_tag_count(source, None, 1).await?;
    put_bytes(copier, source, bytes, tag_count, target_key, options).await
}

/// Hashes the object's bytes, checks them against its ETag where that is an MD5,
/// and sends them with the MD5 computed.
async fn put_bytes(
    copier: &Copier,
    source: &SourceObject,
    bytes: Bytes,
    tag_count: Option<i32>,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    if bytes.len() as u64 != source.size {
        return Err(TransferError::ShortRead {
            part: 1,
            got: bytes.len() as u64,
            expected: source.size,
        });
    }
    let tagging = copier.source_tags(source, options, Some(tag_count)).await?;
    let (content_md5, md5_hex) = md5_of(&bytes);
    if source.etag_is_content_hash()
        && source.multipart_count().is_none()
        && unquote(&source.etag) != md5_hex
    {
        return Err(TransferError::Verification(format!(
            "the source's bytes have MD5 {md5_hex}, but its ETag is {}",
            source.etag
        )));
    }

    send(
        copier,
        source,
        target_key,
        options,
        tagging,
        (content_md5, md5_hex),
        ByteStream::from(bytes),
    )
    .await
}

/// Sends the PutObject of `body` (the object's `source.size` bytes) with its
/// Content-MD5, then checks the target's ETag against the expected one (`md5`:
/// base64 for the header, hex for the ETag).
async fn send(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
    tagging: Option<String>,
    (content_md5, md5_hex): (String, String),
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
    // Content-MD5 guards the body; a SHA-256 payload signature would only cost CPU.
    let request = with_write_options!(request, options, &source.etag, tagging)
        .customize()
        .disable_payload_signing();
    let output = copier.target.observe("PutObject", request.send().await)?;
    metrics::BYTES_SENT.inc_by(source.size);
    let etag = copier
        .check_written(
            target_key,
            output.e_tag(),
            output.server_side_encryption(),
            options,
            Some(&md5_hex),
        )
        .await?;
    Ok(Copied {
        etag,
        method: Method::Put,
        bytes_sent: source.size,
        parts_reused: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::listed_streamable;

    #[test]
    fn only_small_single_part_objects_are_copied_from_a_listing() {
        let md5 = "\"9e107d9d372bb6826bd81d3542a419d6\"";
        assert!(listed_streamable(1, Some(md5), 64));
        assert!(listed_streamable(64, Some(md5), 64));
        assert!(!listed_streamable(65, Some(md5), 64), "above the threshold");
        assert!(
            !listed_streamable(0, Some(md5), 64),
            "empty: nothing to stream"
        );
        assert!(
            !listed_streamable(10, Some("\"9e107d9d372bb6826bd81d3542a419d6-2\""), 64),
            "stored in parts"
        );
        assert!(listed_streamable(10, None, 64), "a listing without ETags");
    }
}
