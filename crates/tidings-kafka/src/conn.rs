//! One client connection: frames in, requests handled in order (a Produce
//! request's appends queued before the next request is read, its answer sent
//! once they are durable), responses out in request order.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    FetchRequest, FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ProduceRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest, SyncGroupRequest,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, FetchResponse, FindCoordinatorResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, OffsetCommitResponse,
    OffsetDeleteResponse, OffsetFetchResponse, ProducerId, SyncGroupResponse,
};
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_auth::Principal;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::access::{decide, Access};
use crate::sasl::Session;
use crate::{acls, admin, apis, fetch, groups, produce, topics, users, Shared};

/// Bytes a request needs before its body: API key, version, correlation id.
const REQUEST_HEADER_MIN_BYTES: usize = 8;
/// How much of a frame is read into memory at a time: a large frame's memory
/// grows with the bytes that actually arrive, not with what its prefix claims.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a connection is closed. Each is logged with the peer's address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("frame size {size} is outside {REQUEST_HEADER_MIN_BYTES}..={max} bytes")]
    FrameSize { size: i64, max: usize },
    #[error("the client sent HTTP ({start:?}...) to the Kafka listener; the HTTP API has a listener of its own (--http-addr)")]
    Http { start: String },
    #[error("the client started a TLS handshake; the Kafka listener speaks plaintext")]
    Tls,
    #[error("{api:?} before logging in: this server has users, and a client logs in with SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) before anything else")]
    NotLoggedIn { api: ApiKey },
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{api:?} version {version} is not supported by this listener")]
    UnsupportedApi { api: ApiKey, version: i16 },
    #[error("the request's {size} bytes did not all arrive within {after_ms} ms (the idle timeout); closing the connection")]
    SlowFrame { size: i32, after_ms: u64 },
    #[error("a Produce with acks=0 failed ({errors}); closing the connection so that the producer, which reads no answer, finds out (as Kafka does)")]
    UnansweredProduceFailed { errors: String },
    #[error("malformed {what} of {api:?} v{version}: {reason}")]
    Malformed {
        what: &'static str,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How long a connection stays open after a failed login's answer before it
/// is closed (Kafka's `connection.failed.authentication.delay.ms`): the
/// client reads the reason before the close, and guessing passwords is
/// slowed.
const FAILED_LOGIN_CLOSE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Requests read ahead of their answers on one connection. Produce requests
/// queue their appends before the next request is read and are answered once
/// durable, so a client's pipelined produce requests share syncs.
const IN_FLIGHT_MAX: usize = 64;

/// A response on its way: ready, or waiting for appends to be durable; `None`
/// when the request takes no answer.
pub(crate) type Pending =
    Pin<Box<dyn Future<Output = Result<Option<BytesMut>, ConnError>> + Send + 'static>>;

/// Serves one connection; `certified` is the principal of the client
/// certificate its TLS handshake verified.
pub(crate) async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    certified: Option<Principal>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(%peer, "Kafka connection opened");
    tidings_telemetry::kafka::connection_opened();
    let mut refused = false;
    let mut session = Session::new(shared.gate.as_deref(), certified);
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Pending>(IN_FLIGHT_MAX);
    // Answers leave in request order, each when it is ready.
    // Cancelled when the writer stops on an error: the connection closes
    // then, rather than at the client's next request.
    let failed = tokio_util::sync::CancellationToken::new();
    let writing = tokio::spawn(write_responses(writer, rx, peer, failed.clone()));
    loop {
        let idle = shared.config.idle_timeout();
        let size = tokio::select! {
            size = reader.read_i32() => size,
            () = shared.shutdown.cancelled() => break,
            () = failed.cancelled() => {
                refused = true;
                break;
            }
            () = tokio::time::sleep(idle) => {
                // Kafka's connections.max.idle.ms: clients reconnect when
                // they next need the connection.
                tracing::debug!(%peer, "closing an idle Kafka connection");
                tidings_telemetry::kafka::connection_idle_closed();
                break;
            }
        };
        let size = match size {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                log_close(peer, &session, &ConnError::Io(e));
                break;
            }
        };
        // What is not Kafka at all is said as such, and an HTTP client gets an
        // answer it can show.
        if let Some(e) = not_kafka(size) {
            if let ConnError::Http { .. } = e {
                let _ = tx.send(http_refusal()).await;
            }
            log_close(peer, &session, &e);
            refused = true;
            break;
        }
        let started = std::time::Instant::now();
        // The rest of a frame must come within the idle timeout too: a
        // client that sends a size and then trickles the bytes holds a
        // connection (and up to a frame's memory) no longer than one that
        // sends nothing.
        let slow = || ConnError::SlowFrame {
            size,
            after_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        };
        let pending = async {
            if session.expects_token() {
                let token = tokio::time::timeout(idle, read_token(&mut reader, size))
                    .await
                    .map_err(|_| slow())??;
                return Ok(bare_token(&shared, token, peer, &mut session).await);
            }
            session.follow(shared.gate.as_deref());
            let max = session.frame_bytes_max(shared.config.frame_bytes_max);
            let frame = tokio::time::timeout(idle, read_frame(&mut reader, size, max))
                .await
                .map_err(|_| slow())??;
            handle(&shared, frame, peer, &mut session).await
        }
        .await
        .map(|(api, version, pending)| {
            // The frame's size field and the frame: what the client sent.
            let received = 4 + size.unsigned_abs() as usize;
            measured(api, version, received, started, pending)
        });
        match pending {
            Ok(pending) => {
                if tx.send(pending).await.is_err() {
                    break; // the writer stopped: the client is gone
                }
                if session.closing {
                    refused = true;
                    break; // a failed login: its answer goes out, then the close
                }
            }
            Err(e) => {
                refused = !matches!(e, ConnError::Io(_));
                if matches!(e, ConnError::SlowFrame { .. }) {
                    tidings_telemetry::kafka::connection_idle_closed();
                }
                log_close(peer, &session, &e);
                break;
            }
        }
    }
    // Answers already under way still go out before the connection closes.
    drop(tx);
    let written = writing.await;
    if session.closing {
        // Some clients (kafka-python) take an end-of-stream that arrives
        // with the answer for a lost connection and never read the answer.
        tokio::time::sleep(FAILED_LOGIN_CLOSE_DELAY).await;
    }
    // End-of-stream (and TLS's close_notify) before the socket closes: a
    // socket closed with bytes the client sent still unread is reset, and
    // a reset can discard the last answer before the client reads it.
    if let Ok(Some(mut writer)) = written {
        let _ = writer.shutdown().await;
    }
    tidings_telemetry::kafka::connection_closed(refused);
    tracing::debug!(%peer, principal = %session.principal, "Kafka connection closed");
}

