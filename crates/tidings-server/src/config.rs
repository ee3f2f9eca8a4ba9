//! Configuration of `tidings serve`, declared once: every setting is a field of
//! [`Config`] (or of a listener's own settings, flattened into it), which is at
//! the same time its flag, its `TIDINGS_*` environment variable and its key in
//! the TOML configuration file. Layers, each overriding the one before:
//! built-in defaults < the file < the environment < flags.
//!
//! clap reads flags, environment and defaults, and says where each value came
//! from; a value the file sets wins over a default and nothing else. The file is
//! read against the same struct, so an unknown key or a value of the wrong type
//! is refused with the file's name and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};
use tidings_http::{Limits, UiSettings};
use tidings_kafka::KafkaConfig;
use tidings_telemetry::LogFormat;

/// Connections the server opens to the sagas' database at most: reading
/// instances for operators needs few.
const SAGAS_CONNECTIONS_MAX: usize = 4;

/// Everything `tidings serve` runs with.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where topics and group state are stored.
    #[arg(long, env = "TIDINGS_DATA_DIR", default_value_os_t = Config::default().data_dir)]
    pub data_dir: PathBuf,
    /// Address of the HTTP API, host:port (an IP address or a name such as
    /// localhost). Port 0 picks a free port; the log line `listening` names
    /// it.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "TIDINGS_HTTP_ADDR",
        default_value_t = Config::default().http_addr
    )]
    pub http_addr: ListenAddr,
    /// Address of the Kafka listener, host:port. Port 0 picks a free port;
    /// the log line `listening` names it.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "TIDINGS_KAFKA_ADDR",
        default_value_t = Config::default().kafka_addr
    )]
    pub kafka_addr: ListenAddr,
    /// Listen on addresses beyond this machine without authentication. Off
    /// by default, and then such an address is refused at start: anyone who
    /// reaches the port could publish, read and delete.
    #[arg(
        long,
        env = "TIDINGS_INSECURE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The TLS certificate chain (PEM) of both listeners; with --tls-key,
    /// HTTP is served as HTTPS and Kafka clients connect with SSL or
    /// SASL_SSL. Reloaded at SIGHUP.
    #[arg(long, value_name = "FILE", env = "TIDINGS_TLS_CERT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", env = "TIDINGS_TLS_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) of client certificates (mutual TLS): a client
    /// whose certificate chains to one logs in as its subject's common name
    /// (`User:<CN>`), on both listeners. Reloaded at SIGHUP.
    #[arg(long, value_name = "FILE", env = "TIDINGS_TLS_CLIENT_CA")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `required` refuses a TLS handshake without a
    /// client certificate; `requested` lets such a client log in by
    /// password or token instead.
    #[arg(
        long,
        value_name = "required|requested",
        env = "TIDINGS_TLS_CLIENT_AUTH",
        default_value_t = Config::default().tls_client_auth
    )]
    #[serde(default)]
    pub tls_client_auth: crate::tls::ClientAuth,
    /// Users allowed everything whatever the permissions say (Kafka's
    /// `super.users`), by name; they log in like any user (`tidings users
    /// add`).
    #[arg(
        long = "super-user",
        value_name = "USER",
        env = "TIDINGS_SUPER_USERS",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub super_users: Vec<String>,
    /// Origins whose pages may call the HTTP API from a browser (CORS):
    /// scheme://host[:port], or * for any. None by default.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "TIDINGS_CORS_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// The PostgreSQL database of the application's sagas (the toolkit's
    /// `tidings::saga`), postgres://... or key=value: `GET /v1/sagas/...`
    /// reads their instances from it. None by default.
    #[arg(long, value_name = "URL", env = "TIDINGS_SAGAS_DATABASE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sagas_database: Option<String>,
    /// Log line format.
    #[arg(
        long,
        env = "TIDINGS_LOG_FORMAT",
        default_value_t = Config::default().log_format,
        value_parser = log_format_parser()
    )]
    pub log_format: LogFormat,
    /// After SIGINT or SIGTERM, how long (in milliseconds) requests under way
    /// and leases held by consumers get before the server closes anyway.
    #[arg(
        long,
        env = "TIDINGS_SHUTDOWN_TIMEOUT_MS",
        default_value_t = Config::default().shutdown_timeout_ms
    )]
    pub shutdown_timeout_ms: u64,
    /// Most partitions over all topics, dead-letter topics included (each
    /// partition has a writer thread); a topic that would pass it is refused.
    #[arg(
        long,
        env = "TIDINGS_PARTITIONS_TOTAL_MAX",
        default_value_t = Config::default().partitions_total_max
    )]
    pub partitions_total_max: u32,
    /// Bounds on HTTP requests (the file's `[limits]`).
    #[command(flatten)]
    pub limits: Limits,
    /// The Kafka listener (the file's `[kafka]`).
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// The web dashboard (the file's `[ui]`).
    #[command(flatten)]
    #[serde(default)]
    pub ui: UiSettings,
    /// Spans exported over OTLP (the file's `[tracing]`).
    #[command(flatten)]
    #[serde(default)]
    pub tracing: Tracing,
}

