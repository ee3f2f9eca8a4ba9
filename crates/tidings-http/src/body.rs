//! Request bodies read under the size limit, and JSON parsed with messages that
//! say where it went wrong.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tidings_api::ErrorCode;

use crate::ApiError;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

/// The whole body, refused with 413 from its declared length or as soon as it
/// passes `limit`.
pub(crate) async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The limit is the only error a complete, well-framed body can meet.
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large(limit)
        } else {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

/// The media type without parameters, lower-cased.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads the body under `limit` and parses it as JSON into `T`.
pub(crate) async fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read(headers, body, limit).await?;
    json(headers, &bytes)
}

/// [`parse`], with an empty body standing for `T::default()`.
pub(crate) async fn parse_or_default<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read(headers, body, limit).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    json(headers, &bytes)
}

/// A JSON Merge Patch (RFC 7396) body into `T`: `application/json` or
/// `application/merge-patch+json`, absent members left as they are, `null`
/// ones removed.
pub(crate) async fn parse_patch<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read(headers, body, limit).await?;
    decode(
        headers,
        &bytes,
        &["application/json", "application/merge-patch+json"],
    )
}

/// Parses a JSON request body into `T`, requiring `application/json`.
fn json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    decode(headers, bytes, &["application/json"])
}

/// Parses a JSON body of one of the media types `accepted`.
fn decode<T: DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &[u8],
    accepted: &[&str],
) -> Result<T, ApiError> {
    let media = media_type(headers);
    if !media.as_deref().is_some_and(|m| accepted.contains(&m)) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected Content-Type {}, got {}",
                accepted.join(" or "),
                media.as_deref().unwrap_or("none")
            ),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("invalid JSON body: {e}")))
}
