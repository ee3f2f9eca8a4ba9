//! Events out: `tail` reads a topic without a group (its last events, from a
//! position, or followed), `consume` reads as a member of a stream group or
//! from a queue group, printing events or running a command for each.
//!
//! Commands that follow stop on Ctrl-C or SIGTERM after the event in hand:
//! a group member leaves its group, a queue consumer gives back the
//! deliveries it never handled; then the command exits as an interrupted one
//! does. A server that goes away ends them with an error, or with `--retry`
//! they reconnect and go on where they stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tidings_api::{
    CommitRequest, Delivery, ErrorCode, JoinRequest, NackRequest, PollQuery, ReadQuery,
    ReceiveQuery, RejectRequest, StoredEvent,
};
use tidings_client::{Client, ClientError};

use crate::output::plural;
use crate::signals::Signals;
use crate::Ctx;

#[derive(Debug, Args)]
pub(crate) struct Tail {
    /// The topic.
    topic: String,
    /// Where to start: earliest, latest, an offset (with --partition on a
    /// topic of several) or an RFC 3339 time. Without it, the last events are
    /// printed.
    #[arg(long, value_parser = crate::values::position)]
    from: Option<String>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// How many events: the last N (10 by default), or with --from at most N
    /// from there (1000 by default).
    #[arg(short = 'n', long = "lines", visible_alias = "limit", value_name = "N")]
    lines: Option<usize>,
    /// Keep printing events as they are published.
    #[arg(short = 'f', long)]
    follow: bool,
    /// With --follow: when the server goes away, keep reconnecting, and go on
    /// where the output stopped.
    #[arg(long, requires = "follow")]
    retry: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["group", "queue"])))]
pub(crate) struct Consume {
    /// The topic a stream group consumes (not for --queue).
    #[arg(required_unless_present = "queue")]
    topic: Option<String>,
    /// Join this stream group, committing as it goes.
    #[arg(long)]
    group: Option<String>,
    /// Receive from this queue group, acking each event once handled.
    #[arg(long)]
    queue: Option<String>,
    /// Where a new stream group starts: earliest, latest or an RFC 3339 time
    /// (a group that committed goes on from its commits). A queue group's
    /// start is set when it is created.
    #[arg(long, conflicts_with = "queue", value_parser = crate::values::start)]
    from: Option<String>,
    /// Keep consuming when caught up.
    #[arg(short = 'f', long)]
    follow: bool,
    /// With --follow: when the server goes away, keep reconnecting.
    #[arg(long, requires = "follow")]
    retry: bool,
    /// Queue groups: deliveries leased at a time (10 by default, 1 with
    /// --exec). Those not handled when the command stops are given back at
    /// once.
    #[arg(long, value_name = "N", requires = "queue")]
    prefetch: Option<usize>,
    /// Queue groups: run this shell command for each event, its JSON on the
    /// command's standard input. Exit status 0 acks the event, 65
    /// (EX_DATAERR) rejects it to the dead letters, any other status nacks it
    /// for a retry after the group's backoff, with the last line of the
    /// command's standard error as the reason. The lease is extended while the
    /// command runs.
    #[arg(long, value_name = "CMD", requires = "queue")]
    exec: Option<String>,
}

/// Most events one page of a tail asks for.
const TAIL_PAGE_EVENTS_MAX: usize = 1000;
/// Events `tail` prints by default: the last ones, or from `--from` on.
const TAIL_LAST_DEFAULT: usize = 10;
const TAIL_FROM_DEFAULT: usize = 1000;

