//! An S3 proxy that gives SSE-KMS objects the ETags S3 gives them, where moto
//! gives MD5s.
//!
//! Under SSE-KMS, S3's ETags for PutObject, UploadPart, CompleteMultipartUpload,
//! CopyObject, HEAD, GET, listings and ListParts are 32 hex digits (with `-N` for a
//! multipart object) that are *not* the MD5 of the bytes. This proxy, in front of a
//! moto server, rewrites every ETag of a KMS write to such an opaque value (random
//! per write, stable per version), marks the responses `x-amz-server-side-encryption:
//! aws:kms`, and maps opaque ETags back wherever the client sends them: `If-Match`,
//! `x-amz-copy-source-if-match`, and the parts of a CompleteMultipartUpload body.
//!
//! A write is a KMS write when it asks for `aws:kms`, or, with
//! [`KmsProxy::bucket_default`], always: a bucket whose default encryption is SSE-KMS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::response;
use hyper::{Request, Response};

use super::proxy::{collected, full, serve_http, streamed, Body, Decision, Listening, Rules};

const SSE: &str = "x-amz-server-side-encryption";

/// Listens on a free loopback port; stops when dropped.
pub struct KmsProxy {
    pub endpoint: String,
    state: Arc<State>,
    _listening: Listening,
}

#[derive(Default)]
struct State {
    bucket_default: bool,
    /// (bucket, key) → (moto's ETag, the opaque one), for objects written under KMS.
    objects: Mutex<HashMap<(String, String), (String, String)>>,
    /// Upload id → whether its parts are written under KMS.
    uploads: Mutex<HashMap<String, bool>>,
    /// (upload id, part number) → (moto's ETag, the opaque one).
    parts: Mutex<HashMap<(String, u32), (String, String)>>,
    counter: AtomicU64,
    /// Opaque ETags handed out.
    pub issued: AtomicU64,
}

impl KmsProxy {
    /// Opaque ETags for writes that ask for `aws:kms`.
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, false).await
    }

    /// Opaque ETags for every write: a bucket whose default encryption is SSE-KMS.
    pub async fn bucket_default(upstream: &str) -> Self {
        Self::start_with(upstream, true).await
    }

    async fn start_with(upstream: &str, bucket_default: bool) -> Self {
        let state = Arc::new(State {
            bucket_default,
            ..State::default()
        });
        let listening = serve_http(upstream, Arc::clone(&state)).await;
        Self {
            endpoint: listening.endpoint.clone(),
            state,
            _listening: listening,
        }
    }

    /// How many opaque ETags were handed out: a test that saw none proved nothing.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }
}

impl State {
    /// A fresh opaque ETag: 32 hex digits that are no MD5 of anything sent.
    fn opaque(&self, real: &str) -> String {
        use md5::{Digest, Md5};
        self.issued.fetch_add(1, Ordering::SeqCst);
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let digest = hex::encode(Md5::digest(format!("kms:{n}:{real}")));
        match real.rsplit_once('-') {
            Some((_, count)) => format!("{digest}-{count}"),
            None => digest,
        }
    }

    /// The real ETag behind an opaque one the client sent, if it is one.
    fn real_of(&self, opaque: &str) -> Option<String> {
        let objects = self.objects.lock().unwrap();
        objects
            .values()
            .find(|(_, o)| o == opaque)
            .map(|(real, _)| real.clone())
    }
}

/// What a request is, as far as ETags are concerned.
#[derive(Debug, PartialEq)]
enum Kind {
    PutObject,
    CopyObject,
    CreateUpload,
    UploadPart(String, u32),
    Complete(String),
    ListParts(String),
    ReadObject,
    DeleteObject,
    ListObjects,
    Other,
}

fn classify(method: &str, key: &str, query: &HashMap<String, String>, copy: bool) -> Kind {
    let upload = query.get("uploadId").cloned();
    match (method, key.is_empty(), upload) {
        ("PUT", false, Some(id)) => match query.get("partNumber").and_then(|n| n.parse().ok()) {
            Some(n) => Kind::UploadPart(id, n),
            None => Kind::Other,
        },
        ("PUT", false, None) if copy => Kind::CopyObject,
        ("PUT", false, None) if !query.contains_key("tagging") => Kind::PutObject,
        ("POST", false, None) if query.contains_key("uploads") => Kind::CreateUpload,
        ("POST", false, Some(id)) => Kind::Complete(id),
        ("GET", false, Some(id)) => Kind::ListParts(id),
        ("GET" | "HEAD", false, None)
            if !query.contains_key("tagging") && !query.contains_key("acl") =>
        {
            Kind::ReadObject
        }
        ("DELETE", false, None) => Kind::DeleteObject,
        ("GET", true, _) if !query.contains_key("uploads") => Kind::ListObjects,
        _ => Kind::Other,
    }
}

