//! `order-flow`: the guides' e-commerce order flow on the Tidings toolkit,
//! end to end, with a final check.
//!
//! Customers place orders over HTTP; the order service writes each order's
//! first event and its announcement in one atomic append (the store
//! outbox); the payment service charges once per order (the store inbox),
//! with a share of cards declined, gateway time-outs retried with backoff
//! and orders it can never pay dead-lettered; the inventory saga reserves
//! stock and compensates when payment fails; the order service closes each
//! order with one outcome, reconciliation closes the dead-lettered ones;
//! notification and analytics consumers record their effects once. Every
//! event type has a registered JSON Schema, checked before it is published
//! (and by the topic itself on the embedded engine and a server). The order
//! is event-sourced; a projection folds the store into the read model the
//! live summary and `GET /orders/{id}` show.
//!
//! The same code runs on every backend of the toolkit:
//! `--backend embedded|server|kafka|nats|postgres`. With `--faults N` the
//! services run in a process of their own (and with `--serve`, the server
//! in another), killed with SIGKILL N times at random and started again
//! while the customers keep ordering; the check runs on what is left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use tidings::outbox::store::{ForwarderOptions, StoreOutbox};
use tidings::schemas::SchemaCheck;
use tidings::{Backend, Publisher};
use tidings_schema::{Registry, SchemaInput, SchemaType};
use tidings_store::projection::Projector;
use tidings_store::{EmbeddedOptions, EmbeddedStore, EventStore, PgOptions, PgStore, Selector};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use order_flow::board::Board;
use order_flow::load::{self, LoadOptions, Mix, Placed};
use order_flow::services::{self, Gateway, GatewayOptions, RouteOptions, Services};
use order_flow::shop::{self, Shop};
use order_flow::{check, model};

/// The guides' order flow on Tidings: places orders over HTTP, runs every
/// service until each order has ended, then checks that every order ended
/// once and every effect happened once.
#[derive(Clone, Debug, Parser)]
#[command(name = "order-flow", version, about)]
struct Args {
    /// Where the events travel.
    #[arg(long, value_enum, default_value_t = Engine::Embedded)]
    backend: Engine,
    /// The backend's address: `http://host:port` of a `tidings serve`,
    /// `kafka://host:port`, `nats://host:port`, `postgres://...`. Defaults:
    /// http://127.0.0.1:8080, kafka://127.0.0.1:9092, nats://127.0.0.1:4222;
    /// PostgreSQL needs one.
    #[arg(long)]
    url: Option<String>,
    /// With `--backend server`: start this `tidings` binary as the server
    /// (on free loopback ports, its data under --data) instead of using
    /// --url; with --faults it is killed at random too.
    #[arg(long, value_name = "TIDINGS_BINARY")]
    serve: Option<PathBuf>,
    /// The event store, when it is PostgreSQL (`postgres://...`); the
    /// default is the backend's database with `--backend postgres`, else an
    /// embedded store under --data.
    #[arg(long)]
    store_url: Option<String>,
    /// The data directory: the embedded engine, the embedded store, the
    /// schema registry of the backends that have none.
    #[arg(long, default_value = "./order-flow-data")]
    data: PathBuf,
    /// Orders to place.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Orders per second; 0 places them as fast as the clients go (load
    /// mode).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Customers placing orders at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Share of orders, in percent, paid with a card the gateway declines.
    #[arg(long, default_value_t = 10)]
    decline_percent: u32,
    /// Share of orders, in percent, the payment service can never process
    /// (poison: dead-lettered, then rejected by reconciliation).
    #[arg(long, default_value_t = 3)]
    poison_percent: u32,
    /// Share of card-gateway calls, in percent, that time out and are tried
    /// again; at most 50.
    #[arg(long, default_value_t = 10)]
    transient_percent: u32,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Deliveries each service handles at once per route.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The order service's HTTP address (loopback; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A prefix for the topics' and groups' names, for flows that share a
    /// cluster.
    #[arg(long, default_value = "")]
    prefix: String,
    /// The seed of the customers' choices, the gateway's time-outs and the
    /// faults; the clock's by default. One seed places the same orders.
    #[arg(long)]
    seed: Option<u64>,
    /// Kill the services' process (and the server's, with --serve) this
    /// many times at random while the flow runs, starting each again.
    #[arg(long, default_value_t = 0)]
    faults: u32,
    /// Seconds to wait for every order to end.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// No live summary on standard error.
    #[arg(long)]
    quiet: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Export every hop's spans over OTLP/HTTP to this endpoint
    /// (`http://host:4318`): the order's `POST`, each publish, each
    /// service's processing, one trace per order.
    #[cfg(feature = "otlp")]
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Run only the services and the order endpoint, until SIGTERM (what
    /// --faults runs in the process it kills).
    #[arg(long, hide = true)]
    services_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The broker in this process, under --data.
    Embedded,
    /// A `tidings serve`.
    Server,
    /// A Kafka cluster (build with the `kafka` feature).
    Kafka,
    /// NATS JetStream.
    Nats,
    /// PostgreSQL tables.
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Embedded => "embedded",
            Engine::Server => "server",
            Engine::Kafka => "kafka",
            Engine::Nats => "nats",
            Engine::Postgres => "postgres",
        }
    }
}