pub(crate) async fn tail(ctx: &mut Ctx, t: Tail) -> Result<()> {
    let topic = ctx.client.describe_topic(&t.topic).await?;
    let count = topic.partitions.len() as u32;
    let partitions: Vec<u32> = match t.partition {
        Some(p) if p >= count => bail!(
            "--partition {p}: topic {} has {}",
            t.topic,
            plural(u64::from(count), "partition")
        ),
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    // Where a follow goes on from: after what was printed.
    let resume = match &t.from {
        None => {
            let n = t.lines.unwrap_or(TAIL_LAST_DEFAULT);
            let ends: BTreeMap<u32, u64> = topic
                .partitions
                .iter()
                .filter(|p| partitions.contains(&p.partition))
                .map(|p| (p.partition, p.high_watermark))
                .collect();
            let starts: BTreeMap<u32, u64> = topic
                .partitions
                .iter()
                .map(|p| (p.partition, p.log_start))
                .collect();
            last_events(ctx, &t.topic, &ends, &starts, n).await?;
            Some(positions_id(&ends))
        }
        Some(from) if !t.follow => {
            let n = t.lines.unwrap_or(TAIL_FROM_DEFAULT);
            let ends: BTreeMap<u32, u64> = topic
                .partitions
                .iter()
                .map(|p| (p.partition, p.high_watermark))
                .collect();
            from_position(ctx, &t, from, &ends, n).await?;
            return Ok(());
        }
        Some(_) => None,
    };
    if !t.follow {
        return Ok(());
    }
    follow(ctx, &t, resume).await
}

/// `<partition>:<offset>,...`: positions written as a topic stream's event ids.
fn positions_id(positions: &BTreeMap<u32, u64>) -> String {
    positions
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints the last `n` events before `ends` over the partitions, oldest first.
async fn last_events(
    ctx: &mut Ctx,
    topic: &str,
    ends: &BTreeMap<u32, u64>,
    starts: &BTreeMap<u32, u64>,
    n: usize,
) -> Result<()> {
    let mut events: Vec<StoredEvent> = Vec::new();
    for (&p, &end) in ends {
        let start = end.saturating_sub(n as u64).max(starts[&p]);
        let mut at = start;
        while at < end {
            let query = ReadQuery {
                from: Some(at.to_string()),
                limit: Some(TAIL_PAGE_EVENTS_MAX.min((end - at) as usize)),
                partition: Some(p),
            };
            let page = ctx.client.read_events(topic, &query).await?;
            let Some(last) = page.events.last().map(|e| e.offset) else {
                break;
            };
            at = last + 1;
            events.extend(page.events.into_iter().filter(|e| e.offset < end));
        }
    }
    events.sort_by_key(|e| (e.timestamp_ms, e.partition, e.offset));
    let skip = events.len().saturating_sub(n);
    for e in &events[skip..] {
        ctx.out.event(e)?;
    }
    Ok(())
}

/// Prints up to `n` events from `from` on, merged by time, and says so on
/// standard error when there were more.
async fn from_position(
    ctx: &mut Ctx,
    t: &Tail,
    from: &str,
    ends: &BTreeMap<u32, u64>,
    n: usize,
) -> Result<()> {
    let mut printed = 0;
    let mut next: Option<BTreeMap<u32, u64>> = None;
    while printed < n {
        let page = (n - printed).min(TAIL_PAGE_EVENTS_MAX);
        let (events, positions) = match &next {
            None => {
                let query = ReadQuery {
                    from: Some(from.to_owned()),
                    limit: Some(page),
                    partition: t.partition,
                };
                let answer = ctx.client.read_events(&t.topic, &query).await?;
                (answer.events, answer.next)
            }
            Some(next) => {
                // Resume each partition where the last page ended.
                let mut events: Vec<StoredEvent> = Vec::new();
                for (&p, offset) in next {
                    let query = ReadQuery {
                        from: Some(offset.to_string()),
                        limit: Some(page),
                        partition: Some(p),
                    };
                    events.extend(ctx.client.read_events(&t.topic, &query).await?.events);
                }
                events.sort_by_key(|e| (e.timestamp_ms, e.partition, e.offset));
                events.truncate(page);
                let mut n = next.clone();
                for e in &events {
                    n.insert(e.partition, e.offset + 1);
                }
                (events, n)
            }
        };
        if events.is_empty() {
            return Ok(());
        }
        for e in &events {
            ctx.out.event(e)?;
        }
        printed += events.len();
        next = Some(positions);
    }
    // The limit cut the output: say what was left out.
    let left: u64 = next
        .iter()
        .flatten()
        .map(|(p, at)| ends.get(p).copied().unwrap_or(0).saturating_sub(*at))
        .sum();
    if left > 0 {
        ctx.out.flush()?;
        eprintln!(
            "tidings: stopped after {}; {left} more in {} (-n prints more, --follow all of them)",
            plural(printed as u64, "event"),
            t.topic
        );
    }
    Ok(())
}

/// How long a command that retries waits before reconnecting, at first and
/// at most.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The waits of a command that retries while the server is away: doubling
/// from [`RETRY_FIRST`] up to [`RETRY_MAX`], back to the first once it is
/// reached again.
struct Retry {
    wait: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry { wait: RETRY_FIRST }
    }

    /// The server answered: the next outage starts with a short wait.
    fn reached(&mut self) {
        self.wait = RETRY_FIRST;
    }

    /// Says why, then waits before the next try; a signal ends the wait.
    async fn pause(&mut self, why: &ClientError, signals: &Signals) -> Result<()> {
        eprintln!("tidings: {why}; retrying in {:?}", self.wait);
        tokio::select! {
            () = tokio::time::sleep(self.wait) => {}
            i = signals.wait() => return Err(i.into()),
        }
        self.wait = (self.wait * 2).min(RETRY_MAX);
        Ok(())
    }
}

/// Whether a failure means the server went away (or is going), rather than
/// a refusal of what was asked.
fn server_gone(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Http { .. } | ClientError::Timeout { .. } => {
            true
        }
        other => other.code() == Some(ErrorCode::ShuttingDown),
    }
}

