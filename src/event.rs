//! Queue message → the keys to reconcile.
//!
//! A message body is one of the shapes of DESIGN §3: an S3 event notification (one
//! or more records, sent to SQS directly or wrapped in an SNS envelope), an
//! EventBridge S3 event, an S3 test event, or xpsync's own `{"xpsync": 1, ...}`.
//! [`parse`] turns it into a [`Parsed`]: the keys it names (with the event's time,
//! for the replication-latency metric), a test event to drop, or poison with a
//! reason. It never panics and never invents a key: a body it cannot read, or that
//! speaks of another bucket, is poison, and poison goes to the dead-letter queue.
//!
//! Keys in S3 notifications are form-URL-encoded (`+` is a space, `%2B` a plus) and
//! are decoded strictly: a malformed escape is poison, not a guess. EventBridge does
//! not document its key encoding, so when the raw and the decoded key differ both
//! are reconciled; that costs at most a HEAD.

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use serde_json::Value;

use serde::Deserialize;

use crate::etag::ETag;
use crate::fleet::message::FORMAT;
use crate::fleet::{CheckWork, Native, RangeWork, Restart};
use crate::reconcile::Tags;

/// One key to reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEvent {
    /// Its source bucket: one of the routes' ([`crate::config::route_of`]).
    pub bucket: String,
    pub key: String,
    /// When the event happened, if the message says.
    pub time: Option<DateTime>,
    /// The event is about the object's tags (a HEAD does not show them, so only
    /// such an event makes the reconcile compare them).
    pub tags: Tags,
    /// What an Object Created event says of the object: its size and ETag.
    pub created: Option<(u64, Option<ETag>)>,
    /// The fleet started the key over ([`crate::fleet::Restart`]): how often, why.
    pub restart: Option<Restart>,
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Reconcile these keys (at least one).
    Keys(Vec<KeyEvent>),
    /// `s3:TestEvent`: nothing to do.
    Test,
    /// Not a message xpsync can act on; the reason says why.
    Poison(String),
    /// Copy a range of parts of a split object ([`crate::fleet`]).
    Range {
        bucket: String,
        key: String,
        work: RangeWork,
    },
    /// Look at a split object's upload ([`crate::fleet`]).
    Check {
        bucket: String,
        key: String,
        work: CheckWork,
    },
    /// xpsync's own message in a newer format than this release knows (a rolling
    /// deploy): left for a newer worker, never dead-lettered here.
    Newer(u64),
}

/// Reads a message body; `buckets` are the source buckets of the routes.
pub fn parse(body: &str, buckets: &[&str]) -> Parsed {
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => return Parsed::Poison(format!("the body is not JSON: {e}")),
    };
    match parse_value(&value, buckets, true) {
        Ok(parsed) => parsed,
        Err(reason) => Parsed::Poison(reason),
    }
}

fn parse_value(value: &Value, bucket: &[&str], sns_allowed: bool) -> Result<Parsed, String> {
    let object = value
        .as_object()
        .ok_or("the body is JSON but not an object")?;
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Parsed::Test);
    }
    if let Some(records) = object.get("Records") {
        return s3_notification(records, bucket);
    }
    if sns_allowed && object.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = object
            .get("Message")
            .and_then(Value::as_str)
            .ok_or("an SNS notification without a Message string")?;
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| format!("the SNS Message is not JSON: {e}"))?;
        return parse_value(&inner, bucket, false);
    }
    if object.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(object, bucket);
    }
    if object.get("xpsync").is_some() {
        return native(object, bucket);
    }
    Err(
        "not an S3 notification, SNS envelope, EventBridge S3 event, test event or xpsync message"
            .into(),
    )
}

fn s3_notification(records: &Value, buckets: &[&str]) -> Result<Parsed, String> {
    let records = records.as_array().ok_or("Records is not an array")?;
    if records.is_empty() {
        return Err("Records is empty".into());
    }
    let mut keys = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let source = record.get("eventSource").and_then(Value::as_str);
        if source != Some("aws:s3") {
            return Err(format!(
                "record {i}: eventSource is {source:?}, not \"aws:s3\""
            ));
        }
        let s3 = record.get("s3").ok_or(format!("record {i}: no s3 field"))?;
        let bucket = check_bucket(
            s3.pointer("/bucket/name").and_then(Value::as_str),
            buckets,
            &format!("record {i}"),
        )?;
        let encoded = s3
            .pointer("/object/key")
            .and_then(Value::as_str)
            .ok_or(format!("record {i}: no s3.object.key string"))?;
        let key = form_decode(encoded).map_err(|e| format!("record {i}: key {encoded:?}: {e}"))?;
        check_key(&key).map_err(|e| format!("record {i}: {e}"))?;
        let time = record
            .get("eventTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::from_str(t, DateTimeFormat::DateTimeWithOffset).ok());
        let name = record.get("eventName").and_then(Value::as_str);
        let tags = match name.is_some_and(|name| name.starts_with("ObjectTagging:")) {
            true => Tags::Compare,
            false => Tags::Skip,
        };
        let created = name
            .filter(|name| name.starts_with("ObjectCreated:"))
            .and_then(|_| described(s3.get("object")?, "eTag"));
        match keys
            .iter_mut()
            .find(|k: &&mut KeyEvent| k.key == key && k.bucket == bucket)
        {
            // Two events of one key in one message: its description is not trusted.
            Some(seen) => {
                if tags == Tags::Compare {
                    seen.tags = tags;
                }
                seen.created = None;
            }
            None => keys.push(KeyEvent {
                bucket,
                key,
                time,
                tags,
                created,
                restart: None,
            }),
        }
    }
    Ok(Parsed::Keys(keys))
}

