//! `tidings-bench dashboard`: how long the dashboard's pages take with many
//! topics and groups. A `tidings serve` child gets 2 000 topics (an event
//! in each), 500 stream groups (each committed on its topic, then left) and
//! 50 queues; then each page is fetched again and again over one HTTP/1.1
//! connection per request, as a browser's first load would, and its time
//! to the last byte is reported (median, 99th percentile, size).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tidings_api::{CommitRequest, CreateQueue, CreateTopic, JoinRequest, TopicSettings};
use tidings_types::CloudEvent;

use crate::peers::servers;

/// The full run's sizes, and the quick run's.
struct Sizes {
    topics: usize,
    groups: usize,
    queues: usize,
    loads: usize,
}

const FULL: Sizes = Sizes {
    topics: 2_000,
    groups: 500,
    queues: 50,
    loads: 30,
};
const QUICK: Sizes = Sizes {
    topics: 100,
    groups: 25,
    queues: 5,
    loads: 3,
};

pub(crate) fn run(dir: &Path, quick: bool) -> Result<()> {
    let sizes = if quick { QUICK } else { FULL };
    let (server, _kafka) = servers::tidings(dir)?;
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(seed(addr, &sizes))?;
    println!(
        "Seeded {} topics, {} stream groups and {} queues in {:.1} s.\n",
        sizes.topics,
        sizes.groups,
        sizes.queues,
        started.elapsed().as_secs_f64()
    );
    let pages = [
        ("overview", "/ui".to_owned()),
        ("topics (page 1 of the list)", "/ui/topics".to_owned()),
        ("topics, sorted by lag", "/ui/topics?sort=lag".to_owned()),
        ("topics, filtered by name", "/ui/topics?q=t-01".to_owned()),
        ("one topic", "/ui/topics/t-0001".to_owned()),
        (
            "a topic's events",
            "/ui/topics/t-0001/events?from=earliest".to_owned(),
        ),
        ("stream groups", "/ui/groups".to_owned()),
        ("one stream group", "/ui/groups/g-0001".to_owned()),
        ("queues", "/ui/queues".to_owned()),
        ("one queue", "/ui/queues/q-0001".to_owned()),
        ("catalog", "/ui/catalog".to_owned()),
        (
            "an event's journey (every topic scanned)",
            "/ui/journey?id=e-0001".to_owned(),
        ),
    ];
    println!("| page | median | p99 | size |");
    println!("|---|---|---|---|");
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(sizes.loads);
        let mut bytes = 0;
        for _ in 0..sizes.loads {
            let t = Instant::now();
            bytes = get(addr, path)?;
            times.push(t.elapsed());
        }
        times.sort();
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {name} (`{path}`) | {:.1} ms | {:.1} ms | {} KiB |",
            ms(at(0.5)),
            ms(at(0.99)),
            bytes / 1024
        );
    }
    drop(server);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Topics with an event each, groups committed on them, queues.
async fn seed(addr: SocketAddr, sizes: &Sizes) -> Result<()> {
    let client = crate::peers::http::client(addr)?;
    for t in 0..sizes.topics {
        let name = format!("t-{t:04}");
        client
            .create_topic(&CreateTopic {
                name: name.clone(),
                settings: TopicSettings {
                    partitions: Some(1),
                    ..TopicSettings::default()
                },
            })
            .await
            .with_context(|| format!("creating {name}"))?;
        let event = CloudEvent::new("/bench", "bench.seeded").with_id(format!("e-{t:04}"));
        client.publish(&name, &[event]).await?;
    }
    for g in 0..sizes.groups {
        let group = format!("g-{g:04}");
        let topic = format!("t-{:04}", g % sizes.topics);
        let joined = client
            .join_group(
                &group,
                &JoinRequest {
                    topic,
                    from: Some("earliest".to_owned()),
                    session_timeout_ms: None,
                },
            )
            .await?;
        // Half are caught up, half are one event behind.
        client
            .commit(
                &group,
                &joined.member,
                &CommitRequest {
                    offsets: [(0, u64::from(g % 2 == 0))].into(),
                },
            )
            .await?;
        client.leave_group(&group, &joined.member).await?;
    }
    for q in 0..sizes.queues {
        client
            .create_queue(&CreateQueue {
                from: Some("earliest".to_owned()),
                ..CreateQueue::new(format!("q-{q:04}"), format!("t-{:04}", q % sizes.topics))
            })
            .await?;
    }
    Ok(())
}

/// Fetches `path` over a new connection and reads the whole answer;
/// returns its size.
fn get(addr: SocketAddr, path: &str) -> Result<usize> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    Ok(answer.len())
}
