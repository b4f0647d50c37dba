//! The Connect protocol (<https://connectrpc.com/docs/protocol>) on a gRPC
//! server, for clients without a gRPC stack: a plain `curl` with JSON, `buf
//! curl --protocol connect`, or a ConnectRPC client library.
//!
//! - Unary calls: `POST /package.Service/Method` with `Content-Type:
//!   application/json` (proto3 JSON) or `application/proto` (binary), the bare
//!   message as the body.
//! - Streams: `application/connect+json` or `application/connect+proto`,
//!   enveloped messages, and an end-of-stream message carrying the status.
//!   Server streams flow as the service sends; a client stream's messages
//!   (`RecordInteractions`, `ImportCustomers`) are read whole, up to the
//!   request limit, before the call starts. Streams both ways need gRPC.
//!
//! Each Connect call is turned into the gRPC call it stands for and handed to
//! the rest of the server's stack, so keys, scopes, rate limits, tenancy,
//! deadlines (`Connect-Timeout-Ms` becomes `grpc-timeout`), metrics and logs
//! are the gRPC path's own. The answer is turned back: a message, or Connect's
//! JSON error (`code`, `message`, and `details` with each detail's `type`, its
//! base64 `value` and, for the types in the contracts, a decoded `debug`
//! copy, so a field violation is readable in a terminal).
//!
//! JSON is read and written from the contracts' descriptors with
//! `prost-reflect`'s proto3 JSON mapping: field names in lowerCamelCase (the
//! proto names are accepted too), enums by name, 64-bit integers as strings,
//! well-known types in their JSON forms. Unknown fields are refused, so a
//! misspelt field is an `invalid_argument` naming it instead of being ignored.
//! Request bodies must be uncompressed; responses are never compressed.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::Code;
use tonic::body::Body;
use tower::ServiceExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a Connect message is written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// proto3 JSON.
    Json,
    /// Protobuf binary.
    Proto,
}

/// The kind of Connect call a request is, from its method and content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A unary call (`application/json`, `application/proto`).
    Unary(Codec),
    /// A streaming call (`application/connect+json`, `application/connect+proto`).
    Stream(Codec),
}

impl Shape {
    /// The Connect shape of a request, or `None` for anything else (gRPC,
    /// gRPC-Web, a GET of a health page), which passes through untouched.
    pub fn of(method: &Method, headers: &HeaderMap) -> Option<Shape> {
        if method != Method::POST {
            return None;
        }
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Some(Shape::Unary(Codec::Json)),
            "application/proto" => Some(Shape::Unary(Codec::Proto)),
            "application/connect+json" => Some(Shape::Stream(Codec::Json)),
            "application/connect+proto" => Some(Shape::Stream(Codec::Proto)),
            _ => None,
        }
    }

    fn codec(self) -> Codec {
        match self {
            Shape::Unary(c) | Shape::Stream(c) => c,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::Unary(Codec::Json) => "application/json",
            Shape::Unary(Codec::Proto) => "application/proto",
            Shape::Stream(Codec::Json) => "application/connect+json",
            Shape::Stream(Codec::Proto) => "application/connect+proto",
        }
    }
}

/// The contracts' descriptors, to find a path's method and to convert its
/// messages between JSON and binary.
#[derive(Clone)]
pub struct Contracts {
    pool: DescriptorPool,
}

impl Contracts {
    /// Every Rapport contract plus `google.rpc` (for error details).
    pub fn rapport() -> Result<Self, String> {
        let mut pool = DescriptorPool::decode(rapport_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the contracts' descriptors do not load: {e}"))?;
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the google.rpc descriptors do not load: {e}"))?;
        Ok(Self { pool })
    }

    /// The method a path `/package.Service/Method` names.
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }

