//! A fault-injecting HTTP proxy in front of an emulated partition.
//!
//! It forwards every request to the upstream server, except that S3 object requests
//! (GET and PUT of `/bucket/key`, so never SQS or Secrets Manager) meet the faults
//! of its [`Faults`] plan: every n-th is answered 503 SlowDown or 500, or forwarded
//! and then cut off half-way through its body (a connection reset mid-body), or held
//! back for a while (a stall). The first object GETs can also be answered 412, or have one
//! byte of their body flipped (corruption on the way). As S3 does and moto does not,
//! it can also refuse a PUT whose body does not match its Content-MD5 (400
//! BadDigest), or list objects or an upload's parts without their ETags. It counts requests by method.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Which faults, how often: `Some(n)` hits every n-th S3 object request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub slow_down: Option<u64>,
    pub internal_error: Option<u64>,
    pub reset_mid_body: Option<u64>,
    pub stall: Option<(u64, Duration)>,
    /// The first n object GETs are answered 412 PreconditionFailed, as if the
    /// object had just changed.
    pub precondition_failed_first: u64,
    /// Every n-th object GET has one byte of its body flipped.
    pub corrupt_get: Option<u64>,
    /// PUTs whose body does not match their Content-MD5 are refused, as by S3.
    pub check_content_md5: bool,
    /// Listings come without ETags, as from some S3-compatible servers.
    pub list_without_etags: bool,
    /// An upload's parts are listed without their ETags (ListParts), as by some
    /// S3-compatible servers.
    pub list_parts_without_etags: bool,
    /// The first SQS SendMessage or SendMessageBatch is held back until
    /// [`FaultProxy::release`] (a worker killed meanwhile never sends it).
    pub hold_queue_send: bool,
    /// The first SQS ReceiveMessage answer that holds messages is given again for
    /// the next n receives, as SQS may hand out messages already received (its
    /// hosts are sampled, a visibility may end).
    pub repeat_receive: u32,
    /// ListParts is answered 403 AccessDenied: a policy without
    /// `s3:ListMultipartUploadParts`.
    pub refuse_list_parts: bool,
    /// Writes whose user metadata (keys and values) exceeds 2 KiB are refused
    /// (400 MetadataTooLarge), as by S3.
    pub check_metadata_size: bool,
    /// The first object request of this method ("PUT" or "DELETE") is read whole
    /// and then held back until [`FaultProxy::release`]: a second writer, delayed.
    pub hold_first: Option<&'static str>,
    /// The first UploadPart of this part number is read whole and held back until
    /// [`FaultProxy::release`].
    pub hold_part: Option<u32>,
    /// Every object GET whose key contains this text is answered with this status
    /// and S3 error code.
    pub get_error: Option<(&'static str, u16, &'static str)>,
}

/// Listens on a free loopback port; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    /// Faults injected so far.
    pub injected: Arc<AtomicU64>,
    /// While set, every request of any kind is answered 503: the service is down.
    down: Arc<std::sync::atomic::AtomicBool>,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str, faults: Faults) -> Self {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build_http();
        let seen = Arc::new(Counts::default());
        let counts = Arc::clone(&seen);
        let injected = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&injected);
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let switch = Arc::clone(&down);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, seen, injected, down) = (
                    client.clone(),
                    upstream.clone(),
                    Arc::clone(&seen),
                    Arc::clone(&counter),
                    Arc::clone(&switch),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (client, upstream, seen, injected, down) = (
                            client.clone(),
                            upstream.clone(),
                            Arc::clone(&seen),
                            Arc::clone(&injected),
                            Arc::clone(&down),
                        );
                        async move {
                            if down.load(Ordering::SeqCst) {
                                return Ok::<_, Infallible>(unavailable());
                            }
                            Ok::<_, Infallible>(
                                handle(request, client, &upstream, faults, &seen, &injected).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            injected,
            down,
            counts,
            task,
        }
    }

    /// Requests held back so far ([`Faults::hold_first`]).
    pub fn held(&self) -> u64 {
        self.counts.held.load(Ordering::SeqCst)
    }

    /// While set, object writes (PutObject, UploadPart, CreateMultipartUpload)
    /// are refused 403 AccessDenied and everything else passes: a bucket policy
    /// that lets listings through but not writes.
    pub fn set_refuse_writes(&self, refuse: bool) {
        self.counts.refuse_writes.store(refuse, Ordering::SeqCst);
    }

    /// Object bytes sent: PUTs of an object or a part that are not copies
    /// (`x-amz-copy-source`), so carry a body.
    pub fn uploads(&self) -> u64 {
        self.counts.uploads.load(Ordering::SeqCst)
    }

    /// While set, HEADs are answered 400 (with no body to name a code, as HEADs).
    pub fn set_refuse_heads(&self, refuse: bool) {
        self.counts.refuse_heads.store(refuse, Ordering::SeqCst);
    }

    /// While set, SQS SendMessage and SendMessageBatch are answered 500 (receives,
    /// deletes and the rest pass): a queue that takes no new messages.
    pub fn set_refuse_queue_sends(&self, refuse: bool) {
        self.counts
            .refuse_queue_sends
            .store(refuse, Ordering::SeqCst);
    }

    /// Lets the held request go on to the server.
    pub fn release(&self) {
        self.counts.gate.add_permits(1);
    }

    /// Takes the service down (every request answered 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Requests of this method seen so far, any path.
    pub fn requests(&self, method: &str) -> u64 {
        let counter = match method {
            "GET" => &self.counts.get,
            "PUT" => &self.counts.put,
            "HEAD" => &self.counts.head,
            _ => return 0,
        };
        counter.load(Ordering::SeqCst)
    }
}

