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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::proxy::{collected, full, serve_http, streamed, Body, Decision, Listening, Rules};

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
    /// UploadParts of this part number are read whole and answered 200 without
    /// reaching the server: the upload never holds that part (as an upload begun
    /// by an earlier release, which did not write it).
    pub drop_part: Option<u32>,
    /// Every object GET whose key contains this text is answered with this status
    /// and S3 error code.
    pub get_error: Option<(&'static str, u16, &'static str)>,
    /// GETs of the bytes of objects whose key contains this text are refused as S3
    /// refuses an SSE-KMS object whose key the caller may not use: 403 AccessDenied
    /// naming `kms:Decrypt`. Their HEADs and tagging pass, as in S3 (moto refuses
    /// no KMS operation).
    pub kms_refused: Option<&'static str>,
    /// GetObjectTagging of an archived object is served (an empty tag set) where
    /// moto refuses it with InvalidObjectState: S3 serves it.
    pub serve_archived_tagging: bool,
    /// HEADs of keys containing this text are refused as a prefix-scoped deny
    /// refuses them: 403, no body.
    pub head_denied: Option<&'static str>,
    /// Writes (PUTs) of keys containing this text are refused as a prefix-scoped
    /// deny refuses them: 403 AccessDenied.
    pub write_denied: Option<&'static str>,
    /// The bucket has Object Lock with a default retention: a PutObject or
    /// UploadPart carrying neither Content-MD5 nor an `x-amz-checksum-*` value (a
    /// header, or a trailer it announces) is refused with 400 InvalidRequest, as S3
    /// refuses it.
    pub object_lock: bool,
    /// The bucket is requester-pays: an S3 request that does not say the
    /// requester pays (`x-amz-request-payer: requester`) is refused, as S3 refuses
    /// it (403 AccessDenied).
    pub requester_pays: bool,
}

/// S3's words for a GET of an SSE-KMS object whose KMS key refuses the caller.
pub const KMS_DECRYPT_REFUSED: &str = "User: arn:aws-cn:sts::123456789012:assumed-role/xpsync-task/worker is not authorized to perform: kms:Decrypt on the resource associated with this ciphertext because no identity-based policy allows the kms:Decrypt action";

/// Listens on a free loopback port; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    rules: Arc<FaultRules>,
    _listening: Listening,
}

impl FaultProxy {
    pub async fn start(upstream: &str, faults: Faults) -> Self {
        let rules = Arc::new(FaultRules::new(faults));
        let listening = serve_http(upstream, Arc::clone(&rules)).await;
        Self {
            endpoint: listening.endpoint.clone(),
            rules,
            _listening: listening,
        }
    }

    /// Requests held back so far ([`Faults::hold_first`]).
    pub fn held(&self) -> u64 {
        self.rules.held.load(Ordering::SeqCst)
    }

    /// While set, object writes (PutObject, UploadPart, CreateMultipartUpload)
    /// are refused 403 AccessDenied and everything else passes: a bucket policy
    /// that lets listings through but not writes.
    pub fn set_refuse_writes(&self, refuse: bool) {
        self.rules.refuse_writes.store(refuse, Ordering::SeqCst);
    }

    /// While set, every GET of an object's bytes is refused as S3 refuses one whose
    /// KMS key refuses the caller (403 AccessDenied naming `kms:Decrypt`), HEADs
    /// passing: a key's grant revoked mid-way.
    pub fn set_refuse_reads(&self, refuse: bool) {
        self.rules.refuse_reads.store(refuse, Ordering::SeqCst);
    }

    /// Object bytes sent: PUTs of an object or a part that are not copies
    /// (`x-amz-copy-source`), so carry a body.
    pub fn uploads(&self) -> u64 {
        self.rules.uploads.load(Ordering::SeqCst)
    }

    /// Of [`Self::uploads`], those of a split's marker parts (parts 9,999 and
    /// 10,000): its tag, and the stamps of a range still at work.
    pub fn markers(&self) -> u64 {
        self.rules.markers.load(Ordering::SeqCst)
    }

    /// While set, HEADs are answered 400 (with no body to name a code, as HEADs).
    pub fn set_refuse_heads(&self, refuse: bool) {
        self.rules.refuse_heads.store(refuse, Ordering::SeqCst);
    }

    /// While set, SQS SendMessage and SendMessageBatch are answered 500 (receives,
    /// deletes and the rest pass): a queue that takes no new messages.
    pub fn set_refuse_queue_sends(&self, refuse: bool) {
        self.rules
            .refuse_queue_sends
            .store(refuse, Ordering::SeqCst);
    }