    /// A message of type `desc` in `codec`, as protobuf binary.
    pub fn to_binary(
        &self,
        desc: &MessageDescriptor,
        codec: Codec,
        body: &[u8],
    ) -> Result<Bytes, ConnectError> {
        match codec {
            Codec::Proto => Ok(Bytes::copy_from_slice(body)),
            Codec::Json if body.iter().all(u8::is_ascii_whitespace) => {
                // An empty body is the empty message, as in binary.
                Ok(Bytes::new())
            }
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(body);
                let message = DynamicMessage::deserialize(desc.clone(), &mut de)
                    .and_then(|m| de.end().map(|()| m))
                    .map_err(|e| {
                        ConnectError::new(
                            Code::InvalidArgument,
                            format!(
                                "the request body is not a {} in JSON: {e}",
                                desc.full_name()
                            ),
                        )
                    })?;
                Ok(message.encode_to_vec().into())
            }
        }
    }

    /// A binary message of type `desc`, written in `codec`.
    pub fn from_binary(
        &self,
        desc: &MessageDescriptor,
        codec: Codec,
        message: Bytes,
    ) -> Result<Bytes, ConnectError> {
        match codec {
            Codec::Proto => Ok(message),
            Codec::Json => {
                let decoded = DynamicMessage::decode(desc.clone(), message).map_err(|e| {
                    ConnectError::new(
                        Code::Internal,
                        format!("the service answered a malformed {}: {e}", desc.full_name()),
                    )
                })?;
                serde_json::to_vec(&decoded).map(Bytes::from).map_err(|e| {
                    ConnectError::new(
                        Code::Internal,
                        format!("the answer cannot be written as JSON: {e}"),
                    )
                })
            }
        }
    }

    /// A binary message of type `name` (its full name) in proto3 JSON.
    pub fn json_of(&self, name: &str, message: &[u8]) -> Result<serde_json::Value, String> {
        let desc = self
            .pool
            .get_message_by_name(name)
            .ok_or_else(|| format!("no message {name} in the contracts"))?;
        let decoded =
            DynamicMessage::decode(desc, message).map_err(|e| format!("not a {name}: {e}"))?;
        serde_json::to_value(&decoded).map_err(|e| format!("{name} as JSON: {e}"))
    }

    /// A gRPC status as Connect's JSON error.
    pub fn error_json(&self, status: &tonic::Status) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": code_name(status.code()) });
        if !status.message().is_empty() {
            error["message"] = status.message().into();
        }
        let details = tonic_types::pb::Status::decode(status.details())
            .map(|s| s.details)
            .unwrap_or_default();
        if !details.is_empty() {
            error["details"] = details
                .iter()
                .map(|any| self.detail_json(&any.type_url, &any.value))
                .collect();
        }
        error
    }

    /// One error detail: its type, its value in unpadded base64 (as Connect
    /// writes it) and, when the contracts know its type, the decoded message.
    fn detail_json(&self, type_url: &str, value: &[u8]) -> serde_json::Value {
        let name = type_url.rsplit('/').next().unwrap_or(type_url);
        let mut detail = serde_json::json!({
            "type": name,
            "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(value),
        });
        let debug = self
            .pool
            .get_message_by_name(name)
            .and_then(|desc| DynamicMessage::decode(desc, value).ok())
            .and_then(|m| serde_json::to_value(&m).ok());
        if let Some(debug) = debug {
            detail["debug"] = debug;
        }
        detail
    }
}

/// A Connect call that fails before or after its gRPC call: a status to
/// answer with, and the metadata that came with it.
#[derive(Debug)]
pub struct ConnectError {
    status: tonic::Status,
    metadata: HeaderMap,
}

impl ConnectError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: tonic::Status::new(code, message),
            metadata: HeaderMap::new(),
        }
    }
}

/// Connect's name of a code: gRPC's canonical name in lower case, with
/// `CANCELLED` spelt `canceled`.
pub fn code_name(code: Code) -> String {
    match code {
        Code::Cancelled => "canceled".into(),
        other => crate::metrics::code_name(other).to_ascii_lowercase(),
    }
}

