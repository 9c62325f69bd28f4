//! What reconciling a key came to: a [`Report`] around a `Result`, either what was
//! done ([`Done`]) or why not ([`ReconcileError`], which knows its [`ErrorKind`]).
//! [`Report::emit`] is the one place a key's outcome is logged and counted.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::SOURCE_CHANGES_TOLERATED;
use crate::error::{ErrorKind, S3Error};
use crate::etag::ETag;
use crate::fleet::Split;
use crate::metrics::{self, Method, Outcome, RestartReason, Stage};
use crate::transfer::{Copied, TransferError};

/// Why a key could not be reconciled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the source object changed {SOURCE_CHANGES_TOLERATED} times during its copy; giving up for now")]
    SourceUnstable,
    /// Another writer came between: the key is to be reconciled again.
    #[error("the source changed under the write ({})", .0.as_str())]
    Superseded(RestartReason),
}

impl From<S3Error> for ReconcileError {
    fn from(e: S3Error) -> Self {
        ReconcileError::Transfer(TransferError::S3(e))
    }
}

impl ReconcileError {
    /// The S3 error behind it, if one is.
    pub fn s3(&self) -> Option<&S3Error> {
        match self {
            ReconcileError::Transfer(TransferError::S3(e)) => Some(e),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Transfer(e) => e.kind(),
            ReconcileError::SourceUnstable => ErrorKind::Transient,
            ReconcileError::Superseded(_) => ErrorKind::PreconditionFailed,
        }
    }

    /// Whether every key would fail the same way (keys rejected, bucket missing).
    pub fn is_systemic(&self) -> bool {
        self.kind().is_systemic()
    }

    /// Whether this is the object's own verdict, final ([`S3Error::is_verdict`], or
    /// an object xpsync cannot copy): its message is dead-lettered once, and it
    /// never counts toward the breaker.
    pub fn is_verdict(&self) -> bool {
        match self {
            ReconcileError::Transfer(e) => e.is_verdict(),
            e => e.kind() == ErrorKind::Permanent,
        }
    }
}

/// What a successful reconcile did.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// Never [`Outcome::Failed`]: a failure is the `Err` of [`Report::result`].
    pub outcome: Outcome,
    /// The object's size (copied or unchanged), else 0.
    pub bytes: u64,
    /// Bytes uploaded now: less than `bytes` when an upload was resumed.
    pub bytes_sent: u64,
    pub parts_reused: usize,
    /// How the object was written, when it was.
    pub method: Option<Method>,
    /// The target's ETag, when it holds the object.
    pub etag: Option<ETag>,
    /// How long the copy itself took, when there was one.
    #[serde(skip)]
    pub copy_duration: Option<Duration>,
    /// The fleet's first look at the object's upload, when it was split: the
    /// daemon sends its ranges and this check.
    #[serde(skip)]
    pub split: Option<Split>,
}

impl Done {
    /// An outcome that moved nothing.
    pub fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            bytes: 0,
            bytes_sent: 0,
            parts_reused: 0,
            method: None,
            etag: None,
            copy_duration: None,
            split: None,
        }
    }

    pub(super) fn copied(size: u64, copied: Copied, started: Instant) -> Self {
        Self {
            outcome: Outcome::Copied,
            bytes: size,
            bytes_sent: copied.bytes_sent,
            parts_reused: copied.parts_reused,
            method: Some(copied.method),
            etag: Some(copied.etag),
            copy_duration: Some(started.elapsed()),
            split: None,
        }
    }
}

/// The result of reconciling one key.
#[derive(Debug, Clone)]
pub struct Report {
    pub key: String,
    pub duration: Duration,
    pub result: Result<Done, ReconcileError>,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(done) => done.outcome,
            Err(_) => Outcome::Failed,
        }
    }

    pub fn error(&self) -> Option<&ReconcileError> {
        self.result.as_ref().err()
    }

    /// The object's size, when it was copied or found unchanged.
    pub fn bytes(&self) -> u64 {
        self.result.as_ref().map_or(0, |done| done.bytes)
    }

    /// The report as one JSON line of `xpsync sync`.
    pub fn to_json(&self) -> serde_json::Value {
        let duration_ms = self.duration.as_millis() as u64;
        match &self.result {
            Ok(done) => {
                let mut line = serde_json::json!({"key": self.key, "duration_ms": duration_ms});
                if let (Some(line), serde_json::Value::Object(done)) =
                    (line.as_object_mut(), serde_json::json!(done))
                {
                    line.extend(done);
                }
                line
            }
            Err(error) => serde_json::json!({
                "key": self.key,
                "outcome": Outcome::Failed,
                "duration_ms": duration_ms,
                "error": error.to_string(),
            }),
        }
    }

    /// Logs and counts the report, of a key of `route`: the one place a key's
    /// outcome is told.
    pub(super) fn emit(&self, route: &str) {
        metrics::OBJECTS
            .with_label_values(&[self.outcome().as_str(), route])
            .inc();
        match &self.result {
            Ok(done) => {
                if let (Some(method), Some(took)) = (done.method, done.copy_duration) {
                    metrics::COPY_DURATION
                        .with_label_values(&[method.as_str()])
                        .observe(took.as_secs_f64());
                }
                if done.outcome == Outcome::Copied {
                    metrics::BYTES_COPIED
                        .with_label_values(&[route])
                        .inc_by(done.bytes);
                }
                tracing::info!(
                    outcome = done.outcome.as_str(),
                    size = done.bytes,
                    bytes_sent = done.bytes_sent,
                    duration_ms = self.duration.as_millis() as u64,
                    "reconciled"
                );
            }
            Err(e) => {
                metrics::error(Stage::Reconcile, e.kind());
                tracing::warn!(outcome = "failed", error = %e, kind = e.kind().as_str(), "reconcile failed");
            }
        }
    }
}