    /// Lets the held request go on to the server.
    pub fn release(&self) {
        self.rules.gate.add_permits(1);
    }

    /// Takes the service down (every request answered 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.rules.down.store(down, Ordering::SeqCst);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.rules.injected.load(Ordering::SeqCst)
    }

    /// Requests of this method seen so far, any path.
    pub fn requests(&self, method: &str) -> u64 {
        let counter = match method {
            "GET" => &self.rules.get,
            "PUT" => &self.rules.put,
            "HEAD" => &self.rules.head,
            "POST" => &self.rules.post,
            _ => return 0,
        };
        counter.load(Ordering::SeqCst)
    }
}

/// The plan, its switches, and what was seen so far.
struct FaultRules {
    faults: Faults,
    injected: AtomicU64,
    /// While set, every request of any kind is answered 503: the service is down.
    down: AtomicBool,
    /// Requests held back, and the gate they wait at.
    held: AtomicU64,
    gate: Semaphore,
    refuse_writes: AtomicBool,
    refuse_reads: AtomicBool,
    refuse_heads: AtomicBool,
    refuse_queue_sends: AtomicBool,
    /// The receive answer given again ([`Faults::repeat_receive`]): its
    /// content type and body, and how many times it has been.
    repeated: Mutex<Option<(HeaderValue, Bytes, u32)>>,
    uploads: AtomicU64,
    markers: AtomicU64,
    /// Object GETs and PUTs (the faults' clock).
    objects: AtomicU64,
    /// Object GETs alone.
    object_gets: AtomicU64,
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    post: AtomicU64,
}

/// What the rules saw of one request.
struct Seen {
    method: String,
    path: String,
    /// A GET or PUT of `/bucket/key`.
    is_object: bool,
    /// Its number among object requests (0: not one).
    n: u64,
    /// Its number among object GETs (0: not one).
    object_get: u64,
    /// An SQS receive whose answer may be given again.
    receives: bool,
    /// A ListParts.
    lists_parts: bool,
    /// A GetObjectTagging.
    tagging: bool,
}

/// An S3 error answer with its code and message.
fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(full(body))
        .expect("a response")
}

/// Whether a write carries a checksum S3 verifies: Content-MD5, an
/// `x-amz-checksum-*` header, or a trailer of one announced by `x-amz-trailer`. A
/// copy carries no body of its own.
fn carries_a_checksum(parts: &Parts) -> bool {
    let headers = &parts.headers;
    headers.contains_key("content-md5")
        || headers.contains_key("x-amz-copy-source")
        || headers.keys().map(|name| name.as_str()).any(|name| {
            name.starts_with("x-amz-checksum-")
                && !matches!(name, "x-amz-checksum-algorithm" | "x-amz-checksum-type")
        })
        || headers.get("x-amz-trailer").is_some_and(|t| {
            t.to_str()
                .unwrap_or_default()
                .starts_with("x-amz-checksum-")
        })
}

/// The part number an UploadPart names in its query.
fn part_number(parts: &Parts) -> Option<u32> {
    parts.uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("partNumber="))
            .and_then(|n| n.parse::<u32>().ok())
    })
}

fn hits(every: Option<u64>, n: u64) -> bool {
    every.is_some_and(|every| n % every == 0)
}

/// Whether a path names an object: `/bucket/key`.
fn names_a_key(path: &str) -> bool {
    path.trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty())
}

fn unavailable() -> Response<Body> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(full(Bytes::from_static(b"service down")))
        .expect("a response")
}

impl Rules for FaultRules {
    type Context = Seen;

