//! What ends a waiting request early: the server starting to drain (the
//! shutdown token) and, for an event stream, its client going away. Long-polls
//! and streams hand [`Stop::wait`] to the broker's waits, which return at once
//! when it resolves, so a drain is never held up by a wait and nothing polls in
//! slices.

use tokio_util::sync::CancellationToken;

/// The end of one waiting request.
#[derive(Clone)]
pub(crate) struct Stop {
    shutdown: CancellationToken,
    /// The client's side of a stream: closed when it goes away.
    client: Option<tokio::sync::mpsc::Sender<crate::sse::Message>>,
}

impl Stop {
    /// A long-poll's: the server draining.
    pub(crate) fn server(api: &crate::Api) -> Stop {
        Stop {
            shutdown: api.shutdown().clone(),
            client: None,
        }
    }

    /// A stream's: the server draining, or the client gone.
    pub(crate) fn stream(
        api: &crate::Api,
        client: tokio::sync::mpsc::Sender<crate::sse::Message>,
    ) -> Stop {
        Stop {
            shutdown: api.shutdown().clone(),
            client: Some(client),
        }
    }

    /// Whether the request should end now.
    pub(crate) fn stopped(&self) -> bool {
        self.shutdown.is_cancelled() || self.client.as_ref().is_some_and(|c| c.is_closed())
    }

    /// Resolves when the request should end.
    pub(crate) async fn wait(&self) {
        match &self.client {
            None => self.shutdown.cancelled().await,
            Some(client) => tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = client.closed() => {}
            },
        }
    }
}
