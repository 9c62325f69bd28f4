//! Several workers on one key. Duplicate events and a fleet of tasks mean two
//! workers may reconcile one key at once; whichever writes last must leave the
//! target holding the source's current version. A proxy holds one worker's write
//! back until the other has finished, so the race is the same every run.

mod common;

use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Etag, Partitions, KIB, MINUTE};

const KEY: &str = "contested/object.bin";

/// Waits until the queue holds nothing, visible or in flight.
async fn drained(pipeline: &Pipeline) {
    eventually(2 * MINUTE, "the queue is drained", || async {
        pipeline.drained().await
    })
    .await;
}

/// Puts `v2` on the source, starts a second worker (`name`, with `env`) and waits
/// until it has copied it; then lets the first worker's held request go on, and
/// waits until the queue is drained.
async fn second_writer(
    p: &Partitions,
    pipeline: &Pipeline,
    hold: &FaultProxy,
    v2: &[u8],
    name: &str,
    env: &[(&str, &str)],
) -> Daemon {
    p.put_source(KEY, v2.to_vec()).await;
    let v2_etag = p.source_etag(KEY).await;
    let daemon = Daemon::start(p, name, env).await;
    eventually(MINUTE, "the second worker has copied V2", || async {
        p.target_etag(KEY).await.as_deref() == Some(v2_etag.as_str())
    })
    .await;
    hold.release();
    drained(pipeline).await;
    daemon
}

/// Starts worker A, which takes one message at a time and whose first write is held
/// back, and puts V1 (256 KiB of `seed`) on the source; returns once A's write of
/// V1 is held.
async fn held_writer(p: &Partitions, seed: u64) -> (FaultProxy, Daemon) {
    let hold = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            hold_first: Some("PUT"),
            ..Faults::default()
        },
    )
    .await;
    let a = Daemon::start(
        p,
        "worker-a",
        &[
            ("XPSYNC_TARGET__ENDPOINT_URL", hold.endpoint.as_str()),
            ("XPSYNC_TRANSFER__MAX_OBJECTS", "1"),
        ],
    )
    .await;
    p.put_source(KEY, bytes_of(256 * KIB, seed)).await;
    eventually(MINUTE, "A's write of V1 is held", || async {
        hold.held() == 1
    })
    .await;
    (hold, a)
}

#[tokio::test]
async fn an_older_version_written_last_is_replaced_by_the_current_one() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let (hold, a) = held_writer(&p, 1).await;

    // V2 overwrites the source; worker B copies it while A is still writing V1,
    // and then A's write of V1 lands, last.
    let v2 = bytes_of(256 * KIB, 2);
    let _b = second_writer(&p, &pipeline, &hold, &v2, "worker-b", &[]).await;

    p.copied_intact(KEY, &v2, Etag::Same)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: the target kept an older version than the source's:\n{}",
                a.logs()
            )
        });
    assert!(a.metric("xpsync_reconcile_restarts_total{reason=\"changed_after_write\"}") >= 1.0);
}

/// Why the last writer HEADs the source rather than writing conditionally on the
/// target (`If-Match` the ETag it saw): here the target's ETag is the one A saw when
/// A's write lands, so a conditional write would land too, and keep V1.
#[tokio::test]
async fn a_write_that_lands_after_the_source_went_back_to_the_targets_version_is_undone() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let v0 = bytes_of(256 * KIB, 10);
    let mut first = Daemon::start(&p, "worker-first", &[]).await;
    p.put_source(KEY, v0.clone()).await;
    let v0_etag = p.source_etag(KEY).await;
    eventually(MINUTE, "V0 is copied", || async {
        p.target_etag(KEY).await.as_deref() == Some(v0_etag.as_str())
    })
    .await;
    drained(&pipeline).await;
    first.terminate();
    first.wait(MINUTE).await;

    // V1 overwrites the source; worker A copies it, its write held back.
    let (hold, a) = held_writer(&p, 11).await;

    // V0 is put back on the source: worker B finds the target holding it already.
    // Then A's write of V1 lands, onto the very ETag A saw.
    p.put_source(KEY, v0.clone()).await;
    let b = Daemon::start(&p, "worker-b", &[]).await;
    eventually(MINUTE, "B found the target up to date", || async {
        b.metric("xpsync_objects_total{result=\"unchanged\"}") >= 1.0
    })
    .await;
    hold.release();
    drained(&pipeline).await;

    p.copied_intact(KEY, &v0, Etag::Same)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: the target kept V1, which the source no longer holds:\n{}",
                a.logs()
            )
        });
    assert!(a.metric("xpsync_reconcile_restarts_total{reason=\"changed_after_write\"}") >= 1.0);
}

