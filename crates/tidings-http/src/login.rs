//! Who a request comes from. Once the server has users, every request but
//! `/healthz` (which probes make without credentials) logs in with
//! `Authorization: Basic` — a user's name and password, checked against the
//! same stored credential as a Kafka client's SASL login. A request that
//! does not is answered 401 `unauthenticated` with `WWW-Authenticate`, and
//! nothing of it is done.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tidings_api::{ErrorCode, Operation};
use tidings_auth::{Gate, Principal};

use crate::error::ApiError;

/// What a 401 asks for.
const CHALLENGE: &str = "Basic realm=\"tidings\", charset=\"UTF-8\"";

/// The principal of a request to a route of `operation`, or the 401 that
/// answers it.
pub(crate) async fn principal(
    gate: Option<&Arc<Gate>>,
    operation: Option<Operation>,
    headers: &HeaderMap,
) -> Result<Principal, Response> {
    let gate = match gate {
        Some(gate) if gate.required() && operation != Some(Operation::Health) => gate,
        _ => return Ok(Principal::anonymous()),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(refused(
            "this server has users: log in with Authorization: Basic (a user's name and password)",
        ));
    };
    let (user, password) = basic(value).map_err(refused)?;
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

/// The user and password of `Authorization: Basic <base64(user:password)>`.
fn basic(value: &HeaderValue) -> Result<(String, String), &'static str> {
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII")?;
    let (scheme, credentials) = text
        .split_once(' ')
        .ok_or("the Authorization header names no scheme")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("only Authorization: Basic is taken (a user's name and password)");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials are not user:password")?;
    Ok((user.to_owned(), password.to_owned()))
}

/// 401 `unauthenticated` with the challenge.
fn refused(message: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
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
            basic(&header("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")).unwrap(),
            ("Aladdin".to_owned(), "open sesame".to_owned())
        );
        // The password may hold colons; the scheme is case-insensitive.
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        assert_eq!(
            basic(&header(&format!("bAsIc {encoded}"))).unwrap(),
            ("u".to_owned(), "p:q".to_owned())
        );
        for (bad, said) in [
            ("Bearer abc", "only Authorization: Basic"),
            ("Basic", "names no scheme"),
            ("Basic !!!", "not base64"),
            ("Basic dXNlcg==", "not user:password"),
        ] {
            assert!(basic(&header(bad)).unwrap_err().contains(said), "{bad}");
        }
    }
}
