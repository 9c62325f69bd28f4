//! `xpsync dlq peek` and `xpsync dlq replay`: the dead-letter queue, for operators.
//!
//! SQS has no way to read a message without receiving it, so **peek** receives with
//! a visibility that hides each message only for the peek, and makes every message
//! visible again as soon as it has been read. **Replay** moves messages back to the
//! main queue itself, because SQS's StartMessageMoveTask is not offered in the China
//! regions: send, and only once the send has succeeded, delete from the DLQ. A
//! message whose send failed, or that the prefix skips, is made visible again at the
//! end, untouched. The body is kept; the failure history travels in attributes.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_s3::primitives::DateTime;
use serde::Serialize;

use crate::config::{route_of, Config};
use crate::event::{self, Parsed};
use crate::queue::{Outgoing, Queue, Received, SqsError, MAX_BATCH, REPLAY_COUNT};

/// How long messages stay hidden while an operator command holds them.
const HOLD: Duration = Duration::from_secs(300);
/// How long a receive waits for more messages before the DLQ counts as read.
const WAIT: Duration = Duration::from_secs(1);

/// A dead-lettered message, as peek shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Peeked {
    pub message_id: String,
    /// The keys the message names, if it names any.
    pub keys: Vec<String>,
    /// The route of its (first) key, if it names one of a route's bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Receives before it was dead-lettered.
    pub receive_count: u32,
    /// Seconds since it was first sent.
    pub age_seconds: u64,
}

/// Reads up to `max` messages of the dead-letter queue and makes them visible again.
pub async fn peek(dlq: &Queue, routes: &[Config], max: usize) -> Result<Vec<Peeked>, SqsError> {
    let held = receive_up_to(dlq, max).await?;
    let peeked = held.iter().map(|m| describe(m, routes)).collect();
    release(dlq, &held).await;
    Ok(peeked)
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub moved: u64,
    pub skipped: u64,
    pub failed: u64,
    pub dry_run: bool,
}

/// Batches of only re-received messages after which a replay stops.
const STALE_BATCHES_TOLERATED: u32 = 5;

/// Which dead letters a replay moves: those of a route, of a prefix, or all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Only<'a> {
    pub route: Option<&'a str>,
    pub prefix: Option<&'a str>,
}

