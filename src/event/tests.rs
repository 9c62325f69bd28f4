//! Every shape of message, and the poison among them.

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
    assert_eq!(keys(parse(&body, &[BUCKET])), ["a b+c/中.txt"]);
}

#[test]
fn several_records_give_several_keys_once_each() {
    let body = json!({"Records": [record(BUCKET, "a"), record(BUCKET, "b"), record(BUCKET, "a")]})
        .to_string();
    assert_eq!(keys(parse(&body, &[BUCKET])), ["a", "b"]);
}

#[test]
fn the_event_time_is_kept() {
    let body = json!({"Records": [record(BUCKET, "a")]}).to_string();
    let Parsed::Keys(k) = parse(&body, &[BUCKET]) else {
        panic!()
    };
    assert_eq!(k[0].time.unwrap().secs(), 1_795_568_523);
}

#[test]
fn an_sns_envelope_is_opened() {
    let inner = json!({"Records": [record(BUCKET, "x%20y")]}).to_string();
    let body = json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
    assert_eq!(keys(parse(&body, &[BUCKET])), ["x y"]);
}

#[test]
fn eventbridge_keys_are_tried_raw_and_decoded() {
    let event = |key: &str| {
        json!({"version": "0", "source": "aws.s3", "detail-type": "Object Created",
               "time": "2026-11-25T01:02:03Z",
               "detail": {"bucket": {"name": BUCKET}, "object": {"key": key}}})
        .to_string()
    };
    assert_eq!(keys(parse(&event("plain/key"), &[BUCKET])), ["plain/key"]);
    assert_eq!(keys(parse(&event("a+b"), &[BUCKET])), ["a+b", "a b"]);
    assert_eq!(keys(parse(&event("100%"), &[BUCKET])), ["100%"]);
}

#[test]
fn tag_events_are_keys_whose_tags_are_compared() {
    let event = |detail_type: &str| {
        json!({"source": "aws.s3", "detail-type": detail_type,
               "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k"}}})
        .to_string()
    };
    let Parsed::Keys(k) = parse(&event("Object Restore Completed"), &[BUCKET]) else {
        panic!("a completed restore is a key to copy")
    };
    assert_eq!((k[0].key.as_str(), k[0].tags), ("k", Tags::Skip));
    for detail_type in ["Object Tags Added", "Object Tags Deleted"] {
        let Parsed::Keys(k) = parse(&event(detail_type), &[BUCKET]) else {
            panic!("{detail_type} is not poison")
        };
        assert_eq!(k[0].tags, Tags::Compare, "{detail_type}");
    }
    let Parsed::Keys(k) = parse(&event("Object Created"), &[BUCKET]) else {
        panic!()
    };
    assert_eq!(k[0].tags, Tags::Skip);
    let mut tagging = record(BUCKET, "k");
    tagging["eventName"] = json!("ObjectTagging:Put");
    let body = json!({"Records": [record(BUCKET, "k"), tagging]}).to_string();
    let Parsed::Keys(k) = parse(&body, &[BUCKET]) else {
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
    let Parsed::Keys(k) = parse(&json!({"Records": [created]}).to_string(), &[BUCKET]) else {
        panic!()
    };
    let etag = "9e107d9d372bb6826bd81d3542a419d6".to_owned();
    assert_eq!(k[0].created, Some((1, Some(ETag::new(&etag)))));
    let bridge = json!({"source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k", "size": 7, "etag": etag}}});
    let Parsed::Keys(k) = parse(&bridge.to_string(), &[BUCKET]) else {
        panic!()
    };
    assert_eq!(k[0].created, Some((7, Some(ETag::new(&etag)))));
    let mut deleted = record(BUCKET, "a");
    deleted["eventName"] = json!("ObjectRemoved:Delete");
    let Parsed::Keys(k) = parse(&json!({"Records": [deleted]}).to_string(), &[BUCKET]) else {
        panic!()
    };
    assert_eq!(k[0].created, None, "only a created object is described");
}

#[test]
fn eventbridge_epoch_times_are_read() {
    let body = json!({"source": "aws.s3", "detail-type": "Object Deleted", "time": 1_795_568_523.5,
                      "detail": {"bucket": {"name": BUCKET}, "object": {"key": "k"}}})
    .to_string();
    let Parsed::Keys(k) = parse(&body, &[BUCKET]) else {
        panic!()
    };
    assert_eq!(k[0].time.unwrap().secs(), 1_795_568_523);
}

#[test]
fn a_native_message_of_a_newer_format_is_left_for_a_newer_worker() {
    let body = json!({"xpsync": 2, "bucket": BUCKET, "key": "k", "new": {"member": 1}});
    assert_eq!(parse(&body.to_string(), &[BUCKET]), Parsed::Newer(2));
}

#[test]
fn test_events_and_native_messages() {
    let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET});
    assert_eq!(parse(&test.to_string(), &[BUCKET]), Parsed::Test);
    let native = json!({"xpsync": 1, "bucket": BUCKET, "key": "a+b%2B"});
    assert_eq!(keys(parse(&native.to_string(), &[BUCKET])), ["a+b%2B"]);
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
        match parse(body, &[BUCKET]) {
            Parsed::Poison(r) => assert!(r.contains(reason), "{body}: {r}"),
            other => panic!("{body}: expected poison, got {other:?}"),
        }
    }
}

#[test]
fn each_key_keeps_its_bucket_and_an_unrouted_bucket_is_poison() {
    let body = json!({"Records": [record("logs", "a"), record("media", "a")]}).to_string();
    let Parsed::Keys(k) = parse(&body, &["logs", "media"]) else {
        panic!("keys")
    };
    let found: Vec<_> = k
        .iter()
        .map(|k| (k.bucket.as_str(), k.key.as_str()))
        .collect();
    assert_eq!(found, [("logs", "a"), ("media", "a")], "one key per bucket");
    let body = json!({"Records": [record("other", "a")]}).to_string();
    let Parsed::Poison(why) = parse(&body, &["logs", "media"]) else {
        panic!("poison")
    };
    assert!(
        why.contains("bucket \"other\", which no route reads (their source buckets: logs, media)"),
        "{why}"
    );
}