/// The HTTP status of a unary Connect error with `code`, from the protocol's table.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Serves the Connect protocol in front of a gRPC service stack.
#[derive(Clone)]
pub struct ConnectLayer {
    contracts: Arc<Contracts>,
    max_request_bytes: usize,
}

impl ConnectLayer {
    /// Connect calls for the methods of `contracts`, with request bodies of at
    /// most `max_request_bytes`.
    pub fn new(contracts: Contracts, max_request_bytes: usize) -> Self {
        Self {
            contracts: Arc::new(contracts),
            max_request_bytes,
        }
    }
}

impl<S> tower::Layer<S> for ConnectLayer {
    type Service = ConnectService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectService {
            inner,
            contracts: self.contracts.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

/// See [`ConnectLayer`].
#[derive(Clone)]
pub struct ConnectService<S> {
    inner: S,
    contracts: Arc<Contracts>,
    max_request_bytes: usize,
}

impl<S, B> tower::Service<http::Request<B>> for ConnectService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(shape) = Shape::of(req.method(), req.headers()) else {
            return Box::pin(self.inner.call(req.map(Body::new)));
        };
        // The ready service handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let contracts = self.contracts.clone();
        let limit = self.max_request_bytes;
        Box::pin(async move {
            let call = Call {
                contracts,
                shape,
                limit,
            };
            call.serve(inner, req).await
        })
    }
}

/// One Connect call in progress.
struct Call {
    contracts: Arc<Contracts>,
    shape: Shape,
    limit: usize,
}