/// A request, as far as ETags are concerned.
struct Call {
    kind: Kind,
    /// Whether what it writes is written under KMS.
    kms_write: bool,
    /// (bucket, key).
    object: (String, String),
}

impl Call {
    fn of(parts: &hyper::http::request::Parts, bucket_default: bool) -> Self {
        let path = parts.uri.path();
        let trimmed = path.trim_start_matches('/');
        let (bucket, key) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let key = percent_decode(key);
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let copy = parts.headers.contains_key("x-amz-copy-source");
        let asks_kms = parts
            .headers
            .get(SSE)
            .is_some_and(|v| v.as_bytes().starts_with(b"aws:kms"));
        Self {
            kind: classify(parts.method.as_str(), &key, &query, copy),
            kms_write: bucket_default || asks_kms,
            object: (bucket.to_owned(), key),
        }
    }
}

impl Rules for State {
    type Context = Call;

    async fn request(&self, request: Request<Incoming>) -> Decision<Call> {
        let (mut parts, body) = request.into_parts();
        let call = Call::of(&parts, self.bucket_default);
        self.map_conditions(&mut parts.headers);
        let body = match &call.kind {
            Kind::Complete(id) => {
                parts.headers.remove("content-length");
                parts.headers.remove("content-md5");
                self.complete_body(id, body).await
            }
            _ => streamed(body),
        };
        Decision::Forward(Request::from_parts(parts, body), call)
    }

    async fn response(&self, call: Call, response: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        if !parts.status.is_success() {
            return Response::from_parts(parts, streamed(body));
        }
        match call.kind {
            Kind::CreateUpload
            | Kind::Complete(_)
            | Kind::CopyObject
            | Kind::ListParts(_)
            | Kind::ListObjects => self.xml_reply(&call, parts, body).await,
            _ => {
                self.headers_reply(call, &mut parts);
                Response::from_parts(parts, streamed(body))
            }
        }
    }

    fn unreachable(&self, error: hyper_util::client::legacy::Error) -> Response<Body> {
        Response::builder()
            .status(502)
            .body(full(format!("proxy: {error}")))
            .unwrap()
    }
}

impl State {
    /// Opaque ETags in `If-Match` and `x-amz-copy-source-if-match` back to real ones.
    fn map_conditions(&self, headers: &mut HeaderMap) {
        for name in ["if-match", "x-amz-copy-source-if-match"] {
            let sent = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(strip_quotes);
            if let Some(real) = sent.and_then(|e| self.real_of(&e)) {
                headers.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&format!("\"{real}\"")).unwrap(),
                );
            }
        }
    }

    /// A CompleteMultipartUpload body with the parts' real ETags.
    async fn complete_body(&self, id: &str, body: Incoming) -> Body {
        let bytes = collected(body).await;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let known = self.parts.lock().unwrap().clone();
        let text = rewrite_etags(&text, |_, etag| {
            known
                .iter()
                .find(|((upload, _), (_, opaque))| upload == id && *opaque == etag)
                .map(|(_, (real, _))| real.clone())
        });
        full(text)
    }

    /// The answer to a call whose ETag is in its headers: opaque if written under KMS.
    fn headers_reply(&self, call: Call, parts: &mut response::Parts) {
        let header_etag = parts
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(strip_quotes);
        let object = call.object;
        match call.kind {
            Kind::PutObject => {
                let mut objects = self.objects.lock().unwrap();
                match header_etag {
                    Some(real) if call.kms_write => {
                        let opaque = self.opaque(&real);
                        mark_kms(parts, Some(&opaque));
                        objects.insert(object, (real, opaque));
                    }
                    _ => {
                        objects.remove(&object);
                    }
                }
            }
            Kind::UploadPart(id, number) => {
                let kms = self.uploads.lock().unwrap().get(&id).copied() == Some(true);
                if let (true, Some(real)) = (kms, header_etag) {
                    let opaque = self.opaque(&real);
                    mark_kms(parts, Some(&opaque));
                    self.parts
                        .lock()
                        .unwrap()
                        .insert((id, number), (real, opaque));
                }
            }
            Kind::ReadObject => {
                let known = self.objects.lock().unwrap().get(&object).cloned();
                if let (Some((real, opaque)), Some(sent)) = (known, header_etag) {
                    if real == sent {
                        mark_kms(parts, Some(&opaque));
                    }
                }
            }
            Kind::DeleteObject => {
                self.objects.lock().unwrap().remove(&object);
            }
            _ => {}
        }
    }

    /// The answer to a call whose ETags are in its XML body.
    async fn xml_reply(
        &self,
        call: &Call,
        mut parts: response::Parts,
        body: Incoming,
    ) -> Response<Body> {
        let bytes = collected(body).await;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (kind, object) = (&call.kind, &call.object);
        let text = rewrite_body(kind, &text, call.kms_write, object, self, &object.0);
        if matches!(
            kind,
            Kind::CreateUpload | Kind::Complete(_) | Kind::CopyObject
        ) {
            let upload_kms = match kind {
                Kind::Complete(id) => self.uploads.lock().unwrap().get(id).copied(),
                _ => Some(call.kms_write),
            };
            if upload_kms == Some(true) {
                mark_kms(&mut parts, None);
            }
        }
        parts.headers.remove("content-length");
        Response::from_parts(parts, full(text))
    }
}

