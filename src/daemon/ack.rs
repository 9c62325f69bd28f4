//! Acknowledging handled messages: deletes gathered into `DeleteMessageBatch` calls.
//!
//! A message task hands its receipt to the [`Deleter`] and moves on; one task
//! gathers what arrives within [`Deleter::LINGER`] into batches of up to 10 (one
//! batch per queue: the main queue's messages and the range queue's apart) and
//! reports each entry that failed (SQS answers HTTP 200 even then). A message whose
//! delete failed comes back later and finds its key reconciled: nothing is lost.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::queue::{Queue, Received, MAX_BATCH};

/// Gathers deletes into batches. Dropping every [`Deleter`] and awaiting the task
/// from [`Deleter::spawn`] flushes what is pending.
#[derive(Clone, Debug)]
pub struct Deleter {
    /// (queue URL, message id, receipt handle).
    sender: mpsc::UnboundedSender<(String, String, String)>,
}

impl Deleter {
    /// How long a delete waits for others to share its batch.
    const LINGER: Duration = Duration::from_millis(20);

    pub fn spawn(queue: Queue) -> (Self, JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(String, String, String)>();
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
                while let Some((url, ..)) = batch.first() {
                    let url = url.clone();
                    let (this, other) = batch.into_iter().partition(|(u, ..)| *u == url);
                    batch = other;
                    let this: Vec<_> = this.into_iter().map(|(_, id, r)| (id, r)).collect();
                    for (id, why) in queue.delete_batch_in(&url, &this).await {
                        // The key is reconciled; the message will come back and find
                        // nothing to do.
                        tracing::warn!(message_id = %id, error = %why, "could not delete a handled message");
                    }
                }
            }
        });
        (Self { sender }, task)
    }

    /// Queues the delete of a handled message, from the queue it came from.
    pub fn delete(&self, message: &Received) {
        let Received {
            queue_url,
            id,
            receipt,
            ..
        } = message;
        if self
            .sender
            .send((queue_url.clone(), id.clone(), receipt.clone()))
            .is_err()
        {
            tracing::error!(message_id = %id, "the deleter has stopped; the message will come back");
        }
    }
}
