//! `tidings-bench kafka`: the Kafka listener driven by a librdkafka client
//! (confluent-kafka for Python, `kafka/client.py`): produce throughput with
//! `acks=all`, and publish→consume latency at a fixed rate through a consumer
//! group. The broker and listener run in this process, as `tidings serve`
//! runs them, on a throwaway data directory and a loopback port.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tidings_broker::{Broker, BrokerOptions, TopicSpec};

/// Runs the client script with `args`; returns its JSON lines.
fn client(broker: &str, args: &[String]) -> Result<Vec<serde_json::Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(broker)
        .args(args)
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "the librdkafka client failed (pip install confluent-kafka): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("client output"))
        .collect()
}

fn ms(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"))
}

pub(crate) fn run(dir: &Path, quick: bool) -> Result<()> {
    let data = tempfile::tempdir_in(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let broker = Arc::new(Broker::open(data.path(), BrokerOptions::default())?);
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let server = rt.spawn(tidings_kafka::serve(
        listener,
        Arc::clone(&broker),
        tidings_kafka::KafkaConfig::default(),
        None,
        None,
        stop.clone(),
    ));
    for (name, partitions) in [("produce-100", 1), ("produce-1k", 1), ("latency", 1)] {
        broker.create_topic(name, TopicSpec::with_partitions(partitions))?;
    }
    let (count, seconds) = if quick { (20_000, 1) } else { (300_000, 10) };
    println!(
        "Kafka listener, librdkafka client (confluent-kafka), fsync = always, one partition.\n"
    );
    println!("| case | records/s | MB/s |");
    println!("|---|---:|---:|");
    for (topic, size) in [("produce-100", 100), ("produce-1k", 1024)] {
        let r = &client(
            &addr,
            &[
                "produce".into(),
                topic.into(),
                count.to_string(),
                size.to_string(),
            ],
        )?[0];
        println!(
            "| produce {size} B, acks=all, linger.ms=5 | {:.0} | {:.1} |",
            r["per_second"].as_f64().unwrap_or(0.0),
            r["mb_per_second"].as_f64().unwrap_or(0.0)
        );
    }
    let r = &client(
        &addr,
        &[
            "latency".into(),
            "latency".into(),
            "10000".into(),
            seconds.to_string(),
            "100".into(),
        ],
    )?[0];
    println!("\n| publish → consume at 10 000/s, 100 B, acks=all | p50 ms | p99 ms | p999 ms | max ms | received |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {} s | {} | {} | {} | {} | {} of {} |",
        seconds,
        ms(&r["p50_ms"]),
        ms(&r["p99_ms"]),
        ms(&r["p999_ms"]),
        ms(&r["max_ms"]),
        r["received"],
        r["sent"]
    );
    stop.cancel();
    rt.block_on(server)??;
    broker.close()?;
    Ok(())
}
