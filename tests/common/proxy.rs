//! The proxies the tests put in front of an emulated partition, on one skeleton:
//! [`Listening`] takes a free loopback port and hands each connection on until it
//! is dropped.
//!
//! - [`SlowProxy`] forwards bytes and models a slow link: each connection's bytes
//!   flow at most at a set rate in each direction, and each chunk arrives a set
//!   latency after it was sent. Tests use it to make a copy last long enough to be
//!   interrupted or to outlast a visibility timeout; the benchmark uses it to model
//!   a cross-border path where one flow is slow and only many flows fill the link.
//! - [`serve_http`] forwards HTTP requests to the server one at a time and writes its
//!   answers back; what it does to them is a proxy's [`Rules`] (the fault proxy, the
//!   KMS proxy).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Listens on a free loopback port and serves each connection in a task of its
/// own; stops listening when dropped.
pub struct Listening {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl Listening {
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        Self { endpoint, task }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shape of the modelled link, per connection and direction.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Bytes per second; None: unlimited.
    pub bytes_per_second: Option<u64>,
    /// One-way delay added to every chunk.
    pub latency: Duration,
}

/// A TCP proxy modelling a slow link; stops when dropped.
pub struct SlowProxy {
    pub endpoint: String,
    /// Bytes the server's replies carried to the clients, headers included.
    replied: Arc<AtomicU64>,
    _listening: Listening,
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
        let replied = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&replied);
        let listening = Listening::start(move |client: TcpStream| {
            let upstream = upstream.clone();
            let counter = Arc::clone(&counter);
            async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::select! {
                    () = pipe(client_read, server_write, requests, None) => {}
                    () = pipe(server_read, client_write, replies, Some(counter)) => {}
                }
            }
        })
        .await;
        Self {
            endpoint: listening.endpoint.clone(),
            replied,
            _listening: listening,
        }
    }

    /// Bytes the server's replies carried so far, headers included.
    pub fn bytes_replied(&self) -> u64 {
        self.replied.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` through the link: a reader stamps each chunk with the time
/// it may be delivered; a writer delivers it then, no faster than the rate, and
/// adds its length to `counted`.
async fn pipe(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    link: Link,
    counted: Option<Arc<AtomicU64>>,
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
            if let Some(counted) = &counted {
                counted.fetch_add(chunk.len() as u64, Ordering::SeqCst);
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

/// A body an HTTP proxy sends on.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What a proxy's rules make of a request.
pub enum Decision<C> {
    /// Send it (as the rules changed it) to the server; `C` is what the rules
    /// want to remember of it for the answer.
    Forward(Request<Body>, C),
    /// Answer it here, without the server.
    Answer(Response<Body>),
}

/// What an HTTP proxy does to what passes through it. The skeleton
/// ([`serve_http`]) calls `request`, sends the request on to the server (its URI
/// pointed there), and hands the server's answer to `response`.
pub trait Rules: Send + Sync + 'static {
    /// What the rules remember of a request for its answer.
    type Context: Send;

    fn request(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Decision<Self::Context>> + Send;

    fn response(
        &self,
        context: Self::Context,
        response: Response<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// The answer when the server cannot be reached.
    fn unreachable(&self, error: hyper_util::client::legacy::Error) -> Response<Body>;
}

/// An HTTP proxy to `upstream` (`http://127.0.0.1:PORT`) applying `rules`;
/// stops listening when the returned value is dropped.
pub async fn serve_http<R: Rules>(upstream: &str, rules: Arc<R>) -> Listening {
    let upstream: Arc<str> = upstream.trim_end_matches('/').into();
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    Listening::start(move |stream| {
        let (upstream, client, rules) = (Arc::clone(&upstream), client.clone(), Arc::clone(&rules));
        async move {
            let service = hyper::service::service_fn(move |request| {
                let (upstream, client, rules) =
                    (Arc::clone(&upstream), client.clone(), Arc::clone(&rules));
                async move {
                    Ok::<_, Infallible>(exchange(&*rules, &client, &upstream, request).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// One request through the proxy: the rules, the server, the rules again.
async fn exchange<R: Rules>(
    rules: &R,
    client: &Client<HttpConnector, Body>,
    upstream: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let (mut request, context) = match rules.request(request).await {
        Decision::Answer(answer) => return answer,
        Decision::Forward(request, context) => (request, context),
    };
    let path = request.uri().path();
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    *request.uri_mut() = format!("{upstream}{path}{query}")
        .parse()
        .expect("an upstream URI");
    match client.request(request).await {
        Ok(response) => rules.response(context, response).await,
        Err(error) => rules.unreachable(error),
    }
}

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body passed on as it comes.
pub fn streamed(body: Incoming) -> Body {
    body.map_err(std::io::Error::other).boxed()
}

/// The whole of a body, or nothing if it broke off.
pub async fn collected(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}
