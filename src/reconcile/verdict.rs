//! What a refusal means: one object's verdict, or the service's failure; and what
//! an archived source comes to.
//!
//! S3 answers `AccessDenied` both when a policy refuses an operation on every key
//! (the service is broken: the breaker's business) and when one object may not be
//! touched (a prefix-scoped deny, another owner's object, a KMS key the keys may not
//! use: that key's verdict, dead-lettered once). [`crate::aws::S3Side::observe`]
//! already calls a refusal the object's own where the same operation passed on
//! other keys lately; here the reconciler adds what only it knows:
//!
//! - a source GET refused while the key's HEAD passes with the same keys: the
//!   object's bytes cannot be read (SSE-KMS with a key that refuses `kms:Decrypt`);
//! - a bare 403 (a HEAD has no body) is asked again by a one-byte GET, whose answer
//!   names the code: keys rejected (the secret is re-read, as `observe` does), or
//!   the object refused.

use super::{head_source, Done, Outcome, ReconcileError, Reconciler};
use crate::config::Archived;
use crate::error::{ErrorKind, S3Error, Side};
use crate::transfer::TransferError;

impl Reconciler {
    /// A bare 403 in `error`: a one-byte GET of the same key on the same side says
    /// why. True if it says the keys were accepted but refused this object: `error`
    /// becomes that refusal, to be judged as any ([`Self::judge_refusal`]).
    pub(super) async fn confirm_rejection(&self, key: &str, error: &mut ReconcileError) -> bool {
        let Some(e) = s3_mut(error).filter(|e| e.code.is_none()) else {
            return false;
        };
        let (side, side_key) = match e.side {
            Side::Source => (&self.source, key.to_owned()),
            Side::Target => (&self.target, self.target_key(key)),
        };
        let request = side
            .client
            .get_object()
            .bucket(&side.bucket)
            .key(side_key)
            .range("bytes=0-0");
        let confirmed = match side.observe("GetObject", request.send().await) {
            Err(confirmed) if confirmed.kind == ErrorKind::Denied => confirmed,
            Err(other) => {
                tracing::debug!(error = %other, "confirming an authorisation failure");
                return false;
            }
            Ok(_) => return false,
        };
        e.kind = ErrorKind::Denied;
        e.per_object = confirmed.per_object || side.passed_recently(e.operation);
        e.message = format!("{} ({})", e.message, confirmed.message);
        e.code = confirmed.code;
        self.judge_refusal(key, error).await;
        true
    }

    /// A refusal not yet known to be the object's own: a source GET refused while
    /// the key's HEAD passes is (its bytes cannot be read with these keys).
    pub(super) async fn judge_refusal(&self, key: &str, error: &mut ReconcileError) {
        if let Some(e) = s3_mut(error) {
            self.judge(key, e).await;
        }
    }

    /// [`Self::judge_refusal`] of an S3 error.
    pub(super) async fn judge(&self, key: &str, e: &mut S3Error) {
        let source_read = e.side == Side::Source && e.operation == "GetObject";
        if e.kind != ErrorKind::Denied || e.per_object || !source_read {
            return;
        }
        if let Ok(Some(_)) = head_source(&self.source, key).await {
            e.per_object = true;
            e.message = format!(
                "{} (its HEAD passes with the same keys: the object's bytes cannot be read, \
                 e.g. its KMS key refuses kms:Decrypt)",
                e.message
            );
        }
    }
}

impl Reconciler {
    /// The source is archived, not restored: counted as such, and, with
    /// `replicate.archived = "restore"`, its restore asked for (once).
    pub(super) async fn archived(
        &self,
        source: &crate::object::SourceObject,
    ) -> Result<Done, ReconcileError> {
        let replicate = &self.config.replicate;
        if replicate.archived == Archived::Restore {
            let asked = crate::archive::restore(
                &self.source,
                &source.key,
                source.access,
                source.intelligent_tiering,
                replicate,
            )
            .await;
            match asked {
                Ok(asked) => tracing::info!(
                    restore = asked.as_str(),
                    "the source is archived; its restore is asked for, and it is copied when restored"
                ),
                // Refused (no s3:RestoreObject, an object that cannot be restored):
                // the key stays archived, counted, and never pauses the rest.
                Err(e) if matches!(e.kind, ErrorKind::Denied | ErrorKind::Permanent) => {
                    tracing::warn!(error = %e, "the source is archived and its restore was refused; it stays archived")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Done {
            bytes: source.size,
            ..Done::of(Outcome::Archived)
        })
    }
}

fn s3_mut(error: &mut ReconcileError) -> Option<&mut S3Error> {
    match error {
        ReconcileError::Transfer(TransferError::S3(e)) => Some(e),
        _ => None,
    }
}
