//! The put method: one GET, one PutObject with Content-MD5.

use aws_sdk_s3::primitives::ByteStream;

use super::plan::unquote;
use super::{
    md5_of, with_write_options, Copied, Copier, Method, SourceObject, TransferError, WriteOptions,
};
use crate::metrics;

pub(super) async fn copy(
    copier: &Copier,
    source: &SourceObject,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Copied, TransferError> {
    let _reservation = copier.budget.reserve(source.size).await;
    let (bytes, tag_count) = copier.get_bytes_and_tag_count(source, None, 1).await?;
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

    let length = bytes.len() as u64;
    let request = copier
        .target
        .client
        .put_object()
        .bucket(&copier.target.bucket)
        .key(target_key)
        .content_md5(content_md5)
        .content_length(length as i64)
        .body(ByteStream::from(bytes));
    // Content-MD5 guards the body; a SHA-256 payload signature would only cost CPU.
    let request = with_write_options!(request, options, &source.etag, tagging)
        .customize()
        .disable_payload_signing();
    let output = copier.target.observe("PutObject", request.send().await)?;
    metrics::BYTES_SENT.inc_by(length);

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
        bytes_sent: length,
        parts_reused: 0,
    })
}
