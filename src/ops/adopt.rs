//! `xpsync backfill --adopt` and `xpsync verify --deep`: recognising copies cut
//! with another part size, without moving their bytes across the border.
//!
//! A copy made by another tool (the Lambda stack this replaces, `aws s3 cp`) of a
//! multipart object has the same bytes as the source but another composite ETag,
//! because its parts have other sizes. Comparing ETags calls it different, and a
//! backfill would copy it across the border again. Instead, [`content_matches`]
//! reads the target's part layout (`HeadObject?partNumber=n`, target side), reads
//! the *source* along that layout (ranged GETs, `If-Match` its ETag, in the source's
//! own partition), hashes each range as it streams, and composes the ETag the target
//! should have. Equal: the copy holds the source's bytes. Adopting then records the
//! source's ETag (and description) on the target object by copying it onto itself
//! inside the target's partition.
//!
//! A target under SSE-KMS has an opaque ETag: nothing to compose against. Adopting
//! such copies needs `--trust-kms-size-and-time`, and then trusts an equal size and a
//! target written no earlier than the source.

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{json, Value};

use super::compare::{compare, Comparison, Status};
use super::Ops;
use crate::aws::S3Side;
use crate::error::S3Error;
use crate::etag::ETag;
use crate::object::{Encryption, TargetObject};
use crate::reconcile::Reconciler;

/// Part HEADs at once while reading a layout.
const LAYOUT_HEADS_AT_ONCE: usize = 16;

/// What a deep comparison found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "match", content = "reason")]
pub enum Match {
    /// The target holds the source's bytes.
    Same,
    /// It does not.
    Different,
    /// No answer from the bytes (an opaque ETag, a single-part target that differs).
    Unknowable(String),
}

/// Whether the target object `target_key` holds the bytes of the source object
/// `key` (ETag `source_etag`), by the target's own part layout.
pub async fn content_matches(
    source: &S3Side,
    target: &S3Side,
    key: &str,
    target_key: &str,
    source_etag: &ETag,
) -> Result<Match, S3Error> {
    let head = |number: Option<i32>| async move {
        let request = target
            .client
            .head_object()
            .bucket(&target.bucket)
            .key(target_key)
            .set_part_number(number);
        target.observe("HeadObject", request.send().await)
    };
    let whole = head(None).await?;
    let described = TargetObject::from_head(&whole);
    if described.encryption != Encryption::Plain {
        return Ok(Match::Unknowable(
            "the target's ETag is opaque (SSE-KMS or SSE-C)".into(),
        ));
    }
    let Some(target_etag) = described.etag.clone() else {
        return Ok(Match::Unknowable("the target names no ETag".into()));
    };
    let Some(count) = target_etag.part_count() else {
        // One part: its ETag is its MD5, which already differs from the source's.
        return Ok(Match::Different);
    };
    let first = head(Some(1)).await?;
    if first.parts_count() != Some(count as i32) {
        return Ok(Match::Unknowable(
            "the target does not reveal its part layout".into(),
        ));
    }
    let mut sizes = vec![first.content_length().unwrap_or(0).max(0) as u64];
    let rest: Vec<u64> = futures::stream::iter(2..=count as i32)
        .map(|n| async move {
            Ok::<_, S3Error>(head(Some(n)).await?.content_length().unwrap_or(0).max(0) as u64)
        })
        .buffered(LAYOUT_HEADS_AT_ONCE)
        .try_collect()
        .await?;
    sizes.extend(rest);
    if sizes.iter().sum::<u64>() != described.size {
        return Ok(Match::Unknowable(
            "the target's parts do not add up to its size".into(),
        ));
    }

    let mut digests = Vec::with_capacity(sizes.len());
    let mut start = 0u64;
    for size in sizes {
        match range_md5(source, key, source_etag, start..start + size).await? {
            Ok(digest) => digests.push(digest),
            Err(why) => return Ok(Match::Unknowable(why)),
        }
        start += size;
    }
    Ok(match ETag::composite(&digests) {
        Some(composed) if composed == target_etag => Match::Same,
        _ => Match::Different,
    })
}

/// The MD5 of bytes `range` of the source version `source_etag`, read and hashed
/// as they stream; the inner error if the source returned another length.
async fn range_md5(
    source: &S3Side,
    key: &str,
    source_etag: &ETag,
    range: std::ops::Range<u64>,
) -> Result<Result<ETag, String>, S3Error> {
    let size = range.end - range.start;
    let request = source
        .client
        .get_object()
        .bucket(&source.bucket)
        .key(key)
        .if_match(source_etag.quoted())
        .range(format!("bytes={}-{}", range.start, range.end - 1));
    let output = source.observe("GetObject", request.send().await)?;
    let mut body = output.body;
    let mut md5 = Md5::new();
    let mut read = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            S3Error::new(
                source.side,
                "GetObject",
                crate::error::ErrorKind::Transient,
                format!("reading the body: {e}"),
            )
        })?;
        read += chunk.len() as u64;
        md5.update(&chunk);
    }
    if read != size {
        return Ok(Err(format!(
            "the source returned {read} bytes for a range of {size}"
        )));
    }
    Ok(Ok(ETag::from_md5(&md5.finalize())))
}

