//! Acknowledging handled messages: deletes gathered into `DeleteMessageBatch` calls.
//!
//! A message task hands its receipt to the [`Deleter`] and moves on; one task
//! gathers what arrives within [`Deleter::LINGER`] into batches of up to 10 and
//! reports each entry that failed (SQS answers HTTP 200 even then). A message whose
//! delete failed comes back later and finds its key reconciled: nothing is lost.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::queue::{Queue, MAX_BATCH};

/// Gathers deletes into batches. Dropping every [`Deleter`] and awaiting the task
/// from [`Deleter::spawn`] flushes what is pending.
#[derive(Clone, Debug)]
pub struct Deleter {
    sender: mpsc::UnboundedSender<(String, String)>,
}

impl Deleter {
    /// How long a delete waits for others to share its batch.
    const LINGER: Duration = Duration::from_millis(20);

    pub fn spawn(queue: Queue) -> (Self, JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(String, String)>();
        let task = tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + Self::LINGER;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        _ => break,
                    }
                }
                for (id, why) in queue.delete_batch(&batch).await {
                    // The key is reconciled; the message will come back and find
                    // nothing to do.
                    tracing::warn!(message_id = %id, error = %why, "could not delete a handled message");
                }
            }
        });
        (Self { sender }, task)
    }

    /// Queues the delete of a handled message.
    pub fn delete(&self, id: &str, receipt: &str) {
        if self
            .sender
            .send((id.to_owned(), receipt.to_owned()))
            .is_err()
        {
            tracing::error!(message_id = %id, "the deleter has stopped; the message will come back");
        }
    }
}
