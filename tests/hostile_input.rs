//! The message parser under hostile input: it never panics, reconciles exactly the
//! key a message names, or calls the message poison with a reason.

use proptest::prelude::*;
use serde_json::json;
use xpsync::event::{parse, Parsed};

const BUCKET: &str = "source-bucket";

/// As S3 encodes a key in an event notification: form-URL-encoding.
fn s3_encode(key: &str) -> String {
    url::form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

fn notification(bucket: &str, encoded_key: &str) -> String {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "eventTime": "2026-11-25T00:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key, "size": 1}}
    }]})
    .to_string()
}

/// Any S3 key: 1 to 1,024 bytes of UTF-8, control characters, `..` segments,
/// `%`, `+` and spaces included.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{1,64}",
        "(\\.\\./|%|\\+| |/|[\\x00-\\x1f]|中|🚀|a){1,200}",
    ]
    .prop_filter("S3 keys are 1 to 1,024 bytes", |k| {
        !k.is_empty() && k.len() <= 1024
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_name_no_key(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let body = String::from_utf8_lossy(&bytes);
        match parse(&body, &[BUCKET]) {
            Parsed::Poison(reason) => prop_assert!(!reason.is_empty()),
            // only if the bytes happen to be a valid message
            Parsed::Test
            | Parsed::Keys(_)
            | Parsed::Range { .. }
            | Parsed::Check { .. }
            | Parsed::Newer(_) => {}
        }
    }

    #[test]
    fn a_notification_reconciles_exactly_the_key_it_names(key in key()) {
        let parsed = parse(&notification(BUCKET, &s3_encode(&key)), &[BUCKET]);
        match parsed {
            Parsed::Keys(keys) => {
                prop_assert_eq!(keys.len(), 1);
                prop_assert_eq!(&keys[0].key, &key);
            }
            other => prop_assert!(false, "{:?} for {:?}", other, key),
        }
    }

    #[test]
    fn a_native_message_reconciles_exactly_its_key(key in key()) {
        let body = json!({"xpsync": 1, "bucket": BUCKET, "key": key}).to_string();
        match parse(&body, &[BUCKET]) {
            Parsed::Keys(keys) => prop_assert_eq!(&keys[0].key, &key),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn eventbridge_tries_the_raw_key_first_and_never_another(key in key()) {
        let body = json!({"source": "aws.s3", "detail-type": "Object Created",
                          "detail": {"bucket": {"name": BUCKET}, "object": {"key": key}}}).to_string();
        match parse(&body, &[BUCKET]) {
            Parsed::Keys(keys) => {
                prop_assert_eq!(&keys[0].key, &key);
                // A second key only as the form-decoding of the first.
                if let Some(second) = keys.get(1) {
                    prop_assert_eq!(Some(second.key.clone()), xpsync::event::form_decode(&key).ok());
                }
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn events_of_other_buckets_are_poison(key in key(), bucket in "[a-z0-9.-]{3,63}") {
        prop_assume!(bucket != BUCKET);
        match parse(&notification(&bucket, &s3_encode(&key)), &[BUCKET]) {
            Parsed::Poison(reason) => prop_assert!(reason.contains("not the source bucket")),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn malformed_escapes_are_poison(prefix in "[a-z]{0,8}", bad in "%([g-z].|.?)") {
        let encoded = format!("{prefix}{bad}");
        prop_assume!(!encoded.is_empty());
        match parse(&notification(BUCKET, &encoded), &[BUCKET]) {
            Parsed::Poison(reason) => prop_assert!(reason.contains("malformed escape"), "{}", reason),
            other => prop_assert!(false, "{:?} for {:?}", other, encoded),
        }
    }
}

#[test]
fn keys_longer_than_s3_allows_are_poison() {
    let key = "k".repeat(2048);
    match parse(&notification(BUCKET, &key), &[BUCKET]) {
        Parsed::Poison(reason) => assert!(reason.contains("at most 1,024"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_one_megabyte_message_is_read() {
    let body = json!({"Records": [{
        "eventSource": "aws:s3",
        "padding": "x".repeat(1024 * 1024),
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": "big%20message"}}
    }]})
    .to_string();
    assert!(body.len() > 1024 * 1024);
    match parse(&body, &[BUCKET]) {
        Parsed::Keys(keys) => assert_eq!(keys[0].key, "big message"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deeply_nested_json_is_poison_not_a_stack_overflow() {
    let depth = 100_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    match parse(&body, &[BUCKET]) {
        Parsed::Poison(reason) => assert!(reason.contains("not JSON"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let nested_records = format!(
        "{{\"Records\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(matches!(
        parse(&nested_records, &[BUCKET]),
        Parsed::Poison(_)
    ));
}