/// Counts over a whole adoption.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdoptSummary {
    pub source_keys: u64,
    pub target_keys: u64,
    /// Keys whose ETags differ although their sizes are equal: candidates.
    pub candidates: u64,
    /// Copies found to hold the source's bytes, and recorded as such.
    pub adopted: u64,
    /// Candidates whose bytes differ, or could not be told: left to a backfill.
    pub not_adopted: u64,
    pub failed: u64,
}

/// How `adopt` goes about it.
#[derive(Debug, Clone, Copy)]
pub struct AdoptOptions {
    /// Candidates checked at once.
    pub concurrency: usize,
    /// Where bytes cannot be compared (SSE-KMS ETags), a target copy of the same
    /// size written no earlier than the source counts as the same.
    pub trust_kms_size_and_time: bool,
}

/// Adopts every copy under `prefix` that holds the source's bytes in another
/// layout; `report` gets a JSON line per candidate.
pub async fn adopt(
    ops: &Ops,
    prefix: &str,
    options: AdoptOptions,
    mut report: impl FnMut(&Value),
) -> Result<AdoptSummary, S3Error> {
    let reconciler = &ops.reconciler();
    let mut summary = AdoptSummary::default();
    let listed = std::cell::Cell::new((0u64, 0u64));
    {
        let candidates = compare(&ops.source, &ops.target, &ops.config, prefix)
            .inspect_ok(|c| {
                let (s, t) = listed.get();
                listed.set((
                    s + u64::from(c.source_size.is_some()),
                    t + u64::from(c.target_size.is_some()),
                ));
            })
            .try_filter(|c| {
                let candidate = c.status == Status::Different && c.source_size == c.target_size;
                async move { candidate }
            })
            .map_ok(|c| adopt_one(ops, reconciler, c, options.trust_kms_size_and_time))
            .try_buffer_unordered(options.concurrency.max(1));
        futures::pin_mut!(candidates);
        while let Some((key, result)) = candidates.try_next().await? {
            summary.candidates += 1;
            let line = match result {
                Ok(Match::Same) => {
                    summary.adopted += 1;
                    json!({"key": key, "adopted": true})
                }
                Ok(other) => {
                    summary.not_adopted += 1;
                    json!({"key": key, "adopted": false, "found": other})
                }
                Err(error) => {
                    summary.failed += 1;
                    json!({"key": key, "adopted": false, "error": error})
                }
            };
            report(&line);
        }
    }
    (summary.source_keys, summary.target_keys) = listed.get();
    Ok(summary)
}

/// Checks one candidate and, where it holds the source's bytes, records it.
async fn adopt_one(
    ops: &Ops,
    reconciler: &Reconciler,
    c: Comparison,
    trust_kms: bool,
) -> Result<(String, Result<Match, String>), S3Error> {
    let (source, target) = (&ops.source, &ops.target);
    let key = c.key.clone();
    let target_key = ops.target_key(&key);
    let result = async {
        let Some(source_etag) = c.source_etag.clone() else {
            return Ok(Match::Unknowable("the source listing names no ETag".into()));
        };
        let found = content_matches(source, target, &key, &target_key, &source_etag)
            .await
            .map_err(|e| e.to_string())?;
        let found = match found {
            Match::Unknowable(_) if trust_kms => {
                let after = written_after(source, target, &key, &target_key)
                    .await
                    .map_err(|e| e.to_string())?;
                if after {
                    Match::Same
                } else {
                    Match::Unknowable("the target copy is older than the source".into())
                }
            }
            found => found,
        };
        if found == Match::Same {
            reconciler
                .record_adopted(&key)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(found)
    }
    .await;
    Ok((key, result))
}

/// Whether the target copy was written no earlier than the source object.
async fn written_after(
    source: &S3Side,
    target: &S3Side,
    key: &str,
    target_key: &str,
) -> Result<bool, S3Error> {
    let (source_time, target_time) = (
        last_modified(source, key).await?,
        last_modified(target, target_key).await?,
    );
    Ok(matches!((source_time, target_time), (Some(s), Some(t)) if t >= s))
}

/// When `key` was last written on `side`, in seconds since the epoch.
async fn last_modified(side: &S3Side, key: &str) -> Result<Option<i64>, S3Error> {
    let request = side.client.head_object().bucket(&side.bucket).key(key);
    let head = side.observe("HeadObject", request.send().await)?;
    Ok(head.last_modified().map(|t| t.secs()))
}
