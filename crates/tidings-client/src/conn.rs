//! The client's HTTP/1.1 connection: opened on first use, kept between calls,
//! opened again when the server closed it while idle; over TLS for an
//! `https://` server.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{ClientError, ANSWER_BYTES_MAX};

/// TLS to one server: the system's roots, and the name its certificate must
/// carry.
pub(crate) struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    pub(crate) fn new(host: &str) -> Result<Tls, String> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        for cert in found.certs {
            // A certificate the store cannot read is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(String::new, |e| format!(" ({e})"));
            return Err(format!(
                "no trusted root certificates found for https{why}; install the system's CA certificates or set SSL_CERT_FILE"
            ));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            name,
        })
    }
}

/// One connection to the server, shared by the calls of one client in turn.
pub(crate) struct Conn {
    /// The server, as the user named it (for errors).
    server: String,
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header.
    host: String,
    send: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    /// For an `https://` server.
    tls: Option<Tls>,
}

impl Conn {
    pub(crate) fn new(server: String, address: String, host: String, tls: Option<Tls>) -> Conn {
        Conn {
            server,
            address,
            host,
            send: tokio::sync::Mutex::new(None),
            tls,
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// A new connection, its driver running on a task of its own.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let connect_error = |cause| ClientError::Connect {
            server: self.server.clone(),
            cause,
        };
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let Some(tls) = &self.tls else {
            return handshake(TokioIo::new(stream), connect_error).await;
        };
        let stream = tls
            .connector
            .connect(tls.name.clone(), stream)
            .await
            .map_err(connect_error)?;
        handshake(TokioIo::new(stream), connect_error).await
    }

    /// Sends `request` on the kept connection (a new one if there is none, or
    /// if the server closed it) and reads the whole answer.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut kept = self.send.lock().await;
        // A connection the server closed while idle is noticed here, before
        // anything is sent on it, so no request is ever sent twice.
        let usable = match kept.as_mut() {
            Some(send) => send.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *kept = Some(self.connect().await?);
        }
        let send = kept.as_mut().expect("connected above");
        let answer = send.send_request(request).await;
        let response = match answer {
            Ok(response) => response,
            Err(source) => {
                *kept = None;
                return Err(ClientError::Http {
                    what: what.to_owned(),
                    cause: source,
                });
            }
        };
        let status = response.status();
        match read_body(response.into_body(), what).await {
            Ok(bytes) => Ok((status, bytes)),
            Err(e) => {
                // The rest of that answer is still on the connection.
                *kept = None;
                Err(e)
            }
        }
    }

    /// Sends `request` on a new connection of its own and hands back the
    /// answer with its body unread, for a stream.
    pub(crate) async fn open_stream(
        &self,
        request: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut send = self.connect().await?;
        send.send_request(request)
            .await
            .map_err(|source| ClientError::Http {
                what: what.to_owned(),
                cause: source,
            })
    }
}

/// HTTP/1.1 over `io`, its driver on a task of its own.
async fn handshake<I>(
    io: I,
    connect_error: impl Fn(std::io::Error) -> ClientError,
) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| connect_error(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        // The connection ends when the server closes it or the client goes.
        let _ = connection.await;
    });
    Ok(send)
}

/// A whole answer body, up to [`ANSWER_BYTES_MAX`].
pub(crate) async fn read_body(body: Incoming, what: &str) -> Result<Bytes, ClientError> {
    match Limited::new(body, ANSWER_BYTES_MAX).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ClientError::TooLarge {
            what: what.to_owned(),
        }),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(source) => Err(ClientError::Http {
                what: what.to_owned(),
                cause: *source,
            }),
            Err(e) => Err(ClientError::Unexpected {
                what: what.to_owned(),
                status: 0,
                body: e.to_string(),
            }),
        },
    }
}
