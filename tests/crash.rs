//! The daemon killed outright, and stopped with many copies in flight.

mod common;

use std::time::Duration;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::proxy::SlowProxy;
use common::{bytes_of, Etag, Partitions, KIB, MIB, MINUTE};

#[tokio::test]
async fn a_daemon_killed_half_way_through_a_200_mib_copy_is_resumed_by_the_next() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 40 parts of 5 MiB, read at 20 MiB/s: about 10 s of copying.
    let slow = SlowProxy::start(&p.source.endpoint, 20 * MIB as u64).await;
    let env = [
        ("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "10s"),
        ("XPSYNC_TRANSFER__MAX_PARTS", "4"),
    ];
    let mut slow_env = env.to_vec();
    slow_env.push(("XPSYNC_SOURCE__ENDPOINT_URL", slow.endpoint.as_str()));
    let mut first = Daemon::start(&p, "first", &slow_env).await;
    let body = p
        .put_source_multipart("crash/200MiB", &[5 * MIB; 40], 7)
        .await;

    eventually(
        Duration::from_secs(120),
        "half of the parts uploaded",
        || async { p.target_upload_parts().await >= 20 },
    )
    .await;
    first.kill();
    first.wait(Duration::from_secs(10)).await;
    let left = p.target_upload_parts().await;
    assert!(
        (20..40).contains(&left),
        "{left} parts were uploaded before the kill"
    );

    // The message reappears when its visibility runs out; the next daemon resumes.
    let second = Daemon::start(&p, "second", &env).await;
    eventually(Duration::from_secs(120), "the copy completed", || async {
        second.metric("xpsync_objects_total{result=\"copied\"}") >= 1.0
    })
    .await;
    eventually(MINUTE, "the queue drained", || async {
        pipeline.depth(&pipeline.queue_url).await == 0
    })
    .await;

    let sent = second.metric("xpsync_bytes_sent_total");
    let reused = second.metric("xpsync_parts_total{result=\"reused\"}");
    assert!(
        reused >= left as f64,
        "reused {reused} of {left} parts:\n{}",
        second.logs()
    );
    assert!(
        sent <= ((40 - left) * 5 * MIB) as f64,
        "sent {sent} bytes again; only {} parts were missing",
        40 - left
    );
    p.assert_copied_intact("crash/200MiB", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn sigterm_with_fifty_copies_in_flight_releases_every_unfinished_message() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // Each 1 MiB object takes about 4 s to read at 256 KiB/s.
    let slow = SlowProxy::start(&p.source.endpoint, 256 * KIB as u64).await;
    let mut daemon = Daemon::start(
        &p,
        "daemon",
        &[
            ("XPSYNC_SOURCE__ENDPOINT_URL", slow.endpoint.as_str()),
            ("XPSYNC_TRANSFER__MAX_OBJECTS", "64"),
            ("XPSYNC_SHUTDOWN__GRACE_PERIOD", "1s"),
            ("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "5m"),
        ],
    )
    .await;
    for i in 0..50u64 {
        p.put_source(&format!("load/{i:02}"), bytes_of(MIB, i))
            .await;
    }
    eventually(MINUTE, "about 50 copies in flight", || async {
        daemon.metric("xpsync_objects_in_flight") >= 45.0
    })
    .await;

    let signalled = std::time::Instant::now();
    daemon.terminate();
    let status = daemon.wait(Duration::from_secs(20)).await;
    let took = signalled.elapsed();

    assert!(status.success(), "{status}:\n{}", daemon.logs());
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} for a 1 s grace period"
    );
    let logs = daemon.logs();
    let released: u64 = logs
        .lines()
        .find_map(|l| {
            l.split(" released for another worker")
                .next()?
                .rsplit(", ")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no shutdown summary:\n{logs}"));
    assert!(released >= 45, "{released} released:\n{logs}");
    // Released at once: visible now, not in five minutes.
    let visible = pipeline
        .sqs
        .get_queue_attributes()
        .queue_url(&pipeline.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let visible: u64 = visible.attributes().unwrap()
        [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages]
        .parse()
        .unwrap();
    assert!(
        visible >= released,
        "{visible} visible, {released} released"
    );
}

#[tokio::test]
async fn a_message_received_after_sigterm_is_made_visible_at_once() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let mut daemon = Daemon::start(&p, "daemon", &[("XPSYNC_QUEUE__WAIT_TIME", "20s")]).await;
    // Let the daemon's long poll of the empty queue begin, then stop it while the
    // poll is under way, and send a message the poll will bring back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    pipeline
        .send(
            &serde_json::json!({"xpsync": 1, "bucket": common::SOURCE_BUCKET, "key": "late"})
                .to_string(),
        )
        .await;
    let status = daemon.wait(MINUTE).await;

    assert!(status.success(), "{}", daemon.logs());
    let visible = pipeline.visible(&pipeline.queue_url).await;
    assert_eq!(
        visible.len(),
        1,
        "the message the last receive brought is hidden for its visibility timeout:\n{}",
        daemon.logs()
    );
}
