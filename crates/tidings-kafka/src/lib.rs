//! Tidings' Kafka listener: the Kafka wire protocol in front of the broker, so
//! services written against Kafka clients (kafkajs, librdkafka and kcat,
//! kafka-python) run against `tidings serve` unchanged.
//!
//! The `kafka-protocol` crate encodes and decodes messages; this crate owns the
//! connections, the routing of requests, and what each API does to the broker:
//!
//! - ApiVersions (with the error-35 fallback for versions it does not know),
//!   Metadata (auto-creating topics, as kcat relies on), CreateTopics;
//! - Produce with `acks` 0, 1 and all, storing the producer's batches as sent
//!   (compressed ones too, checked under a decompression cap) with offsets
//!   rewritten;
//! - Fetch with long-poll (max wait, min bytes, max bytes, whole batches) and
//!   ListOffsets (earliest, latest, by timestamp);
//! - the classic consumer-group protocol (FindCoordinator, JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup) with OffsetCommit and OffsetFetch on the broker's
//!   group offsets.
//!
//! One node answers for the whole "cluster": it is the leader of every partition
//! and the coordinator of every group. Requests on one connection are handled one
//! at a time, in order, as a Kafka broker does, so responses go back in request
//! order. A frame is checked against [`KafkaConfig::frame_bytes_max`] before any
//! memory is set aside for it, and a malformed request closes its connection with
//! a log line without touching anything else.

use std::sync::Arc;
use std::time::Duration;

use tidings_auth::Gate;
use tidings_broker::Broker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod access;
mod acls;
mod admin;
mod apis;
mod configs;
mod conn;
mod errors;
mod fetch;
mod groups;
mod produce;
mod sasl;
mod topics;
mod users;

pub use apis::SUPPORTED;

/// Where the listener gets the TLS acceptor of each new connection (the
/// server's current certificate, which it may reload).
pub type TlsSource = Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the Kafka listener: settings of `tidings serve`, each a flag, a
/// `TIDINGS_KAFKA_*` environment variable and a key of the configuration
/// file's `[kafka]` section.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Largest request frame accepted, in bytes; a larger size prefix closes the
    /// connection before anything is read into memory. (Kafka's
    /// `socket.request.max.bytes` defaults to 100 MiB; producer batches here are
    /// bounded far lower by the log's batch limit.)
    #[arg(
        id = "kafka.frame_bytes_max",
        value_name = "BYTES",
        long = "kafka-frame-bytes-max",
        env = "TIDINGS_KAFKA_FRAME_BYTES_MAX",
        default_value_t = KafkaConfig::default().frame_bytes_max
    )]
    pub frame_bytes_max: usize,
    /// Whether Metadata requests create topics that do not exist (Kafka's
    /// `auto.create.topics.enable`, on by default).
    #[arg(
        id = "kafka.auto_create_topics",
        value_name = "BOOL",
        long = "kafka-auto-create-topics",
        env = "TIDINGS_KAFKA_AUTO_CREATE_TOPICS",
        default_value_t = KafkaConfig::default().auto_create_topics,
        action = clap::ArgAction::Set
    )]
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, or of CreateTopics asking for the
    /// default (Kafka's `num.partitions`).
    #[arg(
        id = "kafka.default_partitions",
        value_name = "PARTITIONS",
        long = "kafka-default-partitions",
        env = "TIDINGS_KAFKA_DEFAULT_PARTITIONS",
        default_value_t = KafkaConfig::default().default_partitions
    )]
    pub default_partitions: u32,
    /// Longest a Fetch may wait for data, in milliseconds, whatever the client
    /// asks.
    #[arg(
        id = "kafka.fetch_wait_max_ms",
        value_name = "MS",
        long = "kafka-fetch-wait-max-ms",
        env = "TIDINGS_KAFKA_FETCH_WAIT_MAX_MS",
        default_value_t = KafkaConfig::default().fetch_wait_max_ms
    )]
    pub fetch_wait_max_ms: u64,
    /// The address Kafka clients are told to connect to, `host:port` (Kafka's
    /// `advertised.listeners`): needed when clients reach the server by
    /// another name or address than the one it listens on, as behind NAT, in
    /// a container, or listening on 0.0.0.0. By default the listener's own
    /// address (127.0.0.1 for an unspecified one).
    #[arg(
        id = "kafka.advertised_addr",
        value_name = "HOST:PORT",
        long = "kafka-advertised-addr",
        env = "TIDINGS_KAFKA_ADVERTISED_ADDR"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_addr: Option<String>,
    /// How long a new consumer group waits for more members before its
    /// first generation, in milliseconds (Kafka's
    /// `group.initial.rebalance.delay.ms`): consumers started together then
    /// form one generation instead of rebalancing once per member. Each member
    /// joining meanwhile waits this long again, up to the first member's
    /// rebalance timeout. 0 forms the group at once.
    #[arg(
        id = "kafka.initial_rebalance_delay_ms",
        value_name = "MS",
        long = "kafka-initial-rebalance-delay-ms",
        env = "TIDINGS_KAFKA_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = KafkaConfig::default().initial_rebalance_delay_ms
    )]
    #[serde(default = "default_initial_rebalance_delay_ms")]
    pub initial_rebalance_delay_ms: u64,
    /// A connection that sends no request for this long is closed, in
    /// milliseconds (Kafka's `connections.max.idle.ms`, 10 minutes); clients
    /// reconnect when they next need it. A request being answered (a
    /// long-poll, a join waiting for a rebalance) is not idleness.
    #[arg(
        id = "kafka.idle_timeout_ms",
        value_name = "MS",
        long = "kafka-idle-timeout-ms",
        env = "TIDINGS_KAFKA_IDLE_TIMEOUT_MS",
        default_value_t = KafkaConfig::default().idle_timeout_ms
    )]
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most Kafka connections open at once; more are closed as they come
    /// (clients retry after their reconnect backoff), so a flood of
    /// connections cannot exhaust the server.
    #[arg(
        id = "kafka.connections_max",
        value_name = "CONNECTIONS",
        long = "kafka-connections-max",
        env = "TIDINGS_KAFKA_CONNECTIONS_MAX",
        default_value_t = KafkaConfig::default().connections_max
    )]
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
}

