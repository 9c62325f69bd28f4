//! `xpsync verify`: list both sides and report keys missing, extra, or different.
//!
//! A key is the same on both sides when the sizes match and the ETags match, or,
//! where they cannot (SSE-KMS, a re-cut layout), when the target's recorded source
//! ETag does: that needs one HEAD of the target key, and only for such keys.

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::listing::{self, Entry, Pair};
use crate::aws::{S3Error, S3Side};
use crate::config::Config;
use crate::reconcile::recorded_source_etag;

/// How a key differs between the sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// On the source, not on the target.
    Missing,
    /// On both, with different contents.
    Different,
    /// On the target, not on the source.
    Extra,
}

/// One differing key, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub key: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_etag: Option<String>,
}

/// Counts over the whole comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub source_keys: u64,
    pub target_keys: u64,
    pub same: u64,
    pub missing: u64,
    pub different: u64,
    pub extra: u64,
}

impl Summary {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.different == 0 && self.extra == 0
    }
}

/// Compares the sides under `prefix`, handing each difference to `report` as it is found.
pub async fn verify(
    source: &S3Side,
    target: &S3Side,
    config: &Config,
    prefix: &str,
    mut report: impl FnMut(&Difference),
) -> Result<Summary, S3Error> {
    let key_prefix = config.target.key_prefix.as_str();
    let pairs = listing::merge(
        listing::list(source, "", prefix),
        listing::list(target, key_prefix, prefix),
    );
    let mut pairs = pairs.into_stream().boxed();
    let mut summary = Summary::default();
    while let Some(pair) = pairs.try_next().await? {
        let difference = match pair {
            Pair::SourceOnly(s) => {
                summary.source_keys += 1;
                if !config.is_replicated(&s.key) {
                    continue;
                }
                summary.missing += 1;
                difference(Status::Missing, Some(s), None)
            }
            Pair::TargetOnly(t) => {
                summary.target_keys += 1;
                summary.extra += 1;
                difference(Status::Extra, None, Some(t))
            }
            Pair::Both(s, t) => {
                summary.source_keys += 1;
                summary.target_keys += 1;
                if same(target, key_prefix, &s, &t).await? {
                    summary.same += 1;
                    continue;
                }
                summary.different += 1;
                difference(Status::Different, Some(s), Some(t))
            }
        };
        report(&difference);
    }
    Ok(summary)
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
    Ok(recorded_source_etag(&head) == Some(s.etag.as_str()))
}

fn difference(status: Status, s: Option<Entry>, t: Option<Entry>) -> Difference {
    let key = s
        .as_ref()
        .or(t.as_ref())
        .map(|e| e.key.clone())
        .unwrap_or_default();
    Difference {
        key,
        status,
        source_size: s.as_ref().map(|e| e.size),
        target_size: t.as_ref().map(|e| e.size),
        source_etag: s.map(|e| e.etag),
        target_etag: t.map(|e| e.etag),
    }
}
