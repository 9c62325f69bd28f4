//! One object shared by the whole fleet (DESIGN §10): three `xpsync run` processes,
//! an object split into twelve ranges (the threshold lowered for the test), the
//! source read through a slow link so the copy takes a while, and one worker killed
//! with SIGKILL mid-way. S3's upload is the only ledger.

mod common;

use std::time::Duration;

use common::faults::{FaultProxy, Faults};
use common::kms::KmsProxy;
use common::pipeline::{attribute, eventually, Daemon, Pipeline};
use common::proxy::SlowProxy;
use common::{Etag, Partitions, Run, MIB, MINUTE, SOURCE_BUCKET};

const KEY: &str = "giant/object.bin";

/// Each worker: split objects of 10 MiB or more into ranges of one 5 MiB part,
/// look at the upload every 2 s, two messages at a time, and get a message back
/// 10 s after its worker died.
fn worker_env(source: &str) -> Vec<(&'static str, String)> {
    vec![
        ("XPSYNC_SOURCE__ENDPOINT_URL", source.to_owned()),
        ("XPSYNC_TRANSFER__MULTIPART_THRESHOLD", "5MiB".into()),
        ("XPSYNC_TRANSFER__PART_SIZE", "5MiB".into()),
        ("XPSYNC_TRANSFER__SPLIT_THRESHOLD", "10MiB".into()),
        ("XPSYNC_TRANSFER__SPLIT_RANGE_SIZE", "5MiB".into()),
        ("XPSYNC_TRANSFER__SPLIT_CHECK_DELAY", "2s".into()),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "2".into()),
        ("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "10s".into()),
        ("XPSYNC_QUEUE__WAIT_TIME", "1s".into()),
    ]
}

async fn workers(p: &Partitions, source: &str, names: &[&str]) -> Vec<Daemon> {
    let env = worker_env(source);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemons = Vec::new();
    for name in names {
        daemons.push(Daemon::start(p, name, &env).await);
    }
    daemons
}

/// Waits up to `secs` for the target to hold the object with the source's ETag.
async fn completes(p: &Partitions, source_etag: &str, secs: u64) {
    eventually(
        Duration::from_secs(secs),
        "the object is complete",
        || async { p.target_etag(KEY).await.as_deref() == Some(source_etag) },
    )
    .await;
}

/// The message of a key, as the tests send it themselves (a duplicate event).
fn key_event() -> String {
    serde_json::json!({"xpsync": 1, "bucket": SOURCE_BUCKET, "key": KEY}).to_string()
}

/// Starts worker A with `env`, sends it the key's message, and waits until `proxy`
/// holds A's split back.
async fn held_splitter(
    p: &Partitions,
    pipeline: &Pipeline,
    proxy: &FaultProxy,
    env: &[(&str, &str)],
) -> Daemon {
    let a = Daemon::start(p, "worker-a", env).await;
    pipeline.send(&key_event()).await;
    eventually(MINUTE, "worker A's split is held", || async {
        proxy.held() == 1
    })
    .await;
    a
}

/// Worker A, reading the source at `source`, splits the key and is killed with
/// SIGKILL once its upload is tagged, while its first send to the queue (its
/// ranges) is held. Then `between` runs, and worker B starts (reading the source
/// at `source` too) a second later, so that S3's initiation times, listed to the
/// second, put A's upload first.
async fn splitter_killed_then_b(
    p: &Partitions,
    pipeline: &Pipeline,
    source: &str,
    between: impl std::future::Future<Output = ()>,
) -> Daemon {
    let queue = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            hold_queue_send: true,
            ..Faults::default()
        },
    )
    .await;
    let mut env_a = worker_env(source);
    env_a.push(("XPSYNC_QUEUE__ENDPOINT_URL", queue.endpoint.clone()));
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = held_splitter(p, pipeline, &queue, &env_a).await;
    a.kill();
    assert_eq!(p.target_uploads().await.len(), 1, "A's upload, tagged");
    between.await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let env = worker_env(source);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(p, "worker-b", &env).await
}

/// Waits until the queue holds nothing; then no upload is left on the target and
/// nothing was dead-lettered.
async fn nothing_left(p: &Partitions, pipeline: &Pipeline) {
    eventually(MINUTE, "the queue is drained", || async {
        pipeline.drained().await
    })
    .await;
    let uploads = p.target_uploads().await;
    assert!(uploads.is_empty(), "uploads left behind: {uploads:?}");
    assert!(pipeline.dead_letters().await.is_empty(), "dead letters");
}

