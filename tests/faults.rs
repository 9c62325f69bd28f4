//! Faults on the wire: 503 SlowDown, 500, connections reset mid-body and stalls,
//! between xpsync and either partition. Every object must end verified (the SDK's
//! retries and xpsync's part-level retries recover), or fail loudly: never a
//! silent loss, never a corrupt object.

mod common;

use std::time::Duration;

use common::faults::{FaultProxy, Faults};
use common::{bytes_of, Partitions, MIB};

const SMALL_PARTS: [(&str, &str); 2] = [
    ("XPSYNC_TRANSFER__MULTIPART_THRESHOLD", "5MiB"),
    ("XPSYNC_TRANSFER__PART_SIZE", "5MiB"),
];

/// Copies a mix of objects through a faulty link to `side` ("SOURCE" or "TARGET")
/// and checks every byte on the target.
async fn copy_through(faults: Faults, side: &str) {
    let p = Partitions::start().await;
    let upstream = if side == "SOURCE" {
        &p.source.endpoint
    } else {
        &p.target.endpoint
    };
    let proxy = FaultProxy::start(upstream, faults).await;
    let mut objects = Vec::new();
    for i in 0..6u64 {
        let key = format!("small/{i}");
        let body = bytes_of(2000 + i as usize, i);
        p.put_source(&key, body.clone()).await;
        objects.push((key, body));
    }
    let body = bytes_of(12 * MIB, 50);
    p.put_source("single/12MiB", body.clone()).await;
    objects.push(("single/12MiB".to_owned(), body));
    let body = p
        .put_source_multipart("multi/16MiB", &[5 * MIB, 5 * MIB, 5 * MIB, MIB], 51)
        .await;
    objects.push(("multi/16MiB".to_owned(), body));
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    let endpoint_var = format!("XPSYNC_{side}__ENDPOINT_URL");
    let mut env = SMALL_PARTS.to_vec();
    env.push((endpoint_var.as_str(), proxy.endpoint.as_str()));

    let (lines, run) = p.sync(&keys, &env).await;

    assert!(proxy.injected() > 0, "no fault was injected");
    assert!(run.success(), "{run}");
    for ((key, body), line) in objects.iter().zip(&lines) {
        assert_eq!(line["outcome"], "copied", "{line}");
        assert_eq!(
            p.target_bytes(key).await.as_ref(),
            Some(body),
            "{key} is not intact"
        );
    }
    assert!(
        p.target_uploads().await.is_empty(),
        "no upload is left behind"
    );
}

#[tokio::test]
async fn slow_down_replies_from_the_target_are_retried() {
    copy_through(
        Faults {
            slow_down: Some(3),
            ..Default::default()
        },
        "TARGET",
    )
    .await;
}

#[tokio::test]
async fn internal_errors_from_the_source_are_retried() {
    copy_through(
        Faults {
            internal_error: Some(3),
            ..Default::default()
        },
        "SOURCE",
    )
    .await;
}

#[tokio::test]
async fn connections_reset_mid_body_are_read_again() {
    copy_through(
        Faults {
            reset_mid_body: Some(2),
            ..Default::default()
        },
        "SOURCE",
    )
    .await;
}

#[tokio::test]
async fn stalled_requests_only_slow_the_copy() {
    copy_through(
        Faults {
            stall: Some((4, Duration::from_secs(2))),
            ..Default::default()
        },
        "TARGET",
    )
    .await;
}

#[tokio::test]
async fn a_target_that_keeps_failing_fails_the_copy_loudly_and_leaves_nothing_half_done() {
    let p = Partitions::start().await;
    let proxy = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            slow_down: Some(1),
            ..Default::default()
        },
    )
    .await;
    p.put_source("doomed", bytes_of(1000, 1)).await;

    let (lines, run) = p
        .sync(
            &["doomed"],
            &[("XPSYNC_TARGET__ENDPOINT_URL", proxy.endpoint.as_str())],
        )
        .await;

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(lines[0]["outcome"], "failed");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("SlowDown"),
        "{}",
        lines[0]
    );
    assert!(p.target_etag("doomed").await.is_none());
}