/// `pending`, recording the request in the metrics when its answer is ready:
/// its API and version, `received` bytes in, the answer's bytes out.
fn measured(
    api: ApiKey,
    version: i16,
    received: usize,
    started: std::time::Instant,
    pending: Pending,
) -> Pending {
    Box::pin(async move {
        let answer = pending.await;
        let sent = match &answer {
            Ok(Some(response)) => response.len(),
            _ => 0,
        };
        tidings_telemetry::kafka::request_done(
            apis::name(api),
            version,
            started.elapsed(),
            received,
            sent,
        );
        answer
    })
}

/// Writes the answers in order; gives the connection's write half back once
/// they are out (dropping it sends the client end-of-stream).
async fn write_responses<W: tokio::io::AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Pending>,
    peer: SocketAddr,
    failed: tokio_util::sync::CancellationToken,
) -> Option<W> {
    let mut writer = BufWriter::new(writer);
    while let Some(pending) = rx.recv().await {
        let written = async {
            if let Some(response) = pending.await? {
                writer.write_all(&response).await?;
            }
            if rx.is_empty() {
                writer.flush().await?;
            }
            Ok::<(), ConnError>(())
        }
        .await;
        if let Err(e) = written {
            match e {
                ConnError::Io(e) => tracing::debug!(%peer, error = %e, "Kafka connection failed"),
                e => tracing::warn!(%peer, error = %e, "closing Kafka connection"),
            }
            // What was answered before goes out first.
            let _ = writer.flush().await;
            failed.cancel();
            return None;
        }
    }
    let _ = writer.flush().await;
    Some(writer.into_inner())
}

