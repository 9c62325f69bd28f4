//! SSE-C: the customer-provided key that reads a source object stored with one.
//!
//! S3 keeps no copy of an SSE-C object's key, so every GET and HEAD of such an object
//! must carry it (and no request for another object may). The key comes from the
//! source's credentials secret, field [`FIELD`]: the base64 of a 256-bit AES key.
//! An object is known to want it from S3's answer to a read without it: a GET's 400
//! `InvalidRequest` ("The object was stored using a form of Server Side Encryption.
//! The correct parameters must be provided to retrieve the object."), or a HEAD's
//! bodiless 400, which a one-byte GET then names. Without a key, such an object is
//! its own verdict ([`MISSING`]), dead-lettered once: no retry can read it.
//!
//! The copy on the target is not SSE-C: it takes the target's own encryption, as
//! every copy does. SSE-C ETags are no MD5s, so the copy is checked by the MD5 of
//! the bytes read and recorded by `xpsync-source-etag` (DESIGN §6).

use std::fmt;

use aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder;
use aws_sdk_s3::operation::head_object::builders::HeadObjectFluentBuilder;
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::config::Secret;
use crate::error::S3Error;

/// The secret's field holding the key.
pub const FIELD: &str = "sse_customer_key";

/// The verdict's name for an SSE-C object when no key is configured.
pub const MISSING: &str = "sse_c_key_missing";

/// A customer-provided key: the key itself (never printed) and its MD5, both base64.
#[derive(Clone)]
pub struct CustomerKey {
    key: Secret,
    md5: String,
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerKey")
            .field("md5", &self.md5)
            .finish_non_exhaustive()
    }
}

impl CustomerKey {
    /// From the secret's field: base64 of exactly 32 bytes. The error never quotes
    /// the value.
    pub fn parse(encoded: &str) -> Result<Self, String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let raw = engine.decode(encoded.trim()).map_err(|_| {
            format!("the secret's {FIELD} is not base64 (it must be the base64 of a 256-bit key)")
        })?;
        if raw.len() != 32 {
            return Err(format!(
                "the secret's {FIELD} decodes to {} bytes; SSE-C takes a 256-bit key (32 bytes)",
                raw.len()
            ));
        }
        Ok(Self {
            key: Secret::new(engine.encode(&raw)),
            md5: engine.encode(Md5::digest(&raw)),
        })
    }

    /// A GET carrying the key.
    pub fn get(&self, request: GetObjectFluentBuilder) -> GetObjectFluentBuilder {
        request
            .sse_customer_algorithm("AES256")
            .sse_customer_key(self.key.expose())
            .sse_customer_key_md5(&self.md5)
    }

    /// A HEAD carrying the key.
    pub fn head(&self, request: HeadObjectFluentBuilder) -> HeadObjectFluentBuilder {
        request
            .sse_customer_algorithm("AES256")
            .sse_customer_key(self.key.expose())
            .sse_customer_key_md5(&self.md5)
    }
}

impl super::S3Side {
    /// `request`, carrying this side's customer key where the object read is stored
    /// with SSE-C (`sse_c`).
    pub async fn sse_c_get(
        &self,
        sse_c: bool,
        request: GetObjectFluentBuilder,
    ) -> GetObjectFluentBuilder {
        if !sse_c {
            return request;
        }
        match self.customer_key().await {
            Some(key) => key.get(request),
            None => request,
        }
    }

    /// The same for a HEAD.
    pub async fn sse_c_head(
        &self,
        sse_c: bool,
        request: HeadObjectFluentBuilder,
    ) -> HeadObjectFluentBuilder {
        if !sse_c {
            return request;
        }
        match self.customer_key().await {
            Some(key) => key.head(request),
            None => request,
        }
    }
}

/// Whether S3 answered a GET as it answers one of an SSE-C object without its key.
pub fn wanted_by_get(e: &S3Error) -> bool {
    e.code.as_deref() == Some("InvalidRequest")
        && e.message.contains("Server Side Encryption")
        && e.message.contains("correct parameters")
}

/// Whether a HEAD was answered as S3 answers one of an SSE-C object without its
/// key: 400, no body to say more.
pub fn maybe_wanted_by_head(e: &S3Error) -> bool {
    e.status == Some(400) && e.code.is_none()
}

/// The verdict on an SSE-C object that no configured key can read: `why` is S3's
/// answer.
pub fn missing(why: S3Error) -> S3Error {
    S3Error {
        kind: crate::error::ErrorKind::Permanent,
        message: format!(
            "{MISSING}: the object is stored with a customer-provided key (SSE-C), and the \
             source's secret holds no {FIELD} to read it ({})",
            why.message
        ),
        ..why
    }
}

/// The key in a secret's JSON text ([`FIELD`]); None if it has none.
pub(super) fn from_secret(text: &str) -> Result<Option<CustomerKey>, String> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    match value.get(FIELD) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(encoded)) if encoded.is_empty() => Ok(None),
        Some(serde_json::Value::String(encoded)) => CustomerKey::parse(encoded).map(Some),
        Some(_) => Err(format!("the secret's {FIELD} is not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_32_bytes_of_base64_and_never_printed() {
        let engine = base64::engine::general_purpose::STANDARD;
        let encoded = engine.encode([7u8; 32]);
        let key = CustomerKey::parse(&encoded).unwrap();
        assert_eq!(key.md5, engine.encode(Md5::digest([7u8; 32])));
        assert!(!format!("{key:?}").contains(&encoded));

        let short = engine.encode([7u8; 16]);
        let err = CustomerKey::parse(&short).unwrap_err();
        assert!(err.contains("16 bytes") && !err.contains(&short), "{err}");
        assert!(CustomerKey::parse("not base64!")
            .unwrap_err()
            .contains("not base64"));
    }

    #[test]
    fn a_secret_may_hold_a_key_beside_the_credentials() {
        let engine = base64::engine::general_purpose::STANDARD;
        let encoded = engine.encode([1u8; 32]);
        let with =
            format!(r#"{{"access_key_id":"a","secret_access_key":"b","{FIELD}":"{encoded}"}}"#);
        assert!(from_secret(&with).unwrap().is_some());
        assert!(from_secret(r#"{"access_key_id":"a"}"#).unwrap().is_none());
        assert!(from_secret(&format!(r#"{{"{FIELD}":5}}"#)).is_err());
    }
}