/// On one queue (no `queue.range_url`), as on two.
#[tokio::test]
async fn a_split_object_survives_a_worker_killed_mid_way_and_every_live_worker_helps() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 2 MiB/s per connection: a 5 MiB part takes 2.5 s.
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_QUEUE__RANGE_URL", String::new()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemons = Vec::new();
    for name in ["worker-a", "worker-b", "worker-c"] {
        daemons.push(Daemon::start(&p, name, &env).await);
    }
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 60).await;
    let source_etag = p.source_etag(KEY).await;

    eventually(MINUTE, "parts arrive", || async {
        p.target_upload_parts().await >= 1
    })
    .await;
    daemons[1].kill();

    completes(&p, &source_etag, 180).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    for daemon in [&daemons[0], &daemons[2]] {
        let uploaded = daemon.metric("xpsync_parts_total{result=\"uploaded\"}");
        assert!(
            uploaded > 0.0,
            "a live worker uploaded no part:\n{}",
            daemon.logs()
        );
    }
    let splits: f64 = [&daemons[0], &daemons[2]]
        .iter()
        .map(|d| d.metric("xpsync_splits_total{result=\"completed\"}"))
        .sum();
    // Duplicate events may make two splitters join one upload, each with its own
    // checks; completing it again is harmless.
    assert!(splits >= 1.0, "completed by a check");
}

