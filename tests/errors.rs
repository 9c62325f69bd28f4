//! Errors go where they belong: a key that fails for good is dead-lettered at once,
//! with its reason, while an error code xpsync does not know stays retryable (it
//! may be a systemic fault nobody foresaw); and `verify` goes on past one key.

mod common;

use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Partitions, Run, MINUTE};

/// The production chain and a daemon whose source GETs of keys containing
/// `refusal.0` are answered with status `refusal.1` and S3 error code `refusal.2`.
async fn daemon_refusing_gets(
    p: &Partitions,
    refusal: (&'static str, u16, &'static str),
) -> (Pipeline, FaultProxy, Daemon) {
    let pipeline = Pipeline::wire(p).await;
    let source = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            get_error: Some(refusal),
            ..Faults::default()
        },
    )
    .await;
    let daemon = Daemon::start(
        p,
        "daemon",
        &[("XPSYNC_SOURCE__ENDPOINT_URL", source.endpoint.as_str())],
    )
    .await;
    (pipeline, source, daemon)
}

#[tokio::test]
async fn a_key_that_fails_for_good_is_dead_lettered_at_once_with_why() {
    let p = Partitions::start().await;
    // An archived object: S3 refuses its GET with InvalidObjectState, every time.
    let (pipeline, _source, daemon) =
        daemon_refusing_gets(&p, ("archived", 403, "InvalidObjectState")).await;
    p.put_source("archived/old.bin", bytes_of(100, 1)).await;
    p.put_source("fresh/new.bin", bytes_of(100, 2)).await;

    eventually(MINUTE, "the failed key is dead-lettered", || async {
        !pipeline.dead_letters().await.is_empty()
    })
    .await;
    eventually(MINUTE, "the other key is copied", || async {
        p.target_etag("fresh/new.bin").await.is_some()
    })
    .await;

    let dead = pipeline.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0]
        .message_attributes()
        .and_then(|a| a.get("xpsync-reason"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("archived/old.bin"), "{reason}");
    assert!(reason.contains("InvalidObjectState"), "{reason}");
    let receives = dead[0]
        .message_attributes()
        .and_then(|a| a.get("xpsync-receive-count"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(receives, "1", "dead-lettered on its first receive");
    assert_eq!(
        daemon.get("/readyz").0,
        200,
        "one object's fault is not systemic"
    );
}

#[tokio::test]
async fn an_error_code_nobody_foresaw_stays_retryable() {
    let p = Partitions::start().await;
    let (pipeline, _source, daemon) =
        daemon_refusing_gets(&p, ("odd", 400, "SomethingNewFromS3")).await;
    p.put_source("odd/object", bytes_of(100, 3)).await;

    eventually(
        MINUTE,
        "the key fails and its message is released",
        || async { daemon.metric("xpsync_messages_total{result=\"retried\"}") >= 1.0 },
    )
    .await;
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "dead-lettered at once"
    );
    assert_eq!(
        daemon.metric("xpsync_messages_total{result=\"dead_lettered\"}"),
        0.0
    );
}

#[tokio::test]
async fn verify_goes_on_past_a_key_whose_head_fails() {
    let p = Partitions::start().await;
    for key in ["a/one", "b/two", "c/three"] {
        p.put_source(key, bytes_of(100, 4)).await;
    }
    assert!(
        Run::of(&mut p.xpsync(&["sync", "a/one", "b/two", "c/three"]))
            .await
            .success()
    );
    // Make b/two differ in ETag on the target, so verify must HEAD it; the HEAD is
    // refused.
    common::s3::put(
        &p.target_s3,
        common::TARGET_BUCKET,
        "b/two",
        bytes_of(100, 5),
    )
    .await;
    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    target.set_refuse_heads(true);

    let mut verify = p.xpsync(&["verify"]);
    verify.env("XPSYNC_TARGET__ENDPOINT_URL", &target.endpoint);
    let run = Run::of(&mut verify).await;

    assert_eq!(run.code(), Some(1), "{run}");
    let lines = run.json_lines();
    let unknown = lines
        .iter()
        .find(|l| l["status"] == "unknown")
        .expect("b/two is unknown");
    assert_eq!(unknown["key"], "b/two");
    assert!(
        unknown["error"].as_str().unwrap().contains("HeadObject"),
        "{run}"
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["same"], 2,
        "the keys after it were compared too: {run}"
    );
    assert_eq!(summary["unknown"], 1);
}