/// Moves up to `max` messages from the dead-letter queue to `main`; only those
/// `only` selects. `report` gets a line per message.
pub async fn replay(
    main: &Queue,
    dlq: &Queue,
    routes: &[Config],
    max: usize,
    only: Only<'_>,
    dry_run: bool,
    mut report: impl FnMut(&Peeked, &str),
) -> Result<ReplaySummary, SqsError> {
    let mut summary = ReplaySummary {
        dry_run,
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut keep = Vec::new();
    let mut handled = 0;
    // Batches in a row that held only messages seen before: SQS samples its hosts,
    // so one such batch does not mean the queue is done.
    let mut stale_batches = 0;
    while handled < max {
        let batch = dlq
            .receive_for((max - handled).min(MAX_BATCH), WAIT, HOLD)
            .await?;
        if batch.is_empty() {
            break;
        }
        let fresh: Vec<Received> = batch
            .into_iter()
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        if fresh.is_empty() {
            stale_batches += 1;
            if stale_batches >= STALE_BATCHES_TOLERATED {
                break;
            }
            continue;
        }
        stale_batches = 0;
        handled += fresh.len();
        let mut to_move = Vec::new();
        for message in fresh {
            let described = describe(&message, routes);
            let wanted = only
                .prefix
                .is_none_or(|p| described.keys.iter().any(|k| k.starts_with(p)))
                && only
                    .route
                    .is_none_or(|r| described.route.as_deref() == Some(r));
            if !wanted {
                summary.skipped += 1;
                report(&described, "skipped");
                keep.push(message);
            } else if dry_run {
                summary.moved += 1;
                report(&described, "would_move");
                keep.push(message);
            } else {
                to_move.push((message, described));
            }
        }
        if to_move.is_empty() {
            continue;
        }
        let kept = move_batch(main, dlq, to_move, &mut summary, &mut report).await;
        keep.extend(kept);
    }
    release(dlq, &keep).await;
    Ok(summary)
}

/// Sends `to_move` to `main`, then deletes from the dead-letter queue those sent;
/// returns those that could not be sent, to be released.
async fn move_batch(
    main: &Queue,
    dlq: &Queue,
    to_move: Vec<(Received, Peeked)>,
    summary: &mut ReplaySummary,
    report: &mut impl FnMut(&Peeked, &str),
) -> Vec<Received> {
    let outgoing: Vec<Outgoing> = to_move.iter().map(|(m, _)| replayed(m)).collect();
    let failed = main.send_batch(&outgoing).await;
    let mut sent = Vec::new();
    let mut kept = Vec::new();
    for (i, (message, described)) in to_move.into_iter().enumerate() {
        match failed.iter().find(|(index, _)| *index == i) {
            Some((_, error)) => {
                summary.failed += 1;
                report(&described, &format!("failed: {error}"));
                kept.push(message);
            }
            None => {
                summary.moved += 1;
                report(&described, "moved");
                sent.push((message.id, message.receipt));
            }
        }
    }
    for (id, error) in dlq.delete_batch(&sent).await {
        // Sent but not deleted: the key will be reconciled twice, which is harmless.
        tracing::warn!(message_id = %id, %error, "replayed, but could not delete it from the dead-letter queue");
    }
    kept
}

/// Receives until `max` messages are held or the queue has no more to give.
async fn receive_up_to(dlq: &Queue, max: usize) -> Result<Vec<Received>, SqsError> {
    let mut seen = HashSet::new();
    let mut held = Vec::new();
    while held.len() < max {
        let batch = dlq
            .receive_for((max - held.len()).min(MAX_BATCH), WAIT, HOLD)
            .await?;
        let before = held.len();
        held.extend(batch.into_iter().filter(|m| seen.insert(m.id.clone())));
        if held.len() == before {
            break;
        }
    }
    Ok(held)
}

/// Makes held messages visible again at once.
async fn release(dlq: &Queue, held: &[Received]) {
    for message in held {
        if let Err(e) = dlq.change_visibility(message, Duration::ZERO).await {
            tracing::warn!(message_id = %message.id, error = %e, "could not release a message; it reappears when its hold ends");
        }
    }
}

fn describe(message: &Received, routes: &[Config]) -> Peeked {
    let buckets: Vec<&str> = routes.iter().map(|r| r.source.bucket.as_str()).collect();
    let (keys, unreadable) = match event::parse(&message.body, &buckets) {
        Parsed::Keys(keys) => (keys.into_iter().map(|k| (k.bucket, k.key)).collect(), None),
        Parsed::Test => (Vec::new(), None),
        Parsed::Poison(why) => (Vec::new(), Some(why)),
        Parsed::Newer(version) => (
            Vec::new(),
            Some(format!(
                "a message of format {version}, newer than this release"
            )),
        ),
        Parsed::Range { bucket, key, .. } | Parsed::Check { bucket, key, .. } => {
            (vec![(bucket, key)], None)
        }
    };
    let route = keys.first().and_then(|(bucket, key)| {
        let index = route_of(routes, bucket, key).ok()?;
        Some(routes[index].scope.name.clone())
    });
    let keys: Vec<String> = keys.into_iter().map(|(_, key)| key).collect();
    let reason = match (message.attributes.get("xpsync-reason"), unreadable) {
        (Some(reason), _) => reason.clone(),
        (None, Some(why)) => format!("unreadable: {why}"),
        (None, None) => "redriven by SQS after the queue's maxReceiveCount".to_owned(),
    };
    // This receive counts too; the attribute, when set, was taken before dead-lettering.
    let receive_count = message
        .attributes
        .get("xpsync-receive-count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(message.receive_count.saturating_sub(1));
    let now = DateTime::from(std::time::SystemTime::now());
    let age_seconds = message
        .sent_at
        .map(|t| (now.secs() - t.secs()).max(0) as u64)
        .unwrap_or(0);
    Peeked {
        message_id: message.id.clone(),
        keys,
        route,
        reason,
        receive_count,
        age_seconds,
    }
}

/// The message to send back: the same body, the history in attributes.
fn replayed(message: &Received) -> Outgoing {
    let mut attributes: Vec<(String, String)> = message
        .attributes
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), REPLAY_COUNT | "xpsync-replayed-at"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let replays: u32 = message
        .attributes
        .get(REPLAY_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    attributes.push((REPLAY_COUNT.into(), (replays + 1).to_string()));
    attributes.push((
        "xpsync-replayed-at".into(),
        DateTime::from(std::time::SystemTime::now()).to_string(),
    ));
    if !message.attributes.contains_key("xpsync-reason") {
        attributes.push((
            "xpsync-reason".into(),
            format!(
                "redriven by SQS after {} receives",
                message.receive_count.saturating_sub(1)
            ),
        ));
    }
    Outgoing {
        body: without_restarts(&message.body),
        attributes,
        delay: None,
    }
}

/// A body to send back: a native key message the fleet gave up after its restarts
/// ([`crate::fleet::Restart`]) starts its count afresh (the operator fixed the
/// cause), or it would be dead-lettered again at once; any other body as it is.
fn without_restarts(body: &str) -> String {
    let Ok(serde_json::Value::Object(mut message)) = serde_json::from_str(body) else {
        return body.to_owned();
    };
    if !message.contains_key("xpsync") || message.remove("restart").is_none() {
        return body.to_owned();
    }
    serde_json::Value::Object(message).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_key_given_up_by_the_fleet_starts_its_restarts_afresh() {
        let given_up = crate::fleet::Native::restart("b", "k", 2, "its upload is gone").body();
        let again: serde_json::Value = serde_json::from_str(&without_restarts(&given_up)).unwrap();
        assert!(again.get("restart").is_none());
        assert_eq!(again["key"], "k");
        let event = r#"{"Records": [{"s3": {"object": {"key": "a"}}}]}"#;
        assert_eq!(without_restarts(event), event);
        assert_eq!(without_restarts("not json"), "not json");
    }
}