/// A connection that failed underneath (the client went away) is a debug line;
/// one closed for what the client sent is a warning.
fn log_close(peer: SocketAddr, session: &Session, e: &ConnError) {
    let principal = &session.principal;
    match e {
        ConnError::Io(e) => {
            tracing::debug!(%peer, %principal, error = %e, "Kafka connection failed")
        }
        e => tracing::warn!(%peer, %principal, error = %e, "closing Kafka connection"),
    }
}

/// The first four bytes of a connection that speaks HTTP or TLS instead of
/// Kafka (read as a frame size, they are far past any limit).
fn not_kafka(size: i32) -> Option<ConnError> {
    let bytes = size.to_be_bytes();
    const METHODS: [&[u8; 4]; 9] = [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI", b"CONN", b"TRAC",
    ];
    if METHODS.contains(&&bytes) {
        return Some(ConnError::Http {
            start: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
        });
    }
    // A TLS record: handshake (22), version 3.x.
    if bytes[0] == 0x16 && bytes[1] == 0x03 {
        return Some(ConnError::Tls);
    }
    None
}

/// What an HTTP client that reached the Kafka listener is told.
fn http_refusal() -> Pending {
    let body = "This port speaks the Kafka protocol, not HTTP: the HTTP API of tidings serve listens on its --http-addr (127.0.0.1:8080 by default).\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Box::pin(std::future::ready(Ok(Some(BytesMut::from(
        response.as_bytes(),
    )))))
}

/// An answer that is ready now.
fn ready(response: BytesMut) -> Result<Pending, ConnError> {
    Ok(Box::pin(std::future::ready(Ok(Some(response)))))
}

/// Reads a frame of `size` bytes after checking the size, growing the buffer
/// as bytes arrive.
async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    size: i32,
    max: usize,
) -> Result<Bytes, ConnError> {
    let len = usize::try_from(size)
        .ok()
        .filter(|n| (REQUEST_HEADER_MIN_BYTES..=max).contains(n))
        .ok_or(ConnError::FrameSize {
            size: i64::from(size),
            max,
        })?;
    let mut buf = BytesMut::with_capacity(len.min(READ_CHUNK_BYTES));
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK_BYTES);
        buf.reserve(want);
        let n = reader.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(buf.freeze())
}

/// Reads a bare SASL token (after a SaslHandshake v0): any size up to a
/// SASL message's limit, empty included.
async fn read_token(
    reader: &mut (impl AsyncReadExt + Unpin),
    size: i32,
) -> Result<Bytes, ConnError> {
    let max = tidings_auth::limits::SCRAM_MESSAGE_BYTES_MAX;
    let len = usize::try_from(size)
        .ok()
        .filter(|n| *n <= max)
        .ok_or(ConnError::FrameSize {
            size: i64::from(size),
            max,
        })?;
    let mut buf = vec![0; len];
    reader.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// Answers a bare SASL token with one, counted as a SaslAuthenticate v0; a
/// failed login is answered by closing the connection.
async fn bare_token(
    shared: &Arc<Shared>,
    token: Bytes,
    peer: SocketAddr,
    session: &mut Session,
) -> (ApiKey, i16, Pending) {
    let reply = session.token(shared.gate.as_ref(), token, peer).await;
    let pending: Pending = Box::pin(std::future::ready(Ok(reply.map(|reply| {
        let mut out = BytesMut::with_capacity(4 + reply.len());
        // At most a SASL message's length: it fits.
        out.put_i32(reply.len() as i32);
        out.extend_from_slice(&reply);
        out
    }))));
    (ApiKey::SaslAuthenticate, 0, pending)
}

/// One request's API, version and correlation id, for decoding and answering.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub(crate) api: ApiKey,
    pub(crate) version: i16,
    correlation_id: i32,
}