#[tokio::test]
async fn a_delete_that_lands_after_a_re_created_object_was_copied_is_undone() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let hold = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            hold_first: Some("DELETE"),
            ..Faults::default()
        },
    )
    .await;
    let deletes = ("XPSYNC_REPLICATE__DELETES", "true");
    let b = Daemon::start(
        &p,
        "worker-b",
        &[
            ("XPSYNC_TARGET__ENDPOINT_URL", hold.endpoint.as_str()),
            ("XPSYNC_TRANSFER__MAX_OBJECTS", "1"),
            deletes,
        ],
    )
    .await;
    p.put_source(KEY, bytes_of(1000, 3)).await;
    eventually(MINUTE, "V1 is copied", || async {
        p.target_etag(KEY).await.is_some()
    })
    .await;

    // The source key is deleted: B sees it gone and the target present; its
    // delete is held back.
    p.source_s3
        .delete_object()
        .bucket(common::SOURCE_BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    eventually(MINUTE, "B's delete is held", || async { hold.held() == 1 }).await;

    // The key is re-created, and worker A copies it before B's delete lands.
    let v2 = bytes_of(1000, 4);
    let _a = second_writer(&p, &pipeline, &hold, &v2, "worker-a", &[deletes]).await;

    p.copied_intact(KEY, &v2, Etag::Same)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: a late delete removed the source's current object from the target:\n{}",
                b.logs()
            )
        });
    assert!(b.metric("xpsync_reconcile_restarts_total{reason=\"reappeared_after_delete\"}") >= 1.0);
}

/// A worker with one object slot, the source behind a proxy that holds its first
/// HEAD back: an event describes its object, so that HEAD is the first object's
/// last-writer check.
async fn one_slot_with_the_first_check_held(p: &Partitions) -> (FaultProxy, Daemon) {
    let hold = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            hold_first: Some("HEAD"),
            ..Faults::default()
        },
    )
    .await;
    let env = [
        ("XPSYNC_SOURCE__ENDPOINT_URL", hold.endpoint.as_str()),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "1"),
    ];
    let worker = Daemon::start(p, "worker", &env).await;
    (hold, worker)
}

/// The last writer's check (a HEAD of the source after the write) holds no object
/// slot: with one slot, a check that never comes back does not stop the next
/// object from being copied (speed: a small object costs its slot two round trips,
/// not three).
#[tokio::test]
async fn a_last_writer_check_held_back_does_not_hold_the_object_slot() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let (hold, worker) = one_slot_with_the_first_check_held(&p).await;
    p.put_source("first.bin", bytes_of(64 * KIB, 20)).await;
    eventually(MINUTE, "the first object's check is held", || async {
        hold.held() == 1
    })
    .await;

    let second = bytes_of(64 * KIB, 21);
    p.put_source("second.bin", second.clone()).await;
    let second_etag = p.source_etag("second.bin").await;
    eventually(MINUTE, "the second object is copied meanwhile", || async {
        p.target_etag("second.bin").await.as_deref() == Some(second_etag.as_str())
    })
    .await;
    assert_eq!(hold.held(), 1, "the first check is still held");

    hold.release();
    drained(&pipeline).await;
    p.copied_intact("second.bin", &second, Etag::Same)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", worker.logs()));
    assert_eq!(
        worker.metric("xpsync_objects_total{result=\"copied\"}"),
        2.0
    );
}

/// A key whose last-writer check finds a newer version starts over, and waits for
/// a slot to do so without holding the key: with one slot, the newer version's own
/// event (received with the slot the check gave back) waits for the key meanwhile.
/// Holding the key while waiting for the slot, the two would wait for each other
/// for ever.
#[tokio::test]
async fn a_check_that_finds_a_newer_version_starts_over_without_holding_the_key() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let (hold, worker) = one_slot_with_the_first_check_held(&p).await;
    p.put_source(KEY, bytes_of(64 * KIB, 30)).await;
    eventually(MINUTE, "V1's check is held", || async { hold.held() == 1 }).await;
    let v2 = bytes_of(64 * KIB, 31);
    p.put_source(KEY, v2.clone()).await;
    // V2's event comes in on the freed slot, and waits for the key.
    eventually(MINUTE, "V2's event is in hand", || async {
        worker.metric("xpsync_objects_in_flight") >= 1.0
    })
    .await;
    hold.release();

    drained(&pipeline).await;
    p.copied_intact(KEY, &v2, Etag::Same)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", worker.logs()));
    assert!(
        worker.metric("xpsync_reconcile_restarts_total{reason=\"changed_after_write\"}") >= 1.0
    );
}
