//! The HTTP listener: hyper's HTTP/1.1 connections serving the API's router,
//! with what a server reachable by untrusted clients needs and axum's `serve`
//! does not give — a bound on connections open at once (more are closed as
//! they come) and a deadline for every request head, from when the server
//! waits for it (so a slowloris client trickling header bytes, or one that
//! connects and sends nothing, is closed) — and the same graceful close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tidings_http::Limits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long accepting waits after it failed (out of file descriptors, for
/// one) before it tries again, so a failing accept does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Connections turned away at the limit, said at most every 10 s.
static TURNED_AWAY: tidings_telemetry::Occasional =
    tidings_telemetry::Occasional::new(Duration::from_secs(10));

/// Serves `router` on `listener` until `graceful` completes, then stops
/// accepting, lets every connection finish the request it is answering, and
/// returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<Arc<crate::tls::Certificates>>,
    graceful: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let closing = CancellationToken::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut graceful = std::pin::pin!(graceful);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed; trying again");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut graceful => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tidings_telemetry::http::connection_refused();
            if let Some(turned_away) = TURNED_AWAY.note() {
                tracing::warn!(
                    %peer,
                    turned_away,
                    connections_max = limits.connections_max,
                    "HTTP connections closed as they came: the server holds as many as it may"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for the permissions that name a host.
        let router = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let closing = closing.clone();
        let acceptor = tls.as_ref().map(|t| t.http());
        tidings_telemetry::http::connection_opened();
        connections.spawn(async move {
            let _slot = slot;
            let ended = match acceptor {
                None => {
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    serve_one(stream, service, limits, &closing).await
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let stream = match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTP connection closed: the TLS handshake failed");
                            tidings_telemetry::http::connection_closed(false);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "HTTP connection closed: no TLS handshake in time");
                            tidings_telemetry::http::connection_closed(true);
                            return;
                        }
                    };
                    // A client certificate is the login of every request
                    // on the connection that brings no other.
                    let router = match crate::tls::certified(stream.get_ref().1) {
                        Ok(None) => router,
                        Ok(Some(principal)) => {
                            tidings_telemetry::login("http", "certificate", true);
                            router.layer(axum::Extension(tidings_http::Certified(principal)))
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "HTTP connection closed");
                            tidings_telemetry::login("http", "certificate", false);
                            tidings_telemetry::http::connection_closed(false);
                            return;
                        }
                    };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    serve_one(stream, service, limits, &closing).await
                }
            };
            let timed_out = ended.as_ref().is_err_and(hyper::Error::is_timeout);
            tidings_telemetry::http::connection_closed(timed_out);
            match ended {
                Err(e) if timed_out => {
                    tracing::debug!(%peer, error = %e, "HTTP connection closed: no request head in time");
                }
                Err(e) => tracing::debug!(%peer, error = %e, "HTTP connection ended with an error"),
                Ok(()) => {}
            }
        });
    }
    closing.cancel();
    while connections.join_next().await.is_some() {}
}

/// Serves one connection (plaintext or after its TLS handshake) until it
/// ends, or closes it gracefully once `closing` is cancelled.
async fn serve_one<S, H>(
    stream: S,
    service: H,
    limits: Limits,
    closing: &CancellationToken,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: hyper::service::HttpService<hyper::body::Incoming>,
    H::ResBody: 'static,
    <H::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => ended,
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}
