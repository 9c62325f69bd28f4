//! `xpsync verify`: list both sides and report keys missing, extra, or different.

use futures::TryStreamExt;
use serde::Serialize;

use super::compare::{compare, Comparison, Status};
use crate::aws::S3Side;
use crate::config::Config;
use crate::error::S3Error;

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
    mut report: impl FnMut(&Comparison),
) -> Result<Summary, S3Error> {
    let mut summary = Summary::default();
    let comparisons = compare(source, target, config, prefix);
    futures::pin_mut!(comparisons);
    while let Some(c) = comparisons.try_next().await? {
        summary.source_keys += u64::from(c.source_size.is_some());
        summary.target_keys += u64::from(c.target_size.is_some());
        match c.status {
            Status::Same => summary.same += 1,
            Status::Filtered => {}
            Status::Missing => summary.missing += 1,
            Status::Different => summary.different += 1,
            Status::Extra => summary.extra += 1,
        }
        if !matches!(c.status, Status::Same | Status::Filtered) {
            report(&c);
        }
    }
    Ok(summary)
}
