//! A TCP proxy that models a slow link: each connection's bytes flow at most at a
//! set rate in each direction, and each chunk arrives a set latency after it was
//! sent. Tests use it to make a copy last long enough to be interrupted or to
//! outlast a visibility timeout; the benchmark uses it to model a cross-border path
//! where one flow is slow and only many flows fill the link.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The shape of the modelled link, per connection and direction.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Bytes per second; None: unlimited.
    pub bytes_per_second: Option<u64>,
    /// One-way delay added to every chunk.
    pub latency: Duration,
}

/// Listens on a free loopback port; stops when dropped.
pub struct SlowProxy {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl SlowProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`), replies at `bytes_per_second`.
    pub async fn start(upstream: &str, bytes_per_second: u64) -> Self {
        let replies = Link {
            bytes_per_second: Some(bytes_per_second),
            latency: Duration::ZERO,
        };
        let requests = Link {
            bytes_per_second: None,
            latency: Duration::ZERO,
        };
        Self::start_link(upstream, requests, replies).await
    }

    /// Forwards to `upstream`, shaping requests and replies as given.
    pub async fn start_link(upstream: &str, requests: Link, replies: Link) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pipe(client_read, server_write, requests) => {}
                        () = pipe(server_read, client_write, replies) => {}
                    }
                });
            }
        });
        Self { endpoint, task }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` through the link: a reader stamps each chunk with the time
/// it may be delivered; a writer delivers it then, no faster than the rate.
async fn pipe(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    link: Link,
) {
    const CHUNK: usize = 16 * 1024;
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        loop {
            let mut buffer = vec![0u8; CHUNK];
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    if sender
                        .send((Instant::now() + link.latency, buffer))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut next_free = Instant::now();
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due.max(next_free)).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            if let Some(rate) = link.bytes_per_second {
                let cost = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                next_free = Instant::now().max(next_free) + cost;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
