//! `tidings serve`: the one binary's server side.
//!
//! [`run`] opens the broker on the data directory, installs the metrics recorder
//! and the log subscriber, binds the HTTP listener and serves
//! [`tidings_http::router`] until SIGINT or SIGTERM. Then it shuts down in order:
//! answer new requests with 503 (but still take acks, nacks, rejects and
//! commits), hand out no more leases and give consumers up to the shutdown
//! timeout to answer the ones they hold, stop accepting, give the requests under
//! way up to the shutdown timeout again, sync and close the log, and return so
//! the process exits with status 0.
//!
//! The server holds no business logic and no state of its own: configuration
//! ([`Config`]), listeners and the shutdown sequence only.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tidings_broker::{Broker, BrokerOptions};
use tidings_http::Api;
use tidings_schema::Registry;
use tidings_store::{EmbeddedOptions, EmbeddedStore};
use tidings_telemetry::{init_logging, MeasuredSync, Metrics};
use tokio_util::sync::CancellationToken;

mod config;
mod http_listener;
mod tls;

/// The README's Rust examples, compiled and run as this crate's doc tests, so
/// a README that no longer builds fails the suite.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

pub use config::{Config, ListenAddr, ServeArgs};
pub use tidings_telemetry::LogFormat;
pub use tls::ClientAuth;

/// How often a draining server says what it waits for.
const DRAIN_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the event catalog's scan takes its next step.
const CATALOG_SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes of stored records one step of the scan reads at most (8 MiB/s).
const CATALOG_SCAN_BYTES: usize = 8 * 1024 * 1024;

/// Runs the server until SIGINT or SIGTERM, then shuts it down gracefully; a
/// second signal stops it at once.
pub fn run(config: Config) -> Result<()> {
    let export = config.tracing.export()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidings")
        .build()
        .context("cannot start the async runtime")?;
    let spans = start_logging(&runtime, config.log_format, export)?;
    let served = runtime.block_on(serve(config, async {
        shutdown_signal().await;
        // A second signal means now: the operator will not wait for the drain.
        tokio::spawn(async {
            let number = second_signal().await;
            tracing::warn!(
                "second signal; stopping now without waiting (acknowledged events are durable as their topics' fsync policy says)"
            );
            std::process::exit(128 + number);
        });
    }));
    // The last spans leave before the process does (the runtime's workers
    // carry the export; this thread waits for it).
    if let Some(pipeline) = spans {
        if let Err(e) = pipeline.shutdown() {
            tracing::warn!(error = %e, "spans may be lost");
        }
    }
    served
}

/// The span export running.
#[cfg(feature = "otlp")]
type Spans = tidings_trace::otlp::Pipeline;

/// No span export in a build without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
enum Spans {}

#[cfg(not(feature = "otlp"))]
impl Spans {
    fn shutdown(&self) -> Result<(), String> {
        match *self {}
    }
}

/// Installs the log subscriber and, when `export` says where, the OTLP
/// export of spans on `runtime`.
#[cfg(feature = "otlp")]
fn start_logging(
    runtime: &tokio::runtime::Runtime,
    format: tidings_telemetry::LogFormat,
    export: Option<config::Export>,
) -> Result<Option<Spans>> {
    let Some(export) = export else {
        init_logging(format);
        return Ok(None);
    };
    let _on_runtime = runtime.enter();
    let pipeline = tidings_trace::otlp::Pipeline::start(&tidings_trace::otlp::OtlpOptions {
        endpoint: export.endpoint.clone(),
        headers: export.headers,
        sample_ratio: export.sample_ratio,
        service_name: "tidings".to_owned(),
    })
    .map_err(anyhow::Error::msg)?;
    tidings_telemetry::init_logging_and(format, Some(pipeline.layer()));
    tracing::info!(endpoint = %export.endpoint, sample_ratio = export.sample_ratio, "exporting spans over OTLP");
    Ok(Some(pipeline))
}

/// Installs the log subscriber; a build without the `otlp` feature refuses
/// an export it cannot make.
#[cfg(not(feature = "otlp"))]
fn start_logging(
    _runtime: &tokio::runtime::Runtime,
    format: tidings_telemetry::LogFormat,
    export: Option<config::Export>,
) -> Result<Option<Spans>> {
    if let Some(export) = export {
        anyhow::bail!(
            "otlp_endpoint {} is set, but this tidings was built without span export: build it with the `otlp` feature (cargo install --path crates/tidings-cli --features otlp)",
            export.endpoint
        );
    }
    init_logging(format);
    Ok(None)
}

/// Resolves at the next SIGINT or SIGTERM with its number.
async fn second_signal() -> i32 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => 2,
                _ = terminate.recv() => 15,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    2
}