/// Where spans go: settings of `tidings serve`, each a flag, a `TIDINGS_*`
/// environment variable and a key of the configuration file's `[tracing]`.
/// Off unless an endpoint is given; exporting needs a build with the
/// `otlp` feature.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP endpoint spans are exported to: http://host:4318 (an
    /// OpenTelemetry Collector, for one), or its /v1/traces URL. Off unless
    /// set.
    #[arg(
        id = "tracing.otlp_endpoint",
        long = "otlp-endpoint",
        value_name = "URL",
        env = "TIDINGS_OTLP_ENDPOINT"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// A header sent with every export, NAME=VALUE (an API key, for one).
    #[arg(
        id = "tracing.otlp_headers",
        long = "otlp-header",
        value_name = "NAME=VALUE",
        env = "TIDINGS_OTLP_HEADERS",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub otlp_headers: Vec<String>,
    /// Share of new traces recorded, 0 to 1; a trace continued from a
    /// caller's `traceparent` follows the caller's sampling decision.
    #[arg(
        id = "tracing.sample_ratio",
        long = "trace-sample-ratio",
        value_name = "RATIO",
        env = "TIDINGS_TRACE_SAMPLE_RATIO",
        default_value_t = SampleRatio::default()
    )]
    #[serde(default)]
    pub sample_ratio: SampleRatio,
}

impl Tracing {
    /// The export these settings ask for: `None` when off.
    pub fn export(&self) -> Result<Option<Export>> {
        let Some(endpoint) = &self.otlp_endpoint else {
            anyhow::ensure!(
                self.otlp_headers.is_empty(),
                "otlp_headers are set without an otlp_endpoint to send them to"
            );
            return Ok(None);
        };
        let headers = self
            .otlp_headers
            .iter()
            .map(|h| match h.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    Ok((name.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(anyhow::anyhow!("otlp header {h:?}: expected NAME=VALUE")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Export {
            endpoint: endpoint.clone(),
            headers,
            sample_ratio: self.sample_ratio.0,
        }))
    }
}

/// What to export spans to, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The OTLP/HTTP endpoint.
    pub endpoint: String,
    /// Headers of every export.
    pub headers: Vec<(String, String)>,
    /// Share of new traces recorded.
    pub sample_ratio: f64,
}

/// A share from 0 to 1 (1 unless said).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SampleRatio(f64);

impl Default for SampleRatio {
    fn default() -> Self {
        SampleRatio(1.0)
    }
}

// A ratio is never NaN (refused when read), so equality is total.
impl Eq for SampleRatio {}

impl TryFrom<f64> for SampleRatio {
    type Error = String;
    fn try_from(ratio: f64) -> Result<SampleRatio, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(SampleRatio(ratio))
        } else {
            Err(format!("trace sample ratio {ratio}: expected 0 to 1"))
        }
    }
}

impl From<SampleRatio> for f64 {
    fn from(ratio: SampleRatio) -> f64 {
        ratio.0
    }
}

impl std::str::FromStr for SampleRatio {
    type Err = String;
    fn from_str(text: &str) -> Result<SampleRatio, String> {
        let ratio: f64 = text
            .parse()
            .map_err(|_| format!("trace sample ratio {text:?}: expected a number from 0 to 1"))?;
        ratio.try_into()
    }
}

