//! Cross-origin requests (CORS), off unless origins are configured: a page
//! served from another origin (a dashboard, a browser `EventSource`) may call
//! the API only from an origin listed, or from any with `*`.
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an
//! allowed origin is answered here with the methods the API has and the
//! headers the request asks for; other requests from it get
//! `Access-Control-Allow-Origin` (the origin itself, with `Vary: Origin`) and
//! may read `x-request-id`. Requests from other origins are served as if CORS
//! did not exist, so browsers keep their answers from the page.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Api;

/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_S: &str = "600";

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`); `*` allows any.
    origins: Vec<String>,
}

impl Cors {
    /// CORS for `origins`: each `*` or `scheme://host[:port]`. An empty list
    /// turns CORS off.
    pub fn new(origins: Vec<String>) -> Result<Cors, String> {
        for o in &origins {
            let valid = o == "*"
                || o.split_once("://").is_some_and(|(scheme, rest)| {
                    !scheme.is_empty()
                        && !rest.is_empty()
                        && !rest.contains('/')
                        && !rest.contains(char::is_whitespace)
                });
            if !valid {
                return Err(format!(
                    "cors origin {o:?} is not an origin: give * or scheme://host[:port], such as https://app.example.com"
                ));
            }
        }
        Ok(Cors { origins })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// The CORS part of the request middleware: answers preflights of allowed
/// origins and marks their answers; with CORS off (no origins) it costs one
/// check.
pub(crate) async fn around(
    api: &Api,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let origin = match api.inner.cors.origins.is_empty() {
        true => None,
        false => request
            .headers()
            .get(header::ORIGIN)
            .filter(|o| api.inner.cors.allows(o))
            .cloned(),
    };
    let Some(origin) = origin else {
        return next(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PATCH, DELETE"),
        );
        if let Some(asked) = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_S),
        );
        response
    } else {
        let mut response = next(request).await;
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id"),
        );
        response
    };
    mark(response.headers_mut(), origin);
    response
}

fn mark(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_when_configured() {
        let cors = Cors::new(vec!["https://app.example.com".into()]).unwrap();
        assert!(cors.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(!cors.allows(&HeaderValue::from_static("https://evil.example.com")));
        assert!(!Cors::default().allows(&HeaderValue::from_static("https://app.example.com")));
        let any = Cors::new(vec!["*".into()]).unwrap();
        assert!(any.allows(&HeaderValue::from_static("http://localhost:3000")));
        for bad in ["app.example.com", "https://a.com/path", "https://", ""] {
            assert!(Cors::new(vec![bad.into()]).is_err(), "{bad}");
        }
    }
}
