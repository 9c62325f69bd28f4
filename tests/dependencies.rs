//! Dependencies failing under a running daemon: Secrets Manager going away, and
//! the keys it held being rotated while it is away. The daemon must keep copying
//! while it holds good keys, pause (not drain the queue into the DLQ) when it has
//! none, say why on `/readyz`, and resume by itself.

mod common;

use std::time::Duration;

use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::s3::sdk_config;
use common::{bytes_of, secret_json, Keys, Partitions, MINUTE, SECRET_ID, TARGET_REGION};

/// How often the daemon re-reads its secret: the secret is served by a local
/// endpoint, which may be read every second.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Gives xpsync's IAM user on the target new keys and deletes the old ones.
async fn rotate_writer_keys(p: &Partitions) -> Keys {
    let conf = sdk_config(
        &p.target.endpoint,
        TARGET_REGION,
        &p.admin.id,
        &p.admin.secret,
    );
    let iam = aws_sdk_iam::Client::new(&conf);
    let user = "xpsync-target-writer";
    let created = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let key = created.access_key().unwrap();
    iam.delete_access_key()
        .user_name(user)
        .access_key_id(&p.writer.id)
        .send()
        .await
        .unwrap();
    Keys {
        id: key.access_key_id().to_owned(),
        secret: key.secret_access_key().to_owned(),
    }
}

#[tokio::test]
async fn a_secrets_manager_outage_pauses_the_daemon_instead_of_draining_the_queue() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let secrets = FaultProxy::start(&p.source.endpoint, Faults::default()).await;
    let refresh_interval = format!("{}s", REFRESH_INTERVAL.as_secs());
    let env = [
        (
            "XPSYNC_TARGET__CREDENTIALS__SECRET_ENDPOINT_URL",
            secrets.endpoint.as_str(),
        ),
        (
            "XPSYNC_TARGET__CREDENTIALS__REFRESH_INTERVAL",
            refresh_interval.as_str(),
        ),
    ];
    let daemon = Daemon::start(&p, "daemon", &env).await;
    let copied = |key: &'static str| {
        let p = &p;
        move || async move { p.target_etag(key).await.is_some() }
    };
    p.put_source("before", bytes_of(100, 1)).await;
    eventually(MINUTE, "the first object is copied", copied("before")).await;

    // Secrets Manager goes away; the keys read before are still good, and stay in
    // use past their refresh interval: the secret cannot be read again, and the
    // copies go on.
    secrets.set_down(true);
    let failed_reads = || daemon.metric("xpsync_credentials_refreshes_total{result=\"error\"}");
    let failed_before = failed_reads();
    tokio::time::sleep(REFRESH_INTERVAL + Duration::from_secs(1)).await;
    p.put_source("during", bytes_of(100, 2)).await;
    eventually(MINUTE, "copies go on with the keys held", copied("during")).await;
    assert!(
        failed_reads() > failed_before,
        "the secret was not read again past its refresh interval:\n{}",
        daemon.logs()
    );

    // Then the keys are rotated away while the secret cannot be read.
    let rotated = rotate_writer_keys(&p).await;
    p.put_secret(SECRET_ID, &secret_json(&rotated)).await;
    for key in ["after-1", "after-2", "after-3", "after-4"] {
        p.put_source(key, bytes_of(100, 3)).await;
    }
    eventually(MINUTE, "the daemon pauses, saying why", || async {
        let (status, body) = daemon.get("/readyz");
        status == 503 && body.contains("cannot read secret")
    })
    .await;
    assert!(p.target_etag("after-1").await.is_none());
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "the outage pushed messages into the DLQ"
    );

    // The secret comes back, holding the new keys: the daemon resumes.
    secrets.set_down(false);
    for key in ["after-1", "after-2", "after-3", "after-4"] {
        eventually(3 * MINUTE, "the backlog is copied", copied(key)).await;
    }
    assert_eq!(daemon.get("/readyz").0, 200);
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "{}",
        daemon.logs()
    );
}

#[tokio::test]
async fn a_target_refusing_writes_but_not_listings_gets_one_message_per_probe() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    target.set_refuse_writes(true);
    let keys: Vec<String> = (0..8).map(|i| format!("refused/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        p.put_source(key, bytes_of(100, i as u64)).await;
    }
    // 40 message slots: four receive loops, of which only one may take the trial.
    let daemon = Daemon::start(
        &p,
        "daemon",
        &[
            ("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.as_str()),
            ("XPSYNC_TRANSFER__MAX_OBJECTS", "40"),
        ],
    )
    .await;
    eventually(MINUTE, "the daemon pauses, saying why", || async {
        let (status, body) = daemon.get("/readyz");
        status == 503 && body.contains("AccessDenied")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retried_at_pause = daemon.metric("xpsync_messages_total{result=\"retried\"}");

    // Listings pass, so every probe passes; writes keep failing.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let logs = daemon.logs();
    let trials = logs.matches("taking one message").count() as f64;
    let retried = daemon.metric("xpsync_messages_total{result=\"retried\"}") - retried_at_pause;
    assert!(trials >= 1.0, "no probe passed:\n{logs}");
    assert!(
        retried <= trials,
        "{retried} messages taken for {trials} passing probes:\n{logs}"
    );
    assert!(
        !logs.contains("receive_count=3"),
        "a message came back a third time:\n{logs}"
    );
    assert!(pipeline.dead_letters().await.is_empty());
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");

    target.set_refuse_writes(false);
    for key in &keys {
        let key = key.clone();
        eventually(3 * MINUTE, "the backlog is copied", || {
            let (p, key) = (&p, key.clone());
            async move { p.target_etag(&key).await.is_some() }
        })
        .await;
    }
    assert_eq!(daemon.get("/readyz").0, 200);
    assert!(pipeline.dead_letters().await.is_empty());
}
