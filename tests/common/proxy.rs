//! A TCP proxy that slows what the upstream sends back to a set rate, so that a
//! copy lasts long enough to be interrupted, or to outlast a visibility timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Listens on a free loopback port; stops when dropped.
pub struct SlowProxy {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl SlowProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`), replies at `bytes_per_second`.
    pub async fn start(upstream: &str, bytes_per_second: u64) -> Self {
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
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::io::copy(&mut client_read, &mut server_write);
                    let replies = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        let pause =
                            Duration::from_secs_f64(buffer.len() as f64 / bytes_per_second as f64);
                        loop {
                            let n = match server_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(pause.mul_f64(n as f64 / buffer.len() as f64)).await;
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        () = replies => {}
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
