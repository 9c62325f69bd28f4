//! MIGRATION.md's steps, end to end: a target holding copies another tool cut in
//! other part sizes → `backfill --adopt` recognises the good ones by their bytes and
//! records them, sending no object bytes → `backfill --mode enqueue` → the daemon →
//! `verify` clean. `verify --deep` tells the same copies apart without adopting.

mod common;

use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::s3::{put, put_parts};
use common::{bytes_of, Etag, Partitions, Run, MIB, MINUTE, TARGET_BUCKET};
use serde_json::Value;

fn summary(run: &Run) -> Value {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary: {run}"))
}

#[tokio::test]
async fn copies_cut_in_other_part_sizes_are_adopted_without_moving_bytes() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    // The source: objects stored in 5 MiB parts, one stored whole, one never copied.
    let mut sources = Vec::new();
    for (i, key) in ["media/a.mp4", "media/b.mp4", "media/c.mp4"]
        .iter()
        .enumerate()
    {
        let body = p
            .put_source_multipart(key, &[5 * MIB, 5 * MIB, 2 * MIB], 40 + i as u64)
            .await;
        sources.push((key.to_string(), body));
    }
    let whole = bytes_of(3 * MIB, 50);
    p.put_source("media/whole.bin", whole.clone()).await;
    p.put_source_multipart("media/damaged.mp4", &[5 * MIB, 5 * MIB, 2 * MIB], 51)
        .await;
    p.put_source("media/never-copied.bin", bytes_of(1000, 52))
        .await;

    // The old tool's copies: the same bytes in 8 MiB parts, one whole, and one with
    // other bytes of the same size.
    for (key, body) in &sources {
        copy_in_parts(&p, key, body, 8 * MIB).await;
    }
    put(&p.target_s3, TARGET_BUCKET, "media/whole.bin", whole).await;
    copy_in_parts(&p, "media/damaged.mp4", &bytes_of(12 * MIB, 99), 8 * MIB).await;
    // Its events are long gone: nothing in the queue speaks of these keys.
    pipeline.purge().await;

    let plain = Run::of(&mut p.xpsync(&["verify"])).await;
    let deep = Run::of(&mut p.xpsync(&["verify", "--deep"])).await;
    assert_eq!(summary(&plain)["different"], 4, "{plain}");
    assert_eq!(
        summary(&deep)["different"],
        1,
        "only the damaged copy: {deep}"
    );
    assert_eq!(summary(&deep)["missing"], 1, "{deep}");

    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    let mut adopt = p.xpsync(&["backfill", "--adopt"]);
    adopt.env("XPSYNC_TARGET__ENDPOINT_URL", &target.endpoint);
    let adopted = Run::of(&mut adopt).await;

    assert!(adopted.success(), "{adopted}");
    assert_eq!(summary(&adopted)["adopted"], 3, "{adopted}");
    assert_eq!(summary(&adopted)["not_adopted"], 1, "{adopted}");
    assert_eq!(
        target.uploads(),
        0,
        "object bytes were sent to the target: {adopted}"
    );

    let enqueue = Run::of(&mut p.xpsync(&["backfill", "--mode", "enqueue"])).await;
    assert!(enqueue.success(), "{enqueue}");
    assert_eq!(
        summary(&enqueue)["enqueued"],
        2,
        "the damaged copy and the missing key: {enqueue}"
    );
    let _daemon = Daemon::start(&p, "daemon", &[]).await;
    eventually(2 * MINUTE, "the backlog is copied", || async {
        pipeline.depth(&pipeline.queue_url).await == 0
            && p.target_etag("media/never-copied.bin").await.is_some()
    })
    .await;

    let verify = Run::of(&mut p.xpsync(&["verify"])).await;
    assert!(verify.success(), "{verify}");
    // Adopted: the old tool's parts, the source's ETag recorded.
    for (key, body) in &sources {
        p.assert_copied_intact(key, body, Etag::Recorded).await;
    }
    let damaged = p.source_bytes("media/damaged.mp4").await;
    p.assert_copied_intact("media/damaged.mp4", &damaged, Etag::Same)
        .await;
}

/// Stores `body` on the target as `key` in parts of `part_size`, as another tool would.
async fn copy_in_parts(p: &Partitions, key: &str, body: &[u8], part_size: usize) {
    let sizes: Vec<usize> = body.chunks(part_size).map(<[u8]>::len).collect();
    put_parts(&p.target_s3, TARGET_BUCKET, key, body, &sizes, &[]).await;
}