/// Follows the topic, resuming after `resume` (positions as an event id)
/// or from `--from`.
async fn follow(ctx: &mut Ctx, t: &Tail, mut resume: Option<String>) -> Result<()> {
    let signals = Signals::install().context("cannot catch signals")?;
    let query = ReadQuery {
        from: t.from.clone(),
        limit: None,
        partition: t.partition,
    };
    let mut retry = Retry::new();
    loop {
        let opened = tokio::select! {
            opened = ctx.client.follow_events_after(&t.topic, &query, resume.as_deref()) => opened,
            i = signals.wait() => return Err(i.into()),
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if t.retry && server_gone(&e) => {
                retry.pause(&e, &signals).await?;
                continue;
            }
            // Gone between the history read and the stream: said the same way
            // as a stream that ends.
            Err(e) if server_gone(&e) => {
                bail!("{e}: the server went away or is shutting down (--retry reconnects)")
            }
            Err(e) => return Err(e.into()),
        };
        retry.reached();
        let ended = loop {
            let item = tokio::select! {
                item = stream.next() => item,
                i = signals.wait() => return Err(i.into()),
            };
            match item {
                Some(Ok(event)) => {
                    ctx.out.event(&event)?;
                    ctx.out.flush()?;
                    resume = stream.last_event_id().map(str::to_owned).or(resume);
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        let why = match ended {
            Some(e) if !server_gone(&e) => return Err(e.into()),
            Some(e) => e.to_string(),
            None => "the server closed the stream".to_owned(),
        };
        if !t.retry {
            bail!("{why}: the server went away or is shutting down (--retry reconnects)");
        }
        eprintln!("tidings: {why}; reconnecting");
    }
}

/// How long one consume poll or receive waits for events when following. Short,
/// so a stop is noticed quickly; without --follow it does not wait, and an
/// empty answer means caught up.
const CONSUME_WAIT_MS: u64 = 1_000;
/// Deliveries one receive of `consume --queue` leases by default.
const PREFETCH_DEFAULT: usize = 10;

pub(crate) async fn consume(ctx: &mut Ctx, c: Consume) -> Result<()> {
    let signals = Signals::install().context("cannot catch signals")?;
    match (&c.queue, &c.group) {
        (Some(queue), _) => {
            if c.topic.is_some() {
                bail!("a queue group consumes the topic it was created on: give --queue without a topic");
            }
            consume_queue(ctx, &c, queue, &signals).await
        }
        (None, Some(group)) => consume_group(ctx, &c, group, &signals).await,
        (None, None) => unreachable!("clap requires --group or --queue"),
    }
}

/// What a command run for an event said.
enum Outcome {
    Ack,
    Nack(String),
    Reject(String),
}

/// The exit status of `--exec` that rejects an event (sysexits' EX_DATAERR:
/// the input data was incorrect).
const EXIT_REJECT: i32 = 65;

async fn consume_queue(ctx: &mut Ctx, c: &Consume, queue: &str, signals: &Signals) -> Result<()> {
    let prefetch = c.prefetch.unwrap_or(if c.exec.is_some() {
        1
    } else {
        PREFETCH_DEFAULT
    });
    if prefetch == 0 {
        bail!("--prefetch must be at least 1");
    }
    let ack_timeout = if c.exec.is_some() {
        let q = ctx.client.describe_queue(queue).await?;
        Duration::from_millis(q.config.ack_timeout_ms)
    } else {
        Duration::ZERO
    };
    let query = ReceiveQuery {
        max: Some(prefetch),
        wait_ms: Some(if c.follow { CONSUME_WAIT_MS } else { 0 }),
        max_in_flight: None,
    };
    // Leases received and not yet answered: given back if the command stops.
    let mut held: Vec<String> = Vec::new();
    let mut counts = [0u64; 3];
    let mut retry = Retry::new();
    let result: Result<()> = async {
        loop {
            if let Some(i) = signals.caught() {
                return Err(i.into());
            }
            let answer = match ctx.client.receive(queue, &query).await {
                Ok(answer) => answer,
                Err(e) if c.retry && server_gone(&e) => {
                    retry.pause(&e, signals).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            retry.reached();
            if answer.deliveries.is_empty() && !c.follow {
                return Ok(());
            }
            held = answer.deliveries.iter().map(|d| d.lease.clone()).collect();
            for d in &answer.deliveries {
                if let Some(i) = signals.caught() {
                    return Err(i.into());
                }
                let outcome = match &c.exec {
                    None => {
                        ctx.out.event(d)?;
                        ctx.out.flush()?;
                        Outcome::Ack
                    }
                    Some(cmd) => run(&ctx.client, queue, d, cmd, ack_timeout).await?,
                };
                let answered = match outcome {
                    Outcome::Ack => {
                        counts[0] += 1;
                        ctx.client.ack(queue, &d.lease).await
                    }
                    Outcome::Nack(error) => {
                        counts[1] += 1;
                        let nack = NackRequest {
                            delay_ms: None,
                            error: Some(error),
                        };
                        ctx.client.nack(queue, &d.lease, &nack).await
                    }
                    Outcome::Reject(reason) => {
                        counts[2] += 1;
                        let reject = RejectRequest {
                            reason: Some(reason),
                        };
                        ctx.client.reject(queue, &d.lease, &reject).await
                    }
                };
                match answered {
                    Ok(()) => {}
                    // The server went away: its leases died with it, and the
                    // events will be delivered again.
                    Err(e) if c.retry && server_gone(&e) => {
                        eprintln!("tidings: {e}; the unanswered events will come again; retrying");
                        held.clear();
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
                held.retain(|l| *l != d.lease);
            }
        }
    }
    .await;
    // What was received and never handled goes back now, not at its ack
    // timeout; on a connection of its own, as this one may be mid-request.
    if !held.is_empty() {
        let client = Client::new(ctx.client.server())?;
        for lease in &held {
            if let Err(e) = client.release(queue, lease).await {
                eprintln!("tidings: cannot give back lease {lease}: {e}");
            }
        }
    }
    if c.exec.is_some() {
        eprintln!(
            "tidings: {} acked, {} nacked, {} rejected",
            plural(counts[0], "event"),
            counts[1],
            counts[2]
        );
    }
    result
}

/// Runs `cmd` for delivery `d`, extending its lease while it runs.
async fn run(
    client: &Client,
    queue: &str,
    d: &Delivery,
    cmd: &str,
    ack_timeout: Duration,
) -> Result<Outcome> {
    use tokio::io::AsyncWriteExt;

    let input = match (&d.entry.event, &d.entry.record) {
        (Some(event), _) => event.to_string(),
        (None, record) => serde_json::to_string(record).expect("API types encode"),
    };
    let attribute = |name: &str| crate::output::attribute(&d.entry, name);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("TIDINGS_QUEUE", queue)
        .env("TIDINGS_LEASE", &d.lease)
        .env("TIDINGS_ATTEMPT", d.attempt.to_string())
        .env("TIDINGS_PARTITION", d.entry.partition.to_string())
        .env("TIDINGS_OFFSET", d.entry.offset.to_string())
        .env("TIDINGS_EVENT_ID", attribute("id"))
        .env("TIDINGS_EVENT_TYPE", attribute("type"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Written and read on their own, so a command that ignores its input or
    // writes much to standard error cannot block the other side.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    });
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        err
    });
    // Extended at half the timeout, by a whole one, while the command runs.
    let every = (ack_timeout / 2).max(Duration::from_millis(100));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            () = tokio::time::sleep(every) => {
                let ms = u64::try_from(ack_timeout.as_millis()).unwrap_or(u64::MAX);
                if let Err(e) = client.extend(queue, &d.lease, ms).await {
                    eprintln!("tidings: cannot extend lease {}: {e}", d.lease);
                }
            }
        }
    };
    let _ = writer.await;
    let err = reader.await.unwrap_or_default();
    // The command's standard error goes on to ours.
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(&err);
    }
    let text = String::from_utf8_lossy(&err);
    let last_line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let reason = |what: String| {
        if last_line.is_empty() {
            what
        } else {
            format!("{what}: {last_line}")
        }
    };
    Ok(match status.code() {
        Some(0) => Outcome::Ack,
        Some(EXIT_REJECT) => Outcome::Reject(reason(format!("{cmd} exited with {EXIT_REJECT}"))),
        Some(code) => Outcome::Nack(reason(format!("{cmd} exited with {code}"))),
        None => Outcome::Nack(reason(format!("{cmd} was killed by a signal"))),
    })
}

async fn consume_group(ctx: &mut Ctx, c: &Consume, group: &str, signals: &Signals) -> Result<()> {
    let topic = c
        .topic
        .as_deref()
        .context("a stream group needs the topic to consume")?;
    let join = JoinRequest {
        topic: topic.to_owned(),
        from: c.from.clone(),
        session_timeout_ms: None,
    };
    let mut member = ctx.client.join_group(group, &join).await?.member;
    let mut retry = Retry::new();
    // What this member committed last, per partition.
    let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
    let result: Result<()> = async {
        loop {
            if let Some(i) = signals.caught() {
                return Err(i.into());
            }
            let query = PollQuery {
                wait_ms: Some(if c.follow { CONSUME_WAIT_MS } else { 0 }),
                max_bytes: None,
                limit: None,
            };
            let polled = match ctx.client.poll(group, &member, &query).await {
                Ok(polled) => polled,
                // After a restart the member is gone: join again, from the
                // group's commits.
                Err(e) if c.retry && e.code() == Some(ErrorCode::UnknownMember) => {
                    member = ctx.client.join_group(group, &join).await?.member;
                    committed.clear();
                    continue;
                }
                Err(e) if c.retry && server_gone(&e) => {
                    retry.pause(&e, signals).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            retry.reached();
            for e in &polled.events {
                ctx.out.event(e)?;
            }
            ctx.out.flush()?;
            // Positions are committed when they moved, and once even when
            // nothing arrived: a group that starts at `latest` then goes on
            // from there, not from a later `latest`.
            let moved: BTreeMap<u32, u64> = polled
                .next
                .iter()
                .filter(|(p, o)| committed.get(p) != Some(o))
                .map(|(p, o)| (*p, *o))
                .collect();
            if !moved.is_empty() {
                let commit = CommitRequest { offsets: moved };
                match ctx.client.commit(group, &member, &commit).await {
                    Ok(()) => committed.extend(commit.offsets),
                    // Not committed: after the restart the group goes on
                    // from its last commit, and these come again.
                    Err(e) if c.retry && server_gone(&e) => {
                        eprintln!("tidings: {e}; these events will come again; retrying");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if polled.events.is_empty() && !c.follow {
                return Ok(());
            }
        }
    }
    .await;
    // Leave so the group rebalances now rather than after the session
    // timeout; on a connection of its own, as this one may be mid-request.
    let left = match Client::new(ctx.client.server()) {
        Ok(client) => client.leave_group(group, &member).await,
        Err(e) => Err(e),
    };
    match (result, left) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) if e.code() == Some(ErrorCode::UnknownMember) => Ok(()),
        (Ok(()), left) => left.map_err(anyhow::Error::from),
    }
}