#[tokio::test]
async fn a_source_overwritten_mid_split_ends_as_the_new_version() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let daemons = workers(&p, &slow.endpoint, &["worker-a", "worker-b"]).await;
    p.put_source_multipart(KEY, &[5 * MIB; 12], 61).await;

    eventually(MINUTE, "the split's upload exists", || async {
        !p.target_uploads().await.is_empty()
    })
    .await;
    let newer = p
        .put_source_multipart(KEY, &[5 * MIB, 5 * MIB, 5 * MIB, MIB], 62)
        .await;
    let newer_etag = p.source_etag(KEY).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !(p.target_etag(KEY).await.as_deref() == Some(newer_etag.as_str())
        && pipeline.drained().await)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new version never landed:\n{}\n{}",
            daemons[0].logs(),
            daemons[1].logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.assert_copied_intact(KEY, &newer, Etag::Same).await;
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_worker_holds_only_the_ranges_it_copies_and_the_last_range_completes_the_object() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 4 * MIB as u64).await;
    // Two parts at a time, ranges of two parts: a worker that has seen no range
    // yet takes them for one part each, so its first receive brings more than it
    // copies at once (and the one more it holds ready), which it hands back. The
    // delayed check comes after ten minutes: only the range that fills the upload
    // can complete it within the test.
    let mut env = worker_env(&slow.endpoint);
    env.retain(|(name, _)| {
        ![
            "XPSYNC_TRANSFER__SPLIT_CHECK_DELAY",
            "XPSYNC_TRANSFER__MAX_OBJECTS",
            "XPSYNC_TRANSFER__SPLIT_RANGE_SIZE",
        ]
        .contains(name)
    });
    env.extend([
        ("XPSYNC_TRANSFER__SPLIT_CHECK_DELAY", "10m".to_owned()),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "10".into()),
        ("XPSYNC_TRANSFER__MAX_PARTS", "2".into()),
        ("XPSYNC_TRANSFER__SPLIT_RANGE_SIZE", "10MiB".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemons = [
        Daemon::start(&p, "worker-a", &env).await,
        Daemon::start(&p, "worker-b", &env).await,
    ];
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 63).await;
    let source_etag = p.source_etag(KEY).await;

    completes(&p, &source_etag, 150).await;
    let metric = |name: &str| -> f64 { daemons.iter().map(|d| d.metric(name)).sum() };
    assert!(
        metric("xpsync_ranges_total{result=\"handed_back\"}") > 0.0,
        "no range was handed back:\n{}\n{}",
        daemons[0].logs(),
        daemons[1].logs()
    );
    // Twelve parts in ranges of two.
    assert!(metric("xpsync_ranges_total{result=\"copied\"}") >= 6.0);
    for daemon in &daemons {
        assert!(
            daemon.metric("xpsync_ranges_total{result=\"copied\"}") > 0.0,
            "a worker copied no range:\n{}",
            daemon.logs()
        );
    }
    let uploads = p.target_uploads().await;
    assert!(
        uploads.is_empty(),
        "uploads were left behind: {uploads:?}\n{}\n{}",
        daemons[0].logs(),
        daemons[1].logs()
    );
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn duplicate_events_of_a_split_object_end_in_one_upload_and_one_copy() {
    let p = Partitions::start().await;
    // The object is there before the bucket's events are wired: the test sends the
    // duplicate events itself.
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 64).await;
    let source_etag = p.source_etag(KEY).await;
    let pipeline = Pipeline::wire(&p).await;
    // 2 MiB/s per connection: a range of one 5 MiB part takes 2.5 s.
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    // Worker A's version marker (part 10,000) is held back: worker B splits the
    // same version meanwhile, and each lists the uploads before the other's is
    // tagged, so both keep their own. A's was initiated first: B's ranges find it
    // and give B's upload up.
    let held = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            hold_part: Some(10_000),
            ..Faults::default()
        },
    )
    .await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TRANSFER__MAX_PARTS", "1".into()));
    // One message at a time for A: the second event, sent while A's split is held,
    // can only go to B.
    let mut env_a = env.clone();
    env_a.retain(|(name, _)| *name != "XPSYNC_TRANSFER__MAX_OBJECTS");
    env_a.extend([
        ("XPSYNC_TARGET__ENDPOINT_URL", held.endpoint.clone()),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "1".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let event = key_event();
    let a = held_splitter(&p, &pipeline, &held, &env_a).await;
    // Initiation times are listed to the second: B's upload comes a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = Daemon::start(&p, "worker-b", &env).await;
    pipeline.send(&event).await;
    eventually(MINUTE, "worker B has split", || async {
        b.metric("xpsync_splits_total{result=\"split\"}") >= 1.0
    })
    .await;
    assert_eq!(
        p.target_uploads().await.len(),
        2,
        "two uploads of one version"
    );
    held.release();
    // A third event, mid-copy: its splitter finds A's upload tagged and joins it.
    eventually(MINUTE, "parts arrive", || async {
        p.target_upload_parts().await >= 1
    })
    .await;
    pipeline.send(&event).await;

    completes(&p, &source_etag, 150).await;
    let daemons = [a, b];
    let metric = |name: &str| -> f64 { daemons.iter().map(|d| d.metric(name)).sum() };
    let logs = || format!("{}\n{}", daemons[0].logs(), daemons[1].logs());
    assert_eq!(
        metric("xpsync_splits_total{result=\"merged\"}"),
        2.0,
        "B's split and the third gave way to A's:\n{}",
        logs()
    );
    // The third event, a duplicate on its first receive, added no check chain of
    // its own: A's split drives the upload alone (#20 item 8).
    assert!(
        logs().contains("joined another splitter's upload of this version: its splitter sends the ranges and the check"),
        "{}",
        logs()
    );
    assert!(!logs().contains("only a check is sent"), "{}", logs());
    // B copies the range it began before A's upload was tagged, one more at most.
    let copied = metric("xpsync_ranges_total{result=\"copied\"}");
    assert!(
        (12.0..=14.0).contains(&copied),
        "{copied} ranges copied for 12: the object was copied more than once\n{}",
        logs()
    );
    let uploads = p.target_uploads().await;
    assert!(uploads.is_empty(), "uploads left: {uploads:?}\n{}", logs());
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// A target that cannot be a split's ledger: the object is copied whole by the
/// worker that received it, and the log says why.
async fn large_objects_are_copied_whole_by_a_target_without_a_ledger(faults: Faults, why: &str) {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let target = FaultProxy::start(&p.target.endpoint, faults).await;
    let mut env = worker_env(&p.source.endpoint);
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start(&p, "worker-a", &env).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 65).await;
    let source_etag = p.source_etag(KEY).await;

    completes(&p, &source_etag, 60).await;
    assert_eq!(daemon.metric("xpsync_splits_total{result=\"split\"}"), 0.0);
    assert!(
        daemon.logs().contains(why),
        "the operator is not told why nothing is split:\n{}",
        daemon.logs()
    );
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// As some S3-compatible servers: ListParts names no part's ETag, so no check
/// could ever find the parts it needs.
#[tokio::test]
async fn a_target_that_lists_parts_without_etags_gets_large_objects_copied_whole() {
    let faults = Faults {
        list_parts_without_etags: true,
        ..Faults::default()
    };
    let why =
        "the target lists an upload's parts without their ETags, so it cannot be a split's ledger";
    large_objects_are_copied_whole_by_a_target_without_a_ledger(faults, why).await;
}

/// A policy without `s3:ListMultipartUploadParts`.
#[tokio::test]
async fn a_target_that_refuses_to_list_parts_gets_large_objects_copied_whole() {
    let faults = Faults {
        refuse_list_parts: true,
        ..Faults::default()
    };
    let why = "the target refuses to list an upload's parts (s3:ListMultipartUploadParts): ";
    large_objects_are_copied_whole_by_a_target_without_a_ledger(faults, why).await;
}

/// The queue takes no new messages when the split's ranges are to be sent: the
/// upload, named by no message, is given up, and the key's message comes back and
/// splits the object afresh once the queue takes them again.
#[tokio::test]
async fn a_split_whose_messages_cannot_be_sent_leaves_no_upload_and_comes_back() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let queue = FaultProxy::start(&p.source.endpoint, Faults::default()).await;
    queue.set_refuse_queue_sends(true);
    let mut env = worker_env(&p.source.endpoint);
    env.push(("XPSYNC_QUEUE__ENDPOINT_URL", queue.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start(&p, "worker-a", &env).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 66).await;
    let source_etag = p.source_etag(KEY).await;

    // The object is split, the sends of its messages refused, and the key's
    // message let go to come back.
    eventually(MINUTE, "the split's messages are refused", || async {
        daemon.metric("xpsync_splits_total{result=\"split\"}") >= 1.0
            && queue.injected() >= 1
            && daemon.metric("xpsync_messages_total{result=\"retried\"}") >= 1.0
    })
    .await;
    // Duplicate events may have a second split under way, its sends being retried.
    eventually(
        MINUTE,
        "the uploads no message names are given up",
        || async { p.target_uploads().await.is_empty() },
    )
    .await;
    queue.set_refuse_queue_sends(false);

    completes(&p, &source_etag, 120).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// The worst moment for a splitter to die: its upload created and tagged, its
/// ranges not sent. A duplicate event's splitter joins that upload and sends
/// nothing (the first splitter's check chain is the upload's one); the key's own
/// message, when it comes back, joins it and sends a check: nobody sends the
/// ranges, so the checks, finding no part arrive, send them. Nothing is lost.
#[tokio::test]
async fn a_splitter_killed_between_tagging_its_upload_and_sending_its_ranges_loses_nothing() {
    let p = Partitions::start().await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 67).await;
    let source_etag = p.source_etag(KEY).await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 4 * MIB as u64).await;
    let b = splitter_killed_then_b(&p, &pipeline, &slow.endpoint, async {}).await;
    let event = key_event();
    pipeline.send(&event).await;
    completes(&p, &source_etag, 150).await;
    assert!(
        b.metric("xpsync_splits_total{result=\"merged\"}") >= 1.0,
        "B did not join A's upload:\n{}",
        b.logs()
    );
    assert!(
        b.metric("xpsync_splits_total{result=\"resent\"}") >= 1.0,
        "the checks sent no range:\n{}",
        b.logs()
    );
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// The same moment, but the key's message never comes back: it was dead-lettered
/// (here: the queue purged, the message put in the DLQ) and an operator replays it.
/// The replayed message is a fresh one, received once, as a duplicate event is; it
/// joins A's upload and, being a replay, sends a check: the checks send the ranges
/// and the object completes. Had it sent nothing, as a duplicate event does, no
/// message would ever name A's upload.
#[tokio::test]
async fn a_replayed_key_message_drives_the_upload_its_splitter_left_behind() {
    use aws_sdk_sqs::types::MessageAttributeValue;
    let p = Partitions::start().await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 4], 68).await;
    let source_etag = p.source_etag(KEY).await;
    let pipeline = Pipeline::wire(&p).await;
    // A's last long polls (1 s) still stand at the queue through the proxy: let
    // them end, or one takes the replayed message and it comes to B received twice.
    let dead_lettered_and_replayed = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        pipeline.purge().await;
        let reason = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("given up")
            .build()
            .unwrap();
        pipeline
            .sqs
            .send_message()
            .queue_url(&pipeline.dead_letter_url)
            .message_body(key_event())
            .message_attributes("xpsync-reason", reason)
            .send()
            .await
            .unwrap();
        let replay = Run::of(&mut p.xpsync(&["dlq", "replay"])).await;
        assert!(replay.success(), "{replay}");
    };
    let b = splitter_killed_then_b(
        &p,
        &pipeline,
        &p.source.endpoint,
        dead_lettered_and_replayed,
    )
    .await;
    completes(&p, &source_etag, 150).await;
    assert!(
        b.logs().contains("receive_count=1}:reconcile"),
        "the replayed message was received before B:\n{}",
        b.logs()
    );
    assert!(
        b.metric("xpsync_splits_total{result=\"merged\"}") >= 1.0,
        "B did not join A's upload:\n{}",
        b.logs()
    );
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// A target bucket encrypting with KMS by default, as S3 does it (opaque ETags for
/// the parts, the marker and the object): the split is tagged and joined by the
/// marker's size, its parts checked by Content-MD5, and the object verified by the
/// recorded source ETag. A duplicate event mid-copy joins the upload.
#[tokio::test]
async fn a_split_object_reaches_a_target_encrypting_with_kms_by_default() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let kms = KmsProxy::bucket_default(&p.target.endpoint).await;
    let slow = SlowProxy::start(&p.source.endpoint, 4 * MIB as u64).await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", kms.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemons = [
        Daemon::start(&p, "worker-a", &env).await,
        Daemon::start(&p, "worker-b", &env).await,
    ];
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 68).await;
    eventually(MINUTE, "parts arrive", || async {
        p.target_upload_parts().await >= 1
    })
    .await;
    pipeline.send(&key_event()).await;

    eventually(
        Duration::from_secs(150),
        "the object is complete",
        || async { p.target_etag(KEY).await.is_some() },
    )
    .await;
    let metric = |name: &str| -> f64 { daemons.iter().map(|d| d.metric(name)).sum() };
    let logs = || format!("{}\n{}", daemons[0].logs(), daemons[1].logs());
    // The completed object is visible before its check, which HEADs the source
    // after completing it, has counted it.
    eventually(MINUTE, "the check counts the object completed", || async {
        metric("xpsync_splits_total{result=\"completed\"}") >= 1.0
    })
    .await;
    assert!(
        metric("xpsync_splits_total{result=\"merged\"}") >= 1.0,
        "the duplicate did not join the upload under way:\n{}",
        logs()
    );
    assert!(kms.issued() > 12, "the proxy made no part's ETag opaque");
    nothing_left(&p, &pipeline).await;
    // The copy's ETag is opaque; it records the source's.
    p.assert_copied_intact(KEY, &body, Etag::Recorded).await;
    let run = Run::of(p.xpsync(&["verify"]).envs(env.iter().copied())).await;
    assert!(run.success(), "verify is not clean: {run}");
}

