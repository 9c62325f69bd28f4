//! The memory budget holds whatever the object's size, and `xpsync verify` reports
//! what differs between the sides.

mod common;

use std::sync::Arc;

use bytesize::ByteSize;
use common::s3::put;
use common::{bytes_of, Etag, Partitions, Run, MIB, SMALL_PARTS, SOURCE_BUCKET, TARGET_BUCKET};
use futures::StreamExt;
use xpsync::config::{Config, CredentialsConfig, Needs, Secret};
use xpsync::reconcile::{Hint, Outcome, Reconciler, Tags};

/// A reconciler over the harness's partitions with static keys (this process has
/// no default AWS chain), and these transfer settings.
async fn reconciler(p: &Partitions, stream_parts: bool) -> Reconciler {
    let mut config: Config = Config::load(Some(&p.dir.path().join("xpsync.toml"))).unwrap();
    config.source.credentials = Some(CredentialsConfig {
        access_key_id: Some(common::SOURCE_KEY_ID.into()),
        secret_access_key: Some(Secret::new(common::SOURCE_SECRET_KEY)),
        ..Default::default()
    });
    config.target.credentials = Some(CredentialsConfig {
        access_key_id: Some(p.writer.id.clone()),
        secret_access_key: Some(Secret::new(p.writer.secret.clone())),
        ..Default::default()
    });
    config.transfer.memory_limit = ByteSize::mib(16);
    config.transfer.part_size = ByteSize::mib(5);
    config.transfer.multipart_threshold = ByteSize::mib(5);
    config.transfer.max_parts = 8;
    config.transfer.stream_parts = stream_parts;
    config.validate(Needs::Buckets).unwrap();
    let (source, target) = xpsync::aws::connect(&config).await.unwrap();
    Reconciler::new(source, target, Arc::new(config))
}

#[tokio::test]
async fn a_64_mib_object_buffered_part_by_part_stays_within_a_16_mib_memory_budget() {
    let p = Partitions::start().await;
    let body = bytes_of(64 * MIB, 1);
    p.put_source("big", body.clone()).await;
    let reconciler = reconciler(&p, false).await;

    let report = reconciler.reconcile("big", Hint::Nothing, Tags::Skip).await;

    assert_eq!(report.outcome(), Outcome::Copied, "{:?}", report.error());
    let budget = reconciler.copier().budget();
    assert!(
        budget.peak() <= 16 * MIB as u64,
        "peak {} bytes",
        budget.peak()
    );
    // 8 part slots, but only three 5 MiB parts fit in 16 MiB at once.
    assert_eq!(budget.peak(), 15 * MIB as u64);
    assert_eq!(budget.reserved(), 0, "every reservation is released");
    p.assert_copied_intact("big", &body, Etag::Recorded).await;
}

#[tokio::test]
async fn a_64_mib_object_streamed_holds_a_small_window_per_part() {
    let p = Partitions::start().await;
    let body = bytes_of(64 * MIB, 2);
    p.put_source("streamed", body.clone()).await;
    let reconciler = reconciler(&p, true).await;

    let report = reconciler
        .reconcile("streamed", Hint::Nothing, Tags::Skip)
        .await;

    assert_eq!(report.outcome(), Outcome::Copied, "{:?}", report.error());
    let budget = reconciler.copier().budget();
    // 8 part slots, each holding a 2 MiB window rather than a 5 MiB part.
    assert_eq!(budget.peak(), 16 * MIB as u64);
    assert_eq!(budget.reserved(), 0);
    p.assert_copied_intact("streamed", &body, Etag::Recorded)
        .await;
    assert_eq!(
        p.target_etag("streamed").await.unwrap().len(),
        32 + 3,
        "13 parts: a composite ETag"
    );
}

