//! Configuration of `tidings serve`: built-in defaults, then a TOML file, then
//! `TIDINGS_*` environment variables, then flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tidings_http::Limits;
use tidings_telemetry::LogFormat;

/// Everything `tidings serve` runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where topics and group state are stored.
    pub data_dir: PathBuf,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the Kafka listener listens.
    pub kafka_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// After SIGINT or SIGTERM, how long requests under way and leases held by
    /// consumers get before the server closes anyway.
    pub shutdown_timeout: Duration,
    /// Request limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tidings-data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            kafka_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

/// Flags of `tidings serve`; each also reads a `TIDINGS_*` environment variable.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its settings sit under the environment and flags.
    #[arg(long, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where topics and group state are stored [default: ./tidings-data].
    #[arg(long, env = "TIDINGS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8080]. Port 0 picks a free
    /// port; the log line `listening` names it.
    #[arg(long, env = "TIDINGS_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the Kafka listener [default: 127.0.0.1:9092]. Port 0 picks a
    /// free port; the log line `listening` names it.
    #[arg(long, env = "TIDINGS_KAFKA_ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// Log format [default: text].
    #[arg(long, env = "TIDINGS_LOG_FORMAT", value_parser = log_format_parser())]
    pub log_format: Option<LogFormat>,
    /// Milliseconds a shutdown waits for requests and leases [default: 10000].
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Largest request body in bytes [default: 4194304].
    #[arg(long, env = "TIDINGS_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Most events in one batched publish [default: 1000].
    #[arg(long, env = "TIDINGS_BATCH_EVENTS_MAX")]
    pub batch_events_max: Option<usize>,
    /// Most events one read answers with [default: 1000].
    #[arg(long, env = "TIDINGS_READ_EVENTS_MAX")]
    pub read_events_max: Option<usize>,
    /// Longest long-poll wait in milliseconds [default: 30000].
    #[arg(long, env = "TIDINGS_LONG_POLL_WAIT_MAX_MS")]
    pub long_poll_wait_max_ms: Option<u64>,
    /// Most Server-Sent Events streams open at once [default: 256].
    #[arg(long, env = "TIDINGS_SSE_CONNECTIONS_MAX")]
    pub sse_connections_max: Option<usize>,
}

/// `text` or `json`, listed as such in the help.
fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(LogFormat::NAMES)
        .map(|name| name.parse().expect("one of LogFormat::NAMES"))
}

/// The configuration file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    kafka_addr: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    shutdown_timeout_ms: Option<u64>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    body_bytes_max: Option<usize>,
    batch_events_max: Option<usize>,
    read_events_max: Option<usize>,
    long_poll_wait_max_ms: Option<u64>,
    sse_connections_max: Option<usize>,
}

fn read_file(path: &Path) -> Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

impl Config {
    /// Defaults, overridden by the file `args` names (if any), then by `args`
    /// (flags, or their environment variables).
    pub fn load(args: &ServeArgs) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let mut c = Config::default();
        let l = &mut c.limits;
        let pick = |flag: Option<u64>, file: Option<u64>| flag.or(file).map(Duration::from_millis);
        macro_rules! set {
            ($target:expr, $flag:expr, $file:expr) => {
                if let Some(v) = $flag.clone().or($file.clone()) {
                    $target = v;
                }
            };
        }
        set!(
            l.body_bytes_max,
            args.body_bytes_max,
            file.limits.body_bytes_max
        );
        set!(
            l.batch_events_max,
            args.batch_events_max,
            file.limits.batch_events_max
        );
        set!(
            l.read_events_max,
            args.read_events_max,
            file.limits.read_events_max
        );
        set!(
            l.sse_connections_max,
            args.sse_connections_max,
            file.limits.sse_connections_max
        );
        if let Some(d) = pick(
            args.long_poll_wait_max_ms,
            file.limits.long_poll_wait_max_ms,
        ) {
            l.long_poll_wait_max = d;
        }
        set!(c.data_dir, args.data_dir, file.data_dir);
        set!(c.http_addr, args.http_addr, file.http_addr);
        set!(c.kafka_addr, args.kafka_addr, file.kafka_addr);
        set!(c.log_format, args.log_format, file.log_format);
        if let Some(d) = pick(args.shutdown_timeout_ms, file.shutdown_timeout_ms) {
            c.shutdown_timeout = d;
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let l = &self.limits;
        let positive = [
            ("body_bytes_max", l.body_bytes_max),
            ("batch_events_max", l.batch_events_max),
            ("read_events_max", l.read_events_max),
            ("sse_connections_max", l.sse_connections_max),
        ];
        for (name, value) in positive {
            anyhow::ensure!(value > 0, "{name} must be at least 1");
        }
        anyhow::ensure!(
            !l.long_poll_wait_max.is_zero(),
            "long_poll_wait_max_ms must be at least 1"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidings.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9000\"\n[limits]\nbatch_events_max = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            http_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http_addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.limits.batch_events_max, 7);
        assert_eq!(c.limits.body_bytes_max, Limits::default().body_bytes_max);
        assert_eq!(
            Config::load(&ServeArgs::default()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn a_bad_file_is_refused_with_its_name_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "data_dri = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(
            err.contains("bad.toml") && err.contains("data_dri"),
            "{err}"
        );
        let zero = ServeArgs {
            batch_events_max: Some(0),
            ..ServeArgs::default()
        };
        let err = Config::load(&zero).unwrap_err().to_string();
        assert!(err.contains("batch_events_max"), "{err}");
    }
}