impl std::fmt::Display for SampleRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tidings-data"),
            http_addr: ListenAddr("127.0.0.1:8080".into()),
            kafka_addr: ListenAddr("127.0.0.1:9092".into()),
            insecure: false,
            super_users: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: crate::tls::ClientAuth::Required,
            cors_origins: Vec::new(),
            sagas_database: None,
            log_format: LogFormat::Text,
            shutdown_timeout_ms: 10_000,
            partitions_total_max: tidings_broker::PARTITIONS_TOTAL_MAX,
            limits: Limits::default(),
            kafka: KafkaConfig::default(),
            ui: UiSettings::default(),
            tracing: Tracing::default(),
        }
    }
}

/// An address to listen on: `host:port`, the host an IP address or a name
/// (`localhost:8080`), checked to resolve when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenAddr(String);

impl ListenAddr {
    /// The address as given, for binding (names resolve then).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        use std::net::ToSocketAddrs;
        match text.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(_)) => Ok(ListenAddr(text.to_owned())),
            Ok(None) => Err(format!("{text:?} resolves to no address")),
            Err(e) => Err(format!(
                "{text:?} is not host:port, such as 127.0.0.1:8080 or localhost:8080 ({e})"
            )),
        }
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(text: String) -> Result<ListenAddr, String> {
        text.parse()
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> String {
        addr.0
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` or `json`, listed as such in the help.
fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(LogFormat::NAMES)
        .map(|name| name.parse().expect("one of LogFormat::NAMES"))
}

/// The flags of `tidings serve`: the configuration file, and every setting.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its settings sit under the environment and flags.
    #[arg(long, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every setting.
    #[command(flatten)]
    pub settings: Config,
}

impl Config {
    /// How long a shutdown waits for requests and leases.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The configuration `args` describe: the flags and environment clap read
    /// into it, over the file it names (if any), over the defaults. `matches`
    /// are the arguments `args` were read from: they tell a default from a
    /// value someone gave.
    pub fn load(args: &ServeArgs, matches: &ArgMatches) -> Result<Config> {
        let config = match &args.config {
            None => args.settings.clone(),
            Some(path) => {
                let file = read_file(path)?;
                under_flags(&args.settings, matches, file)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses listeners that reach beyond this machine on a server without
    /// users (`users` false) unless `insecure` says so: anyone who reached
    /// such a listener could do anything (RabbitMQ keeps its default user
    /// to loopback for the same reason). With users every client logs in.
    /// Answers whether a listener reaches beyond this machine.
    pub fn check_exposure(&self, users: bool) -> Result<bool> {
        let mut beyond = false;
        use std::net::ToSocketAddrs;
        for (listener, flag, addr) in [
            ("HTTP", "--http-addr", &self.http_addr),
            ("Kafka", "--kafka-addr", &self.kafka_addr),
        ] {
            let exposed = addr
                .as_str()
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .find(|a| !a.ip().is_loopback());
            beyond |= exposed.is_some();
            if let (Some(exposed), false, false) = (exposed, users, self.insecure) {
                anyhow::bail!(
                    "the {listener} listener would listen on {addr} ({}), beyond this machine, \
                     and this server has no users: anyone who reaches it could publish, read \
                     and delete. Add users with `tidings users add` (then every client logs \
                     in), give {flag} a loopback address (127.0.0.1:port), or pass --insecure \
                     (TIDINGS_INSECURE=true) on a network where everyone may",
                    exposed.ip()
                );
            }
        }
        Ok(beyond)
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "TLS takes both --tls-cert and --tls-key"
        );
        anyhow::ensure!(
            self.tls_client_ca.is_none() || self.tls_cert.is_some(),
            "--tls-client-ca (client certificates) needs TLS: give --tls-cert and --tls-key too"
        );
        let max = tidings_broker::PARTITIONS_TOTAL_MAX;
        anyhow::ensure!(
            (1..=max).contains(&self.partitions_total_max),
            "partitions_total_max is {}; it must be 1..={max}",
            self.partitions_total_max
        );
        self.limits.validate().map_err(anyhow::Error::msg)?;
        self.kafka.validate().map_err(anyhow::Error::msg)?;
        tidings_http::Cors::new(self.cors_origins.clone()).map_err(anyhow::Error::msg)?;
        self.tracing.export()?;
        if let Some(url) = &self.sagas_database {
            self.sagas_reader(url)?;
        }
        Ok(())
    }

    /// A reader of the sagas' database at `url`: the URL is checked here,
    /// the database reached on the first request.
    pub(crate) fn sagas_reader(&self, url: &str) -> Result<tidings_store::sagas::SagaReader> {
        tidings_store::sagas::SagaReader::new(url, SAGAS_CONNECTIONS_MAX)
            .map_err(|e| anyhow::anyhow!("sagas_database is not a PostgreSQL URL: {e}"))
    }
}

fn read_file(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// `settings` (what clap read) with the file's values put in wherever clap had
/// only a default. A key's clap id is its path: `data_dir`, `limits.body_bytes_max`,
/// `kafka.frame_bytes_max`.
fn under_flags(settings: &Config, matches: &ArgMatches, file: toml::Table) -> Result<Config> {
    let given = |id: &str| {
        matches.ids().any(|known| known.as_str() == id)
            && matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
    };
    let mut merged = toml::Table::try_from(settings).context("encoding the settings")?;
    for (key, value) in file {
        match (value, merged.get_mut(&key)) {
            (toml::Value::Table(section), Some(toml::Value::Table(into))) => {
                for (name, value) in section {
                    if !given(&format!("{key}.{name}")) {
                        into.insert(name, value);
                    }
                }
            }
            (value, _) => {
                if !given(&key) {
                    merged.insert(key, value);
                }
            }
        }
    }
    // Read back through the struct: an unknown key or a wrong type is refused here.
    Ok(Config::deserialize(merged)?)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The configuration of a command line, in an environment of `env`.
    fn load(argv: &[&str], env: &[(&str, &str)]) -> Result<Config> {
        // Only the variables a test names, whatever the process's environment:
        // each is read from a variable of the test's own, so tests running at
        // once do not see each other's.
        let command = Serve::command().mut_args(|arg| {
            let name = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            match name.and_then(|n| env.iter().find(|(k, _)| *k == n)) {
                Some((name, value)) => {
                    let own: &'static str = Box::leak(format!("TIDINGS_TEST_{name}").into());
                    std::env::set_var(own, value);
                    arg.env(own)
                }
                None => arg.env(None),
            }
        });
        let matches =
            command.try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        let serve = Serve::from_arg_matches(&matches)?;
        Config::load(&serve.args, &matches)
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidings.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.to_str().unwrap().to_owned())
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let (_dir, path) = file(
            "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9000\"\n[limits]\nbatch_events_max = 7\nbody_bytes_max = 9\n[kafka]\ndefault_partitions = 3\nauto_create_topics = false\n",
        );
        let c = load(
            &[
                "--config",
                &path,
                "--http-addr",
                "127.0.0.1:9100",
                "--body-bytes-max",
                "11",
                "--kafka-fetch-wait-max-ms",
                "50",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http_addr.as_str(), "127.0.0.1:9100");
        assert_eq!(c.limits.batch_events_max, 7);
        assert_eq!(c.limits.body_bytes_max, 11, "a flag beats the file");
        assert_eq!(c.limits.read_events_max, Limits::default().read_events_max);
        assert_eq!(c.kafka.default_partitions, 3);
        assert!(!c.kafka.auto_create_topics);
        assert_eq!(c.kafka.fetch_wait_max_ms, 50);
        assert_eq!(load(&[], &[]).unwrap(), Config::default());
    }

    /// Without users, an address beyond loopback is refused unless
    /// --insecure (flag, environment or file) says so; loopback names pass;
    /// with users it is taken.
    #[test]
    fn listeners_beyond_this_machine_need_users_or_insecure() {
        let exposure = |argv: &[&str], env: &[(&str, &str)], users| {
            load(argv, env).unwrap().check_exposure(users)
        };
        for (argv, listener) in [
            (&["--http-addr", "0.0.0.0:8080"][..], "HTTP"),
            (&["--kafka-addr", "[::]:9092"][..], "Kafka"),
        ] {
            assert!(exposure(argv, &[], true).unwrap(), "beyond, with users");
            let e = exposure(argv, &[], false).unwrap_err().to_string();
            assert!(
                e.contains(&format!("the {listener} listener would listen on"))
                    && e.contains("--insecure"),
                "{argv:?}: {e}"
            );
            let mut insecure = argv.to_vec();
            insecure.push("--insecure");
            assert!(exposure(&insecure, &[], false).unwrap());
            assert!(exposure(argv, &[("TIDINGS_INSECURE", "true")], false).is_ok());
        }
        let (_dir, path) = file("http_addr = \"0.0.0.0:8080\"\ninsecure = true\n");
        assert!(exposure(&["--config", &path], &[], false).is_ok());
        let (_dir, path) = file("http_addr = \"0.0.0.0:8080\"\n");
        assert!(exposure(&["--config", &path], &[], false).is_err());
        for loopback in ["localhost:8080", "127.0.0.1:0", "[::1]:8080"] {
            let args = ["--http-addr", loopback];
            assert!(!exposure(&args, &[], false).unwrap(), "{loopback}");
        }
    }

    #[test]
    fn the_environment_sits_between_the_file_and_the_flags() {
        let (_dir, path) = file("[kafka]\ndefault_partitions = 3\n[limits]\nread_events_max = 5\n");
        let env = [
            ("TIDINGS_KAFKA_DEFAULT_PARTITIONS", "4"),
            ("TIDINGS_READ_EVENTS_MAX", "6"),
        ];
        let c = load(&["--config", &path, "--read-events-max", "8"], &env).unwrap();
        assert_eq!(
            c.kafka.default_partitions, 4,
            "the environment beats the file"
        );
        assert_eq!(c.limits.read_events_max, 8, "a flag beats the environment");
    }

    #[test]
    fn a_bad_file_is_refused_with_its_name_and_the_problem() {
        let (_dir, path) = file("data_dri = \"x\"\n");
        let err = format!("{:#}", load(&["--config", &path], &[]).unwrap_err());
        assert!(
            err.contains("tidings.toml") && err.contains("data_dri"),
            "{err}"
        );
        let (_dir, path) = file("[kafka]\nframe_bytes_max = \"big\"\n");
        let err = format!("{:#}", load(&["--config", &path], &[]).unwrap_err());
        assert!(
            err.contains("tidings.toml") && err.contains("frame_bytes_max"),
            "{err}"
        );
        let err = load(&["--batch-events-max", "0"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_events_max"), "{err}");
        let err = load(&["--kafka-default-partitions", "0"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.default_partitions"), "{err}");
    }

    #[test]
    fn span_export_is_off_unless_an_endpoint_is_given() {
        assert_eq!(load(&[], &[]).unwrap().tracing.export().unwrap(), None);
        let (_dir, path) = file(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\notlp_headers = [\"x-api-key=k1\"]\nsample_ratio = 0.25\n",
        );
        let export = load(&["--config", &path], &[])
            .unwrap()
            .tracing
            .export()
            .unwrap()
            .unwrap();
        assert_eq!(export.endpoint, "http://127.0.0.1:4318");
        assert_eq!(export.headers, vec![("x-api-key".into(), "k1".into())]);
        assert_eq!(export.sample_ratio, 0.25);
        let c = load(
            &["--config", &path, "--trace-sample-ratio", "1"],
            &[("TIDINGS_OTLP_HEADERS", "a=1,b=2")],
        )
        .unwrap();
        let export = c.tracing.export().unwrap().unwrap();
        assert_eq!(export.sample_ratio, 1.0, "a flag beats the file");
        assert_eq!(export.headers.len(), 2, "the environment beats the file");
        for (argv, said) in [
            (vec!["--trace-sample-ratio", "1.5"], "expected 0 to 1"),
            (vec!["--trace-sample-ratio", "half"], "a number from 0 to 1"),
            (
                vec![
                    "--otlp-endpoint",
                    "http://c:4318",
                    "--otlp-header",
                    "novalue",
                ],
                "expected NAME=VALUE",
            ),
            (vec!["--otlp-header", "a=1"], "without an otlp_endpoint"),
        ] {
            let err = format!("{:#}", load(&argv, &[]).unwrap_err());
            assert!(err.contains(said), "{argv:?}: {err}");
        }
    }
}
