//! Objects that can never be copied end in one clean step, and never slow the rest:
//! archived objects (Glacier, Deep Archive), objects whose KMS key refuses the
//! task, a prefix the target's policy refuses; and a refusal of every write is the
//! service's failure, which pauses the daemon without dead-lettering anything.
//!
//! moto answers an archived GET as S3 does (InvalidObjectState); it does not refuse
//! a `kms:Decrypt`, nor serve an archived object's tagging, nor refuse by prefix:
//! the fault proxy in front of it does, as S3 would (RELIABILITY.md).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use common::faults::{FaultProxy, Faults, KMS_DECRYPT_REFUSED};
use common::pipeline::{attribute, eventually, Daemon, Pipeline};
use common::{bytes_of, Etag, Partitions, MINUTE, SOURCE_BUCKET};

/// Puts `key` on the source in S3 Glacier Flexible Retrieval, as a lifecycle rule
/// leaves it.
async fn put_archived(p: &Partitions, key: &str, body: Vec<u8>) {
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .storage_class(StorageClass::Glacier)
        .body(body.into())
        .send()
        .await
        .expect("put an archived object");
}

/// A daemon whose source is behind a fault proxy with `faults`, which also serves
/// archived objects' tagging as S3 does; with `env` besides.
async fn daemon_behind_a_source_proxy(
    p: &Partitions,
    faults: Faults,
    env: &[(&str, &str)],
) -> (FaultProxy, Daemon) {
    let faults = Faults {
        serve_archived_tagging: true,
        ..faults
    };
    let source = FaultProxy::start(&p.source.endpoint, faults).await;
    let mut env = env.to_vec();
    env.push(("XPSYNC_SOURCE__ENDPOINT_URL", source.endpoint.as_str()));
    let daemon = Daemon::start(p, "daemon", &env).await;
    (source, daemon)
}

/// Every breaker trip, whatever its kind.
fn breaker_trips(daemon: &Daemon) -> f64 {
    ["auth", "bucket_missing", "denied"]
        .iter()
        .map(|kind| daemon.metric(&format!("xpsync_breaker_trips_total{{kind=\"{kind}\"}}")))
        .sum()
}

#[tokio::test]
async fn archived_and_kms_refused_keys_among_ordinary_ones_end_in_one_step_and_never_pause_it() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let faults = Faults {
        kms_refused: Some("kms-refused/"),
        ..Faults::default()
    };
    let (_source, daemon) = daemon_behind_a_source_proxy(&p, faults, &[]).await;
    // A lifecycle rule archives by prefix: they come in a row.
    for i in 0..6 {
        put_archived(&p, &format!("archive/{i}.log"), bytes_of(1000, i)).await;
    }
    let refused: BTreeSet<String> = (0..4).map(|i| format!("kms-refused/{i}.bin")).collect();
    for (i, key) in refused.iter().enumerate() {
        p.put_source(key, bytes_of(500, 100 + i as u64)).await;
    }
    let mut ordinary = Vec::new();
    for i in 0..8 {
        let (key, body) = (format!("ordinary/{i}.bin"), bytes_of(700, 200 + i));
        p.put_source(&key, body.clone()).await;
        ordinary.push((key, body));
    }

    eventually(2 * MINUTE, "every archived key counted", || async {
        daemon.metric("xpsync_objects_total{result=\"archived\"}") >= 6.0
    })
    .await;
    eventually(2 * MINUTE, "the queue drains", || async {
        pipeline.depth(&pipeline.queue_url).await == 0
    })
    .await;
    for (key, body) in &ordinary {
        p.assert_copied_intact(key, body, Etag::Same).await;
    }
    assert_eq!(breaker_trips(&daemon), 0.0, "{}", daemon.logs());
    assert_eq!(daemon.get("/readyz").0, 200);

    let dead = pipeline.dead_letters().await;
    let mut dead_keys = BTreeSet::new();
    for message in &dead {
        let reason = attribute(message, "xpsync-reason");
        assert!(
            reason.contains("kms:Decrypt"),
            "S3's words are kept: {reason}"
        );
        assert_eq!(attribute(message, "xpsync-receive-count"), "1", "{reason}");
        let key = refused.iter().find(|k| reason.contains(k.as_str()));
        dead_keys.insert(
            key.cloned()
                .unwrap_or_else(|| panic!("not a refused key: {reason}")),
        );
    }
    assert_eq!(dead_keys, refused, "each refused key dead-lettered, once");
    assert!(KMS_DECRYPT_REFUSED.contains("kms:Decrypt"));
    for i in 0..6 {
        assert_eq!(p.target_etag(&format!("archive/{i}.log")).await, None);
    }
}