fn default_connections_max() -> usize {
    KafkaConfig::default().connections_max
}

fn default_idle_timeout_ms() -> u64 {
    KafkaConfig::default().idle_timeout_ms
}

fn default_initial_rebalance_delay_ms() -> u64 {
    KafkaConfig::default().initial_rebalance_delay_ms
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            frame_bytes_max: 16 * 1024 * 1024,
            auto_create_topics: true,
            default_partitions: 1,
            fetch_wait_max_ms: 30_000,
            advertised_addr: None,
            initial_rebalance_delay_ms: 3_000,
            idle_timeout_ms: 600_000,
            connections_max: 4096,
        }
    }
}

/// Where Kafka clients are told to connect: a host (a name or an address)
/// and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Advertised {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// `host:port` (an IPv6 address in brackets) read as an advertised address.
fn parse_advertised(text: &str) -> Result<Advertised, String> {
    let bad = |why: &str| {
        format!("kafka.advertised_addr is {text:?}: {why}; give host:port, such as kafka.example.com:9092")
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("no host"));
    }
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if port == 0 {
        return Err(bad("port 0 cannot be connected to"));
    }
    Ok(Advertised {
        host: host.to_owned(),
        port,
    })
}

/// The shortest idle timeout: a client between two requests of a busy
/// moment is not idle.
pub const IDLE_TIMEOUT_MIN_MS: u64 = 1_000;

/// The longest initial rebalance delay (Kafka's rebalance timeouts default
/// to 5 minutes, and the delay never waits past one).
pub const INITIAL_REBALANCE_DELAY_MAX_MS: u64 = 300_000;

/// The smallest frame limit: room for a request header and a small body.
pub const FRAME_BYTES_MIN: usize = 1024;

impl KafkaConfig {
    /// Longest a Fetch may wait.
    pub fn fetch_wait_max(&self) -> Duration {
        Duration::from_millis(self.fetch_wait_max_ms)
    }

    /// How long a connection may send nothing.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// How long a new group waits for more members.
    pub fn initial_rebalance_delay(&self) -> Duration {
        Duration::from_millis(self.initial_rebalance_delay_ms)
    }

    /// Checks the settings against what the listener and the log accept; the
    /// error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes_max < FRAME_BYTES_MIN {
            return Err(format!(
                "kafka.frame_bytes_max is {}; it must be at least {FRAME_BYTES_MIN}",
                self.frame_bytes_max
            ));
        }
        if let Some(addr) = &self.advertised_addr {
            parse_advertised(addr)?;
        }
        if self.idle_timeout_ms < IDLE_TIMEOUT_MIN_MS {
            return Err(format!(
                "kafka.idle_timeout_ms is {}; it must be at least {IDLE_TIMEOUT_MIN_MS}",
                self.idle_timeout_ms
            ));
        }
        if self.connections_max == 0 {
            return Err("kafka.connections_max must be at least 1".to_owned());
        }
        if self.initial_rebalance_delay_ms > INITIAL_REBALANCE_DELAY_MAX_MS {
            return Err(format!(
                "kafka.initial_rebalance_delay_ms is {}; it must be at most {INITIAL_REBALANCE_DELAY_MAX_MS} (5 minutes)",
                self.initial_rebalance_delay_ms
            ));
        }
        let partitions_max = tidings_broker::PARTITIONS_MAX;
        if !(1..=partitions_max).contains(&self.default_partitions) {
            return Err(format!(
                "kafka.default_partitions is {}; it must be 1..={partitions_max}",
                self.default_partitions
            ));
        }
        Ok(())
    }
}

