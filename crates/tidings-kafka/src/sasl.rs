//! Logging in: SaslHandshake chooses a mechanism, SaslAuthenticate (v0–2)
//! carries its messages in Kafka frames — PLAIN in one step, SCRAM in two.
//! After a SaslHandshake v0 (clients from before Kafka 1.0) the messages
//! come as bare size-prefixed tokens instead, answered the same way. Once the server has users, a connection that has not logged in is
//! answered ApiVersions and these two only; anything else closes it, as a
//! Kafka broker's SASL listener does.
//!
//! A failed login is answered SASL_AUTHENTICATION_FAILED with the reason and
//! the connection closed after the answer. The reason never says whether
//! the user exists.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_auth::{Gate, Login, Principal, ScramError, ServerFirst};

/// The largest frame read from a connection that has not logged in
/// (Kafka's `sasl.server.max.receive.size`): ApiVersions and SASL messages
/// are small, and nobody without credentials gets to make the server hold
/// a full-size frame.
pub(crate) const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 * 1024;

/// Where one connection is in logging in.
pub(crate) struct Session {
    /// Who its requests come from: anonymous until a login succeeds.
    pub(crate) principal: Principal,
    state: State,
    /// Set when the answer being sent is the connection's last.
    pub(crate) closing: bool,
    /// The next frames are bare SASL tokens (after a SaslHandshake v0).
    raw: bool,
}

enum State {
    /// The server has no users: nothing to log in to.
    Open,
    /// A login is required and no mechanism chosen yet.
    Start,
    /// Logged in by a client certificate; a SASL login may still follow
    /// and then names the principal (SASL_SSL with a certificate, as Kafka
    /// takes it).
    Certified,
    /// A mechanism chosen by SaslHandshake.
    Chosen(Login),
    /// A SCRAM exchange past its first step.
    Scram(Login, Box<ServerFirst>),
    /// Logged in.
    Done,
}

impl Session {
    pub(crate) fn new(gate: Option<&Gate>, certified: Option<Principal>) -> Session {
        let required = gate.is_some_and(Gate::required);
        let (principal, state) = match certified {
            Some(principal) => (principal, State::Certified),
            None if required => (Principal::anonymous(), State::Start),
            None => (Principal::anonymous(), State::Open),
        };
        Session {
            principal,
            state,
            closing: false,
            raw: false,
        }
    }

    /// A connection opened while the server had nobody to log in as must
    /// log in once it has (users added through AlterUserScramCredentials):
    /// its next request other than ApiVersions and SASL closes it.
    pub(crate) fn follow(&mut self, gate: Option<&Gate>) {
        if matches!(self.state, State::Open) && gate.is_some_and(Gate::required) {
            self.state = State::Start;
        }
    }

    /// Whether the next frame is a bare SASL token rather than a request.
    pub(crate) fn expects_token(&self) -> bool {
        self.raw
    }

