//! The local demo: two emulated AWS partitions, a few objects on the source, and
//! xpsync replicating them to the target and verifying the result. No AWS account.
//!
//! Run it with `scripts/demo`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;

use common::{bytes_of, Partitions, Run, MIB, SOURCE_BUCKET, TARGET_BUCKET};

#[tokio::main]
async fn main() {
    println!("Starting two emulated partitions (moto on loopback)...");
    let p = Partitions::start().await;
    println!(
        "  source: {} (cn-northwest-1), bucket {SOURCE_BUCKET}\n  target: {} (us-west-2), bucket {TARGET_BUCKET}",
        p.source.endpoint, p.target.endpoint
    );
    println!(
        "  the target accepts only the keys of an IAM user holding deploy/iam/target-policy.json;"
    );
    println!("  xpsync reads them from a Secrets Manager secret in the source partition.\n");

    println!("Uploading objects to the source...");
    let objects = [
        ("reports/2026/summary.csv", bytes_of(4096, 1)),
        ("文档/季度 报告+final.pdf", bytes_of(300 * 1024, 2)),
    ];
    for (key, body) in &objects {
        p.put_source(key, body.clone()).await;
        println!("  {key} ({} bytes)", body.len());
    }
    p.put_source_multipart("videos/launch.mp4", &[5 * MIB, 5 * MIB, 3 * MIB], 3)
        .await;
    println!("  videos/launch.mp4 (13 MiB, stored in 3 parts)\n");

    let keys = [
        "reports/2026/summary.csv",
        "文档/季度 报告+final.pdf",
        "videos/launch.mp4",
    ];
    let mut args = vec!["sync"];
    args.extend(keys);
    println!("$ xpsync {}", args.join(" "));
    let sync = Run::of(p.xpsync(&args).stderr(Stdio::null())).await;
    print!("{}", sync.stdout);

    println!("\n$ xpsync verify");
    let verify = Run::of(p.xpsync(&["verify"]).stderr(Stdio::null())).await;
    print!("{}", verify.stdout);

    let source_etag = p.source_etag("videos/launch.mp4").await;
    let target_etag = p.target_etag("videos/launch.mp4").await.unwrap_or_default();
    println!("\nvideos/launch.mp4: source ETag {source_etag}, target ETag {target_etag}");
    if sync.success() && verify.success() && source_etag == target_etag {
        println!("Every object is on the target, verified. The emulators stop now.");
    } else {
        eprintln!("The demo did not end as expected.\n{sync}\n{verify}");
        std::process::exit(1);
    }
}