#[tokio::test]
async fn a_sweep_over_a_bucket_with_archived_keys_enqueues_none_of_them() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    for i in 0..3 {
        put_archived(&p, &format!("cold/{i}.log"), bytes_of(100, i)).await;
    }
    p.put_source("warm/a.bin", bytes_of(100, 9)).await;

    let run = common::Run::of(&mut p.xpsync(&["backfill", "--mode", "enqueue", "--emf"])).await;
    assert!(run.success(), "{run}");
    let lines = run.json_lines();
    let summary = lines
        .iter()
        .find_map(|l| l.get("summary"))
        .unwrap_or_else(|| panic!("a summary: {run}"));
    assert_eq!(summary["archived"], 3, "{run}");
    assert_eq!(
        summary["differing"], 1,
        "archived keys are not drift: {run}"
    );
    assert_eq!(summary["enqueued"], 1, "{run}");
    let emf = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(emf["ArchivedKeys"], 3);
    assert_eq!(emf["DifferingKeys"], 1);

    let mut swept = Vec::new();
    for _ in 0..5 {
        for message in pipeline.visible(&pipeline.queue_url).await {
            if attribute(&message, "xpsync-origin") == "backfill" {
                swept.push(message.body().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(!swept.is_empty(), "the warm key was enqueued");
    assert!(
        swept.iter().all(|body| body.contains("warm/a.bin")),
        "no archived key was enqueued: {swept:?}"
    );

    let verify = common::Run::of(&mut p.xpsync(&["verify"])).await;
    let lines = verify.json_lines();
    let summary = lines
        .iter()
        .find_map(|l| l.get("summary"))
        .expect("a summary");
    assert_eq!(summary["archived"], 3, "{verify}");
    assert_eq!(summary["missing"], 1, "{verify}");
}

#[tokio::test]
async fn restore_mode_asks_once_and_copies_the_object_when_its_restore_completes() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let env = [("XPSYNC_REPLICATE__ARCHIVED", "restore")];
    let (source, daemon) = daemon_behind_a_source_proxy(&p, Faults::default(), &env).await;
    let body = bytes_of(4096, 7);
    put_archived(&p, "cold/report.csv", body.clone()).await;

    eventually(MINUTE, "its restore is asked for", || async {
        daemon.metric("xpsync_restores_total{result=\"requested\"}") == 1.0
    })
    .await;
    assert_eq!(source.requests("POST"), 1, "one RestoreObject");
    eventually(MINUTE, "the event's message is done with", || async {
        pipeline.depth(&pipeline.queue_url).await == 0
    })
    .await;
    assert!(pipeline.dead_letters().await.is_empty());

    // S3 sends this when the restored copy is readable (moto restores at once).
    let completed = serde_json::json!({
        "version": "0", "source": "aws.s3", "detail-type": "Object Restore Completed",
        "time": "2026-12-06T03:00:00Z",
        "detail": {"bucket": {"name": SOURCE_BUCKET},
                   "object": {"key": "cold/report.csv", "size": body.len()}}
    });
    pipeline.send(&completed.to_string()).await;
    eventually(MINUTE, "the restored object is copied", || async {
        p.target_etag("cold/report.csv").await.is_some()
    })
    .await;
    p.assert_copied_intact("cold/report.csv", &body, Etag::Same)
        .await;
    assert_eq!(source.requests("POST"), 1, "the restore was asked for once");
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn writes_refused_on_every_key_pause_the_daemon_and_dead_letter_nothing() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    // A bucket policy refusing writes: listings and reads pass.
    target.set_refuse_writes(true);
    let daemon = Daemon::start(
        &p,
        "daemon",
        &[("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.as_str())],
    )
    .await;
    let mut objects = Vec::new();
    for i in 0..12 {
        let (key, body) = (format!("refused/{i}.bin"), bytes_of(300, i));
        p.put_source(&key, body.clone()).await;
        objects.push((key, body));
    }

    eventually(MINUTE, "the breaker holds", || async {
        breaker_trips(&daemon) >= 1.0
    })
    .await;
    let (status, why) = daemon.get("/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("AccessDenied"), "/readyz says why: {why}");
    // Several minutes of it: nothing reaches the dead-letter queue.
    let until = std::time::Instant::now() + Duration::from_secs(150);
    while std::time::Instant::now() < until {
        assert!(
            pipeline.dead_letters().await.is_empty(),
            "{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(
        pipeline.depth(&pipeline.queue_url).await > 0,
        "the messages wait"
    );
    assert_eq!(
        daemon.metric("xpsync_messages_total{result=\"dead_lettered\"}"),
        0.0
    );

    target.set_refuse_writes(false);
    for (key, body) in &objects {
        eventually(
            5 * MINUTE,
            "every object copied once writes pass",
            || async { p.target_etag(key).await.is_some() },
        )
        .await;
        p.assert_copied_intact(key, body, Etag::Same).await;
    }
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_prefix_the_target_refuses_is_dead_lettered_while_the_rest_is_copied() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let target = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            write_denied: Some("private/"),
            ..Faults::default()
        },
    )
    .await;
    let daemon = Daemon::start(
        &p,
        "daemon",
        &[("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.as_str())],
    )
    .await;
    let mut open = Vec::new();
    for i in 0..6 {
        let (key, body) = (format!("open/{i}.bin"), bytes_of(300, i));
        p.put_source(&key, body.clone()).await;
        open.push((key, body));
    }
    for i in 0..3 {
        p.put_source(&format!("private/{i}.bin"), bytes_of(300, 10 + i))
            .await;
    }

    // Refused while writes pass on other keys: each its own verdict, once.
    eventually(2 * MINUTE, "every refused key is dead-lettered", || async {
        let reasons: Vec<String> = pipeline
            .dead_letters()
            .await
            .iter()
            .map(|m| attribute(m, "xpsync-reason"))
            .collect();
        (0..3).all(|i| {
            reasons
                .iter()
                .any(|r| r.contains(&format!("private/{i}.bin")))
        })
    })
    .await;
    for (key, body) in &open {
        p.assert_copied_intact(key, body, Etag::Same).await;
    }
    for message in pipeline.dead_letters().await {
        let reason = attribute(&message, "xpsync-reason");
        assert!(reason.contains("AccessDenied"), "S3's words: {reason}");
        assert!(reason.contains("private/"), "only refused keys: {reason}");
    }
    assert_eq!(breaker_trips(&daemon), 0.0, "{}", daemon.logs());
    assert_eq!(daemon.get("/readyz").0, 200);
}

#[tokio::test]
async fn verify_reports_a_keys_403_and_goes_on() {
    let p = Partitions::start().await;
    let target = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            head_denied: Some("denied/"),
            ..Faults::default()
        },
    )
    .await;
    // Same size, other bytes: only a HEAD of the target copy could tell.
    p.put_source("denied/a.bin", bytes_of(100, 1)).await;
    common::s3::put(
        &p.target_s3,
        common::TARGET_BUCKET,
        "denied/a.bin",
        bytes_of(100, 2),
    )
    .await;
    p.put_source("open/b.bin", bytes_of(100, 3)).await;
    p.put_source("open/c.bin", bytes_of(100, 4)).await;
    common::s3::put(
        &p.target_s3,
        common::TARGET_BUCKET,
        "open/c.bin",
        bytes_of(100, 4),
    )
    .await;

    let mut command = p.xpsync(&["verify"]);
    command.env("XPSYNC_TARGET__ENDPOINT_URL", &target.endpoint);
    let run = common::Run::of(&mut command).await;
    assert_eq!(run.code(), Some(1), "{run}");
    let lines = run.json_lines();
    let denied = lines
        .iter()
        .find(|l| l["key"] == "denied/a.bin")
        .unwrap_or_else(|| panic!("the refused key is reported: {run}"));
    assert_eq!(denied["status"], "unknown", "{run}");
    assert!(
        denied["error"].as_str().unwrap_or_default().contains("403"),
        "{run}"
    );
    let summary = lines
        .iter()
        .find_map(|l| l.get("summary"))
        .expect("a summary");
    assert_eq!(summary["unknown"], 1, "{run}");
    assert_eq!(summary["missing"], 1, "the comparison went on: {run}");
    assert_eq!(summary["same"], 1, "{run}");
}
