//! The label enums: each metric's closed set of label values, with `ALL`, so that
//! [`super::init`] can start every series at zero.

use super::*;

/// Declares a label enum: its variants, their label values, and `ALL`.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
}

label! {
    /// What reconciling a key did (`xpsync_objects_total{result}`).
    Outcome {
        Copied => "copied",
        /// Too large for one worker: split into ranges for the fleet (DESIGN §10).
        Split => "split",
        /// The bytes matched; the description or tags were brought up to date in place.
        MetadataUpdated => "metadata_updated",
        Unchanged => "unchanged",
        Deleted => "deleted",
        /// The source key does not exist, and the target needs nothing.
        Absent => "absent",
        Filtered => "filtered",
        /// The source is archived (Glacier, Deep Archive, an Intelligent-Tiering
        /// archive tier) and not restored: skipped, or its restore asked for.
        Archived => "archived",
        Failed => "failed",
    }
}

label! {
    /// How an object was written (`xpsync_copy_duration_seconds{method}`).
    Method {
        Put => "put",
        Multipart => "multipart",
    }
}

label! {
    /// What became of a queue message (`xpsync_messages_total{result}`).
    MessageResult {
        Deleted => "deleted",
        Retried => "retried",
        DeadLettered => "dead_lettered",
        Ignored => "ignored",
    }
}

label! {
    /// A part uploaded now, or kept from an interrupted upload (`xpsync_parts_total{result}`).
    PartResult {
        Uploaded => "uploaded",
        Reused => "reused",
    }
}

label! {
    /// A read of a credentials secret (`xpsync_credentials_refreshes_total{result}`).
    RefreshResult {
        Ok => "ok",
        Error => "error",
    }
}

label! {
    /// What a range message came to (`xpsync_ranges_total{result}`).
    RangeResult {
        Copied => "copied",
        /// The upload was gone: completed or given up.
        UploadGone => "upload_gone",
        SourceChanged => "source_changed",
        Failed => "failed",
        /// Received while the worker held all the ranges its parts can copy: sent
        /// again for another worker.
        HandedBack => "handed_back",
        /// The range queue was found empty, and the upper half of this range's
        /// parts not yet started was sent as a range of its own.
        Shared => "shared",
        /// Its upload gave way to an earlier upload of the same version (a duplicate
        /// split): not copied.
        Superseded => "superseded",
    }
}

label! {
    /// What happened to a split object (`xpsync_splits_total{result}`).
    SplitResult {
        Split => "split",
        Completed => "completed",
        /// A check found parts missing and no progress: their ranges sent again.
        Resent => "resent",
        /// The upload was given up (the source changed, another layout, a range
        /// failed for good, parts never arrived) and the key sent again.
        Restarted => "restarted",
        /// A duplicate split's upload, given up for an earlier upload of the same
        /// version.
        Merged => "merged",
        /// Given up for good: the key was started over too often (dead-lettered,
        /// saying why).
        GivenUp => "given_up",
    }
}

impl RangeResult {
    pub fn count(self) {
        RANGES.with_label_values(&[self.as_str()]).inc();
    }
}

impl SplitResult {
    pub fn count(self) {
        SPLITS.with_label_values(&[self.as_str()]).inc();
    }
}

label! {
    /// What asking to restore an archived object came to (`xpsync_restores_total{result}`).
    RestoreResult {
        /// RestoreObject sent and accepted.
        Requested => "requested",
        /// A restore was under way already: nothing sent.
        InProgress => "in_progress",
        Failed => "failed",
    }
}

impl RestoreResult {
    pub fn count(self) {
        RESTORES.with_label_values(&[self.as_str()]).inc();
    }
}

label! {
    /// Why a reconcile started over (`xpsync_reconcile_restarts_total{reason}`).
    RestartReason {
        /// A GET's `If-Match` failed: the source changed mid-copy.
        SourceChanged => "source_changed",
        /// After the write, the source held another version than the one written.
        ChangedAfterWrite => "changed_after_write",
        /// After the delete, the source key existed again.
        ReappearedAfterDelete => "reappeared_after_delete",
    }
}

impl RestartReason {
    pub fn count(self) {
        RESTARTS.with_label_values(&[self.as_str()]).inc();
    }
}

label! {
    /// Where an error happened (`xpsync_errors_total{stage}`).
    Stage {
        Reconcile => "reconcile",
        Sqs => "sqs",
    }
}

impl MessageResult {
    pub fn count(self) {
        MESSAGES.with_label_values(&[self.as_str()]).inc();
    }
}

impl PartResult {
    pub fn count(self) {
        PARTS.with_label_values(&[self.as_str()]).inc();
    }
}

impl RefreshResult {
    pub fn count(self) {
        CREDENTIALS_REFRESHES
            .with_label_values(&[self.as_str()])
            .inc();
    }
}
