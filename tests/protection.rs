//! ECS task scale-in protection, against a stand-in for the ECS agent's endpoint:
//! a copy that outlasts the grace period protects the task, and the protection is
//! dropped when it ends.

mod common;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::proxy::SlowProxy;
use common::{bytes_of, Partitions, KIB, MIB, MINUTE};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A stand-in for the ECS agent: records the body of every request to
/// `/task-protection/v1/state` and answers 200.
async fn agent() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            let first = head.lines().next().unwrap_or_default().to_owned();
                            log.lock().unwrap().push(format!("{first} {body}"));
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (uri, seen)
}

#[tokio::test]
async fn a_copy_longer_than_the_grace_period_protects_the_task_from_scale_in() {
    let p = Partitions::start().await;
    let _pipeline = Pipeline::wire(&p).await;
    let (agent_uri, seen) = agent().await;
    // 3 MiB at 512 KiB/s: about six seconds, against a one-second grace period.
    let slow = SlowProxy::start(&p.source.endpoint, 512 * KIB as u64).await;
    let _daemon = Daemon::start(
        &p,
        "daemon",
        &[
            ("ECS_AGENT_URI", agent_uri.as_str()),
            ("XPSYNC_SHUTDOWN__GRACE_PERIOD", "1s"),
            ("XPSYNC_SOURCE__ENDPOINT_URL", slow.endpoint.as_str()),
        ],
    )
    .await;
    p.put_source("long/copy.bin", bytes_of(3 * MIB, 1)).await;

    eventually(MINUTE, "protection is asked for", || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("\"ProtectionEnabled\":true"))
    })
    .await;
    eventually(MINUTE, "the copy ends", || async {
        p.target_etag("long/copy.bin").await.is_some()
    })
    .await;
    eventually(MINUTE / 2, "protection is dropped", || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("\"ProtectionEnabled\":false"))
    })
    .await;
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with("PUT /task-protection/v1/state ")),
        "{requests:?}"
    );
    assert!(
        requests[0].contains("\"ExpiresInMinutes\":60"),
        "{requests:?}"
    );
}