    /// Answers a bare token: the reply token, or nothing when the login
    /// failed (the connection then closes, as a broker does, with no way to
    /// say why in this framing).
    pub(crate) async fn token(
        &mut self,
        gate: Option<&Arc<Gate>>,
        token: Bytes,
        peer: SocketAddr,
    ) -> Option<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token);
        let answer = self.authenticate(gate, request, peer).await;
        if matches!(self.state, State::Done) {
            self.raw = false;
        }
        (answer.error_code == 0).then_some(answer.auth_bytes)
    }

    /// The largest frame this connection may send now: `configured` once
    /// logged in (or on a server without users), less before.
    pub(crate) fn frame_bytes_max(&self, configured: usize) -> usize {
        if matches!(self.state, State::Open | State::Certified | State::Done) {
            configured
        } else {
            configured.min(UNAUTHENTICATED_FRAME_BYTES_MAX)
        }
    }

    /// Whether a request of `api` may be answered now.
    pub(crate) fn admits(&self, api: ApiKey) -> bool {
        matches!(self.state, State::Open | State::Certified | State::Done)
            || matches!(
                api,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
    }

    /// Answers SaslHandshake: the mechanism is taken when offered.
    pub(crate) fn handshake(
        &mut self,
        request: &SaslHandshakeRequest,
        version: i16,
        peer: SocketAddr,
    ) -> SaslHandshakeResponse {
        let offered = Login::ALL
            .iter()
            .map(|l| StrBytes::from_static_str(l.name()))
            .collect();
        let answer = SaslHandshakeResponse::default().with_mechanisms(offered);
        match self.state {
            State::Start | State::Certified => {}
            State::Open => {
                tracing::warn!(%peer, "a client asked to log in, but this server has no users (add one with `tidings users add`)");
                self.closing = true;
                return answer.with_error_code(ResponseError::IllegalSaslState.code());
            }
            _ => {
                tracing::warn!(%peer, "a second SaslHandshake on one connection");
                self.closing = true;
                return answer.with_error_code(ResponseError::IllegalSaslState.code());
            }
        }
        match Login::from_name(request.mechanism.as_str()) {
            Some(login) => {
                self.state = State::Chosen(login);
                self.raw = version == 0;
                answer
            }
            None => {
                tracing::warn!(%peer, mechanism = %request.mechanism.as_str(), "a client asked for a SASL mechanism this server does not offer");
                self.closing = true;
                answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
            }
        }
    }

    /// Answers one SaslAuthenticate step.
    pub(crate) async fn authenticate(
        &mut self,
        gate: Option<&Arc<Gate>>,
        request: SaslAuthenticateRequest,
        peer: SocketAddr,
    ) -> SaslAuthenticateResponse {
        let state = std::mem::replace(&mut self.state, State::Start);
        let (Some(gate), State::Chosen(_) | State::Scram(..)) = (gate, &state) else {
            self.state = state;
            self.closing = true;
            tracing::warn!(%peer, "SaslAuthenticate without a SaslHandshake choosing a mechanism first");
            return SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslHandshake chooses a mechanism before SaslAuthenticate",
                )));
        };
        let login = match &state {
            State::Chosen(login) | State::Scram(login, _) => *login,
            _ => unreachable!("checked above"),
        };
        let mechanism = login.name();
        let bytes = request.auth_bytes;
        let step = match state {
            State::Chosen(Login::Plain) => {
                let gate = Arc::clone(gate);
                // A password is hashed thousands of times: off the workers.
                let checked = tokio::task::spawn_blocking(move || gate.plain(&bytes)).await;
                match checked {
                    Ok(Ok(principal)) => Step::Done(principal, Bytes::new()),
                    Ok(Err(e)) => Step::Failed(e),
                    Err(_) => Step::Failed(ScramError::Failed),
                }
            }
            State::Chosen(Login::Scram(mechanism)) => match gate.scram(mechanism, &bytes) {
                Ok((first, message)) => {
                    self.state = State::Scram(login, Box::new(first));
                    return SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::from(message.into_bytes()));
                }
                Err(e) => Step::Failed(e),
            },
            State::Scram(_, first) => match first.finish(&bytes) {
                Ok(done) => Step::Done(
                    Principal::user(&done.user),
                    Bytes::from(done.server_final.into_bytes()),
                ),
                Err(e) => Step::Failed(e),
            },
            State::Open | State::Start | State::Certified | State::Done => {
                unreachable!("checked above")
            }
        };
        match step {
            Step::Done(principal, last) => {
                tidings_telemetry::login("kafka", mechanism, true);
                tracing::debug!(%peer, %principal, mechanism, "Kafka client logged in");
                self.principal = principal;
                self.state = State::Done;
                SaslAuthenticateResponse::default().with_auth_bytes(last)
            }
            Step::Failed(e) => {
                tidings_telemetry::login("kafka", mechanism, false);
                tracing::warn!(%peer, mechanism, error = %e, "a Kafka client failed to log in");
                self.closing = true;
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Authentication failed with {mechanism}: {e}"
                    ))))
            }
        }
    }
}

enum Step {
    Done(Principal, Bytes),
    Failed(ScramError),
}
