//! The command line as an operator and a scheduler meet it: the scheduled sweep
//! (`backfill --mode enqueue --min-age --emf`), exit codes that tell bad input (2)
//! from failures while running (1), `XPSYNC_CONFIG`, `RUST_LOG`, and fatal errors
//! as JSON where the logs are JSON.

mod common;

use common::faults::{FaultProxy, Faults};
use common::pipeline::Pipeline;
use common::{bytes_of, xpsync_bare, Partitions, Run};
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn the_sweep_leaves_out_recent_objects_and_reports_in_embedded_metric_format() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    for key in ["drift/a", "drift/b"] {
        p.put_source(key, bytes_of(100, 1)).await;
    }
    // The events of the two puts are in the queue; the sweep's own messages are
    // counted on top of them.
    let queued_before = pipeline.depth(&pipeline.queue_url).await;

    let sweep = |min_age: &str| {
        let mut command = p.xpsync(&[
            "backfill",
            "--mode",
            "enqueue",
            "--emf",
            "--min-age",
            min_age,
        ]);
        command.kill_on_drop(true);
        command
    };
    let recent = Run::of(&mut sweep("1h")).await;
    let all = Run::of(&mut sweep("0s")).await;

    assert!(recent.success(), "{recent}");
    let lines = json_lines(&recent.stdout);
    let summary = &lines.iter().find(|l| l.get("summary").is_some()).unwrap()["summary"];
    assert_eq!(summary["recent"], 2, "{recent}");
    assert_eq!(summary["differing"], 0, "in-flight keys are not drift");
    let emf = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(emf["DifferingKeys"], 0);

    assert!(all.success(), "{all}");
    let lines = json_lines(&all.stdout);
    let emf = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "xpsync/sweep"
    );
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
        "Bucket"
    );
    assert_eq!(emf["Bucket"], common::SOURCE_BUCKET);
    assert_eq!(emf["DifferingKeys"], 2);
    assert_eq!(emf["DifferingBytes"], 200);
    assert_eq!(emf["Enqueued"], 2);
    assert_eq!(emf["Failed"], 0);
    assert!(emf["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(pipeline.depth(&pipeline.queue_url).await, queued_before + 2);
}

#[tokio::test]
async fn a_listing_that_fails_mid_run_exits_1_and_is_never_read_as_empty() {
    let p = Partitions::start().await;
    p.put_source("k", bytes_of(10, 1)).await;
    let source = FaultProxy::start(&p.source.endpoint, Faults::default()).await;
    source.set_down(true);

    let mut backfill = p.xpsync(&["backfill", "--mode", "copy", "--emf"]);
    backfill
        .env("XPSYNC_SOURCE__ENDPOINT_URL", &source.endpoint)
        .env("XPSYNC_LOG__FORMAT", "json");
    let run = Run::of(&mut backfill).await;

    assert_eq!(
        run.code(),
        Some(1),
        "a failure while running, not bad input: {run}"
    );
    assert!(
        !run.stdout.contains("summary"),
        "no summary of a listing that failed: {run}"
    );
    let fatal = json_lines(&run.stderr)
        .into_iter()
        .find(|l| l["level"] == "ERROR" && l.get("exit_code").is_some())
        .unwrap_or_else(|| panic!("no JSON fatal error: {run}"));
    assert_eq!(fatal["exit_code"], 1);
    assert!(
        fatal["message"].as_str().unwrap().contains("ListObjectsV2"),
        "{fatal}"
    );
}

#[tokio::test]
async fn xpsync_config_names_the_file_and_is_no_setting() {
    let p = Partitions::start().await;
    let path = p.dir.path().join("xpsync.toml");

    let mut command = xpsync_bare(p.dir.path(), &["check-config"]);
    command.env("XPSYNC_CONFIG", &path);
    let run = Run::of(&mut command).await;

    assert!(run.success(), "{run}");
    assert!(run.stdout.contains(common::SOURCE_BUCKET), "{run}");
}

#[tokio::test]
async fn rust_log_overrides_the_configured_level() {
    let p = Partitions::start().await;

    let quiet = Run::of(
        p.xpsync(&["sync", "absent"])
            .env("XPSYNC_LOG__LEVEL", "error"),
    )
    .await;
    let loud = Run::of(
        p.xpsync(&["sync", "absent"])
            .env("XPSYNC_LOG__LEVEL", "error")
            .env("RUST_LOG", "xpsync=debug"),
    )
    .await;

    assert!(quiet.success() && loud.success(), "{quiet}\n{loud}");
    assert!(!quiet.stderr.contains("reconciled"), "{quiet}");
    assert!(loud.stderr.contains("reconciled"), "{loud}");
}

#[tokio::test]
async fn help_lists_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::of(&mut xpsync_bare(dir.path(), &["--help"])).await;
    assert!(run.success(), "{run}");
    for line in [
        "Exit codes:",
        "0  everything",
        "1  the command ran",
        "2  bad input",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?}: {run}");
    }
}
