//! The event queue: receiving, acknowledging in batches, holding and releasing
//! messages, dead-lettering poison, and the queues' depths.
//!
//! [`Queue::connect`] builds the SQS client (the region is read from the queue URL,
//! so a China queue is reached at its `amazonaws.com.cn` endpoint) and finds the
//! dead-letter queue: from `queue.dead_letter_url`, else from the main queue's
//! RedrivePolicy. [`Queue::delete_batch`] checks each entry's result: SQS answers
//! HTTP 200 even when some entries failed.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::primitives::DateTime;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::config::Config;
use crate::error::ErrorKind;
pub use crate::error::SqsError;
use crate::metrics::{self, Stage};

/// The message attribute `xpsync dlq replay` counts a message's replays in: a
/// replayed message is a fresh one, received once, that was worked on before.
pub const REPLAY_COUNT: &str = "xpsync-replay-count";

/// SQS's largest batch.
pub const MAX_BATCH: usize = 10;

/// Turns an SDK error into an [`SqsError`], counted in `xpsync_errors_total{stage="sqs"}`.
fn sqs_error<E>(operation: &'static str, err: SdkError<E>) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let error = SqsError::from_sdk(operation, err);
    metrics::error(Stage::Sqs, error.kind);
    error
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The queue it came from: it is deleted, hidden or released there.
    pub queue_url: String,
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed it out, this time included.
    pub receive_count: u32,
    pub sent_at: Option<DateTime>,
    /// String message attributes (xpsync's reasons and history among them).
    pub attributes: HashMap<String, String>,
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: String,
    pub attributes: Vec<(String, String)>,
    /// Hidden this long after it is sent (at most 15 minutes).
    pub delay: Option<Duration>,
}

/// The main queue, its dead-letter queue, and the fleet's range queue if it has one.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    pub url: String,
    pub dead_letter_url: Option<String>,
    /// Where the fleet's range messages travel (`queue.range_url`); None: this queue.
    pub range_url: Option<String>,
    wait_time: Duration,
    pub visibility_timeout: Duration,
}

impl Queue {
    pub async fn connect(config: &Config) -> Result<Self, SqsError> {
        let region = region_of(&config.queue.url).unwrap_or_else(|| config.source.region.clone());
        // A long poll is answered only after up to `wait_time`: its first byte may
        // take that long on top of the usual.
        let timeouts = &config.timeouts;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .timeout_config(
                timeouts.sdk_with_first_byte(timeouts.first_byte + config.queue.wait_time),
            );
        if let Some(url) = &config.queue.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let client = aws_sdk_sqs::Client::new(&loader.load().await);
        let mut queue = Self {
            client,
            url: config.queue.url.clone(),
            dead_letter_url: None,
            range_url: Some(config.queue.range_url.clone()).filter(|u| !u.is_empty()),
            wait_time: config.queue.wait_time,
            visibility_timeout: config.queue.visibility_timeout,
        };
        queue.dead_letter_url = if config.queue.dead_letter_url.is_empty() {
            queue.dead_letter_from_redrive_policy().await?
        } else {
            Some(config.queue.dead_letter_url.clone())
        };
        Ok(queue)
    }

