//! The workers' metrics for CloudWatch (`cloudwatch.emf`): embedded metric format
//! lines on stdout, named as `/metrics` names them, counting what it counts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Partitions, MINUTE};
use serde_json::Value;

#[tokio::test]
async fn the_workers_emf_lines_name_the_metrics_of_metrics_and_add_up_to_them() {
    let p = Partitions::start().await;
    let _pipeline = Pipeline::wire(&p).await;
    let mut daemon = Daemon::start(
        &p,
        "daemon",
        &[
            ("XPSYNC_CLOUDWATCH__EMF", "true"),
            ("XPSYNC_CLOUDWATCH__INTERVAL", "1s"),
            ("XPSYNC_CLOUDWATCH__STACK", "xpsync-cn-logs"),
        ],
    )
    .await;
    p.put_source("emf/a.bin", bytes_of(1000, 1)).await;
    p.put_source("emf/b.bin", bytes_of(2000, 2)).await;
    eventually(MINUTE, "both objects copied", || async {
        daemon.metric("xpsync_objects_total{result=\"copied\"}") == 2.0
    })
    .await;
    let (_, scrape) = daemon.get("/metrics");
    // The last lines are printed as it stops: every increase is in them.
    daemon.terminate();
    assert!(daemon.wait(Duration::from_secs(30)).await.success());

    let lines: Vec<Value> = daemon
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!lines.is_empty(), "EMF lines on stdout:\n{}", daemon.logs());
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut copied = 0.0;
    let mut bytes = 0.0;
    for line in &lines {
        let definition = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(definition["Namespace"], "xpsync", "{line}");
        assert_eq!(line["Stack"], "xpsync-cn-logs", "{line}");
        let dimensions = definition["Dimensions"][0]
            .as_array()
            .expect("one dimension set");
        assert_eq!(dimensions[0], "Stack", "{line}");
        for dimension in dimensions {
            let name = dimension.as_str().expect("a dimension name");
            assert!(
                line[name].is_string(),
                "dimension {name} has a value: {line}"
            );
        }
        for metric in definition["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("a metric name");
            assert!(exported.contains(name), "{name} is not in /metrics");
            assert!(line[name].is_number(), "{name} has a value: {line}");
        }
        if line["result"] == "copied" {
            copied += line["xpsync_objects_total"].as_f64().unwrap_or(0.0);
        }
        bytes += line["xpsync_bytes_copied_total"].as_f64().unwrap_or(0.0);
    }
    assert_eq!(copied, 2.0, "the increases add up to the counter");
    assert_eq!(bytes, 3000.0);
}