#[tokio::test]
async fn verify_reports_missing_different_and_extra_keys_and_exits_1() {
    let p = Partitions::start().await;
    p.put_source("same", bytes_of(10, 1)).await;
    p.put_source("missing", bytes_of(10, 2)).await;
    p.put_source("different", bytes_of(10, 3)).await;
    p.put_source("other/ignored", bytes_of(10, 3)).await;
    p.sync_one("same", &[]).await;
    put(&p.target_s3, TARGET_BUCKET, "different", bytes_of(10, 4)).await;
    put(&p.target_s3, TARGET_BUCKET, "extra", bytes_of(10, 5)).await;

    let run = Run::of(&mut p.xpsync(&["verify"])).await;
    let scoped = Run::of(&mut p.xpsync(&["verify", "--prefix", "same"])).await;

    assert_eq!(run.code(), Some(1), "{run}");
    let lines = run.json_lines();
    let statuses: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| Some((l["key"].as_str()?, l["status"].as_str()?)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("different", "different"),
            ("extra", "extra"),
            ("missing", "missing"),
            ("other/ignored", "missing")
        ]
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["same"], 1);
    assert_eq!(summary["missing"], 2);
    assert_eq!(summary["different"], 1);
    assert_eq!(summary["extra"], 1);
    assert!(
        scoped.success(),
        "only `same` is under the prefix: {scoped}"
    );
}

#[tokio::test]
async fn verify_pages_through_more_than_a_thousand_keys() {
    let p = Partitions::start().await;
    futures::stream::iter(0..1100u64)
        .for_each_concurrent(16, |i| {
            let p = &p;
            async move {
                let key = format!("many/{i:05}");
                let body = bytes_of(8, i);
                put(&p.source_s3, SOURCE_BUCKET, &key, body.clone()).await;
                if i != 1050 {
                    put(&p.target_s3, TARGET_BUCKET, &key, body).await;
                }
            }
        })
        .await;

    let run = Run::of(&mut p.xpsync(&["verify", "--prefix", "many/"])).await;

    assert_eq!(run.code(), Some(1), "{run}");
    let lines = run.json_lines();
    assert_eq!(lines[0]["key"], "many/01050");
    assert_eq!(lines[0]["status"], "missing");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["source_keys"], 1100);
    assert_eq!(summary["target_keys"], 1099);
    assert_eq!(summary["same"], 1099);
}

#[tokio::test]
async fn verify_honours_the_target_key_prefix_and_recorded_source_etags() {
    let p = Partitions::start().await;
    p.put_source("re-cut", bytes_of(6 * MIB, 1)).await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TARGET__KEY_PREFIX", "mirror/"));
    p.sync_one("re-cut", &env).await;

    let mut verify = p.xpsync(&["verify"]);
    verify.envs(env.iter().copied());
    let run = Run::of(&mut verify).await;

    assert!(
        run.success(),
        "the re-cut copy has another ETag but records the source's: {run}"
    );
}