fn reason(message: &aws_sdk_sqs::types::Message) -> String {
    attribute(message, "xpsync-reason")
}

/// A split that can never succeed ends, once. A giant object whose bytes the keys
/// may not read (its KMS key refuses `kms:Decrypt`, its HEAD passing) is its key's
/// verdict before any upload or range exists. One whose reads are refused once it
/// is split (the grant revoked mid-way) is given up at the first refused range;
/// its check finds the upload gone and starts the key over, and the key is
/// dead-lettered once, with S3's words. No upload is left, the breaker never trips.
#[tokio::test]
async fn a_split_that_can_never_succeed_ends_in_one_dead_letter() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let faults = Faults {
        kms_refused: Some("refused/"),
        ..Faults::default()
    };
    let source = FaultProxy::start(&slow.endpoint, faults).await;
    // Two parts at a time per worker, so that most ranges are still to be read
    // when the grant is revoked (with 64, all twelve were read at once).
    let mut env = worker_env(&source.endpoint);
    env.push(("XPSYNC_TRANSFER__MAX_PARTS", "2".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemons = Vec::new();
    for name in ["worker-a", "worker-b"] {
        daemons.push(Daemon::start(&p, name, &env).await);
    }
    let metric = |name: &str| daemons.iter().map(|d| d.metric(name)).sum::<f64>();

    p.put_source_multipart("refused/giant.bin", &[5 * MIB; 3], 70)
        .await;
    eventually(MINUTE, "the refused key is dead-lettered", || async {
        !pipeline.dead_letters().await.is_empty()
    })
    .await;
    assert_eq!(metric("xpsync_splits_total{result=\"split\"}"), 0.0);

    p.put_source_multipart(KEY, &[5 * MIB; 12], 71).await;
    eventually(MINUTE, "the split's upload exists", || async {
        !p.target_uploads().await.is_empty()
    })
    .await;
    source.set_refuse_reads(true);
    eventually(2 * MINUTE, "the queue is drained", || async {
        pipeline.drained().await
    })
    .await;

    // Each message (moto, as S3 may, sends a multipart object's event twice) is
    // dead-lettered on its first receive, naming its key and S3's words.
    let letters = pipeline.dead_letters().await;
    let logs = || {
        daemons
            .iter()
            .map(Daemon::logs)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut keys: Vec<&str> = Vec::new();
    for letter in &letters {
        let why = reason(letter);
        let key = ["refused/giant.bin", KEY]
            .into_iter()
            .find(|k| why.starts_with(k));
        assert!(key.is_some() && why.contains("kms:Decrypt"), "{why}");
        assert_eq!(attribute(letter, "xpsync-receive-count"), "1", "{why}");
        keys.extend(key);
    }
    keys.dedup();
    assert_eq!(keys, ["refused/giant.bin", KEY], "{letters:?}\n{}", logs());
    assert!(metric("xpsync_splits_total{result=\"restarted\"}") >= 1.0);
    assert!(p.target_uploads().await.is_empty(), "no upload is left");
    for kind in ["auth", "bucket_missing", "denied"] {
        let trips = metric(&format!("xpsync_breaker_trips_total{{kind=\"{kind}\"}}"));
        assert_eq!(trips, 0.0, "a {kind} trip:\n{}", logs());
    }
}

/// Ranges spread over the workers to the last part (DESIGN §10): the whole object
/// is one range of six parts, which one worker receives and starts four of (its
/// part slots); the other, finding the range queue empty, would idle to the end.
/// The worker at work, finding it empty too, shares the upper half of the two
/// parts it has not started, so both copy parts, and no part crosses twice.
#[tokio::test]
async fn a_worker_that_finds_the_range_queue_empty_shares_its_range_with_an_idle_one() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 1 MiB/s per connection: each 5 MiB part takes 5 s, so the range's first four
    // parts are still at work when its worker first finds the queue empty.
    let slow = SlowProxy::start(&p.source.endpoint, MIB as u64).await;
    let mut env = worker_env(&slow.endpoint);
    env.retain(|(name, _)| *name != "XPSYNC_TRANSFER__SPLIT_RANGE_SIZE");
    env.extend([
        ("XPSYNC_TRANSFER__SPLIT_RANGE_SIZE", "30MiB".to_owned()),
        ("XPSYNC_TRANSFER__MAX_PARTS", "4".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemons = [
        Daemon::start(&p, "worker-a", &env).await,
        Daemon::start(&p, "worker-b", &env).await,
    ];
    let body = p.put_source_multipart(KEY, &[5 * MIB; 6], 74).await;
    let source_etag = p.source_etag(KEY).await;

    completes(&p, &source_etag, 150).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    let logs = || format!("{}\n{}", daemons[0].logs(), daemons[1].logs());
    let metric = |name: &str| -> f64 { daemons.iter().map(|d| d.metric(name)).sum() };
    assert!(
        metric("xpsync_ranges_total{result=\"shared\"}") >= 1.0,
        "no range was shared:\n{}",
        logs()
    );
    for daemon in &daemons {
        let uploaded = daemon.metric("xpsync_parts_total{result=\"uploaded\"}");
        assert!(
            uploaded >= 1.0,
            "a worker uploaded no part of the one range:\n{}",
            logs()
        );
    }
    let size = body.len() as u64;
    let served = slow.bytes_replied();
    assert!(
        served < size + MIB as u64,
        "the source served {served} bytes for an object of {size}: a part crossed twice\n{}",
        logs()
    );
}

/// A range sent again sends only the parts its upload lacks (#20): worker A's
/// range of three parts stops at its third (held back, and A killed); the range
/// comes back to worker B, which uploads that part alone.
#[tokio::test]
async fn a_range_sent_again_sends_only_the_parts_its_upload_lacks() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let held = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            hold_part: Some(3),
            ..Faults::default()
        },
    )
    .await;
    // One range of three 5 MiB parts; A holds one message at a time.
    let mut env = worker_env(&p.source.endpoint);
    env.push(("XPSYNC_TRANSFER__SPLIT_RANGE_SIZE", "15MiB".into()));
    let mut env_a = env.clone();
    env_a.push(("XPSYNC_TARGET__ENDPOINT_URL", held.endpoint.clone()));
    env_a.push(("XPSYNC_TRANSFER__MAX_OBJECTS", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = p.put_source_multipart(KEY, &[5 * MIB; 3], 72).await;
    let source_etag = p.source_etag(KEY).await;
    let a = Daemon::start(&p, "worker-a", &env_a).await;
    eventually(MINUTE, "A's third part is held", || async {
        held.held() == 1 && p.target_upload_parts().await >= 2
    })
    .await;
    a.kill();

    let b = Daemon::start(&p, "worker-b", &env).await;
    completes(&p, &source_etag, 120).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    let uploaded = b.metric("xpsync_parts_total{result=\"uploaded\"}");
    let reused = b.metric("xpsync_parts_total{result=\"reused\"}");
    assert!(reused >= 2.0, "B kept A's two parts:\n{}", b.logs());
    assert!(
        uploaded < 3.0,
        "B sent its third part only ({uploaded}):\n{}",
        b.logs()
    );
}

/// Other work never waits behind a giant object (DESIGN §10): a worker copying one
/// range at a time over a slow link receives its ranges from the range queue, and
/// goes on receiving keys from the main queue meanwhile. Small objects written once
/// the split runs land while most of its parts are still missing; on one queue they
/// would wait behind its ranges.
#[tokio::test]
async fn small_objects_written_during_a_split_land_while_it_runs() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 2 MiB/s per connection, one part at a time: each 5 MiB part takes 2.5 s,
    // the twelve of them half a minute.
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TRANSFER__MAX_PARTS", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = Daemon::start(&p, "worker-a", &env).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 12], 73).await;
    let source_etag = p.source_etag(KEY).await;
    eventually(MINUTE, "the first part arrives", || async {
        p.target_upload_parts().await >= 1
    })
    .await;

    let small: Vec<String> = (0..5).map(|i| format!("small/{i}.txt")).collect();
    for (i, key) in small.iter().enumerate() {
        p.put_source(key, common::bytes_of(1024, i as u64)).await;
    }
    eventually(MINUTE, "the small objects land", || async {
        for key in &small {
            if p.target_etag(key).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    let parts = p.target_upload_parts().await;
    assert!(
        p.target_etag(KEY).await.is_none() && parts <= 4,
        "the small objects landed only once the giant's upload held {parts} of its 12 parts (or it was complete): they waited behind its ranges\n{}",
        worker.logs()
    );

    completes(&p, &source_etag, 180).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
}

/// A fleet mid-deploy: worker A, of a release without the range queue, sends its
/// split's ranges on the main queue; worker B, with it, forwards each range it
/// receives there to the range queue (one send, one delete), and copies ranges from
/// it. The object completes, and nothing is dead-lettered.
#[tokio::test]
async fn ranges_sent_on_the_main_queue_are_forwarded_to_the_range_queue() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 4 * MIB as u64).await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TRANSFER__MAX_PARTS", "1".into()));
    let mut env_a = env.clone();
    env_a.push(("XPSYNC_QUEUE__RANGE_URL", String::new()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Daemon::start(&p, "worker-a", &env_a).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 8], 74).await;
    let source_etag = p.source_etag(KEY).await;
    eventually(MINUTE, "A splits", || async {
        a.metric("xpsync_splits_total{result=\"split\"}") >= 1.0
    })
    .await;
    let b = Daemon::start(&p, "worker-b", &env).await;

    completes(&p, &source_etag, 150).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    assert!(
        b.logs()
            .contains("it came on the main queue; ranges travel on the range queue"),
        "B forwarded no range:\n{}",
        b.logs()
    );
    assert!(
        b.metric("xpsync_ranges_total{result=\"copied\"}") > 0.0,
        "B copied no range from the range queue:\n{}",
        b.logs()
    );
}

/// An object of exactly 10,000 parts (S3's most; tools that size parts as size ÷
/// 10,000 write these) is split and completes: the plan leaves parts 9,999 and
/// 10,000 to the version markers (a re-cut), so no check waits for a part that
/// cannot come. The source's emulator takes parts of 1 KiB for this test. Each
/// splitter reads the source's layout part by part first (10,000 requests to one
/// Python process, more than two minutes while the rest of the suite runs).
#[tokio::test]
async fn an_object_of_ten_thousand_parts_is_split_and_completes() {
    let p = Partitions::start_with_source_env(&[("S3_UPLOAD_PART_MIN_SIZE", "1024")]).await;
    let pipeline = Pipeline::wire(&p).await;
    let body = p.put_source_multipart(KEY, &[1536; 10_000], 75).await;
    let source_etag = p.source_etag(KEY).await;
    assert!(source_etag.ends_with("-10000"), "{source_etag}");
    let daemons = workers(&p, &p.source.endpoint, &["worker-a", "worker-b"]).await;

    eventually(5 * MINUTE, "the object lands", || async {
        p.target_etag(KEY).await.is_some()
    })
    .await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Recorded).await;
    let metric = |name: &str| -> f64 { daemons.iter().map(|d| d.metric(name)).sum() };
    assert!(metric("xpsync_splits_total{result=\"split\"}") >= 1.0);
    assert!(metric("xpsync_splits_total{result=\"completed\"}") >= 1.0);
    assert_eq!(
        metric("xpsync_splits_total{result=\"restarted\"}"),
        0.0,
        "the split was started over:\n{}\n{}",
        daemons[0].logs(),
        daemons[1].logs()
    );
}

/// An upload begun by the release before this one carries its version by part
/// 10,000 alone (this release writes part 9,999 too). It is still the version's
/// upload: a duplicate event that comes mid-copy joins it, and the object crosses
/// once. Here the target's proxy keeps part 9,999 out of the upload, as that
/// release never wrote it.
#[tokio::test]
async fn an_upload_tagged_by_part_10000_alone_is_joined_and_completed() {
    let p = Partitions::start().await;
    // The object is there before the bucket's events are wired: the test sends the
    // events itself.
    let body = p.put_source_multipart(KEY, &[5 * MIB; 6], 69).await;
    let source_etag = p.source_etag(KEY).await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let target = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            drop_part: Some(9_999),
            ..Faults::default()
        },
    )
    .await;
    // One part at a time: the six take 15 s.
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.clone()));
    env.push(("XPSYNC_TRANSFER__MAX_PARTS", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = Daemon::start(&p, "worker-a", &env).await;
    pipeline.send(&key_event()).await;
    eventually(MINUTE, "the first part arrives", || async {
        p.target_upload_parts().await >= 1
    })
    .await;
    assert!(target.injected() >= 1, "no part 9,999 was written");
    pipeline.send(&key_event()).await;

    completes(&p, &source_etag, 120).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    eventually(MINUTE, "the duplicate has split", || async {
        worker.metric("xpsync_splits_total{result=\"split\"}") >= 2.0
    })
    .await;
    assert!(
        worker.metric("xpsync_splits_total{result=\"merged\"}") >= 1.0,
        "the duplicate did not join the upload tagged by part 10,000 alone:\n{}",
        worker.logs()
    );
    let size = body.len() as u64;
    let served = slow.bytes_replied();
    assert!(
        served < size + MIB as u64,
        "the source served {served} bytes for an object of {size}: it crossed twice\n{}",
        worker.logs()
    );
    assert_eq!(
        worker.metric("xpsync_splits_total{result=\"restarted\"}"),
        0.0,
        "the split was given up:\n{}",
        worker.logs()
    );
}

/// Slow is not lost (DESIGN §10): parts that each take longer than the checks wait
/// for a lost range (three visibility timeouts) over a throttled link are neither
/// sent again nor given up while their worker copies them, for the worker writes
/// the upload's marker part again while none of them finishes: the source serves
/// each byte once, and the target receives each part once.
#[tokio::test]
async fn parts_slower_than_the_visibility_timeout_cross_the_link_once() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 80 KiB/s per connection: each 5 MiB part takes 64 s, against a visibility
    // timeout of 10 s (a range is taken for lost after 30 s without a sign, counted
    // in checks, which come every 2 to 3 s) and a check every 2 s.
    let slow = SlowProxy::start(&p.source.endpoint, 80 * 1024).await;
    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    let mut env = worker_env(&slow.endpoint);
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = Daemon::start(&p, "worker-a", &env).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 3], 76).await;
    let source_etag = p.source_etag(KEY).await;

    completes(&p, &source_etag, 180).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    let size = body.len() as u64;
    let replied = slow.bytes_replied();
    assert!(
        replied < size + MIB as u64,
        "the source served {replied} bytes for an object of {size}: a part crossed twice\n{}",
        worker.logs()
    );
    // Each split (moto sends a multipart object's event twice) tags its upload with
    // two marker parts, and the ranges stamp it while no part finishes; the parts
    // are uploaded once.
    let splits = worker.metric("xpsync_splits_total{result=\"split\"}") as u64;
    assert_eq!(
        target.uploads() - target.markers(),
        3,
        "three parts, each uploaded once:\n{}",
        worker.logs()
    );
    assert!(
        target.markers() > 2 * splits,
        "{} markers written for {splits} splits: no range said it was at work\n{}",
        target.markers(),
        worker.logs()
    );
    assert_eq!(worker.metric("xpsync_splits_total{result=\"resent\"}"), 0.0);
}

