//! Group commit of appends. Every append locks `tidings_head` first (the rule
//! that keeps the global order gap-free in commit order), so a store's appends
//! commit one at a time, each paying a WAL flush: 16 writers appended no
//! faster than one. The store's appends therefore go through one writer task,
//! which takes every append waiting when it is free and writes them in one
//! transaction under one head lock and one flush — as the log's writer shares
//! one `fdatasync` among the appends queued behind it. With one append waiting
//! it runs alone, exactly as before, at no extra latency.
//!
//! In a group, appends are checked in the order they arrived, each against the
//! stream states the earlier ones leave (read once, locked, for every stream of
//! the group); one refused for its expected version is answered so and the
//! others go on; each append's streams all change or none does. An append with
//! an id the database already holds, or one an earlier append of the group
//! uses, runs alone after the group (it is a repeat to answer, or a conflict to
//! refuse, on the single path that knows how). If the group's transaction
//! fails, every append of it runs alone: ids make a repeat of one that did
//! commit answer what it wrote.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tidings_types::{Clock, CloudEvent};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{pool_err, to_i64, to_u64, Columns, CHANNEL};
use crate::error::{AppendError, StoreError};
use crate::types::{Appended, StreamAppend, StreamState, APPEND_EVENTS_MAX};

/// Most appends one transaction carries.
pub(super) const GROUP_APPENDS_MAX: usize = 256;

/// Appends waiting for the writer, at most; a caller past it waits to queue.
pub(super) const QUEUE_DEPTH: usize = 1024;

/// What the writer has done, for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendStats {
    /// Transactions of two or more appends that committed.
    pub groups: u64,
    /// Appends answered from such a transaction.
    pub grouped: u64,
    /// Appends that ran alone: nothing else was waiting, or they had to.
    pub alone: u64,
    /// Group transactions that failed, whose appends then ran alone.
    pub group_failures: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    groups: AtomicU64,
    grouped: AtomicU64,
    alone: AtomicU64,
    group_failures: AtomicU64,
}

impl Counters {
    pub(super) fn stats(&self) -> AppendStats {
        AppendStats {
            groups: self.groups.load(Ordering::Relaxed),
            grouped: self.grouped.load(Ordering::Relaxed),
            alone: self.alone.load(Ordering::Relaxed),
            group_failures: self.group_failures.load(Ordering::Relaxed),
        }
    }
}

/// One append call waiting for the writer.
pub(super) struct Job {
    pub(super) appends: Vec<StreamAppend>,
    pub(super) reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
}

fn events_of(job: &Job) -> usize {
    job.appends.iter().map(|a| a.events.len()).sum()
}