/// Marks an answer as written under KMS, with this opaque ETag.
fn mark_kms(parts: &mut response::Parts, etag: Option<&str>) {
    parts
        .headers
        .insert(SSE, HeaderValue::from_static("aws:kms"));
    if let Some(etag) = etag {
        parts.headers.insert(
            "etag",
            HeaderValue::from_str(&format!("\"{etag}\"")).unwrap(),
        );
    }
}

/// Rewrites the ETags of an XML reply that carries them.
fn rewrite_body(
    kind: &Kind,
    text: &str,
    kms_write: bool,
    object: &(String, String),
    state: &State,
    bucket: &str,
) -> String {
    match kind {
        Kind::CreateUpload => {
            if let Some(id) = element(text, "UploadId") {
                state.uploads.lock().unwrap().insert(id, kms_write);
            }
            text.to_owned()
        }
        Kind::Complete(id) => {
            let kms = state.uploads.lock().unwrap().get(id).copied() == Some(true);
            rewrite_etags(text, |_, real| {
                let mut objects = state.objects.lock().unwrap();
                if !kms {
                    objects.remove(object);
                    return None;
                }
                let opaque = state.opaque(&real);
                objects.insert(object.clone(), (real, opaque.clone()));
                Some(opaque)
            })
        }
        Kind::CopyObject => rewrite_etags(text, |_, real| {
            let mut objects = state.objects.lock().unwrap();
            if !kms_write {
                objects.remove(object);
                return None;
            }
            let opaque = state.opaque(&real);
            objects.insert(object.clone(), (real, opaque.clone()));
            Some(opaque)
        }),
        Kind::ListParts(id) => {
            let known = state.parts.lock().unwrap().clone();
            rewrite_etags(text, |before, real| {
                let number: u32 = last_element(before, "PartNumber")?.parse().ok()?;
                let (stored, opaque) = known.get(&(id.clone(), number))?;
                (*stored == real).then(|| opaque.clone())
            })
        }
        Kind::ListObjects => {
            let objects = state.objects.lock().unwrap().clone();
            rewrite_etags(text, |before, real| {
                let key = xml_unescape(&last_element(before, "Key")?);
                let (stored, opaque) = objects.get(&(bucket.to_owned(), key))?;
                (*stored == real).then(|| opaque.clone())
            })
        }
        _ => text.to_owned(),
    }
}

/// Replaces each `<ETag>` value for which `replace(text before it, value unquoted)`
/// gives another, keeping the quoting the reply used.
fn rewrite_etags(text: &str, mut replace: impl FnMut(&str, String) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("<ETag>") {
        let value_start = start + "<ETag>".len();
        let Some(len) = rest[value_start..].find("</ETag>") else {
            break;
        };
        let raw = &rest[value_start..value_start + len];
        out.push_str(&rest[..value_start]);
        let before = &text[..consumed + start];
        let (quote, inner) = if let Some(inner) = raw.strip_prefix("&quot;") {
            ("&quot;", inner.trim_end_matches("&quot;"))
        } else if let Some(inner) = raw.strip_prefix('"') {
            ("\"", inner.trim_end_matches('"'))
        } else {
            ("", raw)
        };
        match replace(before, inner.to_owned()) {
            Some(new) => out.push_str(&format!("{quote}{new}{quote}")),
            None => out.push_str(raw),
        }
        consumed += value_start + len;
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

fn element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))?;
    Some(text[start..start + end].to_owned())
}

fn last_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.rfind(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))?;
    Some(text[start..start + end].to_owned())
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
