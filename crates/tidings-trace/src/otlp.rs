//! Spans exported over OTLP/HTTP (protobuf) to an OpenTelemetry collector or
//! any OTLP endpoint: what `tidings serve --otlp-endpoint` turns on.
//!
//! The exporter runs on the process's tokio runtime (batches of spans sent
//! in the background, never on a request's path); spans are sampled by the
//! parent's decision when there is one, else by the ratio; the resource
//! names the service.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{span_processor_with_async_runtime, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutting down waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpOptions {
    /// The OTLP/HTTP endpoint: `http://host:4318` (spans go to its
    /// `/v1/traces`), or the traces URL itself.
    pub endpoint: String,
    /// Headers sent with every export (an API key, for instance).
    pub headers: Vec<(String, String)>,
    /// The share of new traces recorded, 0 to 1; a trace continued from a
    /// caller follows the caller's decision.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// The traces URL of an endpoint as given.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let trimmed = endpoint.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or_else(|| {
            if trimmed.starts_with("https://") {
                format!("OTLP endpoint {endpoint}: https is not supported here; export to a collector on this machine over http:// and let it forward over TLS")
            } else {
                format!("OTLP endpoint {endpoint}: expected http://host:port")
            }
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("OTLP endpoint {endpoint}: no host"));
    }
    if trimmed.ends_with("/v1/traces") {
        Ok(trimmed.to_owned())
    } else {
        Ok(format!("{trimmed}/v1/traces"))
    }
}

/// The running export.
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
}

impl Pipeline {
    /// Starts exporting. Call it within the tokio runtime that is to carry
    /// the exports.
    pub fn start(options: &OtlpOptions) -> Result<Pipeline, String> {
        if !(0.0..=1.0).contains(&options.sample_ratio) {
            return Err(format!(
                "trace sample ratio {}: expected 0 to 1",
                options.sample_ratio
            ));
        }
        let headers: HashMap<String, String> = options.headers.iter().cloned().collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(&options.endpoint)?)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(headers)
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
        let processor = span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                options.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(options.service_name.clone())
                    .build(),
            )
            .build();
        crate::EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Pipeline { provider })
    }

    /// The layer that turns the process's spans into exported ones.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("tidings"))
            .with_tracked_inactivity(false)
    }

    /// Sends the spans not exported yet, waiting up to five seconds. Call it
    /// off the runtime's worker threads (it blocks).
    pub fn shutdown(&self) -> Result<(), String> {
        self.provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(|e| format!("OTLP export did not finish: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn endpoints_name_their_traces_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        for (bad, said) in [
            ("https://collector:4318", "https is not supported"),
            ("collector:4318", "expected http://host:port"),
            ("http://", "expected http://host:port"),
            ("http:///v1/traces", "no host"),
        ] {
            let e = traces_url(bad).unwrap_err();
            assert!(e.contains(said), "{bad}: {e}");
        }
    }
}