fn eventbridge(
    object: &serde_json::Map<String, Value>,
    buckets: &[&str],
) -> Result<Parsed, String> {
    let detail_type = object.get("detail-type").and_then(Value::as_str);
    let detail = object
        .get("detail")
        .ok_or("an EventBridge event without detail")?;
    let created = (detail_type == Some("Object Created"))
        .then(|| described(detail.get("object")?, "etag"))
        .flatten();
    let tags = match detail_type {
        // A restore completed: the archived object can be copied now.
        Some("Object Created" | "Object Deleted" | "Object Restore Completed") => Tags::Skip,
        Some("Object Tags Added" | "Object Tags Deleted") => Tags::Compare,
        _ => {
            return Err(format!(
                "an EventBridge S3 event of detail-type {detail_type:?}, not \"Object Created\", \"Object Deleted\", \"Object Restore Completed\", \"Object Tags Added\" or \"Object Tags Deleted\""
            ))
        }
    };
    let bucket = check_bucket(
        detail.pointer("/bucket/name").and_then(Value::as_str),
        buckets,
        "the event",
    )?;
    let raw = detail
        .pointer("/object/key")
        .and_then(Value::as_str)
        .ok_or("an EventBridge event without a detail.object.key string")?;
    // The time is an RFC 3339 string from AWS; some emulators send epoch seconds.
    let time = match object.get("time") {
        Some(Value::String(t)) => DateTime::from_str(t, DateTimeFormat::DateTimeWithOffset).ok(),
        Some(Value::Number(n)) => n.as_f64().map(DateTime::from_secs_f64),
        _ => None,
    };
    let mut keys = Vec::with_capacity(2);
    if check_key(raw).is_ok() {
        keys.push(KeyEvent {
            bucket: bucket.clone(),
            key: raw.to_owned(),
            time,
            tags,
            created: created.clone(),
            restart: None,
        });
    }
    if let Ok(decoded) = form_decode(raw) {
        if decoded != raw && check_key(&decoded).is_ok() {
            keys.push(KeyEvent {
                bucket,
                key: decoded,
                time,
                tags,
                created,
                restart: None,
            });
        }
    }
    if keys.is_empty() {
        return Err(format!("the key {raw:?} is not a valid S3 key"));
    }
    Ok(Parsed::Keys(keys))
}

fn native(object: &serde_json::Map<String, Value>, buckets: &[&str]) -> Result<Parsed, String> {
    match object.get("xpsync").and_then(Value::as_u64) {
        Some(FORMAT) => {}
        // A newer release's: during a rolling deploy, a newer worker takes it.
        Some(version) if version > FORMAT => return Ok(Parsed::Newer(version)),
        _ => {
            return Err(format!(
                "an xpsync message of version {}, but only version {FORMAT} is known",
                object["xpsync"]
            ))
        }
    }
    let bucket = check_bucket(
        object.get("bucket").and_then(Value::as_str),
        buckets,
        "the message",
    )?;
    let message = Native::deserialize(Value::Object(object.clone()))
        .map_err(|e| format!("an xpsync message that does not read: {e}"))?;
    check_key(&message.key)?;
    let (key, restart) = (message.key, message.restart);
    match (message.range, message.check) {
        (Some(_), Some(_)) => Err("an xpsync message with both a range and a check".into()),
        (Some(work), None) => {
            if work.first_part == 0
                || work.last_part < work.first_part
                || work.part_sizes.len() as u32 != work.last_part - work.first_part + 1
            {
                return Err("an xpsync range message whose parts do not add up".into());
            }
            Ok(Parsed::Range { bucket, key, work })
        }
        (None, Some(work)) => {
            if work.part_sizes.is_empty() {
                return Err("an xpsync check message without parts".into());
            }
            Ok(Parsed::Check { bucket, key, work })
        }
        (None, None) => Ok(Parsed::Keys(vec![KeyEvent {
            bucket,
            key,
            time: None,
            tags: Tags::Skip,
            created: None,
            restart,
        }])),
    }
}

/// An event's `object` member's size and ETag (named `etag_field`), when it has a size.
fn described(object: &Value, etag_field: &str) -> Option<(u64, Option<ETag>)> {
    let size = object.get("size")?.as_u64()?;
    let etag = ETag::parse(object.get(etag_field).and_then(Value::as_str));
    Some((size, etag))
}

/// The bucket `found`, if it is one of the routes' source buckets.
fn check_bucket(found: Option<&str>, buckets: &[&str], what: &str) -> Result<String, String> {
    match (found, buckets) {
        (Some(name), _) if buckets.contains(&name) => Ok(name.to_owned()),
        (Some(name), [only]) => Err(format!(
            "{what} is for bucket {name:?}, not the source bucket {only:?}"
        )),
        (Some(name), _) => Err(format!(
            "{what} is for bucket {name:?}, which no route reads (their source buckets: {})",
            buckets.join(", ")
        )),
        (None, _) => Err(format!("{what} names no bucket")),
    }
}

/// S3 keys are 1 to 1,024 bytes of UTF-8; anything else cannot name an object.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > 1024 {
        return Err(format!(
            "the key is {} bytes long; S3 keys are at most 1,024",
            key.len()
        ));
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding, strict: `+` is a space, `%XX` a byte,
/// and the result must be UTF-8.
pub fn form_decode(encoded: &str) -> Result<String, String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly: from_str_radix alone would take "+5".
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("a malformed escape at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the decoded key is not UTF-8".into())
}

#[cfg(test)]
mod tests;