impl Call {
    async fn serve<S, B>(
        self,
        inner: S,
        req: http::Request<B>,
    ) -> Result<http::Response<Body>, S::Error>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (grpc, method) = match self.to_grpc(req).await {
            Ok(r) => r,
            Err(e) => return Ok(self.error_response(e)),
        };
        let answer = inner.oneshot(grpc).await?;
        Ok(match self.shape {
            Shape::Unary(_) => self
                .unary_answer(&method, answer)
                .await
                .unwrap_or_else(|e| self.error_response(e)),
            Shape::Stream(_) => self.stream_answer(&method, answer),
        })
    }

    /// The gRPC request a Connect request stands for, and its method.
    async fn to_grpc<B>(
        &self,
        req: http::Request<B>,
    ) -> Result<(http::Request<Body>, MethodDescriptor), ConnectError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let method = self.contracts.method(&path).ok_or_else(|| {
            ConnectError::new(
                Code::Unimplemented,
                format!(
                    "no method {path}: the path is /package.Service/Method, as in the contracts"
                ),
            )
        })?;
        if method.is_client_streaming() && method.is_server_streaming() {
            return Err(ConnectError::new(
                Code::Unimplemented,
                format!(
                    "{path} streams both ways, which Connect over HTTP/1.1 cannot carry; call it over gRPC"
                ),
            ));
        }
        let streaming = method.is_client_streaming() || method.is_server_streaming();
        match (self.shape, streaming) {
            (Shape::Unary(_), true) => {
                return Err(ConnectError::new(
                    Code::Unimplemented,
                    format!(
                        "{path} is a streaming method: send Content-Type application/connect+json (or +proto) with enveloped messages"
                    ),
                ));
            }
            (Shape::Stream(_), false) => {
                return Err(ConnectError::new(
                    Code::Unimplemented,
                    format!(
                        "{path} is unary: send Content-Type application/json (or application/proto) with the bare message"
                    ),
                ));
            }
            _ => {}
        }
        for name in ["content-encoding", "connect-content-encoding"] {
            if let Some(encoding) = parts.headers.get(name)
                && encoding.as_bytes() != b"identity"
            {
                return Err(ConnectError::new(
                    Code::Unimplemented,
                    format!("{name} {encoding:?} is not supported: send the body uncompressed"),
                ));
            }
        }
        let timeout = grpc_timeout(&parts.headers)?;
        let body = http_body_util::Limited::new(body, self.limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ConnectError::new(
                        Code::ResourceExhausted,
                        format!("the request body is over {} bytes", self.limit),
                    )
                } else {
                    ConnectError::new(Code::Cancelled, format!("the request body was cut: {e}"))
                }
            })?
            .to_bytes();
        let messages = match self.shape {
            Shape::Unary(_) => vec![body],
            Shape::Stream(_) => envelopes(body, method.is_client_streaming())?,
        };
        let mut framed = BytesMut::new();
        for (index, message) in messages.iter().enumerate() {
            let binary = self
                .contracts
                .to_binary(&method.input(), self.shape.codec(), message)
                .map_err(|e| match self.shape {
                    Shape::Stream(_) if method.is_client_streaming() => ConnectError::new(
                        e.status.code(),
                        format!("message {index}: {}", e.status.message()),
                    ),
                    _ => e,
                })?;
            framed.put(envelope(0, &binary));
        }

        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
        for (name, value) in &parts.headers {
            if !is_connect_only(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(timeout) = timeout {
            headers.insert("grpc-timeout", timeout);
        }
        parts.headers = headers;
        parts.version = Version::HTTP_2;
        let body = Body::new(http_body_util::Full::new(framed.freeze()));
        Ok((http::Request::from_parts(parts, body), method))
    }

    /// A unary Connect answer from a gRPC answer.
    async fn unary_answer(
        &self,
        method: &MethodDescriptor,
        answer: http::Response<Body>,
    ) -> Result<http::Response<Body>, ConnectError> {
        let (parts, body) = answer.into_parts();
        let collected = body.collect().await.map_err(|e| {
            ConnectError::new(
                Code::Unavailable,
                format!("the answer was cut: {}", e.message()),
            )
        })?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let mut data = collected.to_bytes();
        let status = status_of(&parts.headers, &trailers);
        let mut metadata = HeaderMap::new();
        copy_metadata(&parts.headers, &mut metadata, "");
        copy_metadata(&trailers, &mut metadata, "trailer-");
        if status.code() != Code::Ok {
            return Err(ConnectError { status, metadata });
        }
        let Some((flags, message)) = next_frame(&mut data) else {
            return Err(ConnectError::new(
                Code::Internal,
                "the service answered OK without a message",
            ));
        };
        if flags & 1 != 0 {
            return Err(ConnectError::new(
                Code::Internal,
                "the service answered with a compressed message",
            ));
        }
        let body = self
            .contracts
            .from_binary(&method.output(), self.shape.codec(), message)?;
        let mut response = http::Response::new(Body::new(http_body_util::Full::new(body)));
        *response.headers_mut() = metadata;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.shape.content_type()),
        );
        Ok(response)
    }

    /// A streaming Connect answer from a gRPC answer: each message
    /// re-enveloped, and the status in the end-of-stream message.
    fn stream_answer(
        &self,
        method: &MethodDescriptor,
        answer: http::Response<Body>,
    ) -> http::Response<Body> {
        let (parts, body) = answer.into_parts();
        let mut headers = HeaderMap::new();
        copy_metadata(&parts.headers, &mut headers, "");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.shape.content_type()),
        );
        let state = StreamState {
            body,
            buffer: BytesMut::new(),
            head: parts.headers,
            contracts: self.contracts.clone(),
            output: method.output(),
            codec: self.shape.codec(),
            done: false,
        };
        let frames = futures::stream::unfold(state, |mut state| async move {
            let bytes = state.next().await?;
            Some((Ok::<_, Infallible>(http_body::Frame::data(bytes)), state))
        });
        let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
        *response.headers_mut() = headers;
        response
    }

    /// The Connect error answer for `error`, in this call's shape.
    fn error_response(&self, error: ConnectError) -> http::Response<Body> {
        let json = self.contracts.error_json(&error.status);
        match self.shape {
            Shape::Unary(_) => {
                let body = serde_json::to_vec(&json).unwrap_or_default();
                let mut response =
                    http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
                *response.status_mut() = http_status(error.status.code());
                *response.headers_mut() = error.metadata;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Shape::Stream(_) => {
                let end = end_of_stream(Some(json), &error.metadata);
                let mut response = http::Response::new(Body::new(http_body_util::Full::new(end)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.shape.content_type()),
                );
                response
            }
        }
    }
}

