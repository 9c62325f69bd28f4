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
    Range { key: String, work: RangeWork },
    /// Look at a split object's upload ([`crate::fleet`]).
    Check { key: String, work: CheckWork },
    /// xpsync's own message in a newer format than this release knows (a rolling
    /// deploy): left for a newer worker, never dead-lettered here.
    Newer(u64),
}

/// Reads a message body; `bucket` is the configured source bucket.
pub fn parse(body: &str, bucket: &str) -> Parsed {
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => return Parsed::Poison(format!("the body is not JSON: {e}")),
    };
    match parse_value(&value, bucket, true) {
        Ok(parsed) => parsed,
        Err(reason) => Parsed::Poison(reason),
    }
}

fn parse_value(value: &Value, bucket: &str, sns_allowed: bool) -> Result<Parsed, String> {
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

fn s3_notification(records: &Value, bucket: &str) -> Result<Parsed, String> {
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
        check_bucket(
            s3.pointer("/bucket/name").and_then(Value::as_str),
            bucket,
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
        match keys.iter_mut().find(|k: &&mut KeyEvent| k.key == key) {
            // Two events of one key in one message: its description is not trusted.
            Some(seen) => {
                if tags == Tags::Compare {
                    seen.tags = tags;
                }
                seen.created = None;
            }
            None => keys.push(KeyEvent {
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

fn eventbridge(object: &serde_json::Map<String, Value>, bucket: &str) -> Result<Parsed, String> {
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
    check_bucket(
        detail.pointer("/bucket/name").and_then(Value::as_str),
        bucket,
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

fn native(object: &serde_json::Map<String, Value>, bucket: &str) -> Result<Parsed, String> {
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
    check_bucket(
        object.get("bucket").and_then(Value::as_str),
        bucket,
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
            Ok(Parsed::Range { key, work })
        }
        (None, Some(work)) => {
            if work.part_sizes.is_empty() {
                return Err("an xpsync check message without parts".into());
            }
            Ok(Parsed::Check { key, work })
        }
        (None, None) => Ok(Parsed::Keys(vec![KeyEvent {
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

fn check_bucket(found: Option<&str>, expected: &str, what: &str) -> Result<(), String> {
    match found {
        Some(name) if name == expected => Ok(()),
        Some(name) => Err(format!(
            "{what} is for bucket {name:?}, not the source bucket {expected:?}"
        )),
        None => Err(format!("{what} names no bucket")),
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
mod tests {
    use super::*;
    use serde_json::json;

    const BUCKET: &str = "source-bucket";

    fn keys(parsed: Parsed) -> Vec<String> {
        match parsed {
            Parsed::Keys(keys) => keys.into_iter().map(|k| k.key).collect(),
            other => panic!("expected keys, got {other:?}"),
        }
    }

    fn record(bucket: &str, key: &str) -> Value {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2026-11-25T01:02:03.456Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}
        })
    }

    #[test]
    fn s3_notification_keys_are_form_decoded() {
        let body = json!({"Records": [record(BUCKET, "a+b%2Bc/%E4%B8%AD.txt")]}).to_string();
        assert_eq!(keys(parse(&body, BUCKET)), ["a b+c/中.txt"]);
    }

    #[test]
    fn several_records_give_several_keys_once_each() {
        let body =
            json!({"Records": [record(BUCKET, "a"), record(BUCKET, "b"), record(BUCKET, "a")]})
                .to_string();
        assert_eq!(keys(parse(&body, BUCKET)), ["a", "b"]);
    }

    #[test]
    fn the_event_time_is_kept() {
        let body = json!({"Records": [record(BUCKET, "a")]}).to_string();
        let Parsed::Keys(k) = parse(&body, BUCKET) else {
            panic!()
        };
        assert_eq!(k[0].time.unwrap().secs(), 1_795_568_523);
    }

    #[test]
    fn an_sns_envelope_is_opened() {
        let inner = json!({"Records": [record(BUCKET, "x%20y")]}).to_string();
        let body = json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
        assert_eq!(keys(parse(&body, BUCKET)), ["x y"]);
    }

    #[test]
    fn eventbridge_keys_are_tried_raw_and_decoded() {
        let event = |key: &str| {
            json!({"version": "0", "source": "aws.s3", "detail-type": "Object Created",
                   "time": "2026-11-25T01:02:03Z",
                   "detail": {"bucket": {"name": BUCKET}, "object": {"key": key}}})
            .to_string()
        };
        assert_eq!(keys(parse(&event("plain/key"), BUCKET)), ["plain/key"]);
        assert_eq!(keys(parse(&event("a+b"), BUCKET)), ["a+b", "a b"]);
        assert_eq!(keys(parse(&event("100%"), BUCKET)), ["100%"]);
    }

    #[test]
    fn tag_events_are_keys_whose_tags_are_compared() {
        let event = |detail_type: &str| {
            json!({"source": "aws.s3", "detail-type": detail_type,
                   "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k"}}})
            .to_string()
        };
        let Parsed::Keys(k) = parse(&event("Object Restore Completed"), BUCKET) else {
            panic!("a completed restore is a key to copy")
        };
        assert_eq!((k[0].key.as_str(), k[0].tags), ("k", Tags::Skip));
        for detail_type in ["Object Tags Added", "Object Tags Deleted"] {
            let Parsed::Keys(k) = parse(&event(detail_type), BUCKET) else {
                panic!("{detail_type} is not poison")
            };
            assert_eq!(k[0].tags, Tags::Compare, "{detail_type}");
        }
        let Parsed::Keys(k) = parse(&event("Object Created"), BUCKET) else {
            panic!()
        };
        assert_eq!(k[0].tags, Tags::Skip);
        let mut tagging = record(BUCKET, "k");
        tagging["eventName"] = json!("ObjectTagging:Put");
        let body = json!({"Records": [record(BUCKET, "k"), tagging]}).to_string();
        let Parsed::Keys(k) = parse(&body, BUCKET) else {
            panic!()
        };
        assert_eq!(k.len(), 1);
        assert_eq!(
            k[0].tags,
            Tags::Compare,
            "a key named twice keeps its tag event"
        );
    }

    #[test]
    fn object_created_events_describe_the_object() {
        let mut created = record(BUCKET, "a");
        created["s3"]["object"]["eTag"] = json!("9e107d9d372bb6826bd81d3542a419d6");
        let Parsed::Keys(k) = parse(&json!({"Records": [created]}).to_string(), BUCKET) else {
            panic!()
        };
        let etag = "9e107d9d372bb6826bd81d3542a419d6".to_owned();
        assert_eq!(k[0].created, Some((1, Some(ETag::new(&etag)))));
        let bridge = json!({"source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k", "size": 7, "etag": etag}}});
        let Parsed::Keys(k) = parse(&bridge.to_string(), BUCKET) else {
            panic!()
        };
        assert_eq!(k[0].created, Some((7, Some(ETag::new(&etag)))));
        let mut deleted = record(BUCKET, "a");
        deleted["eventName"] = json!("ObjectRemoved:Delete");
        let Parsed::Keys(k) = parse(&json!({"Records": [deleted]}).to_string(), BUCKET) else {
            panic!()
        };
        assert_eq!(k[0].created, None, "only a created object is described");
    }

    #[test]
    fn eventbridge_epoch_times_are_read() {
        let body =
            json!({"source": "aws.s3", "detail-type": "Object Deleted", "time": 1_795_568_523.5,
                          "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k"}}})
            .to_string();
        let Parsed::Keys(k) = parse(&body, BUCKET) else {
            panic!()
        };
        assert_eq!(k[0].time.unwrap().secs(), 1_795_568_523);
    }

    #[test]
    fn a_native_message_of_a_newer_format_is_left_for_a_newer_worker() {
        let body = json!({"xpsync": 2, "bucket": BUCKET, "key": "k", "new": {"member": 1}});
        assert_eq!(parse(&body.to_string(), BUCKET), Parsed::Newer(2));
    }

    #[test]
    fn test_events_and_native_messages() {
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET});
        assert_eq!(parse(&test.to_string(), BUCKET), Parsed::Test);
        let native = json!({"xpsync": 1, "bucket": BUCKET, "key": "a+b%2B"});
        assert_eq!(keys(parse(&native.to_string(), BUCKET)), ["a+b%2B"]);
    }

    #[test]
    fn poison_says_why() {
        let cases = [
            ("not json", "not JSON"),
            ("[1, 2]", "not an object"),
            (r#"{"hello": "world"}"#, "not an S3 notification"),
            (
                &json!({"Records": [record("other-bucket", "k")]}).to_string(),
                "bucket \"other-bucket\"",
            ),
            (
                &json!({"Records": [record(BUCKET, "bad%zz")]}).to_string(),
                "malformed escape",
            ),
            (
                &json!({"Records": [record(BUCKET, "%FF%FE")]}).to_string(),
                "not UTF-8",
            ),
            (
                &json!({"Records": [record(BUCKET, "a%+5b")]}).to_string(),
                "malformed escape",
            ),
            (&json!({"Records": []}).to_string(), "Records is empty"),
            (
                &json!({"xpsync": "two", "bucket": BUCKET, "key": "k"}).to_string(),
                "version \"two\"",
            ),
            (
                &json!({"xpsync": 1, "bucket": BUCKET, "key": ""}).to_string(),
                "empty",
            ),
            (
                &json!({"xpsync": 1, "bucket": BUCKET, "key": "k".repeat(1025)}).to_string(),
                "1,024",
            ),
        ];
        for (body, reason) in cases {
            match parse(body, BUCKET) {
                Parsed::Poison(r) => assert!(r.contains(reason), "{body}: {r}"),
                other => panic!("{body}: expected poison, got {other:?}"),
            }
        }
    }
}