#[tokio::test]
async fn source_parts_larger_than_the_memory_budget_are_streamed_and_keep_their_layout() {
    let p = Partitions::start().await;
    // A 20 MiB part, more than the 16 MiB budget: streamed, it holds a window only.
    let body = p
        .put_source_multipart("wide-parts", &[20 * MIB, 5 * MIB], 5)
        .await;
    let reconciler = reconciler(&p, true).await;

    let report = reconciler
        .reconcile("wide-parts", Hint::Nothing, Tags::Skip)
        .await;

    assert_eq!(report.outcome(), Outcome::Copied, "{:?}", report.error());
    assert!(reconciler.copier().budget().peak() <= 16 * MIB as u64);
    // The source's layout is kept, not re-cut.
    p.assert_copied_intact("wide-parts", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn many_streamed_puts_at_once_stay_within_the_memory_budget() {
    let p = Partitions::start().await;
    let keys: Vec<String> = (0..60).map(|i| format!("small/{i:03}")).collect();
    for (i, key) in keys.iter().enumerate() {
        p.put_source(key, bytes_of(3 * MIB, 100 + i as u64)).await;
    }
    let reconciler = reconciler(&p, true).await;

    let reports: Vec<_> = futures::stream::iter(&keys)
        .map(|key| reconciler.reconcile(key, Hint::Nothing, Tags::Skip))
        .buffer_unordered(32)
        .collect()
        .await;

    for report in &reports {
        assert_eq!(report.outcome(), Outcome::Copied, "{:?}", report.error());
    }
    let budget = reconciler.copier().budget();
    // 32 at once, each holding a 2 MiB window: only 8 fit in 16 MiB.
    assert_eq!(budget.peak(), 16 * MIB as u64, "peak {}", budget.peak());
    assert_eq!(budget.reserved(), 0);
}

#[tokio::test]
async fn user_metadata_near_s3s_limit_is_copied_without_the_recorded_etag_where_etags_match() {
    let p = Partitions::start().await;
    let pad = "m".repeat(2000);
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key("near-limit/single")
        .metadata("pad", &pad)
        .body(bytes_of(MIB, 7).into())
        .send()
        .await
        .unwrap();
    common::s3::put_multipart_with(
        &p.source_s3,
        SOURCE_BUCKET,
        "near-limit/parts",
        &[5 * MIB, MIB],
        8,
        &[("pad", &pad)],
    )
    .await;
    // The target refuses user metadata over 2 KiB, as S3 does.
    let strict = common::faults::FaultProxy::start(
        &p.target.endpoint,
        common::faults::Faults {
            check_metadata_size: true,
            ..Default::default()
        },
    )
    .await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", strict.endpoint.as_str()));

    let (lines, run) = p
        .sync(&["near-limit/single", "near-limit/parts"], &env)
        .await;

    assert_eq!(lines[0]["outcome"], "copied", "{run}");
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key("near-limit/single")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["pad"], pad);
    assert!(!head.metadata().unwrap().contains_key("xpsync-source-etag"));
    assert_eq!(lines[1]["outcome"], "failed", "{run}");
    let error = lines[1]["error"].as_str().unwrap();
    assert!(error.contains("exceed S3's limit of 2048"), "{error}");
    assert_eq!(
        p.sync_one("near-limit/single", &env).await["outcome"],
        "unchanged"
    );
}

#[tokio::test]
async fn verify_reports_incomplete_uploads_older_than_asked() {
    let p = Partitions::start().await;
    let upload = p
        .target_s3
        .create_multipart_upload()
        .bucket(TARGET_BUCKET)
        .key("forgotten")
        .send()
        .await
        .unwrap();

    let recent = Run::of(&mut p.xpsync(&["verify", "--stale-uploads-after", "36500d"])).await;
    let all = Run::of(&mut p.xpsync(&["verify", "--stale-uploads-after", "0s"])).await;

    assert!(recent.success(), "{recent}");
    assert_eq!(
        recent.json_lines().last().unwrap()["summary"]["stale_uploads"],
        0
    );
    assert!(all.success(), "stale uploads are not differences: {all}");
    let reported = all.json_lines();
    let stale = &reported[0]["stale_upload"];
    assert_eq!(stale["key"], "forgotten", "{all}");
    assert_eq!(stale["upload_id"], upload.upload_id().unwrap());
    assert_eq!(reported.last().unwrap()["summary"]["stale_uploads"], 1);
}

/// `transfer.max_bandwidth` caps the bytes a worker reads from the source, every
/// copy together: a 4 MiB object (one streamed PUT) and a 16 MiB one (streamed
/// parts) copied at once under a 1 MiB/s cap take about 20 s. The cap holds (at most
/// a tenth of a second's worth goes ahead of it), and the copies go at it.
#[tokio::test]
async fn max_bandwidth_caps_the_bytes_read_from_the_source() {
    let p = Partitions::start().await;
    let small = bytes_of(4 * MIB, 41);
    let large = bytes_of(16 * MIB, 42);
    p.put_source("capped/small.bin", small.clone()).await;
    p.put_source("capped/large.bin", large.clone()).await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TRANSFER__MAX_BANDWIDTH", "1MiB"));

    let started = std::time::Instant::now();
    let (lines, run) = p
        .sync(&["capped/small.bin", "capped/large.bin"], &env)
        .await;
    let took = started.elapsed().as_secs_f64();

    assert!(run.success(), "{run}");
    let method = |key: &str| {
        lines
            .iter()
            .find(|l| l["key"] == key)
            .map(|l| l["method"].clone())
    };
    assert_eq!(method("capped/small.bin"), Some("put".into()), "{run}");
    assert_eq!(
        method("capped/large.bin"),
        Some("multipart".into()),
        "{run}"
    );
    let rate = 20.0 / took;
    assert!(
        rate <= 1.1,
        "{rate:.2} MiB/s in {took:.1} s: over the 1 MiB/s cap"
    );
    assert!(
        rate >= 0.85,
        "{rate:.2} MiB/s in {took:.1} s: far below the cap"
    );
    p.assert_copied_intact("capped/small.bin", &small, Etag::Same)
        .await;
    p.assert_copied_intact("capped/large.bin", &large, Etag::Recorded)
        .await;
}