/// Resolves at the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => tracing::info!("SIGINT received; shutting down"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                tracing::info!("SIGINT received; shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("interrupt received; shutting down");
    }
}

/// Connections the kernel queues for a listener before it accepts them
/// (the most Linux allows by default, `net.core.somaxconn`): a burst of
/// connections waits there instead of having its SYNs dropped and retried a
/// second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on the first address `addr` resolves to that can be bound, with
/// [`LISTEN_BACKLOG`].
async fn bind(addr: &config::ListenAddr) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr.as_str()).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(resolved)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

/// Serves until `stop` resolves, then shuts down.
pub async fn serve(config: Config, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let data_dir = config.data_dir.clone();
    let partitions_total_max = config.partitions_total_max;
    let super_users: Vec<String> = config
        .super_users
        .iter()
        .map(|u| tidings_auth::Principal::user(u).to_string())
        .collect();
    let exposure = config.clone();
    let (broker, store, registry, gate, beyond) = tokio::task::spawn_blocking(move || {
        let auth_dir = tidings_auth::store::dir_in(&data_dir);
        let gate = tidings_auth::AuthStore::open(&auth_dir, super_users).with_context(|| {
            format!(
                "cannot open the users and permissions in {}",
                auth_dir.display()
            )
        })?;
        // Refused before the broker is opened: only the users were read.
        // A required client certificate is a login of its own.
        let certificates_required = exposure.tls_client_ca.is_some()
            && exposure.tls_client_auth == tls::ClientAuth::Required;
        let beyond = exposure.check_exposure(gate.has_users() || certificates_required)?;
        let registry =
            Arc::new(Registry::open(&data_dir).context("cannot open the schema registry")?);
        let options = BrokerOptions {
            registry: Some(Arc::clone(&registry)),
            log: tidings_broker::LogOptions {
                file_sync: Arc::new(MeasuredSync),
                ..tidings_broker::LogOptions::default()
            },
            partitions_total_max,
        };
        let broker = Broker::open(&data_dir, options.clone())
            .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
        let store_dir = data_dir.join("store");
        let store = EmbeddedStore::open(
            &store_dir,
            EmbeddedOptions {
                log: options.log,
                ..EmbeddedOptions::default()
            },
        )
        .with_context(|| format!("cannot open the event store in {}", store_dir.display()))?;
        anyhow::Ok((broker, store, registry, gate, beyond))
    })
    .await
    .context("opening the broker, the event store and the schema registry")??;
    let broker = Arc::new(broker);
    let gate = Arc::new(tidings_auth::Gate::new(gate));
    if gate.required() {
        let users = gate.with_store(|s| s.users().len());
        tracing::info!(
            users,
            "clients log in: Kafka clients with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
        );
    }
    let metrics = Metrics::install().map_err(anyhow::Error::msg)?;
    // The one shutdown signal: cancelled at SIGINT or SIGTERM, it drains the
    // HTTP API and stops the Kafka listener.
    let shutdown = CancellationToken::new();
    let api = Api::new(
        Arc::clone(&broker),
        store.clone(),
        config.limits,
        metrics,
        shutdown.clone(),
    )
    .with_cors(tidings_http::Cors::new(config.cors_origins.clone()).map_err(anyhow::Error::msg)?)
    .with_registry(registry)
    .with_gate(Arc::clone(&gate));
    let api = match &config.sagas_database {
        Some(url) => api.with_sagas(config.sagas_reader(url)?),
        None => api,
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certificates = Arc::new(tls::Certificates::load(tls::Files {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config
                    .tls_client_ca
                    .clone()
                    .map(|ca| (ca, config.tls_client_auth)),
            })?);
            tls::reload_on_hangup(Arc::clone(&certificates))?;
            tracing::info!(cert = %cert.display(), "TLS on both listeners: HTTPS, and Kafka's SSL and SASL_SSL");
            if let Some(ca) = &config.tls_client_ca {
                tracing::info!(ca = %ca.display(), client_auth = %config.tls_client_auth, "client certificates log in as their subject's common name");
            }
            Some(certificates)
        }
        _ => None,
    };
    if beyond && gate.required() && tls.is_none() {
        tracing::warn!(
            "listening beyond this machine without TLS: PLAIN and HTTP Basic passwords cross the network readable (Kafka clients' SCRAM logins do not)"
        );
    }
    if config.insecure && !gate.required() {
        tracing::warn!(
            http_addr = %config.http_addr,
            kafka_addr = %config.kafka_addr,
            "--insecure: listeners may reach beyond this machine without authentication"
        );
    }
    let listener = bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    let http_addr = listener.local_addr().context("reading the bound address")?;
    let kafka_listener = bind(&config.kafka_addr)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {}", config.kafka_addr))?;
    let kafka_addr = kafka_listener
        .local_addr()
        .context("reading the bound address")?;
    tracing::info!(%http_addr, %kafka_addr, data_dir = %config.data_dir.display(), "listening");
    let api = api.with_ui(tidings_http::UiContext {
        settings: config.ui.clone(),
        http_addr: Some(http_addr),
        kafka_addr: Some(kafka_addr),
        https: tls.is_some(),
        data_dir: Some(config.data_dir.clone()),
    });
    if config.ui.enabled {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{http_addr}/ui"), read_only = config.ui.read_only, "the web dashboard");
    }
    let kafka_tls = tls.clone().map(|t| {
        let acceptor: tidings_kafka::TlsSource = Arc::new(move || t.kafka());
        acceptor
    });
    let kafka = tokio::spawn(tidings_kafka::serve(
        kafka_listener,
        Arc::clone(&broker),
        config.kafka.clone(),
        Some(Arc::clone(&gate)),
        kafka_tls,
        shutdown.clone(),
    ));

    // The dashboard's trends: the broker's figures sampled into memory.
    let sampled = api.clone();
    let sampling_stop = shutdown.clone();
    let history = tokio::spawn(async move {
        loop {
            sampled.sample_history().await;
            tokio::select! {
                () = sampling_stop.cancelled() => break,
                () = tokio::time::sleep(tidings_http::HISTORY_SAMPLE_EVERY) => {}
            }
        }
    });

    // The event catalog's scan follows the topics in small steps, so a
    // catalog request finds little left to count.
    let scanning_broker = Arc::clone(&broker);
    let scanning_stop = shutdown.clone();
    let scan = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = scanning_stop.cancelled() => break,
                () = tokio::time::sleep(CATALOG_SCAN_EVERY) => {}
            }
            let b = Arc::clone(&scanning_broker);
            if tokio::task::spawn_blocking(move || b.scan_catalog(CATALOG_SCAN_BYTES))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let draining_broker = Arc::clone(&broker);
    let lease_wait = config.shutdown_timeout();
    let graceful = async move {
        stop.await;
        // New HTTP requests get 503 (answers to leases and commits are still
        // taken), waiting requests end; Kafka connections finish the request
        // they are handling, then close.
        shutdown.cancel();
        // Consumers can still answer their leases while the listener is open;
        // what is waited for is said every second.
        let drain = draining_broker.drain(lease_wait);
        let mut drain = std::pin::pin!(drain);
        let started = tokio::time::Instant::now();
        let left = loop {
            tokio::select! {
                left = &mut drain => break left,
                () = tokio::time::sleep(DRAIN_REPORT_EVERY) => {
                    let held = draining_broker.leases_held().await;
                    let groups: Vec<String> =
                        held.iter().map(|(g, n)| format!("{g}: {n}")).collect();
                    tracing::info!(
                        leases = held.iter().map(|(_, n)| n).sum::<usize>(),
                        groups = %groups.join(", "),
                        left_s = lease_wait.saturating_sub(started.elapsed()).as_secs(),
                        "draining: waiting for consumers to answer their leases"
                    );
                }
            }
        };
        tracing::info!(
            leases_left = left,
            "no more leases handed out; closing the listener"
        );
        let _ = stopping_tx.send(true);
    };
    let requests = api.clone();
    let server = http_listener::serve(
        listener,
        tidings_http::router(api),
        config.limits,
        tls,
        graceful,
    );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = &mut server => {},
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            let started = tokio::time::Instant::now();
            while started.elapsed() < config.shutdown_timeout() {
                tokio::time::sleep(DRAIN_REPORT_EVERY).await;
                tracing::info!(
                    requests = requests.requests_in_flight(),
                    left_s = config.shutdown_timeout().saturating_sub(started.elapsed()).as_secs(),
                    "closing: waiting for requests under way"
                );
            }
        } => {
            tracing::warn!(timeout = ?config.shutdown_timeout(), "requests still open after the shutdown timeout; closing them");
        }
    }
    let _ = scan.await;
    let _ = history.await;
    match tokio::time::timeout(config.shutdown_timeout(), kafka).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the Kafka listener failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the Kafka listener task failed"),
        Err(_) => tracing::warn!("Kafka requests still under way after the shutdown timeout"),
    }
    let left = broker
        .shutdown(std::time::Duration::ZERO)
        .await
        .context("closing the log")?;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("closing the event store")?
        .context("closing the event store")?;
    tracing::info!(leases_left = left, "stopped");
    Ok(())
}