    async fn request(&self, request: Request<Incoming>) -> Decision<Seen> {
        if self.down.load(Ordering::SeqCst) {
            return Decision::Answer(unavailable());
        }
        let seen = self.see(&request);
        if let Some(answer) = self.object_fault(&seen) {
            return Decision::Answer(answer);
        }
        if let Some((every, pause)) = self.faults.stall {
            if seen.is_object && seen.n % every == 0 {
                self.injected.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(pause).await;
            }
        }
        if seen.is_object
            && seen.method == "PUT"
            && !request.headers().contains_key("x-amz-copy-source")
        {
            self.uploads.fetch_add(1, Ordering::SeqCst);
            let query = request.uri().query().unwrap_or("");
            let marker = |pair: &str| matches!(pair, "partNumber=9999" | "partNumber=10000");
            if query.split('&').any(marker) {
                self.markers.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Some(answer) = self.queue(&seen, &request).await {
            return Decision::Answer(answer);
        }
        let (parts, body) = request.into_parts();
        if let Some(answer) = self.refusal(&seen, &parts) {
            return Decision::Answer(answer);
        }
        let dropped = self.faults.drop_part.is_some();
        if dropped && seen.method == "PUT" && part_number(&parts) == self.faults.drop_part {
            let bytes = collected(body).await;
            self.injected.fetch_add(1, Ordering::SeqCst);
            let etag = {
                use md5::{Digest, Md5};
                format!("\"{}\"", hex::encode(Md5::digest(&bytes)))
            };
            return Decision::Answer(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("etag", etag)
                    .body(full(Bytes::new()))
                    .expect("a response"),
            );
        }
        match self.body(&seen, &parts, body).await {
            Ok(body) => Decision::Forward(Request::from_parts(parts, body), seen),
            Err(answer) => Decision::Answer(answer),
        }
    }

    async fn response(&self, seen: Seen, response: Response<Incoming>) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let success = parts.status.is_success();
        if self.faults.serve_archived_tagging && seen.tagging && seen.method == "GET" && !success {
            return self.tagging_of_archived(parts, body).await;
        }
        if seen.receives && success {
            return self.remember_receive(parts, body).await;
        }
        if seen.object_get > 0 && success && hits(self.faults.corrupt_get, seen.object_get) {
            return self.corrupt(parts, body).await;
        }
        let strip = (self.faults.list_without_etags && seen.method == "GET" && !seen.is_object)
            || (self.faults.list_parts_without_etags && seen.lists_parts);
        if strip && success {
            return self.strip_etags(parts, body).await;
        }
        if seen.is_object && hits(self.faults.reset_mid_body, seen.n) {
            return self.cut_off(parts, body).await;
        }
        Response::from_parts(parts, streamed(body))
    }

    fn unreachable(&self, _: hyper_util::client::legacy::Error) -> Response<Body> {
        self.fault(StatusCode::BAD_GATEWAY, "BadGateway")
    }
}

impl FaultRules {
    fn new(faults: Faults) -> Self {
        Self {
            faults,
            injected: AtomicU64::new(0),
            down: AtomicBool::new(false),
            held: AtomicU64::new(0),
            gate: Semaphore::new(0),
            refuse_writes: AtomicBool::new(false),
            refuse_reads: AtomicBool::new(false),
            refuse_heads: AtomicBool::new(false),
            refuse_queue_sends: AtomicBool::new(false),
            repeated: Mutex::new(None),
            uploads: AtomicU64::new(0),
            markers: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            object_gets: AtomicU64::new(0),
            get: AtomicU64::new(0),
            put: AtomicU64::new(0),
            head: AtomicU64::new(0),
            post: AtomicU64::new(0),
        }
    }

    /// An injected S3 error, counted.
    fn fault(&self, status: StatusCode, code: &str) -> Response<Body> {
        self.injected.fetch_add(1, Ordering::SeqCst);
        s3_error(status, code, "injected")
    }

    /// moto's refusal of an archived object's tagging, answered as S3 answers: its
    /// tags (the harness's archived objects have none). Other refusals pass as they are.
    async fn tagging_of_archived(
        &self,
        parts: hyper::http::response::Parts,
        body: Incoming,
    ) -> Response<Body> {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !String::from_utf8_lossy(&bytes).contains("InvalidObjectState") {
            return Response::from_parts(parts, full(bytes));
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        let tags = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet></TagSet></Tagging>";
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/xml")
            .body(full(tags))
            .expect("a response")
    }

    /// Counts the request and tells what it is.
    fn see(&self, request: &Request<Incoming>) -> Seen {
        let path = request.uri().path().to_owned();
        let method = request.method().as_str().to_owned();
        match method.as_str() {
            "GET" => self.get.fetch_add(1, Ordering::SeqCst),
            "PUT" => self.put.fetch_add(1, Ordering::SeqCst),
            "HEAD" => self.head.fetch_add(1, Ordering::SeqCst),
            "POST" => self.post.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        let is_object = matches!(method.as_str(), "GET" | "PUT") && names_a_key(&path);
        let n = if is_object {
            self.objects.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let object_get = if is_object && method == "GET" {
            self.object_gets.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let receives = self.faults.repeat_receive > 0
            && sqs_target(request) == Some("AmazonSQS.ReceiveMessage");
        let lists_parts = method == "GET"
            && request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("uploadId=")));
        let tagging = request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("tagging"))
        });
        Seen {
            method,
            path,
            is_object,
            n,
            object_get,
            receives,
            lists_parts,
            tagging,
        }
    }

