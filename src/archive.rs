//! Archived source objects: telling them, before any GET or upload, and asking for
//! their restore.
//!
//! An object in S3 Glacier Flexible Retrieval or Deep Archive, or in an
//! Intelligent-Tiering archive tier, answers a HEAD but not a GET
//! (`InvalidObjectState`) until it is restored. A HEAD tells it by
//! `x-amz-storage-class`, `x-amz-archive-status` (Intelligent-Tiering) and
//! `x-amz-restore` (`ongoing-request="true"` while a restore runs, `"false"` once a
//! readable copy is there); a listing by its `StorageClass` alone, which is all the
//! sweep needs to leave such keys out. Glacier Instant Retrieval is read at once and
//! is no archive.

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::{
    ArchiveStatus, GlacierJobParameters, ObjectStorageClass, RestoreRequest, StorageClass,
};

use crate::aws::S3Side;
use crate::config::{ReplicateConfig, RestoreTier, MAX_RESTORE_DAYS};
use crate::error::S3Error;
use crate::metrics::RestoreResult;

/// Whether an object's bytes can be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read at once: not archived, or restored.
    Readable,
    /// Archived and not restored; `restoring`: a restore is under way.
    Archived { restoring: bool },
}

impl Access {
    /// As a HEAD tells it.
    pub fn from_head(head: &HeadObjectOutput) -> Self {
        let archived_class = matches!(
            head.storage_class(),
            Some(StorageClass::Glacier | StorageClass::DeepArchive)
        );
        let archive_tier = matches!(
            head.archive_status(),
            Some(ArchiveStatus::ArchiveAccess | ArchiveStatus::DeepArchiveAccess)
        );
        let restore = head.restore().unwrap_or_default();
        let restored = restore.contains("ongoing-request=\"false\"");
        let restoring = restore.contains("ongoing-request=\"true\"");
        if (archived_class || archive_tier) && !restored {
            Access::Archived { restoring }
        } else {
            Access::Readable
        }
    }

    pub fn is_archived(self) -> bool {
        matches!(self, Access::Archived { .. })
    }
}

/// Whether a listing's storage class is an archive's (a restored copy is not
/// shown by a listing: the sweep leaves it to the events).
pub fn listed_archived(class: Option<&ObjectStorageClass>) -> bool {
    matches!(
        class,
        Some(ObjectStorageClass::Glacier | ObjectStorageClass::DeepArchive)
    )
}

/// Asks for `key` to be restored (once: a restore under way is not asked again),
/// with the tier and days of `replicate`; Intelligent-Tiering's archive tiers take
/// no days. Counted in `xpsync_restores_total`.
pub async fn restore(
    source: &S3Side,
    key: &str,
    access: Access,
    intelligent_tiering: bool,
    replicate: &ReplicateConfig,
) -> Result<RestoreResult, S3Error> {
    let result = async {
        if access == (Access::Archived { restoring: true }) {
            return Ok(RestoreResult::InProgress);
        }
        let tier = GlacierJobParameters::builder()
            .tier(replicate.restore_tier.sdk())
            .build()
            .expect("a tier is set");
        let mut restore = RestoreRequest::builder();
        if !intelligent_tiering {
            let days = replicate.restore_days.clamp(1, MAX_RESTORE_DAYS) as i32;
            restore = restore.days(days).glacier_job_parameters(tier);
        } else if replicate.restore_tier != RestoreTier::Expedited {
            // Intelligent-Tiering's archive tiers take no days, and no Expedited.
            restore = restore.glacier_job_parameters(tier);
        }
        let request = source
            .client
            .restore_object()
            .bucket(&source.bucket)
            .key(key)
            .restore_request(restore.build());
        match source.observe("RestoreObject", request.send().await) {
            Ok(_) => Ok(RestoreResult::Requested),
            Err(e) if e.code.as_deref() == Some("RestoreAlreadyInProgress") => {
                Ok(RestoreResult::InProgress)
            }
            Err(e) => Err(e),
        }
    }
    .await;
    match &result {
        Ok(done) => done.count(),
        Err(_) => RestoreResult::Failed.count(),
    }
    result
}
