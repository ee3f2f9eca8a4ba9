//! `tidings-bench outbox`: the transactional outbox on PostgreSQL, relaying
//! to the embedded engine and to the PostgreSQL backend, side by side.
//!
//! - **Relay throughput**: orders written beforehand, ten to a transaction,
//!   one staged event of 100 B each; then one relay drains the outbox, timed
//!   from its start until the table is empty (every event published and its
//!   row deleted).
//! - **Latency added by the outbox**: orders written one per transaction at a
//!   fixed rate; from the commit to a subscriber holding the event, once with
//!   the event published right after the commit (no outbox: an event lost if
//!   the process dies in between) and once staged in the transaction and
//!   relayed. The difference is what the guarantee costs.
//! - **The outbox on the event store** (`tidings::outbox::store`): the same
//!   two workloads with each order an event-sourced write (its stream's
//!   first event) and its announcement in one append, on the embedded store
//!   and on the PostgreSQL store, forwarded to the embedded engine.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tidings::outbox::{self, Relay, RelayOptions};
use tidings::{Backend, CloudEvent, Publisher, SubscribeOptions, Subscriber};
use tokio_postgres::NoTls;

use crate::percentile;

const EVENT_BYTES: usize = 100;

fn event(n: u64) -> CloudEvent {
    let mut data = vec![b'x'; EVENT_BYTES];
    data[..8].copy_from_slice(&n.to_le_bytes());
    CloudEvent::new("/bench", "order.placed")
        .with_partitionkey(format!("o-{}", n % 64))
        .with_data("application/octet-stream", data)
}

fn n_of(e: &CloudEvent) -> u64 {
    e.data().and_then(|d| d.get(..8)).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().expect("eight bytes"))
    })
}

