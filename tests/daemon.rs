//! `xpsync run` end to end, through the production chain in the emulated source
//! partition: bucket → EventBridge → rule → SQS (+ DLQ) → xpsync → target bucket.

mod common;

use std::time::Duration;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::proxy::SlowProxy;
use common::{
    bytes_of, secret_json, Etag, Keys, Partitions, Run, MIB, MINUTE, SECRET_ID, SOURCE_BUCKET,
};
use serde_json::json;

async fn verify_is_clean(p: &Partitions) -> bool {
    Run::of(&mut p.xpsync(&["verify"])).await.success()
}

async fn queues_are_empty(pipeline: &Pipeline) -> bool {
    pipeline.depth(&pipeline.queue_url).await == 0
}

fn s3_record(key: &str) -> serde_json::Value {
    json!({
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "cn-northwest-1",
        "eventTime": "2026-11-25T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": SOURCE_BUCKET}, "object": {"key": key}}
    })
}

#[tokio::test]
async fn objects_of_mixed_sizes_and_awkward_keys_arrive_and_verify_and_metrics_count_them() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let daemon = Daemon::start(&p, "daemon", &[]).await;

    let small = [
        "a.txt",
        "with space/and+plus.txt",
        "中文/报告 2026.pdf",
        "emoji/🚀.bin",
    ];
    let mut bytes = 0;
    for (i, key) in small.iter().enumerate() {
        let body = bytes_of(1000 * (i + 1), i as u64);
        bytes += body.len();
        p.put_source(key, body).await;
    }
    let multipart = p
        .put_source_multipart("big/video.mp4", &[5 * MIB, 5 * MIB, 123], 9)
        .await;
    bytes += multipart.len();

    eventually(MINUTE, "every object verified on the target", || {
        verify_is_clean(&p)
    })
    .await;
    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;

    // The emulator sends two events for a completed multipart upload: duplicates
    // are handled, and counted, but copied once.
    let copied = daemon.metric("xpsync_objects_total{result=\"copied\"}");
    let unchanged = daemon.metric("xpsync_objects_total{result=\"unchanged\"}");
    let deleted = daemon.metric("xpsync_messages_total{result=\"deleted\"}");
    assert_eq!(copied, 5.0);
    assert!(deleted >= 5.0);
    assert_eq!(copied + unchanged, deleted, "one key per message here");
    assert_eq!(daemon.metric("xpsync_bytes_copied_total"), bytes as f64);
    assert_eq!(
        daemon.metric("xpsync_copy_duration_seconds_count{method=\"multipart\"}"),
        1.0
    );
    assert_eq!(
        daemon.metric("xpsync_copy_duration_seconds_count{method=\"put\"}"),
        4.0
    );
    assert_eq!(
        daemon.metric("xpsync_replication_latency_seconds_count"),
        5.0
    );
    assert_eq!(daemon.metric("xpsync_objects_in_flight"), 0.0);
    assert_eq!(daemon.metric("xpsync_memory_reserved_bytes"), 0.0);
    assert_eq!(daemon.metric("xpsync_ready"), 1.0);
    assert_eq!(daemon.get("/healthz").0, 200);
    assert_eq!(pipeline.depth(&pipeline.dead_letter_url).await, 0);
}

#[tokio::test]
async fn duplicate_and_out_of_order_events_end_in_the_sources_final_state() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let _daemon = Daemon::start(&p, "daemon", &[("XPSYNC_REPLICATE__DELETES", "true")]).await;

    // put, put, delete, put: four events for one key, and put, delete for another.
    p.put_source("flip", bytes_of(100, 1)).await;
    p.put_source("flip", bytes_of(100, 2)).await;
    p.source_s3
        .delete_object()
        .bucket(SOURCE_BUCKET)
        .key("flip")
        .send()
        .await
        .unwrap();
    let last = bytes_of(100, 3);
    p.put_source("flip", last.clone()).await;
    p.put_source("gone", bytes_of(10, 4)).await;
    p.source_s3
        .delete_object()
        .bucket(SOURCE_BUCKET)
        .key("gone")
        .send()
        .await
        .unwrap();
    // Stale events arriving late, out of order.
    for key in ["flip", "gone", "flip"] {
        pipeline
            .send(&json!({"Records": [s3_record(key)]}).to_string())
            .await;
    }

    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;
    p.assert_copied_intact("flip", &last, Etag::Same).await;
    assert_eq!(p.target_bytes("gone").await, None);
    assert!(verify_is_clean(&p).await);
}

