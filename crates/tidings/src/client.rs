//! The HTTP client the commands share: JSON in, JSON out, and the server's
//! JSON errors turned into plain sentences.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// A client of one `tidings serve`.
pub(crate) struct Client {
    base: String,
    agent: ureq::Agent,
}

/// Longest any single request may take; long-polls ask for less.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

impl Client {
    pub(crate) fn new(server: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        Client {
            base: server.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the JSON answer (`Null` for 204).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Value> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let request = request.body(body).context("building the request")?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if status >= 400 {
            return Err(server_error(status, &text));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("the answer to {method} {path} is not JSON"))
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None, Vec::new())
    }

    pub(crate) fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        self.call(
            method,
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    }

    /// Opens a Server-Sent Events stream and hands each message's data, as
    /// JSON, to `each` until it returns false or the stream ends.
    pub(crate) fn stream(
        &self,
        method: &str,
        path: &str,
        mut each: impl FnMut(Value) -> Result<bool>,
    ) -> Result<()> {
        // A stream has no end: only the connection's own timeouts apply.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("accept", "text/event-stream")
            .body(Vec::new())
            .context("building the request")?;
        let response = agent
            .run(request)
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.into_body().read_to_string().unwrap_or_default();
            return Err(server_error(status, &text));
        }
        let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        let mut error_event = false;
        for line in BufReader::new(reader).lines() {
            let line = line.context("reading the event stream")?;
            if line == "event: error" || line == "event:error" {
                error_event = true;
                continue;
            }
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let json: Value =
                serde_json::from_str(data.trim()).context("an event stream message is not JSON")?;
            if error_event {
                return Err(server_error(0, &json.to_string()));
            }
            if !each(json)? {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The server's `{"error_code", "message"}` as an error a person can act on.
fn server_error(status: u16, text: &str) -> anyhow::Error {
    match serde_json::from_str::<Value>(text) {
        Ok(json) if json["message"].is_string() => anyhow!(
            "{} ({}{})",
            json["message"].as_str().unwrap_or_default(),
            json["error_code"].as_str().unwrap_or("error"),
            if status > 0 {
                format!(", HTTP {status}")
            } else {
                String::new()
            }
        ),
        _ => anyhow!("the server answered HTTP {status}: {}", text.trim()),
    }
}
