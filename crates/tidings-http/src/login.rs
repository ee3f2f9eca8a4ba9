//! Who a request comes from. Once the server has users or tokens, every
//! request but `/healthz` (which probes make without credentials) logs in,
//! by one of:
//! - `Authorization: Bearer <token>` — an API token (`tidings users token
//!   add`), checked against its stored hash;
//! - `Authorization: Basic` — a user's name and password, checked against
//!   the same stored credential as a Kafka client's SASL login;
//! - a client certificate verified at the TLS handshake (`--tls-client-ca`),
//!   whose subject's common name is the user — taken when the request
//!   carries no `Authorization` of its own.
//!
//! A request that does not is answered 401 `unauthenticated` with
//! `WWW-Authenticate` naming both schemes, and nothing of it is done.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tidings_api::{ErrorCode, Operation};
use tidings_auth::{Gate, Principal};

use crate::error::ApiError;

/// What a 401 asks for: a password or a token.
const CHALLENGES: [&str; 2] = [
    "Basic realm=\"tidings\", charset=\"UTF-8\"",
    "Bearer realm=\"tidings\"",
];

/// The principal of the client certificate a connection's TLS handshake
/// verified, put on each of its requests by the listener.
#[derive(Clone, Debug)]
pub struct Certified(pub Principal);

/// What an `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Basic(String, String),
    Bearer(String),
}

/// The principal of a request to a route of `operation`, or the 401 that
/// answers it.
pub(crate) async fn principal(
    gate: Option<&Arc<Gate>>,
    operation: Option<Operation>,
    headers: &HeaderMap,
    certified: Option<&Certified>,
) -> Result<Principal, Response> {
    if operation == Some(Operation::Health) {
        return Ok(Principal::anonymous());
    }
    let certified = certified.map(|Certified(p)| p.clone());
    let gate = match gate {
        Some(gate) if gate.required() => gate,
        // Nothing to log in to but a certificate.
        _ => return Ok(certified.unwrap_or_else(Principal::anonymous)),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return certified.ok_or_else(|| {
            refused(
                "this server has users: log in with Authorization: Bearer (an API token) or Basic (a user's name and password)",
            )
        });
    };
    match credentials(value).map_err(refused)? {
        Credentials::Bearer(token) => match gate.token(&token) {
            Ok(principal) => {
                tidings_telemetry::login("http", "token", true);
                Ok(principal)
            }
            Err(refusal) => {
                tidings_telemetry::login("http", "token", false);
                tracing::warn!(reason = %refusal, "an HTTP client failed to log in with a token");
                Err(refused(&refusal.to_string()))
            }
        },
        Credentials::Basic(user, password) => {
            let gate = Arc::clone(gate);
            let who = user.clone();
            // A password not verified lately is hashed thousands of times.
            let checked = tokio::task::spawn_blocking(move || gate.password(&who, &password)).await;
            match checked {
                Ok(Ok(principal)) => {
                    tidings_telemetry::login("http", "basic", true);
                    Ok(principal)
                }
                _ => {
                    tidings_telemetry::login("http", "basic", false);
                    tracing::warn!(user = %user, "an HTTP client failed to log in");
                    Err(refused("wrong user name or password"))
                }
            }
        }
    }
}

/// The credentials of `Authorization: Basic <base64(user:password)>` or
/// `Authorization: Bearer <token>`.
fn credentials(value: &HeaderValue) -> Result<Credentials, &'static str> {
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII")?;
    let (scheme, credentials) = text
        .split_once(' ')
        .ok_or("the Authorization header names no scheme")?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(credentials.trim().to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("only Authorization: Bearer (an API token) and Basic (a user's name and password) are taken");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials are not user:password")?;
    Ok(Credentials::Basic(user.to_owned(), password.to_owned()))
}

/// 401 `unauthenticated` with the challenges.
fn refused(message: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
    for challenge in CHALLENGES {
        response.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_read_and_bad_ones_are_named() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        // RFC 7617's example.
        assert_eq!(
            credentials(&header("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")).unwrap(),
            Credentials::Basic("Aladdin".to_owned(), "open sesame".to_owned())
        );
        assert_eq!(
            credentials(&header("bearer tdg_x")).unwrap(),
            Credentials::Bearer("tdg_x".to_owned())
        );
        // The password may hold colons; the scheme is case-insensitive.
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        assert_eq!(
            credentials(&header(&format!("bAsIc {encoded}"))).unwrap(),
            Credentials::Basic("u".to_owned(), "p:q".to_owned())
        );
        for (bad, said) in [
            ("Digest abc", "only Authorization: Bearer"),
            ("Basic", "names no scheme"),
            ("Basic !!!", "not base64"),
            ("Basic dXNlcg==", "not user:password"),
        ] {
            assert!(
                credentials(&header(bad)).unwrap_err().contains(said),
                "{bad}"
            );
        }
    }
}
