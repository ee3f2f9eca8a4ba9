//! The log subscriber: `RUST_LOG` filters (default `info`), lines go to standard
//! error, readable or one JSON object per line.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Every format, by the name flags and files use.
    pub const NAMES: [&'static str; 2] = ["text", "json"];
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A name that is not one of [`LogFormat::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormatParseError(String);

impl fmt::Display for LogFormatParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log format {:?} is not 'text' or 'json'", self.0)
    }
}

impl std::error::Error for LogFormatParseError {}

impl FromStr for LogFormat {
    type Err = LogFormatParseError;

    fn from_str(s: &str) -> Result<LogFormat, LogFormatParseError> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(LogFormatParseError(other.to_owned())),
        }
    }
}

/// Whether log lines are colored: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
fn colors(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the process's log subscriber. A second install (tests that run the
/// server twice in one process) keeps the first.
pub fn init_logging(format: LogFormat) {
    init_logging_and(format, None::<tracing_subscriber::layer::Identity>);
}

/// [`init_logging`] with `spans` beside the log lines: a layer (the OTLP
/// export's) that sees the spans of Tidings' crates at `info` and above
/// whatever `RUST_LOG` lets through to the log.
pub fn init_logging_and<L>(format: LogFormat, spans: Option<L>)
where
    L: Layer<Registry> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(colors(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => Box::new(lines.with_filter(filter)),
        LogFormat::Json => Box::new(lines.json().flatten_event(true).with_filter(filter)),
    };
    let mut layers = vec![lines];
    if let Some(spans) = spans {
        let tidings = Targets::new().with_target("tidings", tracing::Level::INFO);
        layers.push(Box::new(spans.with_filter(tidings)));
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

#[cfg(test)]
mod tests {
    use super::colors;

    #[test]
    fn no_color_turns_colors_off_on_a_terminal() {
        assert!(colors(true, None));
        assert!(colors(true, Some("".into())));
        assert!(!colors(true, Some("1".into())));
        assert!(!colors(false, None));
    }
}
