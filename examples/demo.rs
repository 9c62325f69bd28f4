//! The local demo: two emulated AWS partitions wired as in production (source
//! bucket → EventBridge → SQS, with a dead-letter queue), `xpsync run` consuming the
//! queue, and a few objects replicated to the target and verified. No AWS account.
//!
//! Run it with `scripts/demo`; Ctrl-C stops it. `--once` stops it after the check.
//! `--routes` serves two bucket pairs from the one queue and daemon: `logs` (the
//! buckets above, under `cn/` on the target) and `media` (buckets of its own, whose
//! target IAM user may write its bucket alone).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::routes::{routes_env, two_routes, MEDIA_SOURCE, MEDIA_TARGET};
use common::s3::{etag_of, put};
use common::{bytes_of, Partitions, Run, MIB, SOURCE_BUCKET, TARGET_BUCKET};

#[tokio::main]
async fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let routes = std::env::args().any(|a| a == "--routes");

    println!("Starting two emulated AWS partitions (moto, on loopback)...");
    let p = match routes {
        true => two_routes().await.0,
        false => Partitions::start().await,
    };
    let pipeline = Pipeline::wire(&p).await;
    let env = match routes {
        true => {
            pipeline.wire_bucket(&p, MEDIA_SOURCE).await;
            routes_env(&p)
        }
        false => Vec::new(),
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    println!(
        "  source partition {} (cn-northwest-1): bucket {SOURCE_BUCKET}",
        p.source.endpoint
    );
    println!("    events: bucket → EventBridge rule → SQS xpsync-events (→ xpsync-events-dlq after 5 receives)");
    println!("    a giant object's ranges: SQS xpsync-ranges (→ the same dead-letter queue)");
    println!("    secret: the target's keys, in Secrets Manager");
    println!(
        "  target partition {} (us-west-2): bucket {TARGET_BUCKET}",
        p.target.endpoint
    );
    println!("    accepts only an IAM user holding deploy/iam/target-policy.json\n");
    if routes {
        println!("Two routes through the one queue (XPSYNC_ROUTE):");
        println!("  logs:  {SOURCE_BUCKET} → {TARGET_BUCKET}, under cn/");
        println!("  media: {MEDIA_SOURCE} → {MEDIA_TARGET}, with a target IAM user of its own\n");
    }

    let mut daemon = Daemon::start(&p, "xpsync", &env).await;
    println!("xpsync run is up (log: {})", daemon.log.display());
    println!("  metrics: {}/metrics", daemon.base_url);
    println!(
        "  health:  {}/healthz, {}/readyz\n",
        daemon.base_url, daemon.base_url
    );

    println!("Uploading to the source bucket:");
    let objects = [
        ("reports/2026/summary.csv", 4096),
        ("文档/季度 报告+final.pdf", 300 * 1024),
    ];
    for (i, (key, size)) in objects.iter().enumerate() {
        p.put_source(key, bytes_of(*size, i as u64)).await;
        println!("  {key} ({size} bytes)");
    }
    p.put_source_multipart("videos/launch.mp4", &[5 * MIB, 5 * MIB, 3 * MIB], 3)
        .await;
    println!("  videos/launch.mp4 (13 MiB, stored in 3 parts)\n");

    let keys = [
        "reports/2026/summary.csv",
        "文档/季度 报告+final.pdf",
        "videos/launch.mp4",
    ];
    let prefix = if routes { "cn/" } else { "" };
    for key in keys {
        let target_key = format!("{prefix}{key}");
        eventually(Duration::from_secs(120), key, || async {
            etag_of(&p.target_s3, TARGET_BUCKET, &target_key).await
                == Some(p.source_etag(key).await)
        })
        .await;
        println!("  replicated: {key} (ETag {})", p.source_etag(key).await);
    }
    if routes {
        let key = "clips/intro.mp4";
        put(&p.source_s3, MEDIA_SOURCE, key, bytes_of(64 * 1024, 9)).await;
        eventually(Duration::from_secs(120), key, || async {
            etag_of(&p.target_s3, MEDIA_TARGET, key).await.is_some()
        })
        .await;
        println!("  replicated: {MEDIA_SOURCE}/{key} → {MEDIA_TARGET}/{key} (route media)");
    }

    println!("\n$ xpsync verify");
    let verify = Run::of(p.xpsync(&["verify"]).envs(env.iter().copied())).await;
    print!("{}", verify.stdout);
    println!("\nFrom {}/metrics:", daemon.base_url);
    let (_, metrics) = daemon.get("/metrics");
    for line in metrics.lines().filter(|l| {
        l.starts_with("xpsync_objects_total{result=\"copied\"")
            || l.starts_with("xpsync_bytes_copied_total")
            || l.starts_with("xpsync_messages_total{result=\"deleted\"}")
            || l.starts_with("xpsync_ready")
    }) {
        println!("  {line}");
    }
    if !verify.success() {
        eprintln!("verify found differences:\n{verify}");
        std::process::exit(1);
    }

    if !once {
        println!("\nEvery object is on the target, verified. Upload more with any S3 client to");
        println!(
            "{} (bucket {SOURCE_BUCKET}), or press Ctrl-C to stop.",
            p.source.endpoint
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("\nStopping xpsync (SIGTERM)...");
    daemon.terminate();
    let status = daemon.wait(Duration::from_secs(40)).await;
    println!("xpsync exited: {status}. Stopping the emulators.");
    drop(pipeline);
    if !status.success() {
        std::process::exit(1);
    }
}
