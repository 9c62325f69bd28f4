//! `xpsync verify`: list both sides and report keys missing, extra, or different;
//! and incomplete uploads left on the target long enough to be forgotten (a hard
//! stop, a message dead-lettered mid-copy, a source deleted), which cost storage
//! until the bucket's lifecycle rule or an operator aborts them.

use futures::TryStreamExt;
use serde::Serialize;

use super::compare::{compare, Comparison, Status};
use super::Ops;
use crate::aws::S3Side;
use crate::checksum::Checksum;
use crate::checksum_values;
use crate::error::S3Error;
use crate::etag::ETag;
use crate::reconcile::{head, head_source};

/// Counts over the whole comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifySummary {
    pub source_keys: u64,
    pub target_keys: u64,
    pub same: u64,
    pub missing: u64,
    pub different: u64,
    pub extra: u64,
    /// Keys whose comparison failed (a HEAD refused, say): not known to be the same.
    pub unknown: u64,
    /// Source keys archived and not on the target: not readable until restored,
    /// so not differences (they do not change the exit code).
    pub archived: u64,
    /// Incomplete uploads on the target older than the threshold (not differences:
    /// they do not change the exit code).
    pub stale_uploads: u64,
}

/// An incomplete upload on the target.
#[derive(Debug, Clone, Serialize)]
pub struct StaleUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was begun, as the target says (RFC 3339).
    pub initiated: String,
    pub age_seconds: u64,
}

/// Incomplete uploads under `prefix` on the target begun more than `older_than` ago.
pub async fn stale_uploads(
    target: &S3Side,
    prefix: &str,
    older_than: std::time::Duration,
) -> Result<Vec<StaleUpload>, S3Error> {
    let now = std::time::SystemTime::now();
    let mut stale = Vec::new();
    for upload in target.uploads(prefix).await? {
        let Some(initiated) = upload.initiated() else {
            continue;
        };
        let age = std::time::SystemTime::try_from(*initiated)
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        if age > older_than {
            stale.push(StaleUpload {
                key: upload.key().unwrap_or_default().to_owned(),
                upload_id: upload.upload_id().unwrap_or_default().to_owned(),
                initiated: initiated.to_string(),
                age_seconds: age.as_secs(),
            });
        }
    }
    Ok(stale)
}

impl VerifySummary {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.different == 0 && self.extra == 0 && self.unknown == 0
    }
}

/// Compares the sides under `prefix`, handing each difference to `report` as it is
/// found. `deep`: keys of equal size whose ETags differ are compared by their bytes
/// along the target's part layout ([`super::adopt::content_matches`]), so a copy
/// cut with another part size counts as the same; and keys found the same are
/// compared by their additional checksums where both sides keep one that can be
/// equal ([`checksums_differ`]).
pub async fn verify(
    ops: &Ops,
    prefix: &str,
    deep: bool,
    mut report: impl FnMut(&Comparison),
) -> Result<VerifySummary, S3Error> {
    let (source, target) = (&ops.source, &ops.target);
    let mut summary = VerifySummary::default();
    let comparisons = compare(source, target, &ops.config, prefix);
    futures::pin_mut!(comparisons);
    while let Some(mut c) = comparisons.try_next().await? {
        if deep && c.status == Status::Different && c.source_size == c.target_size {
            if let Some(etag) = c.source_etag.clone() {
                let target_key = ops.target_key(&c.key);
                match super::adopt::content_matches(source, target, &c.key, &target_key, &etag)
                    .await
                {
                    Ok(super::adopt::Match::Same) => c.status = Status::Same,
                    Ok(_) => {}
                    Err(e) => {
                        c.status = Status::Unknown;
                        c.error = Some(e.to_string());
                    }
                }
            }
        }
        if deep && c.status == Status::Same {
            let target_key = ops.target_key(&c.key);
            match checksums_differ(source, target, &c.key, &target_key).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    c.status = Status::Different;
                    c.error = Some(why);
                }
                Err(e) => {
                    c.status = Status::Unknown;
                    c.error = Some(e.to_string());
                }
            }
        }
        summary.source_keys += u64::from(c.source_size.is_some());
        summary.target_keys += u64::from(c.target_size.is_some());
        match c.status {
            Status::Same => summary.same += 1,
            Status::Filtered => {}
            Status::Missing => summary.missing += 1,
            Status::Different => summary.different += 1,
            Status::Extra => summary.extra += 1,
            Status::Unknown => summary.unknown += 1,
            Status::Archived => summary.archived += 1,
        }
        if !matches!(c.status, Status::Same | Status::Filtered) {
            report(&c);
        }
    }
    Ok(summary)
}

/// Why the two copies' additional checksums say their bytes differ, where both keep
/// one of the same algorithm and type (and, composite, in the same part layout);
/// None where they agree or cannot be compared.
async fn checksums_differ(
    source: &S3Side,
    target: &S3Side,
    key: &str,
    target_key: &str,
) -> Result<Option<String>, S3Error> {
    // The source's HEAD as a copy's: an SSE-C object is read with its key.
    let (s, t) = tokio::join!(head_source(source, key), head(target, target_key));
    let (Some(s), Some(t)) = (s?, t?) else {
        return Ok(None);
    };
    // A composite checksum depends on the part layout: compared only where the copy
    // kept the source's (its ETag is the source's).
    let same_layout = ETag::parse(t.e_tag()) == s.etag;
    let written = Checksum::from_response(checksum_values!(t), t.checksum_type());
    let (Some(s), Some(t)) = (s.checksum, written) else {
        return Ok(None);
    };
    let comparable = s.algorithm == t.algorithm
        && s.full_object == t.full_object
        && (s.full_object || same_layout);
    Ok((comparable && s.digest() != t.digest()).then(|| {
        format!(
            "the source's {} checksum is {}, the target's {}",
            s.algorithm.as_str(),
            s.value,
            t.value
        )
    }))
}