pub(crate) fn run(dir: &Path, quick: bool, pg_url: Option<String>) -> Result<()> {
    let Some(pg_url) = pg_url else {
        anyhow::bail!("the outbox benchmark needs PostgreSQL: --pg-url or TIDINGS_TEST_PG_URL");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let orders: u64 = if quick { 500 } else { 20_000 };
    let (rate, seconds): (u64, u64) = if quick { (100, 1) } else { (200, 5) };
    let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
    rt.block_on(async {
        let app = crate::store::fresh_database(&pg_url).await?;
        let (mut db, connection) = tokio_postgres::connect(&app, NoTls).await?;
        tokio::spawn(connection);
        outbox::install(&mut db).await?;
        db.batch_execute("CREATE TABLE orders (n bigint PRIMARY KEY, cents bigint NOT NULL)")
            .await?;
        let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
            (
                "to the embedded engine",
                Arc::new(tidings::embedded::Embedded::open(data.path().join("embedded")).await?),
            ),
            (
                "to the PostgreSQL backend",
                Arc::new(tidings::postgres::Postgres::connect(&app).await?),
            ),
        ];

        println!(
            "## Outbox relay throughput: {orders} orders staged beforehand, ten to a transaction\n"
        );
        println!("| relay | events | events/s |");
        println!("|---|---:|---:|");
        let mut next = 0u64;
        for (name, backend) in &backends {
            let topic = format!("relay-{next}");
            for chunk in (next..next + orders).collect::<Vec<_>>().chunks(10) {
                let tx = db.transaction().await?;
                for &n in chunk {
                    tx.execute("INSERT INTO orders VALUES ($1, 100)", &[&i64::try_from(n)?])
                        .await?;
                }
                let events: Vec<CloudEvent> = chunk.iter().map(|&n| event(n)).collect();
                outbox::stage(&tx, &topic, &events).await?;
                tx.commit().await?;
            }
            next += orders;
            let relay = Arc::new(
                Relay::connect(
                    &app,
                    Publisher::new(Arc::clone(backend)),
                    RelayOptions::default(),
                )
                .await?,
            );
            let start = Instant::now();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = Arc::clone(&relay);
            let run = tokio::spawn(async move {
                running
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            });
            while relay.stats().published < orders {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let _ = stop.send(());
            run.await??;
            println!("| {name} | {orders} | {:.0} |", orders as f64 / elapsed);
        }

        println!("\n## Commit → a subscriber holds the event, {rate} orders/s for {seconds} s\n");
        println!("| how | events | p50 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|---:|");
        for (name, backend) in &backends {
            for staged in [false, true] {
                let topic = format!("latency-{next}");
                let mut latencies =
                    end_to_end(&mut db, &app, backend, &topic, next, rate, seconds, staged).await?;
                next += rate * seconds;
                latencies.sort_unstable();
                let how = if staged {
                    format!("staged in the transaction, relayed {name}")
                } else {
                    format!("published after the commit (no outbox), {name}")
                };
                println!(
                    "| {how} | {} | {:.2} | {:.2} | {:.2} |",
                    latencies.len(),
                    percentile(&latencies, 0.50),
                    percentile(&latencies, 0.99),
                    percentile(&latencies, 1.0),
                );
            }
        }
        store_outbox_runs(data.path(), &pg_url, &backends[0].1, orders, rate, seconds).await
    })
}

/// The event store's outbox, on the embedded store and on PostgreSQL,
/// forwarding to `engine`.
async fn store_outbox_runs(
    dir: &Path,
    pg_url: &str,
    engine: &Arc<dyn Backend>,
    orders: u64,
    rate: u64,
    seconds: u64,
) -> Result<()> {
    use tidings_store::{EmbeddedOptions, EmbeddedStore, PgOptions, PgStore};

    let embedded = Arc::new(EmbeddedStore::open(
        dir.join("store"),
        EmbeddedOptions::default(),
    )?);
    let pg = Arc::new(
        PgStore::connect(
            &crate::store::fresh_database(pg_url).await?,
            PgOptions::default(),
        )
        .await?,
    );
    println!(
        "\n## The outbox on the event store: {orders} orders written beforehand, one unit each\n"
    );
    println!("| forwarder | events | events/s |");
    println!("|---|---:|---:|");
    let throughput_embedded =
        store_forwarder_throughput(&embedded, engine, "embedded", orders).await?;
    println!("| from the embedded store | {orders} | {throughput_embedded:.0} |");
    let throughput_pg = store_forwarder_throughput(&pg, engine, "postgres", orders).await?;
    println!("| from the PostgreSQL store | {orders} | {throughput_pg:.0} |");

    println!("\n## Append → a subscriber holds the event, {rate} orders/s for {seconds} s\n");
    println!("| how | events | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for staged in [false, true] {
        for (name, latencies) in [
            (
                "embedded store",
                store_latency(&embedded, engine, "e", rate, seconds, staged).await?,
            ),
            (
                "PostgreSQL store",
                store_latency(&pg, engine, "p", rate, seconds, staged).await?,
            ),
        ] {
            let mut latencies = latencies;
            latencies.sort_unstable();
            let how = if staged {
                format!("in one append, forwarded, {name}")
            } else {
                format!("appended then published (no outbox), {name}")
            };
            println!(
                "| {how} | {} | {:.2} | {:.2} | {:.2} |",
                latencies.len(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0),
            );
        }
    }
    Ok(())
}

/// Orders written beforehand, each its stream's first event and its
/// announcement in one append (what `StoreTx::commit` writes), then a
/// forwarder started and timed until every event is published: events per
/// second.
async fn store_forwarder_throughput<S: tidings_store::EventStore>(
    store: &Arc<S>,
    engine: &Arc<dyn Backend>,
    name: &str,
    orders: u64,
) -> Result<f64> {
    use tidings::outbox::store::{outbox_stream, ForwarderOptions, StoreOutbox};
    use tidings_store::{ExpectedVersion, StreamAppend, StreamName};
    let topic = format!("store-relay-{name}");
    let outbox = outbox_stream(&topic)?;
    for n in 0..orders {
        store
            .append(vec![
                StreamAppend::new(
                    StreamName::new(&format!("order{name}-{n}"))?,
                    ExpectedVersion::NoStream,
                    vec![CloudEvent::new("/bench", "order.placed")],
                ),
                StreamAppend::new(outbox.clone(), ExpectedVersion::Any, vec![event(n)]),
            ])
            .await?;
    }
    let start = Instant::now();
    let forwarder = StoreOutbox::start(
        Arc::clone(store),
        Publisher::new(Arc::clone(engine)),
        ForwarderOptions::default(),
    )?;
    while forwarder.stats().forwarded < orders {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(orders as f64 / start.elapsed().as_secs_f64())
}

/// Orders at `rate` per second for `seconds`, each one unit; the latency of
/// each from its commit to a subscriber holding its announcement, in
/// microseconds. Without `staged`, the order is appended alone and its
/// event published after (no outbox).
async fn store_latency<S: tidings_store::EventStore>(
    store: &Arc<S>,
    engine: &Arc<dyn Backend>,
    name: &str,
    rate: u64,
    seconds: u64,
    staged: bool,
) -> Result<Vec<u32>> {
    use tidings::outbox::store::{ForwarderOptions, StoreOutbox};
    use tidings_store::{ExpectedVersion, StreamName};
    let topic = format!("store-latency-{name}-{staged}");
    engine
        .ensure_topic(&topic, tidings::DEFAULT_PARTITIONS)
        .await?;
    let count = rate * seconds;
    let mut sub = Subscriber::new(Arc::clone(engine))
        .subscribe(SubscribeOptions::queue(&topic, format!("{topic}-reader")))
        .await?;
    let reader = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < usize::try_from(count)? {
            for d in sub.next_batch(64, Duration::from_millis(100)).await? {
                let at = Instant::now();
                held.push((n_of(d.event().context("an event")?), at));
                d.ack().await?;
            }
        }
        sub.close().await?;
        anyhow::Ok(held)
    });
    let publisher = Publisher::new(Arc::clone(engine));
    let outbox = StoreOutbox::start(
        Arc::clone(store),
        publisher.clone(),
        ForwarderOptions::default(),
    )?;
    let mut committed = vec![None; usize::try_from(count)?];
    let interval = Duration::from_secs(1) / u32::try_from(rate)?;
    let begin = tokio::time::Instant::now();
    for n in 0..count {
        tokio::time::sleep_until(begin + interval * u32::try_from(n)?).await;
        let mut tx = outbox.transaction();
        tx.append(
            StreamName::new(&format!("order{name}{staged}-{n}"))?,
            ExpectedVersion::NoStream,
            vec![CloudEvent::new("/bench", "order.placed")],
        );
        if staged {
            tx.stage(&topic, vec![event(n)])?;
        }
        tx.commit().await?;
        committed[usize::try_from(n)?] = Some(Instant::now());
        if !staged {
            publisher.publish(&topic, event(n)).await?;
        }
    }
    let held = reader.await??;
    drop(outbox);
    let mut latencies = Vec::with_capacity(held.len());
    for (n, at) in held {
        let commit =
            committed[usize::try_from(n)?].context("an event of an order never committed")?;
        let us = at.saturating_duration_since(commit).as_micros();
        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}

/// Orders at `rate` per second for `seconds`, each in its own transaction;
/// the latency of each from its commit to a subscriber holding its event,
/// in microseconds.
#[allow(clippy::too_many_arguments)]
async fn end_to_end(
    db: &mut tokio_postgres::Client,
    app: &str,
    backend: &Arc<dyn Backend>,
    topic: &str,
    first: u64,
    rate: u64,
    seconds: u64,
    staged: bool,
) -> Result<Vec<u32>> {
    let publisher = Publisher::new(Arc::clone(backend));
    // The topic exists before the subscriber starts at its beginning.
    backend
        .ensure_topic(topic, tidings::DEFAULT_PARTITIONS)
        .await?;
    let count = rate * seconds;
    let committed: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; usize::try_from(count)?]);
    let mut sub = Subscriber::new(Arc::clone(backend))
        .subscribe(SubscribeOptions::queue(topic, format!("{topic}-reader")))
        .await?;
    // When the subscriber held each event; joined with the commits at the
    // end (a relayed event can arrive before the writer has noted its commit).
    let reader = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < usize::try_from(count)? {
            for d in sub.next_batch(64, Duration::from_millis(100)).await? {
                let at = Instant::now();
                held.push((n_of(d.event().context("an event")?) - first, at));
                d.ack().await?;
            }
        }
        sub.close().await?;
        anyhow::Ok(held)
    });
    let relay = if staged {
        let relay =
            Arc::new(Relay::connect(app, publisher.clone(), RelayOptions::default()).await?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = Arc::clone(&relay);
        let run = tokio::spawn(async move {
            running
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        Some((stop, run))
    } else {
        None
    };
    let interval = Duration::from_secs(1) / u32::try_from(rate)?;
    let start = tokio::time::Instant::now();
    for i in 0..count {
        tokio::time::sleep_until(start + interval * u32::try_from(i)?).await;
        let n = first + i;
        let tx = db.transaction().await?;
        tx.execute("INSERT INTO orders VALUES ($1, 100)", &[&i64::try_from(n)?])
            .await?;
        if staged {
            outbox::stage(&tx, topic, &[event(n)]).await?;
        }
        tx.commit().await?;
        committed.lock().expect("commits")[usize::try_from(i)?] = Some(Instant::now());
        if !staged {
            publisher.publish(topic, event(n)).await?;
        }
    }
    let held = reader.await??;
    if let Some((stop, run)) = relay {
        let _ = stop.send(());
        run.await??;
    }
    let committed = committed.lock().expect("commits");
    let mut latencies = Vec::with_capacity(held.len());
    for (n, at) in held {
        let commit =
            committed[usize::try_from(n)?].context("an event of an order never committed")?;
        let us = at.saturating_duration_since(commit).as_micros();
        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}
