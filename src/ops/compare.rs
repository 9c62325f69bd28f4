//! The two sides compared key by key, from their listings alone, as a stream.
//!
//! `verify` reports what this finds; `backfill` acts on it. A key is the same on
//! both sides when the sizes match and the ETags match, or, where they cannot
//! (SSE-KMS, a re-cut layout), when the target's recorded source ETag does: that
//! costs one HEAD of the target key, and only for such keys.

use futures::{Stream, TryStreamExt};
use serde::Serialize;

use super::listing::{self, Entry, Pair};
use crate::aws::S3Side;
use crate::config::Config;
use crate::error::S3Error;
use crate::etag::ETag;
use crate::object::recorded_source_etag;

/// How a key stands between the sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The same object on both sides.
    Same,
    /// On the source, not on the target.
    Missing,
    /// On both, with different contents.
    Different,
    /// On the target, not on the source.
    Extra,
    /// Not replicated (`replicate.include_prefixes` / `exclude_prefixes`), on
    /// either side.
    Filtered,
    /// On both, but the HEAD that would tell failed (`error` says why).
    Unknown,
}

/// One key, compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub key: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<ETag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_etag: Option<ETag>,
    /// When the source object was last written (seconds since the epoch).
    #[serde(skip)]
    pub source_modified: Option<i64>,
    /// Why the comparison could not be made ([`Status::Unknown`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every key under `prefix` on either side, in key order, compared.
pub fn compare<'a>(
    source: &'a S3Side,
    target: &'a S3Side,
    config: &'a Config,
    prefix: &'a str,
) -> impl Stream<Item = Result<Comparison, S3Error>> + Send + 'a {
    let key_prefix = config.target.key_prefix.as_str();
    listing::merge(
        listing::list(source, "", prefix),
        listing::list(target, key_prefix, prefix),
    )
    .and_then(move |pair| async move {
        let mut error = None;
        let status = match &pair {
            Pair::SourceOnly(s) if !config.is_replicated(&s.key) => Status::Filtered,
            Pair::SourceOnly(_) => Status::Missing,
            Pair::TargetOnly(t) if !config.is_replicated(&t.key) => Status::Filtered,
            Pair::TargetOnly(_) => Status::Extra,
            Pair::Both(s, _) if !config.is_replicated(&s.key) => Status::Filtered,
            // One key's HEAD failing (deleted since it was listed, refused) is that
            // key's: the comparison goes on.
            Pair::Both(s, t) => match same(target, key_prefix, s, t).await {
                Ok(true) => Status::Same,
                Ok(false) => Status::Different,
                Err(e) if e.kind == crate::error::ErrorKind::NotFound => Status::Missing,
                Err(e) if e.kind.is_systemic() => return Err(e),
                Err(e) => {
                    error = Some(e.to_string());
                    Status::Unknown
                }
            },
        };
        let (s, t) = match pair {
            Pair::SourceOnly(s) => (Some(s), None),
            Pair::TargetOnly(t) => (None, Some(t)),
            Pair::Both(s, t) => (Some(s), Some(t)),
        };
        Ok(Comparison {
            key: s
                .as_ref()
                .or(t.as_ref())
                .map(|e| e.key.clone())
                .unwrap_or_default(),
            status,
            source_size: s.as_ref().map(|e| e.size),
            target_size: t.as_ref().map(|e| e.size),
            source_modified: s.as_ref().and_then(|e| e.modified),
            source_etag: s.and_then(|e| e.etag),
            target_etag: t.and_then(|e| e.etag),
            error,
        })
    })
}

async fn same(target: &S3Side, key_prefix: &str, s: &Entry, t: &Entry) -> Result<bool, S3Error> {
    if s.size != t.size {
        return Ok(false);
    }
    if s.etag == t.etag {
        return Ok(true);
    }
    let request = target
        .client
        .head_object()
        .bucket(&target.bucket)
        .key(format!("{key_prefix}{}", t.key));
    let head = target.observe("HeadObject", request.send().await)?;
    Ok(recorded_source_etag(&head) == s.etag)
}