/// Requests seen, by kind.
#[derive(Debug)]
struct Counts {
    /// Requests held back, and the gate they wait at.
    held: AtomicU64,
    gate: tokio::sync::Semaphore,
    refuse_writes: std::sync::atomic::AtomicBool,
    refuse_heads: std::sync::atomic::AtomicBool,
    refuse_queue_sends: std::sync::atomic::AtomicBool,
    /// The receive answer given again ([`Faults::repeat_receive`]): its
    /// content type and body, and how many times it has been.
    repeated: std::sync::Mutex<Option<(hyper::header::HeaderValue, Bytes, u32)>>,
    uploads: AtomicU64,
    /// Object GETs and PUTs (the faults' clock).
    objects: AtomicU64,
    /// Object GETs alone.
    object_gets: AtomicU64,
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            held: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(0),
            refuse_writes: std::sync::atomic::AtomicBool::new(false),
            refuse_heads: std::sync::atomic::AtomicBool::new(false),
            refuse_queue_sends: std::sync::atomic::AtomicBool::new(false),
            repeated: std::sync::Mutex::new(None),
            uploads: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            object_gets: AtomicU64::new(0),
            get: AtomicU64::new(0),
            put: AtomicU64::new(0),
            head: AtomicU64::new(0),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unavailable() -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(
            Full::new(Bytes::from_static(b"service down"))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("a response")
}

fn hits(every: Option<u64>, n: u64) -> bool {
    every.is_some_and(|every| n % every == 0)
}

async fn handle(
    request: Request<Incoming>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, ProxyBody>,
    upstream: &str,
    faults: Faults,
    seen: &Counts,
    injected: &AtomicU64,
) -> Response<ProxyBody> {
    let path = request.uri().path().to_owned();
    let method = request.method().as_str().to_owned();
    match method.as_str() {
        "GET" => seen.get.fetch_add(1, Ordering::SeqCst),
        "PUT" => seen.put.fetch_add(1, Ordering::SeqCst),
        "HEAD" => seen.head.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    let is_object = matches!(method.as_str(), "GET" | "PUT")
        && path
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(_, key)| !key.is_empty());
    let n = if is_object {
        seen.objects.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let object_get = if is_object && method == "GET" {
        seen.object_gets.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let fault = |status: StatusCode, code: &str| {
        injected.fetch_add(1, Ordering::SeqCst);
        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected</Message></Error>");
        Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("a response")
    };
    if let Some((needle, status, code)) = faults.get_error {
        if object_get > 0 && path.contains(needle) {
            return fault(StatusCode::from_u16(status).expect("a status"), code);
        }
    }
    if is_object && hits(faults.slow_down, n) {
        return fault(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
    }
    if is_object && hits(faults.internal_error, n) {
        return fault(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
    }
    if object_get > 0 && object_get <= faults.precondition_failed_first {
        return fault(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
    }
    if let Some((every, pause)) = faults.stall {
        if is_object && n % every == 0 {
            injected.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(pause).await;
        }
    }

    if is_object && method == "PUT" && !request.headers().contains_key("x-amz-copy-source") {
        seen.uploads.fetch_add(1, Ordering::SeqCst);
    }
    let sqs_target = request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sends_messages = sqs_target.starts_with("AmazonSQS.SendMessage");
    let receives = faults.repeat_receive > 0 && sqs_target == "AmazonSQS.ReceiveMessage";
    if receives {
        let mut repeated = seen.repeated.lock().expect("not poisoned");
        if let Some((content_type, body, times)) = repeated.as_mut() {
            if *times < faults.repeat_receive {
                *times += 1;
                injected.fetch_add(1, Ordering::SeqCst);
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", content_type.clone())
                    .body(
                        Full::new(body.clone())
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                    .expect("a response");
            }
        }
    }
    if sends_messages && seen.refuse_queue_sends.load(Ordering::SeqCst) {
        return fault(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
    }
    let first_send = || {
        seen.held
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    };
    if sends_messages && faults.hold_queue_send && first_send() {
        let _go = seen.gate.acquire().await.expect("never closed");
    }
    if method == "HEAD" && seen.refuse_heads.load(Ordering::SeqCst) {
        return fault(StatusCode::BAD_REQUEST, "InvalidRequest");
    }
    let (mut parts, body) = request.into_parts();
    let upload_start =
        method == "POST" && parts.uri.query().is_some_and(|q| q.starts_with("uploads"));
    if seen.refuse_writes.load(Ordering::SeqCst) && ((is_object && method == "PUT") || upload_start)
    {
        return fault(StatusCode::FORBIDDEN, "AccessDenied");
    }
    let names_a_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    // The SDK names the operation in the query (`x-id=PutObject`); a part's upload
    // or a tagging request carries more.
    let plain_object_request = names_a_key
        && parts
            .uri
            .query()
            .is_none_or(|q| q.starts_with("x-id=") && !q.contains('&'));
    let part_number = parts.uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("partNumber="))
            .and_then(|n| n.parse::<u32>().ok())
    });
    let lists_parts = method == "GET"
        && parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("uploadId=")));
    if faults.refuse_list_parts && lists_parts {
        return fault(StatusCode::FORBIDDEN, "AccessDenied");
    }
    let held_part =
        method == "PUT" && faults.hold_part.is_some() && part_number == faults.hold_part;
    let body: ProxyBody = if ((faults.hold_first == Some(method.as_str()) && plain_object_request)
        || held_part)
        && seen.held.load(Ordering::SeqCst) == 0
    {
        let bytes = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return fault(StatusCode::BAD_REQUEST, "IncompleteBody"),
        };
        seen.held.fetch_add(1, Ordering::SeqCst);
        let _go = seen.gate.acquire().await.expect("never closed");
        Full::new(bytes).map_err(|never| match never {}).boxed()
    } else {
        body.map_err(std::io::Error::other).boxed()
    };
    let writes_metadata = method == "PUT"
        || (method == "POST" && parts.uri.query().is_some_and(|q| q.starts_with("uploads")));
    if faults.check_metadata_size && writes_metadata {
        let size: usize = parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let key = name.as_str().strip_prefix("x-amz-meta-")?;
                Some(key.len() + value.as_bytes().len())
            })
            .sum();
        if size > 2048 {
            return fault(StatusCode::BAD_REQUEST, "MetadataTooLarge");
        }
    }
    let body = if is_object && method == "PUT" && faults.check_content_md5 {
        match parts.headers.get("content-md5").cloned() {
            Some(claimed) => {
                let bytes = match body.collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => return fault(StatusCode::BAD_REQUEST, "IncompleteBody"),
                };
                let digest = {
                    use base64::Engine as _;
                    use md5::{Digest, Md5};
                    base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes))
                };
                if claimed.as_bytes() != digest.as_bytes() {
                    return fault(StatusCode::BAD_REQUEST, "BadDigest");
                }
                Full::new(bytes).map_err(|never| match never {}).boxed()
            }
            None => body.map_err(std::io::Error::other).boxed(),
        }
    } else {
        body.map_err(std::io::Error::other).boxed()
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    parts.uri = format!("{upstream}{path}{query}")
        .parse()
        .expect("an upstream URI");
    let response = match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(_) => return fault(StatusCode::BAD_GATEWAY, "BadGateway"),
    };
    let (parts, body) = response.into_parts();
    if receives && parts.status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut repeated = seen.repeated.lock().expect("not poisoned");
        let holds_messages = String::from_utf8_lossy(&bytes).contains("\"MessageId\"");
        if repeated.is_none() && holds_messages {
            if let Some(content_type) = parts.headers.get("content-type") {
                *repeated = Some((content_type.clone(), bytes.clone(), 0));
            }
        }
        return Response::from_parts(
            parts,
            Full::new(bytes).map_err(|never| match never {}).boxed(),
        );
    }
    if object_get > 0 && parts.status.is_success() && hits(faults.corrupt_get, object_get) {
        let mut bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        if !bytes.is_empty() {
            injected.fetch_add(1, Ordering::SeqCst);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
        }
        return Response::from_parts(
            parts,
            Full::new(Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    let strip = (faults.list_without_etags && method == "GET" && !is_object)
        || (faults.list_parts_without_etags && lists_parts);
    if strip && parts.status.is_success() {
        let listing = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let listing = String::from_utf8_lossy(&listing);
        let mut stripped = String::with_capacity(listing.len());
        let mut rest = listing.as_ref();
        while let Some(start) = rest.find("<ETag>") {
            injected.fetch_add(1, Ordering::SeqCst);
            stripped.push_str(&rest[..start]);
            let end = rest[start..]
                .find("</ETag>")
                .map_or(rest.len(), |e| start + e + 7);
            rest = &rest[end..];
        }
        stripped.push_str(rest);
        let mut parts = parts;
        parts.headers.remove("content-length");
        return Response::from_parts(
            parts,
            Full::new(Bytes::from(stripped))
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    if is_object && hits(faults.reset_mid_body, n) {
        let length: usize = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        if length > 1 {
            injected.fetch_add(1, Ordering::SeqCst);
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len().min(length / 2));
            let frames = futures::stream::iter(vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("injected reset mid-body")),
            ]);
            return Response::from_parts(parts, StreamBody::new(frames).boxed());
        }
    }
    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
}