/// A gRPC answer's stream being re-enveloped for Connect.
struct StreamState {
    body: Body,
    buffer: BytesMut,
    head: HeaderMap,
    contracts: Arc<Contracts>,
    output: MessageDescriptor,
    codec: Codec,
    done: bool,
}

impl StreamState {
    /// The next Connect envelope, or `None` after the end-of-stream message.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let mut pending = self.buffer.clone().freeze();
            if let Some((flags, message)) = next_frame(&mut pending) {
                self.buffer.advance(self.buffer.len() - pending.len());
                if flags & 1 != 0 {
                    return Some(self.finish(tonic::Status::internal(
                        "the service answered with a compressed message",
                    )));
                }
                return Some(
                    match self
                        .contracts
                        .from_binary(&self.output, self.codec, message)
                    {
                        Ok(m) => envelope(0, &m),
                        Err(e) => self.finish(e.status),
                    },
                );
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.put(data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = status_of(&self.head, &trailers);
                        let mut metadata = HeaderMap::new();
                        copy_metadata(&trailers, &mut metadata, "");
                        return Some(self.finish_with(status, &metadata));
                    }
                },
                Some(Err(e)) => {
                    return Some(self.finish(tonic::Status::unavailable(format!(
                        "the stream was cut: {}",
                        e.message()
                    ))));
                }
                None => {
                    // A trailers-only answer carries its status in the head.
                    let status = status_of(&self.head, &HeaderMap::new());
                    return Some(self.finish_with(status, &HeaderMap::new()));
                }
            }
        }
    }

    fn finish(&mut self, status: tonic::Status) -> Bytes {
        self.finish_with(status, &HeaderMap::new())
    }

    fn finish_with(&mut self, status: tonic::Status, metadata: &HeaderMap) -> Bytes {
        self.done = true;
        let error = (status.code() != Code::Ok).then(|| self.contracts.error_json(&status));
        end_of_stream(error, metadata)
    }
}

/// Connect's end-of-stream message: the error, if any, and the trailers.
fn end_of_stream(error: Option<serde_json::Value>, metadata: &HeaderMap) -> Bytes {
    let mut end = serde_json::Map::new();
    if let Some(error) = error {
        end.insert("error".into(), error);
    }
    let mut names = serde_json::Map::new();
    for name in metadata.keys() {
        let values: Vec<serde_json::Value> = metadata
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.into())
            .collect();
        names.insert(name.as_str().to_string(), values.into());
    }
    if !names.is_empty() {
        end.insert("metadata".into(), names.into());
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(end)).unwrap_or_default();
    envelope(2, &json)
}

/// One message in the 5-byte framing gRPC and Connect streams share: flags,
/// big-endian length, message.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// Takes the first complete frame off `data`: its flags and its message.
fn next_frame(data: &mut Bytes) -> Option<(u8, Bytes)> {
    if data.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() < 5 + len {
        return None;
    }
    let flags = data[0];
    data.advance(5);
    Some((flags, data.split_to(len)))
}

/// The enveloped messages of a streaming call's request body: exactly one
/// unless the method takes a stream (`many`).
fn envelopes(mut body: Bytes, many: bool) -> Result<Vec<Bytes>, ConnectError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Some((flags, message)) = next_frame(&mut body) else {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                "a streaming call's body is enveloped messages (1 flag byte, 4 length bytes, the message); the last one is cut",
            ));
        };
        if flags != 0 {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("a request envelope's flags are {flags:#04x}: send 0 (uncompressed)"),
            ));
        }
        messages.push(message);
    }
    if !many && messages.len() != 1 {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!(
                "the method takes one request message; the body carries {}",
                messages.len()
            ),
        ));
    }
    Ok(messages)
}