#[tokio::test]
async fn s3_notifications_sns_envelopes_native_messages_and_test_events_are_handled() {
    let p = Partitions::start().await;
    for key in ["direct one", "wrapped+one", "native%one"] {
        p.put_source(key, bytes_of(64, 1)).await;
    }
    let pipeline = Pipeline::wire(&p).await;
    let direct = json!({"Records": [s3_record("direct+one")]});
    let wrapped = json!({
        "Type": "Notification", "MessageId": "1", "TopicArn": "arn:aws-cn:sns:cn-northwest-1:123456789012:t",
        "Message": json!({"Records": [s3_record("wrapped%2Bone")]}).to_string()
    });
    let native = json!({"xpsync": 1, "bucket": SOURCE_BUCKET, "key": "native%one"});
    let test_event =
        json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": SOURCE_BUCKET});
    for body in [direct, wrapped, native, test_event] {
        pipeline.send(&body.to_string()).await;
    }

    let daemon = Daemon::start(&p, "daemon", &[]).await;

    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;
    assert!(verify_is_clean(&p).await);
    assert_eq!(
        daemon.metric("xpsync_objects_total{result=\"copied\"}"),
        3.0
    );
    assert_eq!(
        daemon.metric("xpsync_messages_total{result=\"ignored\"}"),
        1.0
    );
    assert_eq!(pipeline.depth(&pipeline.dead_letter_url).await, 0);
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dlq_with_its_reason_and_nothing_else_is_lost() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    pipeline.send("this is not json").await;
    pipeline
        .send(&json!({"xpsync": 1, "bucket": "someone-elses-bucket", "key": "k"}).to_string())
        .await;
    let daemon = Daemon::start(&p, "daemon", &[]).await;
    p.put_source("fine", bytes_of(10, 1)).await;

    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;
    eventually(MINUTE, "both poison messages dead-lettered", || async {
        pipeline.depth(&pipeline.dead_letter_url).await == 2
    })
    .await;

    let reasons: Vec<String> = pipeline
        .dead_letters()
        .await
        .iter()
        .map(|m| {
            m.message_attributes().unwrap()["xpsync-reason"]
                .string_value()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not the source bucket")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(p.target_etag("fine").await.is_some());
    assert_eq!(
        daemon.metric("xpsync_messages_total{result=\"dead_lettered\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_copy_that_outlasts_the_visibility_timeout_is_not_done_twice() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 12 MiB at 1 MiB/s: the copy takes about 12 s, the visibility timeout is 10 s.
    let slow = SlowProxy::start(&p.source.endpoint, MIB as u64).await;
    let env = [("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "10s")];
    let mut slow_env = env.to_vec();
    slow_env.push(("XPSYNC_SOURCE__ENDPOINT_URL", slow.endpoint.as_str()));
    let first = Daemon::start(&p, "first", &slow_env).await;
    let body = bytes_of(12 * MIB, 1);
    p.put_source("slow.bin", body.clone()).await;
    eventually(MINUTE, "the first daemon copying", || async {
        first.metric("xpsync_objects_in_flight") == 1.0
    })
    .await;
    let second = Daemon::start(&p, "second", &env).await;

    eventually(MINUTE, "the copy done", || async {
        first.metric("xpsync_objects_total{result=\"copied\"}") == 1.0
    })
    .await;
    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;

    let logs = format!("first:\n{}\nsecond:\n{}", first.logs(), second.logs());
    assert_eq!(
        second.metric("xpsync_objects_total{result=\"copied\"}"),
        0.0,
        "{logs}"
    );
    assert_eq!(
        second.metric("xpsync_objects_total{result=\"unchanged\"}"),
        0.0,
        "{logs}"
    );
    p.assert_copied_intact("slow.bin", &body, Etag::Same).await;
}

#[tokio::test]
async fn sigterm_mid_copy_exits_0_within_the_grace_period_and_another_worker_finishes() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, MIB as u64 / 2).await;
    let mut first = Daemon::start(
        &p,
        "first",
        &[
            ("XPSYNC_SOURCE__ENDPOINT_URL", slow.endpoint.as_str()),
            ("XPSYNC_SHUTDOWN__GRACE_PERIOD", "3s"),
        ],
    )
    .await;
    let body = bytes_of(12 * MIB, 2);
    p.put_source("long.bin", body.clone()).await;
    eventually(MINUTE, "the first daemon copying", || async {
        first.metric("xpsync_objects_in_flight") == 1.0
    })
    .await;

    let signalled = std::time::Instant::now();
    first.terminate();
    eventually(
        Duration::from_secs(2),
        "/readyz failing after SIGTERM",
        || async {
            let (status, body) = first.get("/readyz");
            status == 503 && body.contains("shutting down")
        },
    )
    .await;
    let status = first.wait(Duration::from_secs(10)).await;
    let took = signalled.elapsed();

    assert!(status.success(), "exit status {status}:\n{}", first.logs());
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} for a 3 s grace period"
    );
    let logs = first.logs();
    assert!(logs.contains("1 released for another worker"), "{logs}");

    // The message is visible at once: far sooner than its 30 s visibility timeout.
    let second = Daemon::start(&p, "second", &[]).await;
    eventually(
        Duration::from_secs(15),
        "the second daemon finishing the copy",
        || async { second.metric("xpsync_objects_total{result=\"copied\"}") == 1.0 },
    )
    .await;
    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;
    p.assert_copied_intact("long.bin", &body, Etag::Same).await;
}

#[tokio::test]
async fn the_breaker_pauses_on_rejected_target_keys_and_resumes_once_the_secret_is_fixed() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let wrong = Keys {
        id: "AKIAWRONGWRONGWRONG2".into(),
        secret: "wrong".into(),
    };
    p.put_secret(SECRET_ID, &secret_json(&wrong)).await;
    let daemon = Daemon::start(&p, "daemon", &[]).await;
    for i in 0..5 {
        p.put_source(&format!("k{i}"), bytes_of(10, i)).await;
    }

    eventually(MINUTE, "/readyz reporting the pause", || async {
        let (status, body) = daemon.get("/readyz");
        status == 503 && body.contains("paused: target S3")
    })
    .await;
    assert_eq!(
        daemon.metric("xpsync_breaker_trips_total{kind=\"auth\"}"),
        1.0
    );
    assert_eq!(daemon.metric("xpsync_ready"), 0.0);
    let failed_while_open = daemon.metric("xpsync_objects_total{result=\"failed\"}");

    p.put_secret(SECRET_ID, &secret_json(&p.writer)).await;

    eventually(MINUTE, "/readyz ready again", || async {
        daemon.get("/readyz").0 == 200
    })
    .await;
    eventually(Duration::from_secs(90), "every object copied", || {
        verify_is_clean(&p)
    })
    .await;
    eventually(MINUTE, "the queue drained", || queues_are_empty(&pipeline)).await;
    assert!(
        failed_while_open <= 5.0,
        "paused receiving must stop the failures"
    );
    assert_eq!(
        pipeline.depth(&pipeline.dead_letter_url).await,
        0,
        "nothing burned into the DLQ"
    );
}

#[tokio::test]
async fn a_batch_delete_reports_the_entries_that_failed_and_deletes_the_others() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    for key in ["one", "two"] {
        pipeline
            .send(&json!({"xpsync": 1, "bucket": SOURCE_BUCKET, "key": key}).to_string())
            .await;
    }
    // The queue is read with the default chain: in this process, the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", common::SOURCE_KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", common::SOURCE_SECRET_KEY);
    let config = xpsync::config::Config::load(Some(&p.dir.path().join("xpsync.toml"))).unwrap();
    let queue = xpsync::queue::Queue::connect(&config).await.unwrap();
    assert_eq!(
        queue.dead_letter_url.as_deref(),
        Some(pipeline.dead_letter_url.as_str())
    );
    let received = queue.receive(10).await.unwrap();
    assert_eq!(received.len(), 2);

    let failed = queue
        .delete_batch(&[
            (received[0].id.clone(), received[0].receipt.clone()),
            ("bogus".to_owned(), "not-a-receipt-handle".to_owned()),
        ])
        .await;

    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "bogus");
    assert!(failed[0].1.contains("ReceiptHandleIsInvalid"), "{failed:?}");
    assert_eq!(
        pipeline.depth(&pipeline.queue_url).await,
        1,
        "only the valid entry is deleted"
    );
}

#[tokio::test]
async fn an_event_that_describes_a_small_object_saves_the_source_head() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let source = common::faults::FaultProxy::start(&p.source.endpoint, Default::default()).await;
    let body = bytes_of(1000, 7);
    p.put_source("described.bin", body.clone()).await;
    let etag = p.source_etag("described.bin").await;
    pipeline.purge().await;
    let mut record = s3_record("described.bin");
    record["s3"]["object"]["size"] = json!(1000);
    record["s3"]["object"]["eTag"] = json!(etag);
    let _daemon = Daemon::start(
        &p,
        "daemon",
        &[("XPSYNC_SOURCE__ENDPOINT_URL", source.endpoint.as_str())],
    )
    .await;

    pipeline
        .send(&json!({"Records": [record]}).to_string())
        .await;
    eventually(MINUTE, "the object is copied", || async {
        p.target_etag("described.bin").await.is_some() && queues_are_empty(&pipeline).await
    })
    .await;

    p.assert_copied_intact("described.bin", &body, Etag::Same)
        .await;
    // One GET read it (sent with the target's HEAD); the one HEAD is the
    // last-writer check after the write.
    assert_eq!(source.requests("GET"), 1);
    assert_eq!(source.requests("HEAD"), 1);
}
