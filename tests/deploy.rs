//! The deployment's dashboard and rules against the real `/metrics` of a running
//! xpsync: every metric they use is exported, and the exposition passes
//! `promtool check metrics`. (`scripts/check-deploy` installs promtool and PyYAML;
//! `scripts/test` runs it first.)

mod common;

use std::path::{Path, PathBuf};

use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, Partitions, MINUTE};

fn cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
        .join("xpsync")
}

fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.exists());
    let path = on_path.unwrap_or_else(|| cache().join("tools/promtool"));
    assert!(
        path.exists(),
        "promtool is missing: run scripts/check-deploy first"
    );
    path
}

#[tokio::test]
async fn the_dashboard_and_rules_use_only_metrics_a_running_xpsync_exports() {
    let p = Partitions::start().await;
    let _pipeline = Pipeline::wire(&p).await;
    let daemon = Daemon::start(&p, "daemon", &[]).await;
    p.put_source("scraped", bytes_of(100, 1)).await;
    eventually(MINUTE, "one object copied", || async {
        daemon.metric("xpsync_objects_total{result=\"copied\"}") == 1.0
    })
    .await;
    let (status, scrape) = daemon.get("/metrics");
    assert_eq!(status, 200);
    let file = p.write_file("metrics.txt", &scrape);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = std::process::Command::new(cache().join("venv/bin/python"))
        .arg(root.join("scripts/deploy_metric_names.py"))
        .arg("--scraped")
        .arg(&file)
        .current_dir(root)
        .output()
        .expect("run scripts/deploy_metric_names.py");
    assert!(
        names.status.success(),
        "{}{}",
        String::from_utf8_lossy(&names.stdout),
        String::from_utf8_lossy(&names.stderr)
    );

    let check = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run promtool check metrics");
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The runtime image (distroless `cc`) has glibc and libgcc and nothing else: the
/// binary must need no other shared library. Linking does not depend on the
/// optimisation level, so the test build stands for the release build.
#[test]
fn the_binary_needs_only_the_libraries_of_the_runtime_image() {
    let allowed = [
        "linux-vdso.so.1",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    let output = std::process::Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_xpsync"))
        .output()
        .expect("run ldd");
    let listing = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(|lib| lib.rsplit('/').next().unwrap_or(lib))
        .collect();
    assert!(!needed.is_empty(), "ldd printed nothing: {listing}");
    let extra: Vec<&&str> = needed.iter().filter(|lib| !allowed.contains(lib)).collect();
    assert!(
        extra.is_empty(),
        "not in the runtime image: {extra:?}\n{listing}"
    );
}
