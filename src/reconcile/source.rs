//! HEADs of either side, and what a source HEAD must do for an object stored with a
//! customer-provided key (SSE-C, [`crate::aws::CustomerKey`]).
//!
//! S3 answers a HEAD of an SSE-C object without its key with a bodiless 400. The
//! HEAD is then sent again with the source's key, and the object is described as
//! SSE-C (its later GETs carry the key). Without a key, or with a key that is not
//! the object's, a one-byte GET names S3's refusal, and the key's verdict follows:
//! no retry can read it.

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::ChecksumMode;

use crate::aws::{self, CustomerKey, S3Side};
use crate::error::{ErrorKind, S3Error};
use crate::object::SourceObject;
use crate::transfer::TransferError;

/// Whether a GET was answered so that only a HEAD can tell what the object is: an
/// archived object (`InvalidObjectState`), or one stored with SSE-C read without
/// its key.
pub(super) fn answered_for_head(e: &TransferError) -> bool {
    matches!(e, TransferError::S3(e)
        if e.code.as_deref() == Some("InvalidObjectState") || aws::wanted_by_get(e))
}

/// HEAD the source `key`, described; None if it does not exist. An SSE-C object is
/// HEADed with the source's customer key.
pub(crate) async fn head_source(side: &S3Side, key: &str) -> Result<Option<SourceObject>, S3Error> {
    let plain = match head(side, key).await {
        Err(e) if aws::maybe_wanted_by_head(&e) => e,
        other => return Ok(other?.map(|head| SourceObject::from_head(key, &head))),
    };
    let Some(customer_key) = side.customer_key().await else {
        return Err(match one_byte_get(side, key, None).await {
            Some(named) if aws::wanted_by_get(&named) => aws::customer_key_missing(named),
            _ => plain,
        });
    };
    let request = side.client.head_object().bucket(&side.bucket).key(key);
    let request = customer_key.head(request.checksum_mode(ChecksumMode::Enabled));
    match side.observe("HeadObject", request.send().await) {
        Ok(head) => Ok(Some(SourceObject::from_head(key, &head))),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        // Refused with the key: named by a GET with it (the key is not this
        // object's: S3 says its MD5 does not match), the object's verdict.
        Err(e) if e.status == Some(403) => {
            Err(match one_byte_get(side, key, Some(&customer_key)).await {
                Some(named) if named.kind == ErrorKind::Denied => S3Error {
                    kind: ErrorKind::Permanent,
                    message: format!(
                        "the source's sse_customer_key does not read this SSE-C object ({})",
                        named.message
                    ),
                    ..named
                },
                _ => e,
            })
        }
        Err(e) => Err(e),
    }
}

/// A one-byte GET of `key`, to have S3 name a refusal its HEAD could not (a HEAD's
/// answer has no body); None if it passed.
async fn one_byte_get(side: &S3Side, key: &str, with: Option<&CustomerKey>) -> Option<S3Error> {
    let mut request = side
        .client
        .get_object()
        .bucket(&side.bucket)
        .key(key)
        .range("bytes=0-0");
    if let Some(customer_key) = with {
        request = customer_key.get(request);
    }
    side.observe("GetObject", request.send().await).err()
}

/// HEAD `key`; None if it does not exist.
pub(crate) async fn head(side: &S3Side, key: &str) -> Result<Option<HeadObjectOutput>, S3Error> {
    let request = side.client.head_object().bucket(&side.bucket).key(key);
    // The additional checksum too ([`crate::checksum`]): a HEAD has no bytes to check.
    let request = request.checksum_mode(ChecksumMode::Enabled);
    match side.observe("HeadObject", request.send().await) {
        Ok(head) => Ok(Some(head)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