/// `Connect-Timeout-Ms` as a `grpc-timeout` value.
fn grpc_timeout(headers: &HeaderMap) -> Result<Option<HeaderValue>, ConnectError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let ms = value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ConnectError::new(
                Code::InvalidArgument,
                "connect-timeout-ms must be a whole number of milliseconds, at most 10 digits",
            )
        })?;
    // grpc-timeout takes at most 8 digits: long timeouts in seconds.
    let value = if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", ms / 1000)
    };
    Ok(HeaderValue::from_str(&value).ok())
}

/// Whether a request header belongs to the Connect or HTTP/1.1 framing
/// rather than to the call's metadata.
fn is_connect_only(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("connect-")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "accept-encoding"
                | "accept"
                | "te"
                | "host"
                | "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "upgrade"
        )
}

/// Copies metadata from a gRPC head or trailers, without gRPC's own entries,
/// each name given `prefix` (`trailer-` for a unary answer's trailers).
fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap, prefix: &str) {
    for (name, value) in from {
        let n = name.as_str();
        if n.starts_with("grpc-") || n == "content-type" || n == "content-length" {
            continue;
        }
        let name = if prefix.is_empty() {
            Some(name.clone())
        } else {
            HeaderName::from_bytes(format!("{prefix}{n}").as_bytes()).ok()
        };
        if let Some(name) = name {
            to.append(name, value.clone());
        }
    }
}