/// The writer: takes what is queued, up to [`GROUP_APPENDS_MAX`] appends and
/// [`APPEND_EVENTS_MAX`] events a transaction, until every sender is gone.
/// `alone` runs one append by itself (the store's path with its retries).
pub(super) async fn writer<F, Fut>(
    pool: Pool,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    mut rx: mpsc::Receiver<Job>,
    alone: F,
) where
    F: Fn(Vec<StreamAppend>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Appended>, AppendError>>,
{
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut events = events_of(&first);
        let mut jobs = vec![first];
        while jobs.len() < GROUP_APPENDS_MAX {
            let Ok(job) = rx.try_recv() else { break };
            if events + events_of(&job) > APPEND_EVENTS_MAX {
                next = Some(job);
                break;
            }
            events += events_of(&job);
            jobs.push(job);
        }
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            counters.alone.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(alone(job.appends).await);
            continue;
        }
        let outcomes = match append_group(&pool, clock.as_ref(), &jobs).await {
            Ok(outcomes) => {
                counters.groups.fetch_add(1, Ordering::Relaxed);
                outcomes
            }
            Err(e) => {
                counters.group_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, appends = jobs.len(), "a group of appends failed; running each alone");
                jobs.iter().map(|_| None).collect()
            }
        };
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let answer = match outcome {
                Some(answer) => {
                    counters.grouped.fetch_add(1, Ordering::Relaxed);
                    answer
                }
                None => {
                    counters.alone.fetch_add(1, Ordering::Relaxed);
                    alone(job.appends).await
                }
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// Writes `jobs` in one transaction: each job's answer, or `None` for those
/// that must run alone. An error: nothing is known to be written.
async fn append_group(
    pool: &Pool,
    clock: &dyn Clock,
    jobs: &[Job],
) -> Result<Vec<Option<Result<Vec<Appended>, AppendError>>>, StoreError> {
    let now = clock.now();
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await?;
    let ids: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.appends.iter())
        .flat_map(|a| a.events.iter().map(CloudEvent::id))
        .collect();
    let mut names: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.appends.iter().map(|a| a.stream.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    // Statements are sent together (the client pipelines what is awaited at
    // once); the server runs them in order, the head's lock first, as every
    // writer takes it.
    let (ids_param, names_param): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
        ([&ids], [&names]);
    let (head, stored, streams) = tokio::try_join!(
        tx.query_one("SELECT next FROM tidings_head WHERE id = 0 FOR UPDATE", &[]),
        tx.query(
            "SELECT event_id FROM tidings_events WHERE event_id = ANY($1)",
            &ids_param,
        ),
        tx.query(
            "SELECT stream, last_version, truncate_before, max_count, max_age_ms
             FROM tidings_streams WHERE stream = ANY($1) ORDER BY stream FOR UPDATE",
            &names_param,
        ),
    )?;
    let head: i64 = head.get(0);
    let stored: HashSet<String> = stored.iter().map(|r| r.get(0)).collect();
    let mut states: HashMap<String, StreamState> = streams
        .iter()
        .map(|r| (r.get::<_, String>(0), super::state_from(r, 1)))
        .collect();

    let mut position = to_u64(head);
    let mut cols = Columns::default();
    let mut written: HashMap<&str, u64> = HashMap::new();
    let mut taken: HashSet<&str> = HashSet::new();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let job_ids = || {
            job.appends
                .iter()
                .flat_map(|a| a.events.iter().map(CloudEvent::id))
        };
        if job_ids().any(|id| stored.contains(id) || taken.contains(id)) {
            outcomes.push(None);
            continue;
        }
        match plan(job, &states, position, now.0, &mut cols) {
            Err(refused) => outcomes.push(Some(Err(refused))),
            Ok(done) => {
                for d in &done {
                    let state = states.entry(d.stream.as_str().to_owned()).or_default();
                    state.last = Some(d.last_version.0);
                }
                for (a, d) in job.appends.iter().zip(&done) {
                    written.insert(a.stream.as_str(), d.last_version.0);
                }
                position = done.last().map_or(position, |d| d.last_position.0 + 1);
                taken.extend(job_ids());
                outcomes.push(Some(Ok(done)));
            }
        }
    }
    if !cols.position.is_empty() {
        let (streams, versions): (Vec<&str>, Vec<i64>) =
            written.iter().map(|(s, v)| (*s, to_i64(*v))).unzip();
        let next = to_i64(position);
        let announced = next.to_string();
        tokio::try_join!(
            super::insert_events(&tx, &cols),
            async {
                tx.execute(
                    "INSERT INTO tidings_streams (stream, last_version)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[])
                     ON CONFLICT (stream) DO UPDATE SET last_version = EXCLUDED.last_version",
                    &[&streams, &versions],
                )
                .await
                .map_err(StoreError::from)
            },
            async {
                tx.execute("UPDATE tidings_head SET next = $1 WHERE id = 0", &[&next])
                    .await
                    .map_err(StoreError::from)
            },
            async {
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &announced])
                    .await
                    .map_err(StoreError::from)
            },
        )?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Checks one job against the stream states so far and, when it passes, adds
/// its events to `cols` from `position` on: what it will have written. Nothing
/// is added when it is refused.
fn plan<'a>(
    job: &'a Job,
    states: &HashMap<String, StreamState>,
    mut position: u64,
    recorded_ms: i64,
    cols: &mut Columns<'a>,
) -> Result<Vec<Appended>, AppendError> {
    let mut done = Vec::with_capacity(job.appends.len());
    let mut rows: Columns<'a> = Columns::default();
    for a in &job.appends {
        let state = states.get(a.stream.as_str()).copied().unwrap_or_default();
        let written = super::plan_stream(a, state, position, recorded_ms, &mut rows)?;
        position = written.last_position.0 + 1;
        done.push(written);
    }
    cols.extend(rows);
    Ok(done)
}