impl Call {
    fn decode<T: Decodable>(&self, body: &mut Bytes) -> Result<T, ConnError> {
        T::decode(body, self.version).map_err(|e| ConnError::Malformed {
            what: "body",
            api: self.api,
            version: self.version,
            reason: e.to_string(),
        })
    }

    /// The response frame: size, header, body. Its error codes are counted.
    fn respond<T: Encodable + crate::errors::ErrorCodes>(
        &self,
        body: &T,
    ) -> Result<BytesMut, ConnError> {
        crate::errors::record(apis::name(self.api), body);
        self.respond_as(
            body,
            self.version,
            self.api.response_header_version(self.version),
        )
    }

    fn respond_as<T: Encodable>(
        &self,
        body: &T,
        version: i16,
        header_version: i16,
    ) -> Result<BytesMut, ConnError> {
        let encode_err = |e: anyhow::Error| ConnError::Encode {
            api: self.api,
            version,
            reason: e.to_string(),
        };
        let mut out = BytesMut::with_capacity(64);
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(self.correlation_id)
            .encode(&mut out, header_version)
            .map_err(encode_err)?;
        body.encode(&mut out, version).map_err(encode_err)?;
        let size = i32::try_from(out.len() - 4).map_err(|_| ConnError::Encode {
            api: self.api,
            version,
            reason: format!("{} bytes do not fit a frame", out.len()),
        })?;
        out[..4].copy_from_slice(&size.to_be_bytes());
        Ok(out)
    }
}

/// Answers a Produce request of a version advertised only for old
/// librdkafka's sake: UNSUPPORTED_VERSION for every partition, or nothing
/// with `acks` 0.
fn refuse_old_produce(call: Call, mut frame: Bytes) -> Result<Pending, ConnError> {
    let malformed = |what, reason: String| ConnError::Malformed {
        what,
        api: call.api,
        version: call.version,
        reason,
    };
    RequestHeader::decode(&mut frame, 1).map_err(|e| malformed("request header", e.to_string()))?;
    let (acks, body, refused) = produce::refuse_old_version(&mut frame, call.version)
        .map_err(|reason| malformed("body", reason))?;
    let name = crate::errors::code_name(kafka_protocol::ResponseError::UnsupportedVersion.code());
    for _ in 0..refused {
        tidings_telemetry::kafka::request_error(apis::name(call.api), &name);
    }
    tracing::warn!(
        version = call.version,
        "refused a Produce request older than v3: this server stores RecordBatch v2, which Produce v3 brought"
    );
    if acks == 0 {
        return Ok(Box::pin(std::future::ready(Err(
            ConnError::UnansweredProduceFailed {
                errors: format!("Produce v{} is older than v3", call.version),
            },
        ))));
    }
    let mut out = BytesMut::with_capacity(8 + body.len());
    let size = i32::try_from(4 + body.len()).map_err(|_| ConnError::Encode {
        api: call.api,
        version: call.version,
        reason: format!("{} bytes do not fit a frame", body.len()),
    })?;
    out.put_i32(size);
    out.put_i32(call.correlation_id); // response header v0
    out.extend_from_slice(&body);
    ready(out)
}

/// Handles one request, and says which API it was for the metrics.
async fn handle(
    shared: &Arc<Shared>,
    frame: Bytes,
    peer: SocketAddr,
    session: &mut Session,
) -> Result<(ApiKey, i16, Pending), ConnError> {
    let raw_api = (&frame[0..2]).get_i16();
    let api = ApiKey::try_from(raw_api).map_err(|()| ConnError::UnknownApi(raw_api))?;
    let version = (&frame[2..4]).get_i16();
    Ok((
        api,
        version,
        answer(shared, api, frame, peer, session).await?,
    ))
}