/// The status of a gRPC answer, from its trailers or (trailers-only) its head.
fn status_of(head: &HeaderMap, trailers: &HeaderMap) -> tonic::Status {
    tonic::Status::from_header_map(trailers)
        .or_else(|| tonic::Status::from_header_map(head))
        .unwrap_or_else(|| tonic::Status::internal("the service answered without a status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contracts() -> Contracts {
        Contracts::rapport().expect("the contracts load")
    }

    #[test]
    fn content_types_choose_the_shape() {
        let shape = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            Shape::of(&Method::POST, &h)
        };
        assert_eq!(shape("application/json"), Some(Shape::Unary(Codec::Json)));
        assert_eq!(
            shape("application/json; charset=utf-8"),
            Some(Shape::Unary(Codec::Json))
        );
        assert_eq!(shape("application/proto"), Some(Shape::Unary(Codec::Proto)));
        assert_eq!(
            shape("application/connect+json"),
            Some(Shape::Stream(Codec::Json))
        );
        assert_eq!(
            shape("application/connect+proto"),
            Some(Shape::Stream(Codec::Proto))
        );
        assert_eq!(shape("application/grpc"), None);
        assert_eq!(shape("application/grpc-web+proto"), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(Shape::of(&Method::GET, &h), None);
    }

    #[test]
    fn json_round_trips_through_binary() {
        let c = contracts();
        let m = c
            .method("/rapport.profile.v1.ProfileService/GetCustomer")
            .expect("the method exists");
        let bin = c
            .to_binary(&m.input(), Codec::Json, br#"{"customerId": "abc"}"#)
            .unwrap();
        // Field 1, length-delimited, "abc".
        assert_eq!(&bin[..], b"\x0a\x03abc");
        let json = c.from_binary(&m.input(), Codec::Json, bin).unwrap();
        assert_eq!(&json[..], br#"{"customerId":"abc"}"#);
        // The proto name is accepted too; an empty body is the empty message.
        let snake = c
            .to_binary(&m.input(), Codec::Json, br#"{"customer_id": "abc"}"#)
            .unwrap();
        assert_eq!(&snake[..], b"\x0a\x03abc");
        assert!(
            c.to_binary(&m.input(), Codec::Json, b" ")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_json_names_the_message_and_the_problem() {
        let c = contracts();
        let m = c
            .method("/rapport.profile.v1.ProfileService/GetCustomer")
            .unwrap();
        for (body, says) in [
            (&br#"{"customerld": "abc"}"#[..], "customerld"),
            (&br#"{"customerId": 7}"#[..], "string"),
            (&br#"{"customerId": "a"} x"#[..], "trailing"),
            (&b"[1]"[..], "GetCustomerRequest"),
        ] {
            let e = c.to_binary(&m.input(), Codec::Json, body).unwrap_err();
            assert_eq!(e.status.code(), Code::InvalidArgument);
            assert!(
                e.status.message().contains(says),
                "{:?}: {}",
                String::from_utf8_lossy(body),
                e.status.message()
            );
        }
    }

    #[test]
    fn paths_find_methods_or_nothing() {
        let c = contracts();
        assert!(
            c.method("/rapport.segmentation.v1.SegmentationService/WatchMembership")
                .unwrap()
                .is_server_streaming()
        );
        for path in [
            "/",
            "/rapport.profile.v1.ProfileService",
            "/rapport.profile.v1.ProfileService/Nope",
            "/nope.Service/GetCustomer",
            "rapport.profile.v1.ProfileService/GetCustomer",
        ] {
            assert!(c.method(path).is_none(), "{path}");
        }
    }

    #[test]
    fn errors_carry_decoded_details() {
        use tonic_types::{ErrorDetails, StatusExt};
        let c = contracts();
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad email",
            ErrorDetails::with_bad_request_violation("emails[0].address", "not an address"),
        );
        let json = c.error_json(&status);
        assert_eq!(json["code"], "invalid_argument");
        assert_eq!(json["message"], "bad email");
        let detail = &json["details"][0];
        assert_eq!(detail["type"], "google.rpc.BadRequest");
        assert!(!detail["value"].as_str().unwrap().ends_with('='));
        assert_eq!(
            detail["debug"]["fieldViolations"][0]["field"],
            "emails[0].address"
        );
        assert_eq!(
            detail["debug"]["fieldViolations"][0]["description"],
            "not an address"
        );
        // The value is the detail's bytes: decoding it gives the same message.
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(detail["value"].as_str().unwrap())
            .unwrap();
        let decoded = tonic_types::pb::BadRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.field_violations[0].field, "emails[0].address");
    }

    #[test]
    fn codes_map_to_connect_names_and_http_statuses() {
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(code_name(Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(Code::Unauthenticated), "unauthenticated");
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::FailedPrecondition), 400);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::AlreadyExists), 409);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Cancelled), 499);
        assert_eq!(http_status(Code::Unimplemented), 501);
        assert_eq!(http_status(Code::Unavailable), 503);
        assert_eq!(http_status(Code::DeadlineExceeded), 504);
        assert_eq!(http_status(Code::DataLoss), 500);
    }

    #[test]
    fn timeouts_become_grpc_timeouts() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("connect-timeout-ms", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("1500").unwrap().unwrap(), "1500m");
        assert_eq!(t("9999999999").unwrap().unwrap(), "9999999S");
        for bad in ["", "-1", "1.5", "12345678901", "soon"] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert!(grpc_timeout(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn envelopes_frame_and_unframe() {
        let framed = envelope(0, b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(
            envelopes(framed.clone(), false).unwrap(),
            vec![Bytes::from("hello")]
        );
        let mut partial = framed.slice(..7);
        assert!(next_frame(&mut partial).is_none());
        assert!(envelopes(partial, true).is_err());
        let mut two = BytesMut::new();
        two.put(framed.clone());
        two.put(envelope(0, b""));
        let two = two.freeze();
        assert!(envelopes(two.clone(), false).is_err());
        assert_eq!(
            envelopes(two, true).unwrap(),
            vec![Bytes::from("hello"), Bytes::new()]
        );
        assert!(envelopes(Bytes::new(), false).is_err());
        assert!(envelopes(Bytes::new(), true).unwrap().is_empty());
        assert!(envelopes(envelope(1, b"x"), false).is_err());
        assert!(envelopes(Bytes::from_static(b"\0\0"), false).is_err());
        let end = end_of_stream(None, &HeaderMap::new());
        assert_eq!(end[0], 2);
        assert_eq!(&end[5..], b"{}");
    }
}