/// What a run found, printed at the end.
#[derive(Debug, Serialize)]
struct Report {
    backend: &'static str,
    /// The seed: `--seed` with it places the same orders again.
    seed: u64,
    /// Orders accepted by the order service.
    placed: usize,
    /// Requests the customers sent again.
    client_retries: usize,
    /// Processes killed and started again.
    faults: u32,
    /// Card-gateway time-outs the payment service retried (in this
    /// process; none is counted when the services ran in another).
    gateway_timeouts: Option<u64>,
    /// Events the outbox forwarded, and refused for good (likewise).
    forwarded: Option<u64>,
    outbox_dead: Option<u64>,
    /// From the first order placed to the last one settled.
    seconds: f64,
    /// Orders settled per second over that time.
    orders_per_second: f64,
    /// Placed to outcome, from the store's timestamps (ms).
    latency_ms_p50: i64,
    latency_ms_p99: i64,
    latency_ms_max: i64,
    check: check::Verdict,
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let args = Args::parse();
    if args.transient_percent > 50 {
        bail!("--transient-percent is at most 50: more would dead-letter orders that can be paid");
    }
    if args.decline_percent + args.poison_percent > 100 {
        bail!("--decline-percent and --poison-percent add up to more than 100");
    }
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the demo listens on loopback only",
            args.listen
        );
    }
    if args.serve.is_some() && args.backend != Engine::Server {
        bail!("--serve starts a server: it goes with --backend server");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _in_runtime = runtime.enter();
    // Log lines by ORDER_FLOW_LOG (warnings by default); spans, when
    // exported, whatever the log's level.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORDER_FLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    let subscriber = tracing_subscriber::registry().with(lines);
    #[cfg(feature = "otlp")]
    let pipeline = args
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| {
            tidings_trace::otlp::Pipeline::start(&tidings_trace::otlp::OtlpOptions {
                endpoint: endpoint.clone(),
                headers: Vec::new(),
                sample_ratio: 1.0,
                service_name: "order-flow".to_owned(),
            })
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    #[cfg(feature = "otlp")]
    let subscriber = subscriber.with(pipeline.as_ref().map(|p| p.layer()));
    subscriber.init();
    let passed = runtime.block_on(run(args));
    // The last spans leave before the process does.
    #[cfg(feature = "otlp")]
    if let Some(pipeline) = pipeline {
        pipeline.shutdown().map_err(anyhow::Error::msg)?;
    }
    if !passed? {
        std::process::exit(1);
    }
    Ok(())
}

/// The event store the services keep their facts in.
enum Store {
    Embedded(EmbeddedStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$s` bound to the store, whichever kind it is.
macro_rules! with_store {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Embedded($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

mod supervise;

async fn open_store(args: &Args) -> anyhow::Result<Store> {
    let url = args.store_url.clone().or_else(|| match args.backend {
        Engine::Postgres => args.url.clone(),
        _ => None,
    });
    Ok(match url {
        Some(url) => Store::Postgres(
            PgStore::connect(&url, PgOptions::default())
                .await
                .with_context(|| format!("opening the event store at {url}"))?,
        ),
        None => {
            let dir = args.data.join("store");
            Store::Embedded(
                EmbeddedStore::open(&dir, EmbeddedOptions::default())
                    .with_context(|| format!("opening the event store in {}", dir.display()))?,
            )
        }
    })
}

/// Runs the flow as asked; whether its check passed.
async fn run(args: Args) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let names = Arc::new(model::Names::new(&args.prefix));
    let seed = args.seed.unwrap_or_else(clock_seed);
    if args.services_only {
        let (backend, schemas) = connect(&args, &names).await?;
        let store = open_store(&args).await?;
        with_store!(store, s => services_only(&args, names, backend, schemas, s, seed).await?);
        return Ok(true);
    }
    let report = if args.faults > 0 || args.serve.is_some() {
        supervise::run(&args, seed).await?
    } else {
        let (backend, schemas) = connect(&args, &names).await?;
        let store = open_store(&args).await?;
        with_store!(store, s => in_process(&args, names, backend, schemas, s, seed).await?)
    };
    print_report(&report, args.json)?;
    Ok(report.check.passed())
}

/// The backend, its topics and the schemas, registered.
async fn connect(
    args: &Args,
    names: &model::Names,
) -> anyhow::Result<(Arc<dyn Backend>, Arc<SchemaCheck>)> {
    let schemas = model::schemas();
    match args.backend {
        Engine::Embedded => {
            use tidings_broker::{Broker, BrokerOptions, SchemaValidation, TopicSpec};
            let dir = args.data.join("engine");
            let registry = Arc::new(Registry::open(&dir).context("opening the schema registry")?);
            register_locally(&registry, &schemas)?;
            let options = BrokerOptions {
                registry: Some(Arc::clone(&registry)),
                ..BrokerOptions::default()
            };
            let broker = Broker::open(&dir, options)
                .with_context(|| format!("opening the engine in {}", dir.display()))?;
            for topic in names.topics() {
                if broker.partition_count(topic).is_none() {
                    let spec = TopicSpec {
                        schema_validation: SchemaValidation::Validate,
                        ..TopicSpec::with_partitions(args.partitions)
                    };
                    broker.create_topic(topic, spec)?;
                }
            }
            let backend = tidings::embedded::Embedded::with_broker(Arc::new(broker));
            Ok((Arc::new(backend), Arc::new(SchemaCheck::registry(registry))))
        }
        Engine::Server => {
            let url = args.url.as_deref().unwrap_or("http://127.0.0.1:8080");
            let client = tidings_client::Client::new(url)?;
            for (ty, schema) in &schemas {
                let request = tidings_api::SchemaRequest {
                    schema: schema.to_string(),
                    schema_type: Some("JSON".into()),
                    references: Vec::new(),
                };
                client
                    .register_schema(ty, &request)
                    .await
                    .with_context(|| format!("registering the schema of {ty} at {url}"))?;
            }
            for topic in names.topics() {
                let create = tidings_api::CreateTopic {
                    name: topic.into(),
                    settings: tidings_api::TopicSettings {
                        partitions: Some(args.partitions),
                        schema_validation: Some("validate".into()),
                        ..tidings_api::TopicSettings::default()
                    },
                };
                match client.create_topic(&create).await {
                    Ok(_) => {}
                    Err(tidings_client::ClientError::Server { status: 409, .. }) => {}
                    Err(e) => return Err(e).with_context(|| format!("creating topic {topic}")),
                }
            }
            let backend = tidings::connect(url).await?;
            Ok((backend, Arc::new(SchemaCheck::server(url)?)))
        }
        Engine::Kafka | Engine::Nats | Engine::Postgres => {
            let url = match (args.backend, args.url.as_deref()) {
                (_, Some(url)) => url.to_owned(),
                (Engine::Kafka, None) => "kafka://127.0.0.1:9092".into(),
                (Engine::Nats, None) => "nats://127.0.0.1:4222".into(),
                _ => bail!("--backend postgres needs --url postgres://..."),
            };
            // These engines have no registry of Tidings': the schemas live
            // in one under --data, and the producers check against it.
            let registry = Arc::new(
                Registry::open(&args.data.join("registry"))
                    .context("opening the schema registry")?,
            );
            register_locally(&registry, &schemas)?;
            let backend = tidings::connect(&url)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            // The dead letters' topic too: reconciliation reads it before
            // anything is dead-lettered (a Kafka consumer of a missing
            // topic logs an error each time it looks).
            let dead_letters = backend.dead_letter_topic(&names.orders, &names.group("payments"));
            for topic in names.topics().into_iter().chain([dead_letters.as_str()]) {
                backend.ensure_topic(topic, args.partitions).await?;
            }
            Ok((backend, Arc::new(SchemaCheck::registry(registry))))
        }
    }
}

fn register_locally(
    registry: &Registry,
    schemas: &[(&'static str, serde_json::Value)],
) -> anyhow::Result<()> {
    for (ty, schema) in schemas {
        let input = SchemaInput {
            schema_type: SchemaType::Json,
            schema: schema.to_string(),
        };
        registry
            .register(ty, &input)
            .with_context(|| format!("registering the schema of {ty}"))?;
    }
    Ok(())
}

/// The services and the order endpoint, running.
struct Running<S: EventStore> {
    stop: CancellationToken,
    addr: SocketAddr,
    board: Board,
    outbox: Arc<StoreOutbox<S>>,
    gateway: Arc<Gateway>,
    routes: JoinHandle<Result<tidings::router::Report, tidings::Error>>,
    projector: JoinHandle<anyhow::Result<()>>,
    http: JoinHandle<std::io::Result<()>>,
    summary: Option<JoinHandle<()>>,
}

/// Starts the outbox's forwarder, the read model, every service's routes
/// and the order endpoint.
async fn start<S: EventStore + Clone>(
    args: &Args,
    names: Arc<model::Names>,
    backend: Arc<dyn Backend>,
    schemas: Arc<SchemaCheck>,
    store: &Arc<S>,
    seed: u64,
) -> anyhow::Result<Running<S>> {
    let publisher = Publisher::with_partitions(Arc::clone(&backend), args.partitions)
        .with_hook(Arc::clone(&schemas) as Arc<dyn tidings::PublishHook>);
    let forwarding = ForwarderOptions {
        poll_interval: Duration::from_millis(200),
        retry_delay: Duration::from_millis(200),
        ..ForwarderOptions::default()
    };
    let outbox = Arc::new(StoreOutbox::start(
        Arc::clone(store),
        publisher,
        forwarding,
    )?);

    // The read model, fed from the store.
    let board = Board::new();
    let stop = CancellationToken::new();
    let projector = {
        let mut projector = Projector::new((**store).clone(), Selector::All, board.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            projector
                .run(stop.cancelled_owned())
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("the read model's projection failed: {e}"))
        })
    };

    let gateway = Arc::new(Gateway::new(GatewayOptions {
        transient_percent: args.transient_percent,
        seed: seed.rotate_left(17),
    }));
    let services = Services {
        store: Arc::clone(store),
        schemas: Arc::clone(&schemas),
        gateway: Arc::clone(&gateway),
        names: Arc::clone(&names),
    };
    let router = services::router(
        Arc::clone(&backend),
        &services,
        RouteOptions {
            concurrency: args.concurrency,
            // Ten deliveries of three tries each: an order that can be paid
            // is not dead-lettered for the gateway's time-outs (at 50 %,
            // one in a billion).
            max_deliveries: 10,
        },
    );
    let routes = {
        let stop = stop.clone();
        tokio::spawn(async move { router.run(stop.cancelled_owned()).await })
    };

    let shop = Arc::new(Shop {
        store: Arc::clone(store),
        outbox: Arc::clone(&outbox),
        schemas,
        board: board.clone(),
        names,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let http = {
        let stop = stop.clone();
        let app = shop::routes(Arc::clone(&shop));
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    if !args.quiet {
        eprintln!(
            "order-flow on {}: the order service at http://{addr}/orders",
            backend.name()
        );
    }
    let summary = (!args.quiet).then(|| {
        let (board, outbox, stop) = (board.clone(), Arc::clone(&outbox), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => eprintln!("{}", summary_line(&board, &outbox)),
                }
            }
        })
    });
    Ok(Running {
        stop,
        addr,
        board,
        outbox,
        gateway,
        routes,
        projector,
        http,
        summary,
    })
}

impl<S: EventStore> Running<S> {
    /// Whether a part stopped on its own (an error it could not get past).
    fn failed(&self) -> bool {
        self.routes.is_finished() || self.projector.is_finished() || self.http.is_finished()
    }

    /// Stops everything gracefully: the routes finish what they handle.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let report = self
            .routes
            .await?
            .context("the services stopped with an error")?;
        tracing::info!(?report, "services stopped");
        self.projector.await??;
        self.http.await??;
        if let Some(summary) = self.summary {
            summary.await?;
            eprintln!("{}", summary_line(&self.board, &self.outbox));
        }
        Ok(())
    }
}

/// The services and the endpoint until SIGTERM or Ctrl-C.
async fn services_only<S: EventStore + Clone>(
    args: &Args,
    names: Arc<model::Names>,
    backend: Arc<dyn Backend>,
    schemas: Arc<SchemaCheck>,
    store: S,
    seed: u64,
) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let running = start(args, names, backend, schemas, &store, seed).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if running.failed() {
                    break;
                }
            }
        }
    }
    running.stop().await
}

/// Everything in this process: runs the services, places the orders,
/// waits for them to settle, stops, checks.
async fn in_process<S: EventStore + Clone>(
    args: &Args,
    names: Arc<model::Names>,
    backend: Arc<dyn Backend>,
    schemas: Arc<SchemaCheck>,
    store: S,
    seed: u64,
) -> anyhow::Result<Report> {
    let store = Arc::new(store);
    let backend_name = backend.name();
    let running = start(args, names, backend, schemas, &store, seed).await?;
    let started = Instant::now();
    let placed = load::place(running.addr, mix(args, seed), load_options(args)).await?;
    let ids: Vec<String> = placed.orders.iter().map(|o| o.order.clone()).collect();
    let deadline = started + Duration::from_secs(args.timeout);
    while running.board.settled_of(&ids) < ids.len() && Instant::now() < deadline {
        if running.failed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let gateway = Arc::clone(&running.gateway);
    let outbox = Arc::clone(&running.outbox);
    running.stop().await?;
    let stats = outbox.stats();
    let mut report = report(backend_name, seed, &placed, seconds, &*store, 0).await?;
    report.gateway_timeouts = Some(gateway.timeouts.load(std::sync::atomic::Ordering::Relaxed));
    report.forwarded = Some(stats.forwarded);
    report.outbox_dead = Some(stats.dead);
    Ok(report)
}

/// The customers' mix of this run: ids of its own, choices of the seed.
fn mix(args: &Args, seed: u64) -> Mix {
    Mix {
        decline_percent: args.decline_percent,
        poison_percent: args.poison_percent,
        run: run_id(),
        seed,
    }
}

fn load_options(args: &Args) -> LoadOptions {
    LoadOptions {
        orders: args.orders,
        rate: args.rate,
        clients: args.clients,
        patience: Duration::from_secs(args.timeout),
    }
}

/// Checks the store and puts the figures together.
async fn report<S: EventStore>(
    backend: &'static str,
    seed: u64,
    placed: &Placed,
    seconds: f64,
    store: &S,
    faults: u32,
) -> anyhow::Result<Report> {
    let mut verdict = check::check(store, &placed.orders).await?;
    let latencies = {
        let mut l = std::mem::take(&mut verdict.latencies_ms);
        l.sort_unstable();
        l
    };
    Ok(Report {
        backend,
        seed,
        placed: placed.orders.len(),
        client_retries: placed.retries,
        faults,
        gateway_timeouts: None,
        forwarded: None,
        outbox_dead: None,
        seconds,
        orders_per_second: latencies.len() as f64 / seconds.max(f64::EPSILON),
        latency_ms_p50: percentile(&latencies, 50),
        latency_ms_p99: percentile(&latencies, 99),
        latency_ms_max: latencies.last().copied().unwrap_or(0),
        check: verdict,
    })
}

fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn summary_line<S: EventStore>(board: &Board, outbox: &StoreOutbox<S>) -> String {
    let c = board.counts();
    let s = outbox.stats();
    let ended = c.confirmed + c.cancelled + c.rejected;
    format!(
        "placed {:>6}  confirmed {:>6}  cancelled {:>5}  rejected {:>4}  compensated {:>5}  notified {:>6} | in flight {:>5}  dead letters {:>4}  outbox behind {:>5}",
        c.placed,
        c.confirmed,
        c.cancelled,
        c.rejected,
        c.compensated,
        c.notified,
        c.placed.saturating_sub(ended),
        c.rejected,
        s.head.saturating_sub(s.checkpoint),
    )
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let c = &report.check;
    println!(
        "{} orders on {} in {:.1} s: {:.0} orders/s; placed to outcome p50 {} ms, p99 {} ms, max {} ms",
        report.placed,
        report.backend,
        report.seconds,
        report.orders_per_second,
        report.latency_ms_p50,
        report.latency_ms_p99,
        report.latency_ms_max
    );
    println!(
        "  confirmed {}, cancelled {}, rejected {} (dead letters); stock released {}, reservations voided {}",
        c.confirmed, c.cancelled, c.rejected, c.compensated, c.voided
    );
    let figure = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    println!(
        "  processes killed {}, client requests retried {}, gateway time-outs retried {}, outbox forwarded {} (refused {})",
        report.faults,
        report.client_retries,
        figure(report.gateway_timeouts),
        figure(report.forwarded),
        figure(report.outbox_dead)
    );
    println!(
        "  seed {} (--seed places the same orders again)",
        report.seed
    );
    if c.passed() {
        println!(
            "check passed: every order ended exactly once, every effect happened exactly once"
        );
    } else {
        println!("check FAILED: {} problems", c.problem_count);
        for p in &c.problems {
            println!("  {p}");
        }
    }
    Ok(())
}

/// A seed for the run's dice.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
}

/// The run's id, the prefix of its order ids: runs on one data directory
/// (or one database) never share an order.
fn run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("r{ms:x}")
}
