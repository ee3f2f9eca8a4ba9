//! `tidings-bench store`: the event store's embedded and PostgreSQL backends side
//! by side, in one run, on the same workloads:
//! - durable appends with an exact expected version, 1 and 100 events per append,
//!   1 and 16 writers each on its own stream;
//! - loading an aggregate of 10 000 events with and without a snapshot;
//! - catching up on `$all` from the start.
//!
//! The PostgreSQL server is the one `TIDINGS_TEST_PG_URL` names (`scripts/bench
//! store` starts a throwaway cluster with `fsync` and `synchronous_commit` on);
//! each run gets a fresh database.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tidings_store::aggregate::{Aggregate, Repository, RepositoryConfig};
use tidings_store::{
    EmbeddedOptions, EmbeddedStore, EventStore, ExpectedVersion, PgOptions, PgStore, Position,
    Selector, Snapshot, StreamName, StreamVersion, Subscription,
};
use tidings_types::CloudEvent;
use tokio_postgres::NoTls;

/// Events in the aggregate that is loaded.
const AGGREGATE_EVENTS: u64 = 10_000;

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    movements: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Movement {
    #[serde(rename = "account.credited")]
    Credited { amount: i64 },
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Event = Movement;
    type Command = i64;
    type Error = std::convert::Infallible;

    fn apply(&mut self, Movement::Credited { amount }: &Movement) {
        self.balance += amount;
        self.movements += 1;
    }

    fn decide(&self, amount: &i64) -> Result<Vec<Movement>, Self::Error> {
        Ok(vec![Movement::Credited { amount: *amount }])
    }
}

fn movement(amount: i64) -> CloudEvent {
    CloudEvent::new("/bench", "account.credited")
        .with_json(&serde_json::json!({ "amount": amount, "memo": "x".repeat(40) }))
        .expect("event encodes")
}

pub(crate) fn run(dir: &Path, quick: bool, pg_url: Option<String>) -> Result<()> {
    let pg_url = pg_url.context(
        "no PostgreSQL server: set TIDINGS_TEST_PG_URL or run `scripts/bench store`, which starts one",
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let seconds = if quick { 0.3 } else { 3.0 };
        let tmp = tempfile::tempdir_in(dir)?;
        let embedded = EmbeddedStore::open(tmp.path(), EmbeddedOptions::default())?;
        let pg = PgStore::connect(&fresh_database(&pg_url).await?, PgOptions::default()).await?;
        println!(
            "## Event store: embedded vs PostgreSQL (fsync on both; synchronous_commit = on)\n"
        );
        println!("| workload | embedded | PostgreSQL | embedded ÷ PostgreSQL |");
        println!("|---|---:|---:|---:|");
        for (writers, per_append) in [(1, 1), (16, 1), (1, 100), (16, 100)] {
            let name = format!(
                "append, expected version, {per_append} event(s) per append, {writers} writer(s)"
            );
            let e = appends(&embedded, "e", writers, per_append, seconds).await?;
            let p = appends(&pg, "p", writers, per_append, seconds).await?;
            row(&name, "events/s", e, p);
        }
        let events = if quick { 500 } else { AGGREGATE_EVENTS };
        let loads = if quick { 3 } else { 20 };
        let e = load_aggregate(&embedded, events, loads).await?;
        let p = load_aggregate(&pg, events, loads).await?;
        row(
            &format!("load an aggregate of {events} events, no snapshot"),
            "loads/s",
            e.0,
            p.0,
        );
        row(
            &format!("load an aggregate of {events} events, from a snapshot"),
            "loads/s",
            e.1,
            p.1,
        );
        let e = catch_up(&embedded).await?;
        let p = catch_up(&pg).await?;
        row("catch up on $all from the start", "events/s", e.0, p.0);
        println!("\n($all held {} events on each side.)", e.1);
        embedded.close()?;
        Ok(())
    })
}

fn row(name: &str, unit: &str, embedded: f64, pg: f64) {
    println!(
        "| {name} | {} {unit} | {} {unit} | {:.1}× |",
        thousands(embedded),
        thousands(pg),
        embedded / pg
    );
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Creates a database of its own for this run (and this call) on the server
/// at `admin_url`.
pub(crate) async fn fresh_database(admin_url: &str) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls).await?;
    tokio::spawn(connection);
    // One per call: a run may need several at once.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("tidings_bench_{}_{call}", std::process::id());
    // Two statements: CREATE DATABASE cannot share a transaction.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut config: tokio_postgres::Config = admin_url.parse()?;
    config.dbname(&name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    Ok(format!(
        "host={host} port={} user={} dbname={name}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres"),
    ))
}

/// `writers` tasks, each appending `per_append` events at a time to its own stream
/// with the exact expected version, for `seconds`. Returns events per second.
async fn appends<S: EventStore + Clone>(
    store: &S,
    prefix: &str,
    writers: usize,
    per_append: u64,
    seconds: f64,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let stream = StreamName::new(&format!("w{prefix}{writers}x{per_append}-{w}"))?;
        tasks.push(tokio::spawn(async move {
            let mut version: Option<StreamVersion> = None;
            let mut written = 0u64;
            while Instant::now() < deadline {
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let batch = (0..per_append).map(|i| movement(i as i64)).collect();
                let done = store.append_to(&stream, expected, batch).await?;
                version = Some(done.last_version);
                written += per_append;
            }
            anyhow::Ok(written)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Loads an aggregate of `events` events `loads` times without a snapshot, then
/// `loads` times from a snapshot at its last version. Returns loads per second.
async fn load_aggregate<S: EventStore + Clone>(
    store: &S,
    events: u64,
    loads: u32,
) -> Result<(f64, f64)> {
    let repo = Repository::<S, Account>::new(
        store.clone(),
        RepositoryConfig {
            snapshot_every: None,
            ..RepositoryConfig::new("/bench")
        },
    );
    let stream = Repository::<S, Account>::stream("big")?;
    let mut version: Option<StreamVersion> = None;
    let mut left = events;
    while left > 0 {
        let n = left.min(100);
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let batch = (0..n).map(|i| movement(i as i64)).collect();
        version = Some(
            store
                .append_to(&stream, expected, batch)
                .await?
                .last_version,
        );
        left -= n;
    }
    let start = Instant::now();
    for _ in 0..loads {
        let loaded = repo.load("big").await?;
        anyhow::ensure!(loaded.state.movements == events && loaded.snapshot.is_none());
    }
    let folded = f64::from(loads) / start.elapsed().as_secs_f64();
    let state = repo.load("big").await?;
    store
        .save_snapshot(Snapshot {
            stream: stream.clone(),
            version: state.version.context("the aggregate has events")?,
            schema_version: Account::SNAPSHOT_VERSION,
            state: serde_json::to_vec(&state.state)?.into(),
        })
        .await?;
    let start = Instant::now();
    for _ in 0..loads {
        let loaded = repo.load("big").await?;
        anyhow::ensure!(loaded.state.movements == events && loaded.snapshot.is_some());
    }
    Ok((folded, f64::from(loads) / start.elapsed().as_secs_f64()))
}

/// Reads `$all` from the start to the head through a subscription. Returns events
/// per second and the number of events.
async fn catch_up<S: EventStore + Clone>(store: &S) -> Result<(f64, u64)> {
    let head = store.head().await?;
    let start = Instant::now();
    let mut sub = Subscription::new(store.clone(), Selector::All, Position::START);
    let mut n = 0u64;
    while sub.checkpoint() < head {
        let batch = sub.next_batch(512, Duration::ZERO).await?;
        if batch.is_empty() {
            break;
        }
        n += batch.len() as u64;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), n))
}
