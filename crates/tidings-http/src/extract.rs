//! Path and query extractors that refuse what does not parse with the API's
//! JSON error, where axum's own would answer in plain text.

use crate::ApiError;

/// The parameters of a path (`{topic}`, `{group}`, ...).
pub(crate) struct PathJson<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for PathJson<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<PathJson<T>, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid_request(e.body_text()))?;
        Ok(PathJson(value))
    }
}

/// The query string of a request; one that does not parse (an unknown
/// parameter, a value of the wrong type) is refused.
pub(crate) struct QueryJson<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for QueryJson<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<QueryJson<T>, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::invalid_request(e.body_text()))?;
        Ok(QueryJson(value))
    }
}
