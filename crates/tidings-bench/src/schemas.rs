//! `tidings-bench schemas`: what checking events against their schemas at
//! publish costs. The same producers publish the same order events to a topic
//! that does not validate and to one that does, side by side, with the log
//! syncing every append and without syncing (where the check's CPU shows
//! most); and the check alone, per event, with and without resolving the
//! schema in the registry.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tidings_broker::{Broker, BrokerOptions, SchemaValidation, TopicSpec};
use tidings_log::FsyncPolicy;
use tidings_schema::{EventRef, JsonSchema, Registry, SchemaInput, SchemaType};
use tidings_types::CloudEvent;

/// Producers publishing at once.
const PRODUCERS: usize = 8;
/// Events per publish.
const BATCH: usize = 32;

fn order_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "customer": {"type": "string"},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "total": {"type": "number", "minimum": 0},
            "placed_at": {"type": "string", "format": "date-time"},
            "lines": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}, "price": {"type": "number"}},
                "required": ["sku", "qty", "price"]
            }}
        },
        "required": ["order_id", "customer", "currency", "total", "lines"]
    })
}

fn order(n: u64) -> CloudEvent {
    CloudEvent::new("/bench/shop", "order.placed")
        .with_id(format!("o-{n}"))
        .with_json(&json!({
            "order_id": format!("o-{n}"),
            "customer": format!("c-{}", n % 1000),
            "currency": "EUR",
            "total": 42.5,
            "placed_at": "2026-12-04T10:00:00Z",
            "lines": [{"sku": "A-1", "qty": 2, "price": 10.0}, {"sku": "B-7", "qty": 1, "price": 22.5}]
        }))
        .expect("the event serialises")
}

pub(crate) fn run(dir: &Path, quick: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let events = if quick { 2_000 } else { 200_000 };
    println!("## Publish with the schema check off and on ({PRODUCERS} producers, batches of {BATCH}, ~330 B order events, embedded)\n");
    println!("| fsync | events | off: events/s | validate: events/s | validate ÷ off |");
    println!("|---|---:|---:|---:|---:|");
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let data = tempfile::tempdir_in(dir).context("a throwaway data directory")?;
        let registry = Arc::new(Registry::open(data.path())?);
        registry.register(
            "order.placed",
            &SchemaInput {
                schema_type: SchemaType::Json,
                schema: order_schema().to_string(),
            },
        )?;
        let broker = Arc::new(Broker::open(
            data.path(),
            BrokerOptions {
                registry: Some(Arc::clone(&registry)),
                ..BrokerOptions::default()
            },
        )?);
        for (name, validation) in [
            ("off", SchemaValidation::Off),
            ("validate", SchemaValidation::Validate),
        ] {
            let mut spec = TopicSpec::with_partitions(4);
            spec.log.fsync = fsync;
            spec.dedup_window = None;
            spec.schema_validation = validation;
            broker.create_topic(name, spec)?;
        }
        // Warm up, then alternate so neither side gets the better minute.
        rt.block_on(publish(&broker, "off", events / 10))?;
        rt.block_on(publish(&broker, "validate", events / 10))?;
        let off = rt.block_on(publish(&broker, "off", events))?;
        let on = rt.block_on(publish(&broker, "validate", events))?;
        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        println!(
            "| {fsync} | {events} | {:.0} | {:.0} | {:.2} |",
            rate(off),
            rate(on),
            rate(on) / rate(off)
        );
        broker.close()?;
    }

    println!("\n## The check alone, per event (one thread)\n");
    println!("| check | events | ns/event |");
    println!("|---|---:|---:|");
    let data = tempfile::tempdir_in(dir)?;
    let registry = Registry::open(data.path())?;
    registry.register(
        "order.placed",
        &SchemaInput {
            schema_type: SchemaType::Json,
            schema: order_schema().to_string(),
        },
    )?;
    let schema = JsonSchema::compile(order_schema())?;
    let n = if quick { 2_000 } else { 200_000 };
    let sample: Vec<CloudEvent> = (0..1000).map(order).collect();
    let started = Instant::now();
    for i in 0..n {
        let data = sample[i % sample.len()].data().expect("data");
        let value: serde_json::Value = serde_json::from_slice(data)?;
        anyhow::ensure!(
            schema.is_valid(&value),
            "a generated order fails its schema"
        );
    }
    println!(
        "| parse the data and validate | {n} | {:.0} |",
        per(started.elapsed(), n)
    );
    let started = Instant::now();
    for i in 0..n {
        let e = &sample[i % sample.len()];
        registry
            .check_event(
                "orders",
                EventRef {
                    ty: e.ty(),
                    dataschema: e.dataschema(),
                    data: e.data().map(|d| &d[..]),
                },
            )
            .map_err(|r| anyhow::anyhow!("{r}"))?;
    }
    println!(
        "| resolve by type in the registry, parse, validate | {n} | {:.0} |",
        per(started.elapsed(), n)
    );
    Ok(())
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// `events` order events published by [`PRODUCERS`] producers in batches;
/// how long it took.
async fn publish(broker: &Arc<Broker>, topic: &str, events: usize) -> Result<Duration> {
    let per_producer = events / PRODUCERS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let broker = Arc::clone(broker);
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let n = BATCH.min(per_producer - sent);
                let batch: Vec<CloudEvent> = (0..n)
                    .map(|i| order((p * per_producer + sent + i) as u64))
                    .collect();
                broker.publish_batch(&topic, batch).await?;
                sent += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}