    /// The errors the plan gives object requests in place of the server's answer.
    fn object_fault(&self, seen: &Seen) -> Option<Response<Body>> {
        let faults = &self.faults;
        let refused = self.refuse_reads.load(Ordering::SeqCst)
            || faults
                .kms_refused
                .is_some_and(|needle| seen.path.contains(needle));
        if refused && seen.object_get > 0 && !seen.tagging {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Some(s3_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                KMS_DECRYPT_REFUSED,
            ));
        }
        if let Some((needle, status, code)) = faults.get_error {
            if seen.object_get > 0 && seen.path.contains(needle) {
                return Some(self.fault(StatusCode::from_u16(status).expect("a status"), code));
            }
        }
        if seen.is_object && hits(faults.slow_down, seen.n) {
            return Some(self.fault(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
        }
        if seen.is_object && hits(faults.internal_error, seen.n) {
            return Some(self.fault(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"));
        }
        if seen.object_get > 0 && seen.object_get <= faults.precondition_failed_first {
            return Some(self.fault(StatusCode::PRECONDITION_FAILED, "PreconditionFailed"));
        }
        None
    }

    /// SQS: a receive answered again, sends refused, the first send held back.
    async fn queue(&self, seen: &Seen, request: &Request<Incoming>) -> Option<Response<Body>> {
        if seen.receives {
            let mut repeated = self.repeated.lock().expect("not poisoned");
            if let Some((content_type, body, times)) = repeated.as_mut() {
                if *times < self.faults.repeat_receive {
                    *times += 1;
                    self.injected.fetch_add(1, Ordering::SeqCst);
                    let answer = Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", content_type.clone())
                        .body(full(body.clone()))
                        .expect("a response");
                    return Some(answer);
                }
            }
        }
        let sends = sqs_target(request).is_some_and(|t| t.starts_with("AmazonSQS.SendMessage"));
        if sends && self.refuse_queue_sends.load(Ordering::SeqCst) {
            return Some(self.fault(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"));
        }
        let first_send = || {
            self.held
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        };
        if sends && self.faults.hold_queue_send && first_send() {
            let _go = self.gate.acquire().await.expect("never closed");
        }
        None
    }

    /// Requests refused as a policy would: HEADs, writes, ListParts.
    fn refusal(&self, seen: &Seen, parts: &Parts) -> Option<Response<Body>> {
        if seen.method == "HEAD" && self.refuse_heads.load(Ordering::SeqCst) {
            return Some(self.fault(StatusCode::BAD_REQUEST, "InvalidRequest"));
        }
        if let Some(needle) = self.faults.head_denied {
            if seen.method == "HEAD" && seen.path.contains(needle) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let answer = Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(full(Bytes::new()));
                return Some(answer.expect("a response"));
            }
        }
        let upload_start =
            seen.method == "POST" && parts.uri.query().is_some_and(|q| q.starts_with("uploads"));
        let writes = (seen.is_object && seen.method == "PUT") || upload_start;
        if self.refuse_writes.load(Ordering::SeqCst) && writes {
            return Some(self.fault(StatusCode::FORBIDDEN, "AccessDenied"));
        }
        let denied = self
            .faults
            .write_denied
            .is_some_and(|n| seen.path.contains(n));
        if denied && seen.is_object && seen.method == "PUT" {
            return Some(self.fault(StatusCode::FORBIDDEN, "AccessDenied"));
        }
        if self.faults.refuse_list_parts && seen.lists_parts {
            return Some(self.fault(StatusCode::FORBIDDEN, "AccessDenied"));
        }
        let says_payer = parts
            .headers
            .get("x-amz-request-payer")
            .is_some_and(|v| v == "requester");
        let s3 = !parts.headers.contains_key("x-amz-target");
        if self.faults.requester_pays && s3 && !says_payer {
            return Some(self.fault(StatusCode::FORBIDDEN, "AccessDenied"));
        }
        let puts_bytes = seen.is_object && seen.method == "PUT" && !seen.tagging;
        if self.faults.object_lock && puts_bytes && !carries_a_checksum(parts) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let what = if parts.uri.query().is_some_and(|q| q.contains("partNumber=")) {
                "Put Part"
            } else {
                "Put Object"
            };
            let message = format!("Content-MD5 OR x-amz-checksum- HTTP header is required for {what} requests with Object Lock parameters");
            return Some(s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &message,
            ));
        }
        None
    }

    /// The request's body as it goes on: held back, or checked as S3 checks it.
    async fn body(
        &self,
        seen: &Seen,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Body, Response<Body>> {
        let body = if self.holds(seen, parts) {
            let bytes = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Err(self.fault(StatusCode::BAD_REQUEST, "IncompleteBody")),
            };
            self.held.fetch_add(1, Ordering::SeqCst);
            let _go = self.gate.acquire().await.expect("never closed");
            full(bytes)
        } else {
            streamed(body)
        };
        let writes_metadata = seen.method == "PUT"
            || (seen.method == "POST"
                && parts.uri.query().is_some_and(|q| q.starts_with("uploads")));
        if self.faults.check_metadata_size && writes_metadata && metadata_size(parts) > 2048 {
            return Err(self.fault(StatusCode::BAD_REQUEST, "MetadataTooLarge"));
        }
        if !(seen.is_object && seen.method == "PUT" && self.faults.check_content_md5) {
            return Ok(body);
        }
        let Some(claimed) = parts.headers.get("content-md5") else {
            return Ok(body);
        };
        let bytes = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return Err(self.fault(StatusCode::BAD_REQUEST, "IncompleteBody")),
        };
        let digest = {
            use base64::Engine as _;
            use md5::{Digest, Md5};
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes))
        };
        if claimed.as_bytes() != digest.as_bytes() {
            return Err(self.fault(StatusCode::BAD_REQUEST, "BadDigest"));
        }
        Ok(full(bytes))
    }

    /// Whether this request is the one to hold back ([`Faults::hold_first`],
    /// [`Faults::hold_part`]).
    fn holds(&self, seen: &Seen, parts: &Parts) -> bool {
        // The SDK names the operation in the query (`x-id=PutObject`); a part's
        // upload or a tagging request carries more.
        let plain_object_request = names_a_key(&seen.path)
            && parts
                .uri
                .query()
                .is_none_or(|q| q.starts_with("x-id=") && !q.contains('&'));
        let held_part = seen.method == "PUT"
            && self.faults.hold_part.is_some()
            && part_number(parts) == self.faults.hold_part;
        let first = self.faults.hold_first == Some(seen.method.as_str()) && plain_object_request;
        (first || held_part) && self.held.load(Ordering::SeqCst) == 0
    }

    /// Passes a receive's answer on, keeping the first that holds messages to be
    /// given again.
    async fn remember_receive(
        &self,
        parts: hyper::http::response::Parts,
        body: Incoming,
    ) -> Response<Body> {
        let bytes = collected(body).await;
        let mut repeated = self.repeated.lock().expect("not poisoned");
        let holds_messages = String::from_utf8_lossy(&bytes).contains("\"MessageId\"");
        if repeated.is_none() && holds_messages {
            if let Some(content_type) = parts.headers.get("content-type") {
                *repeated = Some((content_type.clone(), bytes.clone(), 0));
            }
        }
        Response::from_parts(parts, full(bytes))
    }

    /// Flips one byte in the middle of the body.
    async fn corrupt(&self, parts: hyper::http::response::Parts, body: Incoming) -> Response<Body> {
        let mut bytes = collected(body).await.to_vec();
        if !bytes.is_empty() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
        }
        Response::from_parts(parts, full(bytes))
    }

    /// Takes every `<ETag>` out of a listing.
    async fn strip_etags(
        &self,
        mut parts: hyper::http::response::Parts,
        body: Incoming,
    ) -> Response<Body> {
        let listing = collected(body).await;
        let listing = String::from_utf8_lossy(&listing);
        let mut stripped = String::with_capacity(listing.len());
        let mut rest = listing.as_ref();
        while let Some(start) = rest.find("<ETag>") {
            self.injected.fetch_add(1, Ordering::SeqCst);
            stripped.push_str(&rest[..start]);
            let end = rest[start..]
                .find("</ETag>")
                .map_or(rest.len(), |e| start + e + 7);
            rest = &rest[end..];
        }
        stripped.push_str(rest);
        parts.headers.remove("content-length");
        Response::from_parts(parts, full(stripped))
    }

    /// Sends half the body, then breaks the connection off.
    async fn cut_off(&self, parts: hyper::http::response::Parts, body: Incoming) -> Response<Body> {
        let length: usize = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        if length <= 1 {
            return Response::from_parts(parts, streamed(body));
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        let bytes = collected(body).await;
        let half = bytes.slice(..bytes.len().min(length / 2));
        let frames = futures::stream::iter(vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::other("injected reset mid-body")),
        ]);
        Response::from_parts(parts, StreamBody::new(frames).boxed())
    }
}

/// The SQS operation a request names (`x-amz-target`).
fn sqs_target(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
}

/// The size of a write's user metadata, keys and values, as S3 counts it.
fn metadata_size(parts: &Parts) -> usize {
    parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-amz-meta-")?;
            Some(key.len() + value.as_bytes().len())
        })
        .sum()
}
