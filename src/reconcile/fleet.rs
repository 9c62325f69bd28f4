//! The reconciler's entries for a fleet split ([`crate::fleet`]): a range copied, an
//! upload looked at and completed. The daemon's worker side calls these and never
//! the copier, so a completed split is checked by the same last-writer HEAD and
//! told by the same [`Report::emit`] as any copy.

use std::sync::Arc;
use std::time::Instant;

use super::{head, head_source, Done, Outcome, ReconcileError, Reconciler, Report, Tags};
use crate::fleet::share::Unstarted;
use crate::fleet::{CheckOutcome, CheckWork, Ledger, RangeOutcome, RangeWork};
use crate::metrics::Method;
use crate::object::TargetObject;
use crate::transfer::TransferError;

/// What looking at a split's upload came to.
#[derive(Debug)]
pub enum SplitChecked {
    /// Completed and verified, the source still holding the version: reported as
    /// copied.
    Completed,
    /// The source no longer holds the version the upload copies (`why`), before
    /// completion: the upload is to be given up and the key started over.
    SourceChanged(&'static str),
    /// Completed, but the source changed meanwhile: the key is to be reconciled again.
    ChangedAfterWrite,
    /// Parts still missing (1-based numbers), with how many are present and the
    /// marker part's time ([`CheckOutcome::Missing`]).
    Missing {
        present: u32,
        missing: Vec<u32>,
        stamp: Option<i64>,
    },
    /// The upload is gone.
    Gone,
    /// The upload holds what this version's layout cannot: to be given up.
    Mismatch(String),
}

impl Reconciler {
    /// The split's ledger: the target's uploads.
    pub(super) fn ledger(&self) -> Ledger<'_> {
        Ledger::new(&self.copier, &self.no_ledger)
    }

    /// Copies the parts of a range of a split of `key` into its upload.
    pub async fn copy_range(
        &self,
        key: &str,
        work: &RangeWork,
        range: &Arc<Unstarted>,
    ) -> Result<RangeOutcome, TransferError> {
        let target_key = self.target_key(key);
        let opaque = self.config.target.sse.etags_opaque();
        // A range still at work says so at least once per visibility timeout, well
        // within the checks' patience (several timeouts).
        let stamp_every = self.config.queue.visibility_timeout;
        let copied = self
            .ledger()
            .copy_range(key, &target_key, (work, range), (opaque, stamp_every))
            .await;
        match copied {
            // A refused read while the key's HEAD passes is the object's verdict,
            // as in any copy: the range then ends the split, never the breaker.
            Err(TransferError::S3(mut e)) => {
                self.judge(key, &mut e).await;
                Err(TransferError::S3(e))
            }
            other => other,
        }
    }

    /// After a range: the check of its upload if every part is there now.
    pub async fn range_filled(
        &self,
        key: &str,
        work: &RangeWork,
    ) -> Result<Option<CheckWork>, TransferError> {
        self.ledger().filled(&self.target_key(key), work).await
    }

    /// Gives up the upload `upload_id` of `key`; true if this call did.
    pub async fn abandon(&self, key: &str, upload_id: &str) -> bool {
        self.ledger()
            .abandon(&self.target_key(key), upload_id)
            .await
    }

    /// The first upload of `key` carrying the version `work` copies, if any.
    pub async fn upload_of_version(
        &self,
        key: &str,
        work: &CheckWork,
    ) -> Result<Option<String>, TransferError> {
        let opaque = work.target_kms || self.config.target.sse.etags_opaque();
        self.ledger()
            .first_marked(&self.target_key(key), None, &work.etag, opaque)
            .await
    }

    /// After a split's upload was found gone: whether the target holds the version
    /// it copied (another check completed it), the source holding it still. Its
    /// description and tags are then made the source's, as a completion does (a
    /// completion whose settling failed leaves that to here).
    pub async fn holds_split(&self, key: &str, work: &CheckWork) -> Result<bool, ReconcileError> {
        let target_key = self.target_key(key);
        let (source, target) = tokio::join!(
            head_source(&self.source, key),
            head(&self.target, &target_key)
        );
        let (Some(source), Some(target)) = (source?, target?) else {
            return Ok(false);
        };
        let target = TargetObject::from_head(&target);
        let version = Some(&work.etag);
        let holds =
            target.etag.as_ref() == version || target.recorded_source_etag.as_ref() == version;
        if !holds || source.etag.as_ref() != version {
            return Ok(false);
        }
        let options = self.write_options(&source);
        self.update_in_place(&source, &target, &target_key, &options, Tags::Compare)
            .await?;
        Ok(true)
    }

    /// Looks at the upload of `work` and completes it if every part is there; a
    /// completion is then checked against the source, as the last writer of any
    /// copy is, and reported.
    pub async fn check_split(
        &self,
        key: &str,
        work: &CheckWork,
    ) -> Result<SplitChecked, ReconcileError> {
        let started = Instant::now();
        let source = match self.head_source(key).await? {
            Some(source) if source.etag.as_ref() == Some(&work.etag) => source,
            _ => return Ok(SplitChecked::SourceChanged("the source changed or is gone")),
        };
        let options = self.write_options(&source);
        let target_key = self.target_key(key);
        let checked = self
            .ledger()
            .check(&source, &target_key, work, &options)
            .await?;
        let copied = match checked {
            CheckOutcome::Completed(copied) => copied,
            CheckOutcome::Missing {
                present,
                missing,
                stamp,
            } => {
                return Ok(SplitChecked::Missing {
                    present,
                    missing,
                    stamp,
                })
            }
            CheckOutcome::Gone => return Ok(SplitChecked::Gone),
            CheckOutcome::Mismatch(why) => return Ok(SplitChecked::Mismatch(why)),
        };
        // The last writer makes sure the source still holds what it wrote.
        let now = head_source(&self.source, key).await?;
        if now.and_then(|now| now.etag) != source.etag {
            return Ok(SplitChecked::ChangedAfterWrite);
        }
        let report = Report {
            key: key.to_owned(),
            duration: started.elapsed(),
            result: Ok(Done {
                bytes: source.size,
                method: Some(Method::Multipart),
                etag: Some(copied.etag),
                ..Done::of(Outcome::Copied)
            }),
        };
        report.emit(&self.config.scope.name);
        Ok(SplitChecked::Completed)
    }
}