    async fn dead_letter_from_redrive_policy(&self) -> Result<Option<String>, SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", e))?;
        let Some(policy) = output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        let arn = serde_json::from_str::<serde_json::Value>(policy)
            .ok()
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                SqsError::new(
                    "GetQueueAttributes",
                    ErrorKind::Permanent,
                    format!("the queue's RedrivePolicy has no deadLetterTargetArn: {policy}"),
                )
            })?;
        // arn:<partition>:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        let (account, name) = match parts.as_slice() {
            [_, _, _, _, account, name] => (*account, *name),
            _ => {
                return Err(SqsError::new(
                    "GetQueueAttributes",
                    ErrorKind::Permanent,
                    format!("the dead-letter target {arn:?} is not an SQS ARN"),
                ))
            }
        };
        let output = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueUrl", e))?;
        Ok(output.queue_url().map(str::to_owned))
    }

    /// The dead-letter queue, as a queue of its own.
    pub fn dead_letter_queue(&self) -> Option<Queue> {
        Some(Queue {
            url: self.dead_letter_url.clone()?,
            dead_letter_url: None,
            range_url: None,
            ..self.clone()
        })
    }

    /// The queue the fleet's range messages travel on: the range queue, its dead
    /// letters going where this queue's go, or this queue itself.
    pub fn range_queue(&self) -> Queue {
        match &self.range_url {
            Some(url) => Queue {
                url: url.clone(),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// Long-polls for up to `max` messages, hidden for the visibility timeout.
    pub async fn receive(&self, max: usize) -> Result<Vec<Received>, SqsError> {
        self.receive_for(max, self.wait_time, self.visibility_timeout)
            .await
    }

    /// Receives up to `max` messages, waiting at most `wait`, hidden for `visibility`.
    pub async fn receive_for(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, SqsError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", e))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|m| {
                let attributes = m.attributes();
                let attribute = |name| attributes.and_then(|a| a.get(&name)).map(String::as_str);
                Some(Received {
                    queue_url: self.url.clone(),
                    id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    sent_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|t| t.parse::<i64>().ok())
                        .map(DateTime::from_millis),
                    attributes: m
                        .message_attributes()
                        .into_iter()
                        .flatten()
                        .filter_map(|(name, value)| {
                            Some((name.clone(), value.string_value()?.to_owned()))
                        })
                        .collect(),
                })
            })
            .collect())
    }

    /// Hides a received message for `timeout` from now (0: visible at once), in
    /// the queue it came from.
    pub async fn change_visibility(
        &self,
        message: &Received,
        timeout: Duration,
    ) -> Result<(), SqsError> {
        self.client
            .change_message_visibility()
            .queue_url(&message.queue_url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Sends a poison message to the dead-letter queue with why, then deletes it
    /// from the queue it came from: never the other way round.
    pub async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), SqsError> {
        let dead_letter_url = self.dead_letter_url.as_deref().ok_or_else(|| {
            SqsError::new(
                "SendMessage",
                ErrorKind::Permanent,
                "no dead-letter queue: set queue.dead_letter_url or a RedrivePolicy",
            )
        })?;
        let text = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data type and value are set")
        };
        // Attribute values are at most 256 KiB together with the body; reasons are short.
        let reason: String = reason.chars().take(1024).collect();
        self.client
            .send_message()
            .queue_url(dead_letter_url)
            .message_body(&message.body)
            .message_attributes("xpsync-reason", text(&reason))
            .message_attributes("xpsync-source-message-id", text(&message.id))
            .message_attributes(
                "xpsync-receive-count",
                text(&message.receive_count.to_string()),
            )
            .message_attributes(
                "xpsync-dead-lettered-at",
                text(&DateTime::from(std::time::SystemTime::now()).to_string()),
            )
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", e))?;
        self.client
            .delete_message()
            .queue_url(&message.queue_url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| sqs_error("DeleteMessage", e))?;
        Ok(())
    }

    /// Approximate (visible, in flight, delayed) counts of a queue.
    pub async fn depth(&self, url: &str) -> Result<(i64, i64, i64), SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", e))?;
        let count = |name| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }

    /// Sends up to 10 messages; returns the indexes of those not sent, with why.
    /// When the batch is refused whole (one entry too large, say), each message is
    /// sent on its own, so one bad message does not hold back the others.
    pub async fn send_batch(&self, messages: &[Outgoing]) -> Vec<(usize, String)> {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(Some(string_attributes(&m.attributes)))
                    .set_delay_seconds(m.delay.map(|d| d.as_secs().min(900) as i32))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(output) => output
                .failed()
                .iter()
                .filter_map(|f| {
                    let index = f.id().parse::<usize>().ok()?;
                    Some((
                        index,
                        format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                    ))
                })
                .collect(),
            Err(e) => {
                let error = sqs_error("SendMessageBatch", e);
                tracing::debug!(%error, "the batch was refused; sending one by one");
                let mut failed = Vec::new();
                for (i, m) in messages.iter().enumerate() {
                    let sent = self
                        .client
                        .send_message()
                        .queue_url(&self.url)
                        .message_body(&m.body)
                        .set_message_attributes(Some(string_attributes(&m.attributes)))
                        .set_delay_seconds(m.delay.map(|d| d.as_secs().min(900) as i32))
                        .send()
                        .await;
                    if let Err(e) = sent {
                        failed.push((i, sqs_error("SendMessage", e).message));
                    }
                }
                failed
            }
        }
    }

    /// Deletes up to 10 messages given as (id, receipt handle); returns the ids of
    /// those not deleted, with why.
    pub async fn delete_batch(&self, batch: &[(String, String)]) -> Vec<(String, String)> {
        self.delete_batch_in(&self.url, batch).await
    }

    /// [`Queue::delete_batch`] in the queue at `url`.
    pub async fn delete_batch_in(
        &self,
        url: &str,
        batch: &[(String, String)],
    ) -> Vec<(String, String)> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let result = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Err(e) => {
                let error = sqs_error("DeleteMessageBatch", e).message;
                batch
                    .iter()
                    .map(|(id, _)| (id.clone(), error.clone()))
                    .collect()
            }
            Ok(output) => output
                .failed()
                .iter()
                .filter_map(|f| {
                    let (id, _) = batch.get(f.id().parse::<usize>().ok()?)?;
                    let why = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                    Some((id.clone(), why))
                })
                .collect(),
        }
    }
}

fn string_attributes(attributes: &[(String, String)]) -> HashMap<String, MessageAttributeValue> {
    attributes
        .iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data type and value are set");
            (name.clone(), value)
        })
        .collect()
}

/// The region named in an SQS URL's host (`sqs.<region>.amazonaws.com[.cn]`).
fn region_of(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_owned();
    host.split('.')
        .find(|label| label.contains('-') && label.ends_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_queue_url() {
        assert_eq!(
            region_of("https://sqs.cn-northwest-1.amazonaws.com.cn/123456789012/q").as_deref(),
            Some("cn-northwest-1")
        );
        assert_eq!(
            region_of("https://sqs.us-west-2.amazonaws.com/123456789012/q").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(region_of("http://127.0.0.1:5000/123456789012/q"), None);
    }
}