/// A range whose parts are slow learns that its upload is gone (given up, or
/// completed by another check) from its next stamp, and stops there: the parts in
/// flight are not read to their end for an upload that cannot take them.
#[tokio::test]
async fn a_slow_range_stops_once_its_upload_is_gone() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // 80 KiB/s per connection: each 5 MiB part would take 64 s.
    let slow = SlowProxy::start(&p.source.endpoint, 80 * 1024).await;
    let worker = workers(&p, &slow.endpoint, &["worker-a"]).await.remove(0);
    let size = 3 * 5 * MIB as u64;
    p.put_source_multipart(KEY, &[5 * MIB; 3], 77).await;
    pipeline.send(&key_event()).await;
    eventually(MINUTE, "the split's upload exists", || async {
        !p.target_uploads().await.is_empty()
    })
    .await;
    let (key, upload_id) = p.target_uploads().await.remove(0);
    p.target_s3
        .abort_multipart_upload()
        .bucket(common::TARGET_BUCKET)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .expect("abort the split's upload");

    eventually(MINUTE, "a range finds its upload gone", || async {
        worker.metric("xpsync_ranges_total{result=\"upload_gone\"}") >= 1.0
    })
    .await;
    let served = slow.bytes_replied();
    assert!(
        served < size / 2,
        "the source served {served} bytes before the range stopped: its parts were read to the end\n{}",
        worker.logs()
    );
}

