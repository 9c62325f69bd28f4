//! The load test: a burst of S3 events through the production chain (bucket →
//! EventBridge → SQS) shared by two daemon processes, with duplicates and deletes;
//! then `xpsync verify` must be clean and the DLQ empty. Prints the duplicate work
//! and each daemon's peak RSS against `transfer.memory_limit` + 64 MiB.
//!
//! `scripts/load [OBJECTS]` (default 5,000). Too slow for every CI run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Partitions, Run, MIB, SOURCE_BUCKET};
use futures::StreamExt;

/// The daemons' memory budget in this test.
const MEMORY_LIMIT_MIB: u64 = 128;

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024)
}

#[tokio::main]
async fn main() {
    let objects: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let env = [
        ("XPSYNC_REPLICATE__DELETES", "true"),
        ("XPSYNC_TRANSFER__MEMORY_LIMIT", "128MiB"),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "32"),
        ("XPSYNC_LOG__LEVEL", "warn"),
    ];
    let mut daemons = [
        Daemon::start(&p, "daemon-1", &env).await,
        Daemon::start(&p, "daemon-2", &env).await,
    ];
    let started = Instant::now();

    // Mixed sizes: mostly small, every 100th a multipart object of 11 MiB.
    // Every 10th key is written twice (duplicate events), every 25th then deleted.
    let (mut events, mut deletes) = (0u64, 0u64);
    futures::stream::iter(0..objects)
        .for_each_concurrent(16, |i| {
            let p = &p;
            async move {
                let key = format!("load/{i:05}");
                if i % 100 == 0 {
                    p.put_source_multipart(&key, &[5 * MIB, 5 * MIB, MIB], i)
                        .await;
                } else {
                    p.put_source(&key, bytes_of(1024 + (i as usize % 64) * 1024, i))
                        .await;
                }
                if i % 10 == 0 {
                    p.put_source(&key, bytes_of(2048, i + 1)).await;
                }
                if i % 25 == 0 {
                    p.source_s3
                        .delete_object()
                        .bucket(SOURCE_BUCKET)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                }
            }
        })
        .await;
    for i in 0..objects {
        events += 1 + u64::from(i % 100 == 0) + u64::from(i % 10 == 0) + u64::from(i % 25 == 0);
        deletes += u64::from(i % 25 == 0);
    }
    println!(
        "{objects} keys written ({events} writes and deletes, {deletes} of them deletes) in {:?}",
        started.elapsed()
    );

    eventually(Duration::from_secs(1800), "the queue drained", || async {
        pipeline.depth(&pipeline.queue_url).await == 0
    })
    .await;
    let drained = started.elapsed();
    let verify = Run::of(&mut p.xpsync(&["verify"])).await;
    let dead_letters = pipeline.depth(&pipeline.dead_letter_url).await;

    let mut totals = [0.0f64; 5];
    for daemon in &daemons {
        for (i, result) in ["copied", "unchanged", "deleted", "absent", "failed"]
            .iter()
            .enumerate()
        {
            totals[i] += daemon.metric(&format!("xpsync_objects_total{{result=\"{result}\"}}"));
        }
    }
    let rss: Vec<u64> = daemons.iter().map(|d| peak_rss_mib(d.pid())).collect();
    for daemon in &mut daemons {
        daemon.terminate();
        daemon.wait(Duration::from_secs(60)).await;
    }

    println!("drained in {drained:?}");
    println!(
        "reconciles: copied {}, unchanged {}, deleted {}, absent {}, failed {}",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    );
    println!(
        "duplicate work: {} copies for {} keys left on the source ({:.1}% extra)",
        totals[0],
        objects - deletes,
        100.0 * (totals[0] - (objects - deletes) as f64) / (objects - deletes) as f64
    );
    println!(
        "peak RSS: {} MiB and {} MiB, bound {} MiB (memory_limit {MEMORY_LIMIT_MIB} MiB + 64 MiB)",
        rss[0],
        rss[1],
        MEMORY_LIMIT_MIB + 64
    );
    println!(
        "verify: {}",
        verify.stdout.lines().last().unwrap_or_default()
    );
    println!("dead-letter queue: {dead_letters} messages");
    let ok =
        verify.success() && dead_letters == 0 && rss.iter().all(|&r| r <= MEMORY_LIMIT_MIB + 64);
    println!("{}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}
