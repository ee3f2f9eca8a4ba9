//! The client's HTTP/1.1 connection: opened on first use, kept between calls,
//! opened again when the server closed it while idle.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{ClientError, ANSWER_BYTES_MAX};

/// One connection to the server, shared by the calls of one client in turn.
pub(crate) struct Conn {
    /// The server, as the user named it (for errors).
    server: String,
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header.
    host: String,
    send: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Conn {
    pub(crate) fn new(server: String, address: String, host: String) -> Conn {
        Conn {
            server,
            address,
            host,
            send: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// A new connection, its driver running on a task of its own.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let connect_error = |source| ClientError::Connect {
            server: self.server.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the client goes.
            let _ = connection.await;
        });
        Ok(send)
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
                    source,
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
                source,
            })
    }
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
                source: *source,
            }),
            Err(e) => Err(ClientError::Unexpected {
                what: what.to_owned(),
                status: 0,
                body: e.to_string(),
            }),
        },
    }
}
