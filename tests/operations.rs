//! Operator commands against the emulated partitions: `dlq peek`, `dlq replay`,
//! `backfill`.

mod common;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::s3::put;
use common::{bytes_of, Partitions, Run, MIB, MINUTE, SOURCE_BUCKET, TARGET_BUCKET};
use futures::StreamExt;
use serde_json::{json, Value};

fn summary(run: &Run) -> Value {
    run.json_lines().last().expect("a summary line")["summary"].clone()
}

/// Puts messages for `keys` straight into the dead-letter queue, as if the daemon
/// had given up on them.
async fn dead_letter(pipeline: &Pipeline, keys: &[&str]) {
    for key in keys {
        pipeline
            .sqs
            .send_message()
            .queue_url(&pipeline.dead_letter_url)
            .message_body(json!({"xpsync": 1, "bucket": SOURCE_BUCKET, "key": key}).to_string())
            .message_attributes(
                "xpsync-reason",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("target S3 PutObject failed: 503 SlowDown")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn peek_shows_dead_letters_and_consumes_nothing() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    dead_letter(&pipeline, &["a/one", "b/two"]).await;
    pipeline
        .sqs
        .send_message()
        .queue_url(&pipeline.dead_letter_url)
        .message_body("garbage")
        .send()
        .await
        .unwrap();

    let json_run = Run::of(&mut p.xpsync(&["dlq", "peek", "--json"])).await;
    let table = Run::of(&mut p.xpsync(&["dlq", "peek"])).await;

    assert!(json_run.success(), "{json_run}");
    let peeked = json_run.json_lines();
    assert_eq!(peeked.len(), 3);
    let mut keys: Vec<String> = peeked
        .iter()
        .flat_map(|m| m["keys"].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a/one", "b/two"]);
    assert!(peeked
        .iter()
        .any(|m| m["reason"] == "target S3 PutObject failed: 503 SlowDown"));
    assert!(peeked.iter().any(|m| m["reason"]
        .as_str()
        .unwrap()
        .starts_with("unreadable: the body is not JSON")));
    assert!(table.success(), "{table}");
    assert!(
        table.stdout.contains("3 message(s) shown; none consumed"),
        "{table}"
    );
    // Still there, and visible at once.
    let again = pipeline.visible(&pipeline.dead_letter_url).await;
    assert_eq!(again.len(), 3);
}

#[tokio::test]
async fn replaying_dead_letters_gets_every_key_replicated_by_the_daemon() {
    let p = Partitions::start().await;
    let keys: Vec<String> = (0..12).map(|i| format!("replay/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        p.put_source(key, bytes_of(100, i as u64)).await;
    }
    let pipeline = Pipeline::wire(&p).await;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    dead_letter(&pipeline, &key_refs).await;

    let run = Run::of(&mut p.xpsync(&["dlq", "replay"])).await;

    assert!(run.success(), "{run}");
    assert_eq!(summary(&run)["moved"], 12);
    assert_eq!(pipeline.depth(&pipeline.dead_letter_url).await, 0);
    let moved = pipeline.visible(&pipeline.queue_url).await;
    let attributes = moved[0].message_attributes().unwrap();
    assert_eq!(attributes["xpsync-replay-count"].string_value(), Some("1"));
    assert_eq!(
        attributes["xpsync-reason"].string_value(),
        Some("target S3 PutObject failed: 503 SlowDown"),
        "the failure history travels with the message"
    );

    let _daemon = Daemon::start(&p, "daemon", &[]).await;
    eventually(MINUTE, "every replayed key replicated", || async {
        Run::of(&mut p.xpsync(&["verify"])).await.success()
    })
    .await;
}

/// SQS may give a batch of messages already received (it samples its hosts, a
/// visibility may end): a replay that took such a batch for the end of the queue
/// would leave the rest behind.
#[tokio::test]
async fn a_replay_goes_on_past_a_batch_it_has_seen_before() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let keys: Vec<String> = (0..25).map(|i| format!("again/{i:02}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    dead_letter(&pipeline, &key_refs).await;
    let queue = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            repeat_receive: 2,
            ..Faults::default()
        },
    )
    .await;

    let run = Run::of(
        p.xpsync(&["dlq", "replay"])
            .env("XPSYNC_QUEUE__ENDPOINT_URL", &queue.endpoint),
    )
    .await;

    assert!(run.success(), "{run}");
    assert_eq!(summary(&run)["moved"], 25, "{run}");
    assert_eq!(queue.injected(), 2, "the first batch was given twice more");
    assert_eq!(pipeline.depth(&pipeline.dead_letter_url).await, 0);
    assert_eq!(pipeline.depth(&pipeline.queue_url).await, 25);
}

#[tokio::test]
async fn a_replay_dry_run_changes_nothing() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    dead_letter(&pipeline, &["x/1", "x/2", "y/1"]).await;

    let run = Run::of(&mut p.xpsync(&["dlq", "replay", "--dry-run", "--prefix", "x/"])).await;

    assert!(run.success(), "{run}");
    let s = summary(&run);
    assert_eq!(s["moved"], 2, "{run}");
    assert_eq!(s["skipped"], 1, "{run}");
    assert_eq!(s["dry_run"], true);
    assert!(run.stdout.contains("\"would_move\""));
    assert_eq!(pipeline.depth(&pipeline.queue_url).await, 0);
    let left = pipeline.visible(&pipeline.dead_letter_url).await;
    assert_eq!(left.len(), 3, "all still in the DLQ, and visible");
}

#[tokio::test]
async fn a_replay_whose_sends_partly_fail_loses_no_message() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // The main queue takes messages of at most 1 KiB: the long one cannot go back.
    pipeline
        .sqs
        .set_queue_attributes()
        .queue_url(&pipeline.queue_url)
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .unwrap();
    let long_key = format!("long/{}", "k".repeat(1000));
    dead_letter(&pipeline, &["short/1", long_key.as_str(), "short/2"]).await;

    let run = Run::of(&mut p.xpsync(&["dlq", "replay"])).await;

    assert_eq!(run.code(), Some(1), "{run}");
    let s = summary(&run);
    assert_eq!(s["moved"], 2, "{run}");
    assert_eq!(s["failed"], 1, "{run}");
    assert_eq!(pipeline.depth(&pipeline.queue_url).await, 2);
    let left = pipeline.visible(&pipeline.dead_letter_url).await;
    assert_eq!(left.len(), 1, "the unsent message stays in the DLQ");
    assert!(left[0].body().unwrap().contains(&long_key));
}

#[tokio::test]
async fn backfill_in_enqueue_mode_with_the_daemon_leaves_verify_clean() {
    let p = Partitions::start().await;
    for i in 0..25u64 {
        p.put_source(&format!("bulk/{i:03}"), bytes_of(64, i)).await;
    }
    p.put_source_multipart("bulk/large", &[5 * MIB, 1000], 99)
        .await;
    p.sync_one("bulk/000", &[]).await;
    let pipeline = Pipeline::wire(&p).await;

    let run = Run::of(&mut p.xpsync(&["backfill", "--mode", "enqueue"])).await;

    assert!(run.success(), "{run}");
    let s = summary(&run);
    assert_eq!(s["source_keys"], 26);
    assert_eq!(s["target_keys"], 1);
    assert_eq!(s["differing"], 25);
    assert_eq!(s["enqueued"], 25);
    assert_eq!(pipeline.depth(&pipeline.queue_url).await, 25);
    let _daemon = Daemon::start(&p, "daemon", &[]).await;
    eventually(MINUTE, "verify clean", || async {
        Run::of(&mut p.xpsync(&["verify"])).await.success()
    })
    .await;
}

#[tokio::test]
async fn backfill_in_copy_mode_is_limited_to_its_prefix_and_honours_the_key_prefix() {
    let p = Partitions::start().await;
    for key in ["in/a", "in/b", "in/c", "out/a"] {
        p.put_source(key, bytes_of(10, 1)).await;
    }
    let mut dry = p.xpsync(&["backfill", "--mode", "copy", "--prefix", "in/", "--dry-run"]);
    dry.env("XPSYNC_TARGET__KEY_PREFIX", "mirror/");
    let dry = Run::of(&mut dry).await;
    let mut copy = p.xpsync(&["backfill", "--mode", "copy", "--prefix", "in/"]);
    copy.env("XPSYNC_TARGET__KEY_PREFIX", "mirror/");
    let copy = Run::of(&mut copy).await;
    let mut again = p.xpsync(&["backfill", "--mode", "copy", "--prefix", "in/"]);
    again.env("XPSYNC_TARGET__KEY_PREFIX", "mirror/");
    let again = Run::of(&mut again).await;

    assert!(dry.success(), "{dry}");
    assert_eq!(summary(&dry)["differing"], 3);
    assert_eq!(
        dry.json_lines().len(),
        4,
        "three keys and the summary: {dry}"
    );
    assert!(copy.success(), "{copy}");
    assert_eq!(summary(&copy)["copied"], 3);
    assert_eq!(summary(&copy)["bytes_copied"], 30);
    for key in ["in/a", "in/b", "in/c"] {
        assert!(
            p.target_etag(&format!("mirror/{key}")).await.is_some(),
            "{key}"
        );
    }
    assert!(p.target_etag("mirror/out/a").await.is_none());
    assert!(p.target_etag("in/a").await.is_none());
    assert_eq!(summary(&again)["differing"], 0, "{again}");
}

#[tokio::test]
async fn backfill_merges_listings_of_five_thousand_keys() {
    let p = Partitions::start().await;
    futures::stream::iter(0..5000u64)
        .for_each_concurrent(32, |i| {
            let p = &p;
            async move {
                let key = format!("fleet/{i:05}");
                let body = bytes_of(16, i);
                put(&p.source_s3, SOURCE_BUCKET, &key, body.clone()).await;
                match i % 1000 {
                    7 => {} // missing on the target
                    8 => {
                        put(&p.target_s3, TARGET_BUCKET, &key, bytes_of(16, i + 1)).await;
                    } // different
                    _ => {
                        put(&p.target_s3, TARGET_BUCKET, &key, body).await;
                    }
                }
            }
        })
        .await;
    put(&p.target_s3, TARGET_BUCKET, "fleet/extra", bytes_of(1, 1)).await;

    let dry = Run::of(&mut p.xpsync(&["backfill", "--dry-run", "--prefix", "fleet/"])).await;
    let copy = Run::of(&mut p.xpsync(&["backfill", "--mode", "copy", "--prefix", "fleet/"])).await;
    let verify = Run::of(&mut p.xpsync(&["verify", "--prefix", "fleet/"])).await;

    assert!(dry.success(), "{dry}");
    let s = summary(&dry);
    assert_eq!(s["source_keys"], 5000);
    assert_eq!(s["target_keys"], 4996);
    assert_eq!(
        s["differing"], 10,
        "5 missing, 5 different; the extra is left alone without deletes"
    );
    let statuses: Vec<(String, String)> = dry
        .json_lines()
        .iter()
        .filter_map(|l| {
            Some((
                l["key"].as_str()?.to_owned(),
                l["status"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(
        statuses[0],
        ("fleet/00007".to_owned(), "missing".to_owned())
    );
    assert_eq!(
        statuses[1],
        ("fleet/00008".to_owned(), "different".to_owned())
    );
    assert!(copy.success(), "{copy}");
    assert_eq!(summary(&copy)["copied"], 10);
    assert_eq!(
        verify.code(),
        Some(1),
        "only the extra key differs now: {verify}"
    );
    assert_eq!(summary(&verify)["extra"], 1);
    assert_eq!(summary(&verify)["same"], 5000);
}