/// What a split completes carries the source's current description: tags changed
/// while the split runs (after its upload was created with the old ones) reach the
/// copy. Their own event is not routed to the queue here, so only the completion
/// can bring them.
#[tokio::test]
async fn tags_changed_during_a_split_reach_the_copy() {
    use aws_sdk_s3::types::{Tag, Tagging};

    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let slow = SlowProxy::start(&p.source.endpoint, 2 * MIB as u64).await;
    let _workers = workers(&p, &slow.endpoint, &["worker-a"]).await;
    let body = p.put_source_multipart(KEY, &[5 * MIB; 4], 77).await;
    let source_etag = p.source_etag(KEY).await;
    eventually(MINUTE, "the first part arrives", || async {
        p.target_upload_parts().await >= 1
    })
    .await;
    let tag = Tag::builder().key("team").value("web").build().unwrap();
    p.source_s3
        .put_object_tagging()
        .bucket(SOURCE_BUCKET)
        .key(KEY)
        .tagging(Tagging::builder().tag_set(tag).build().unwrap())
        .send()
        .await
        .expect("tag the source mid-split");

    completes(&p, &source_etag, 180).await;
    nothing_left(&p, &pipeline).await;
    p.assert_copied_intact(KEY, &body, Etag::Same).await;
    let tags = p
        .target_s3
        .get_object_tagging()
        .bucket(common::TARGET_BUCKET)
        .key(KEY)
        .send()
        .await
        .expect("the copy's tags");
    let tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("team", "web")]);
}