/// The node id this server gives itself in Metadata and FindCoordinator answers.
pub(crate) const NODE_ID: i32 = 1;

/// Connections turned away at the limit, said at most every 10 s.
static TURNED_AWAY: tidings_telemetry::Occasional =
    tidings_telemetry::Occasional::new(Duration::from_secs(10));

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: KafkaConfig,
    /// The address clients are told to connect to.
    pub(crate) advertised: Advertised,
    /// Cancelled when the server stops: long-polls end early.
    pub(crate) shutdown: CancellationToken,
    /// The users and permissions; `None` serves without either.
    pub(crate) gate: Option<Arc<Gate>>,
}

/// Serves the Kafka protocol on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets every connection finish the request it is handling.
/// Returns once every connection has closed.
///
/// Clients are told to reconnect to the configured advertised address, or to
/// the listener's own address; an unspecified address (`0.0.0.0`) is
/// advertised as 127.0.0.1, with a warning, as clients elsewhere cannot use
/// it.
///
/// With a `gate` whose store has users, every connection logs in with SASL
/// before anything but ApiVersions is answered. With `tls`, every
/// connection starts with a TLS handshake (Kafka's SSL and SASL_SSL).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: KafkaConfig,
    gate: Option<Arc<Gate>>,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let advertised = match &config.advertised_addr {
        Some(text) => parse_advertised(text).map_err(std::io::Error::other)?,
        None => {
            let mut own = listener.local_addr()?;
            if own.ip().is_unspecified() {
                tracing::warn!(
                    addr = %own,
                    "the Kafka listener binds every address but tells clients to connect to 127.0.0.1; set --kafka-advertised-addr to the address clients reach"
                );
                own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Advertised {
                host: own.ip().to_string(),
                port: own.port(),
            }
        }
    };
    let shared = Arc::new(Shared {
        broker,
        config,
        advertised,
        shutdown: shutdown.clone(),
        gate,
    });
    // Session timeouts and rebalance deadlines pass even when no request comes.
    let ticking = Arc::clone(&shared);
    let ticker_stop = shutdown.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(groups::TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => ticking.broker.tick_groups(),
                () = ticker_stop.cancelled() => break,
            }
        }
    });
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.config.connections_max));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tidings_telemetry::kafka::connection_over_limit();
                        if let Some(turned_away) = TURNED_AWAY.note() {
                            tracing::warn!(
                                %peer,
                                turned_away,
                                connections_max = shared.config.connections_max,
                                "Kafka connections closed as they came: the server holds as many as it may"
                            );
                        }
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let acceptor = tls.as_ref().map(|source| source());
                    connections.spawn(async move {
                        match acceptor {
                            None => conn::serve_connection(stream, peer, shared, None).await,
                            Some(acceptor) => {
                                let handshake = acceptor.accept(stream);
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(stream)) => {
                                        // A verified client certificate logs the connection in.
                                        let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
                                        match leaf.map(|der| tidings_auth::certificate::principal(der)).transpose() {
                                            Ok(certified) => {
                                                if certified.is_some() {
                                                    tidings_telemetry::login("kafka", "certificate", true);
                                                }
                                                conn::serve_connection(stream, peer, shared, certified).await
                                            }
                                            Err(e) => {
                                                tidings_telemetry::login("kafka", "certificate", false);
                                                tracing::warn!(%peer, error = %e, "Kafka connection closed");
                                            }
                                        }
                                    }
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "Kafka connection closed: the TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "Kafka connection closed: no TLS handshake in time"),
                                }
                            }
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather
                    // than spin, and keep serving the connections already open.
                    tracing::warn!(error = %e, "cannot accept a Kafka connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    let _ = ticker.await;
    Ok(())
}

/// Serves the Kafka protocol on one connection that is not a socket of a
/// listener — a byte stream the caller made (the fuzzers feed requests this
/// way) — as [`serve`] serves each accepted connection without TLS or a
/// gate, telling clients to reconnect to 127.0.0.1:9092. Returns when the
/// connection closes. No group ticker runs: session time-outs pass only
/// when requests come.
#[doc(hidden)]
pub async fn serve_stream<S>(stream: S, broker: Arc<Broker>, config: KafkaConfig)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        broker,
        config,
        advertised: Advertised {
            host: "127.0.0.1".into(),
            port: 9092,
        },
        shutdown: CancellationToken::new(),
        gate: None,
    });
    let peer = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    conn::serve_connection(stream, peer, shared, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_name_a_host_and_a_port() {
        let a = parse_advertised("kafka.example.com:19092").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("kafka.example.com", 19092));
        let v6 = parse_advertised("[::1]:9092").unwrap();
        assert_eq!(v6.host, "::1");
        for bad in ["kafka", ":9092", "host:0", "host:port", "a b:9092"] {
            let err = parse_advertised(bad).unwrap_err();
            assert!(err.contains("kafka.advertised_addr"), "{bad}: {err}");
        }
    }
}