/// Answers one request. Everything but Produce is answered here; a Produce
/// request's appends are queued here and answered when durable.
async fn answer(
    shared: &Arc<Shared>,
    api: ApiKey,
    mut frame: Bytes,
    peer: SocketAddr,
    session: &mut Session,
) -> Result<Pending, ConnError> {
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let call = Call {
        api,
        version,
        correlation_id,
    };
    let Some((min, max)) = apis::versions(api) else {
        return Err(ConnError::UnsupportedApi { api, version });
    };
    if !session.admits(api) {
        return Err(ConnError::NotLoggedIn { api });
    }
    if api == ApiKey::Produce && (apis::PRODUCE_ADVERTISED_MIN..min).contains(&version) {
        return refuse_old_produce(call, frame);
    }
    if !(min..=max).contains(&version) {
        if api == ApiKey::ApiVersions {
            // The client learns the versions from this answer, which every
            // client reads in the version 0 layout.
            return ready(call.respond_as(&apis::unsupported_api_versions(), 0, 0)?);
        }
        return Err(ConnError::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let header =
        RequestHeader::decode(&mut frame, api.request_header_version(version)).map_err(|e| {
            ConnError::Malformed {
                what: "request header",
                api,
                version,
                reason: e.to_string(),
            }
        })?;
    let client_id = header
        .client_id
        .as_ref()
        .map_or("consumer", |c| c.as_str())
        .to_owned();
    let body = &mut frame;
    let access = Access::new(shared.gate.clone(), session.principal.clone(), peer.ip());
    let response = match api {
        ApiKey::ApiVersions => {
            let request: ApiVersionsRequest = call.decode(body)?;
            call.respond(&apis::api_versions(&request))?
        }
        ApiKey::SaslHandshake => {
            let request: SaslHandshakeRequest = call.decode(body)?;
            call.respond(&session.handshake(&request, version, peer))?
        }
        ApiKey::SaslAuthenticate => {
            let request: SaslAuthenticateRequest = call.decode(body)?;
            let gate = shared.gate.as_ref();
            call.respond(&session.authenticate(gate, request, peer).await)?
        }
        ApiKey::Metadata => {
            let request: MetadataRequest = call.decode(body)?;
            call.respond(&topics::metadata(shared, request, version, &access).await)?
        }
        ApiKey::CreateTopics => {
            let mut request: CreateTopicsRequest = call.decode(body)?;
            let refused = decide::create_topics(&access, &mut request);
            let mut answer = topics::create_topics(shared, request, version).await;
            answer.topics.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::Produce => {
            let mut request: ProduceRequest = call.decode(body)?;
            let acks = request.acks;
            let refused = decide::produce(&access, &mut request);
            let answer = produce::produce(shared, request, version).await;
            return Ok(Box::pin(async move {
                let mut response = answer.await;
                response.responses.extend(refused);
                if acks == 0 {
                    let errors: Vec<String> = response
                        .responses
                        .iter()
                        .flat_map(|t| {
                            t.partition_responses
                                .iter()
                                .filter(|p| p.error_code != 0)
                                .map(move |p| {
                                    format!(
                                        "{}/{}: {}",
                                        t.name.as_str(),
                                        p.index,
                                        crate::errors::code_name(p.error_code)
                                    )
                                })
                        })
                        .collect();
                    if !errors.is_empty() {
                        crate::errors::record(apis::name(call.api), &response);
                        return Err(ConnError::UnansweredProduceFailed {
                            errors: errors.join(", "),
                        });
                    }
                    return Ok(None);
                }
                call.respond(&response).map(Some)
            }));
        }
        ApiKey::Fetch => {
            let mut request: FetchRequest = call.decode(body)?;
            let refused = decide::fetch(&access, &mut request);
            let mut answer = if request.topics.is_empty() && !refused.is_empty() {
                // Nothing left to wait for.
                FetchResponse::default()
            } else {
                fetch::fetch(shared, request, version).await
            };
            answer.responses.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::ListOffsets => {
            let mut request: ListOffsetsRequest = call.decode(body)?;
            let refused = decide::list_offsets(&access, &mut request);
            let mut answer = fetch::list_offsets(shared, request, version);
            answer.topics.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::FindCoordinator => {
            let request: FindCoordinatorRequest = call.decode(body)?;
            if request.key_type == 0 {
                if let Err(f) = access.group(request.key.as_str(), Operation::Describe) {
                    let mut refused = FindCoordinatorResponse::default()
                        .with_error_code(f.code.code())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1);
                    if version >= 1 {
                        refused.error_message = Some(StrBytes::from_string(f.message));
                    }
                    return ready(call.respond(&refused)?);
                }
            }
            call.respond(&groups::find_coordinator(shared, &request, version))?
        }
        ApiKey::JoinGroup => {
            let request: JoinGroupRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Read) {
                let refused = JoinGroupResponse::default()
                    .with_error_code(f.code.code())
                    .with_generation_id(-1)
                    .with_member_id(request.member_id);
                return ready(call.respond(&refused)?);
            }
            let host = peer.ip().to_string();
            call.respond(&groups::join_group(shared, request, version, &client_id, &host).await)?
        }
        ApiKey::SyncGroup => {
            let request: SyncGroupRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Read) {
                return ready(
                    call.respond(&SyncGroupResponse::default().with_error_code(f.code.code()))?,
                );
            }
            call.respond(&groups::sync_group(shared, request).await)?
        }
        ApiKey::Heartbeat => {
            let request: HeartbeatRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Read) {
                return ready(
                    call.respond(&HeartbeatResponse::default().with_error_code(f.code.code()))?,
                );
            }
            call.respond(&groups::heartbeat(shared, &request))?
        }
        ApiKey::LeaveGroup => {
            let request: LeaveGroupRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Read) {
                return ready(
                    call.respond(&LeaveGroupResponse::default().with_error_code(f.code.code()))?,
                );
            }
            call.respond(&groups::leave_group(shared, &request, version))?
        }
        ApiKey::OffsetCommit => {
            let mut request: OffsetCommitRequest = call.decode(body)?;
            let refused = decide::offset_commit(&access, &mut request);
            let mut answer = if request.topics.is_empty() && !refused.is_empty() {
                OffsetCommitResponse::default()
            } else {
                groups::offset_commit(shared, request).await
            };
            answer.topics.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::OffsetFetch => {
            let mut request: OffsetFetchRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Describe) {
                return ready(call.respond(&refused_offset_fetch(&request, version, f.code))?);
            }
            let refused = decide::offset_fetch(&access, &mut request);
            let mut answer = groups::offset_fetch(shared, &request);
            if request.topics.is_none() {
                // Every topic the group has offsets for: those the
                // principal may describe.
                answer
                    .topics
                    .retain(|t| access.sees(ResourceType::Topic, t.name.0.as_str()));
            }
            answer.topics.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::DeleteTopics => {
            let mut request: DeleteTopicsRequest = call.decode(body)?;
            let refused = decide::delete_topics(&access, &mut request);
            let mut answer = admin::delete_topics(shared, request, version).await;
            answer.responses.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::CreatePartitions => {
            let mut request: CreatePartitionsRequest = call.decode(body)?;
            let refused = decide::create_partitions(&access, &mut request);
            let mut answer = admin::create_partitions(shared, request).await;
            answer.results.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::DescribeConfigs => {
            let mut request: DescribeConfigsRequest = call.decode(body)?;
            let refused = decide::describe_configs(&access, &mut request);
            let mut answer = admin::describe_configs(shared, &request, version);
            answer.results.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut request: IncrementalAlterConfigsRequest = call.decode(body)?;
            let refused = decide::alter_configs(&access, &mut request);
            let mut answer = admin::incremental_alter_configs(shared, request).await;
            answer.responses.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::DescribeCluster => {
            let request: DescribeClusterRequest = call.decode(body)?;
            if let Err(f) = access.cluster(Operation::Describe) {
                let refused = DescribeClusterResponse::default()
                    .with_error_code(f.code.code())
                    .with_error_message(Some(StrBytes::from_string(f.message)));
                return ready(call.respond(&refused)?);
            }
            call.respond(&admin::describe_cluster(shared, &request))?
        }
        ApiKey::ListGroups => {
            let request: ListGroupsRequest = call.decode(body)?;
            let mut answer = groups::list_groups(shared, &request, version);
            // Describe on the cluster lists every group, as in Kafka.
            if !access.sees(ResourceType::Cluster, crate::access::CLUSTER) {
                answer
                    .groups
                    .retain(|g| access.sees(ResourceType::Group, g.group_id.0.as_str()));
            }
            call.respond(&answer)?
        }
        ApiKey::DescribeGroups => {
            let mut request: DescribeGroupsRequest = call.decode(body)?;
            let refused = decide::describe_groups(&access, &mut request);
            let mut answer = groups::describe_groups(shared, &request, version);
            answer.groups.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::DeleteGroups => {
            let mut request: DeleteGroupsRequest = call.decode(body)?;
            let refused = decide::delete_groups(&access, &mut request);
            let mut answer = groups::delete_groups(shared, request).await;
            answer.results.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::OffsetDelete => {
            let mut request: OffsetDeleteRequest = call.decode(body)?;
            if let Err(f) = access.group(request.group_id.0.as_str(), Operation::Delete) {
                return ready(
                    call.respond(&OffsetDeleteResponse::default().with_error_code(f.code.code()))?,
                );
            }
            let refused = decide::offset_delete(&access, &mut request);
            let mut answer = groups::offset_delete(shared, request).await;
            answer.topics.extend(refused);
            call.respond(&answer)?
        }
        ApiKey::DescribeAcls => {
            let request: DescribeAclsRequest = call.decode(body)?;
            call.respond(&acls::describe_acls(
                shared.gate.as_ref(),
                &access,
                &request,
            ))?
        }
        ApiKey::CreateAcls => {
            let request: CreateAclsRequest = call.decode(body)?;
            call.respond(&acls::create_acls(shared.gate.as_ref(), &access, request).await)?
        }
        ApiKey::DeleteAcls => {
            let request: DeleteAclsRequest = call.decode(body)?;
            call.respond(&acls::delete_acls(shared.gate.as_ref(), &access, request).await)?
        }
        ApiKey::DescribeUserScramCredentials => {
            let request: DescribeUserScramCredentialsRequest = call.decode(body)?;
            call.respond(&users::describe(shared.gate.as_ref(), &access, &request))?
        }
        ApiKey::AlterUserScramCredentials => {
            let request: AlterUserScramCredentialsRequest = call.decode(body)?;
            call.respond(&users::alter(shared.gate.as_ref(), &access, request).await)?
        }
        ApiKey::InitProducerId => {
            let request: InitProducerIdRequest = call.decode(body)?;
            if request.transactional_id.is_none() && !access.may_be_idempotent() {
                let refused = InitProducerIdResponse::default()
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
                return ready(call.respond(&refused)?);
            }
            call.respond(&produce::init_producer_id(shared, &request).await)?
        }
        _ => return Err(ConnError::UnsupportedApi { api, version }),
    };
    ready(response)
}

/// OffsetFetch for a group the principal may not describe: the group's
/// error (from v2), or each partition's (v1, which has no group error).
fn refused_offset_fetch(
    request: &OffsetFetchRequest,
    version: i16,
    code: ResponseError,
) -> OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };
    if version >= 2 {
        return OffsetFetchResponse::default().with_error_code(code.code());
    }
    let topics = request
        .topics
        .iter()
        .flatten()
        .map(|t| {
            OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partition_indexes
                        .iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
