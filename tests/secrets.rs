//! Secrets never appear in logs, metrics, errors or `check-config` output.

mod common;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Partitions, Run, MINUTE, SOURCE_SECRET_KEY};

const DISTINCTIVE: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzDISTINCTIVE";

#[tokio::test]
async fn no_output_of_any_kind_holds_a_secret() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let secrets = [p.writer.secret.as_str(), SOURCE_SECRET_KEY, DISTINCTIVE];
    let mut outputs: Vec<(String, String)> = Vec::new();

    // The daemon, logging everything it and its libraries say at debug level.
    let mut daemon = Daemon::start(&p, "daemon", &[("XPSYNC_LOG__LEVEL", "debug")]).await;
    p.put_source("k", bytes_of(10, 1)).await;
    eventually(MINUTE, "the object copied", || async {
        daemon.metric("xpsync_objects_total{result=\"copied\"}") == 1.0
    })
    .await;
    outputs.push(("/metrics".into(), daemon.get("/metrics").1));
    outputs.push(("/readyz".into(), daemon.get("/readyz").1));
    daemon.terminate();
    daemon.wait(MINUTE / 2).await;
    outputs.push(("daemon log".into(), daemon.logs()));

    // check-config, with every credential given statically.
    let mut check = p.xpsync(&["check-config"]);
    check.envs([
        ("XPSYNC_SOURCE__CREDENTIALS__ACCESS_KEY_ID", "AKIASOURCE"),
        (
            "XPSYNC_SOURCE__CREDENTIALS__SECRET_ACCESS_KEY",
            SOURCE_SECRET_KEY,
        ),
        ("XPSYNC_TARGET__CREDENTIALS__SECRET_ID", ""),
    ]);
    let check = Run::of(&mut check).await;
    outputs.push((
        "check-config (rejected)".into(),
        format!("{}{}", check.stdout, check.stderr),
    ));
    let text: String = p
        .config_text("")
        .lines()
        .filter(|line| !line.starts_with("secret_endpoint_url"))
        .map(|line| {
            if line.starts_with("secret_id") {
                format!("access_key_id = \"AKIAWRONG\"\nsecret_access_key = \"{DISTINCTIVE}\"\nsession_token = \"{DISTINCTIVE}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    p.write_file("xpsync.toml", &text);
    let check = Run::of(&mut p.xpsync(&["check-config"])).await;
    assert!(check.success(), "{check}");
    assert!(
        check.stdout.contains("secret_access_key = \"<redacted>\""),
        "{check}"
    );
    outputs.push((
        "check-config".into(),
        format!("{}{}", check.stdout, check.stderr),
    ));

    // Errors: the target rejects the distinctive keys.
    let mut sync = p.xpsync(&["sync", "k2"]);
    sync.env("XPSYNC_LOG__LEVEL", "debug");
    p.put_source("k2", bytes_of(10, 2)).await;
    let sync = Run::of(&mut sync).await;
    assert_eq!(sync.code(), Some(1), "{sync}");
    outputs.push((
        "sync with rejected keys".into(),
        format!("{}{}", sync.stdout, sync.stderr),
    ));
    drop(pipeline);

    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        for secret in secrets {
            assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
        }
    }
}
