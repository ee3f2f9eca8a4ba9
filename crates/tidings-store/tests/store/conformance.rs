//! The conformance suite: what every event-store backend must do. Each check takes
//! a [`Backend`] and opens its own store; `conformance!` turns the list into tests.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_store::aggregate::{Aggregate, Repository, RepositoryConfig, RepositoryError};
use tidings_store::projection::{Projection, ProjectionError, Projector};
use tidings_store::upcast::Upcasters;
use tidings_store::{
    AppendError, EventStore, ExpectedVersion, Position, ReadStream, RecordedEvent, Selector,
    StreamAppend, StreamMetadata, StreamVersion, Subscription,
};

use crate::support::{event, events, n_of, stream, Backend};

/// Runs every check of the suite against the backend `$make` yields (`None` skips).
macro_rules! conformance {
    ($make:expr) => {
        conformance!(@each $make;
            expected_versions_are_checked_atomically,
            repeating_an_append_is_idempotent,
            parallel_writers_never_lose_or_repeat_a_version,
            appends_to_several_streams_are_atomic,
            streams_read_forward_backward_and_in_pages,
            all_and_categories_read_in_global_order,
            subscriptions_catch_up_then_go_live_without_gap_or_duplicate,
            named_subscriptions_resume_from_their_checkpoint,
            metadata_limits_reads_and_soft_delete_restarts_a_stream,
            aggregates_snapshot_and_ignore_snapshots_of_another_shape,
            the_repository_retries_when_another_writer_wins,
            upcasters_bring_old_events_to_the_current_shape,
            projections_catch_up_continue_and_rebuild,
            everything_survives_a_restart,
            bad_appends_are_refused_without_writing,
            an_event_is_located_by_its_id
        );
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $make.await else { return };
                crate::conformance::$check(&backend).await;
            }
        )*
    };
}
pub(crate) use conformance;

pub(crate) async fn expected_versions_are_checked_atomically(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("order-1");
    let conflict = |r: Result<_, AppendError>| match r {
        Err(AppendError::WrongExpectedVersion { actual, .. }) => actual,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let r = store
        .append_to(&s, ExpectedVersion::StreamExists, events("a", 0, 1))
        .await;
    assert_eq!(conflict(r), None);
    let r = store
        .append_to(
            &s,
            ExpectedVersion::Exact(StreamVersion(0)),
            events("a", 0, 1),
        )
        .await;
    assert_eq!(conflict(r), None);

    let first = store
        .append_to(&s, ExpectedVersion::NoStream, events("a", 0, 2))
        .await
        .unwrap();
    assert_eq!(
        (first.first_version, first.last_version),
        (StreamVersion(0), StreamVersion(1))
    );
    let r = store
        .append_to(&s, ExpectedVersion::NoStream, events("a", 2, 1))
        .await;
    assert_eq!(conflict(r), Some(StreamVersion(1)));
    let r = store
        .append_to(
            &s,
            ExpectedVersion::Exact(StreamVersion(0)),
            events("a", 2, 1),
        )
        .await;
    assert_eq!(conflict(r), Some(StreamVersion(1)));

    let second = store
        .append_to(
            &s,
            ExpectedVersion::Exact(StreamVersion(1)),
            events("a", 2, 1),
        )
        .await
        .unwrap();
    assert_eq!(second.last_version, StreamVersion(2));
    store
        .append_to(&s, ExpectedVersion::StreamExists, events("a", 3, 1))
        .await
        .unwrap();
    store
        .append_to(&s, ExpectedVersion::Any, events("a", 4, 1))
        .await
        .unwrap();

    let read = store
        .read_stream(&s, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!(read.version, Some(StreamVersion(4)));
    let ns: Vec<u64> = read.events.iter().map(|e| n_of(&e.event)).collect();
    assert_eq!(ns, [0, 1, 2, 3, 4], "refused appends wrote nothing");
    let versions: Vec<u64> = read.events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, [0, 1, 2, 3, 4]);
}

pub(crate) async fn repeating_an_append_is_idempotent(b: &impl Backend) {
    let store = b.open().await;
    let (s1, s2) = (stream("cart-1"), stream("cart-2"));
    store
        .append_to(&s1, ExpectedVersion::NoStream, events("x", 0, 1))
        .await
        .unwrap();
    let batch = events("cart.added", 1, 3);
    let first = store
        .append_to(&s1, ExpectedVersion::Exact(StreamVersion(0)), batch.clone())
        .await
        .unwrap();
    // The same append again, even with an expectation that no longer holds.
    let again = store
        .append_to(&s1, ExpectedVersion::Exact(StreamVersion(0)), batch.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    let again = store
        .append_to(&s1, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(
        store.stream_info(&s1).await.unwrap().version,
        Some(StreamVersion(3))
    );

    // Part of it, mixed with a new event, or in another stream: refused.
    let mixed = vec![batch[0].clone(), event("cart.added", 9)];
    let r = store.append_to(&s1, ExpectedVersion::Any, mixed).await;
    assert!(
        matches!(r, Err(AppendError::DuplicateEventId { ref id }) if id == batch[0].id()),
        "{r:?}"
    );
    let r = store
        .append_to(&s2, ExpectedVersion::Any, batch.clone())
        .await;
    assert!(
        matches!(r, Err(AppendError::DuplicateEventId { .. })),
        "{r:?}"
    );
    let r = store
        .append_to(
            &s1,
            ExpectedVersion::Any,
            vec![batch[2].clone(), batch[1].clone()],
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::DuplicateEventId { .. })),
        "out of order: {r:?}"
    );
    // A consecutive run of what one stream stored is stored already: its place.
    let tail = store
        .append_to(&s1, ExpectedVersion::Any, batch[1..].to_vec())
        .await
        .unwrap();
    assert_eq!(
        (tail.first_version, tail.last_version),
        (StreamVersion(2), StreamVersion(3))
    );
    assert_eq!(tail.last_position, first.last_position);
    assert_eq!(
        store.stream_info(&s1).await.unwrap().version,
        Some(StreamVersion(3))
    );
    assert_eq!(store.stream_info(&s2).await.unwrap().version, None);

    // A multi-stream append repeats as a whole.
    let appends = vec![
        StreamAppend::new(stream("a-1"), ExpectedVersion::NoStream, events("y", 0, 2)),
        StreamAppend::new(stream("b-1"), ExpectedVersion::NoStream, events("y", 2, 1)),
    ];
    let first = store.append(appends.clone()).await.unwrap();
    assert_eq!(store.append(appends).await.unwrap(), first);
}

pub(crate) async fn parallel_writers_never_lose_or_repeat_a_version(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("counter-1");
    let (writers, each) = (8u64, 10u64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..each {
                loop {
                    let version = store.stream_info(&s).await.unwrap().version;
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    match store
                        .append_to(&s, expected, vec![event("tick", w * 100 + i)])
                        .await
                    {
                        Ok(done) => {
                            assert_eq!(
                                done.first_version,
                                version.map_or(StreamVersion(0), StreamVersion::next)
                            );
                            break;
                        }
                        Err(AppendError::WrongExpectedVersion { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let read = store
        .read_stream(&s, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!(read.events.len() as u64, writers * each);
    let versions: Vec<u64> = read.events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (0..writers * each).collect::<Vec<_>>());
    let ns: HashSet<u64> = read.events.iter().map(|e| n_of(&e.event)).collect();
    assert_eq!(
        ns.len() as u64,
        writers * each,
        "every write landed exactly once"
    );
    let positions: Vec<u64> = read.events.iter().map(|e| e.position.0).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "versions follow the global order"
    );
}

pub(crate) async fn appends_to_several_streams_are_atomic(b: &impl Backend) {
    let store = b.open().await;
    let (from, to) = (stream("account-a"), stream("account-b"));
    store
        .append_to(&from, ExpectedVersion::NoStream, events("opened", 0, 1))
        .await
        .unwrap();
    let transfer = |expected_from| {
        vec![
            StreamAppend::new(from.clone(), expected_from, events("debited", 10, 1)),
            StreamAppend::new(
                to.clone(),
                ExpectedVersion::NoStream,
                events("credited", 20, 2),
            ),
        ]
    };
    let r = store.append(transfer(ExpectedVersion::NoStream)).await;
    assert!(
        matches!(r, Err(AppendError::WrongExpectedVersion { ref stream, .. }) if *stream == from),
        "{r:?}"
    );
    assert_eq!(
        store.stream_info(&to).await.unwrap().version,
        None,
        "nothing of a refused append is written"
    );

    let done = store
        .append(transfer(ExpectedVersion::Exact(StreamVersion(0))))
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].last_version, StreamVersion(1));
    assert_eq!(done[1].last_version, StreamVersion(1));
    assert_eq!(
        done[1].first_position,
        done[0].last_position.next(),
        "one append, consecutive positions"
    );
    let all = store
        .read_all(&Selector::All, Position::START, 100)
        .await
        .unwrap();
    let types: Vec<&str> = all.events.iter().map(|e| e.event.ty()).collect();
    assert_eq!(types, ["opened", "debited", "credited", "credited"]);

    let r = store
        .append(vec![
            StreamAppend::new(to.clone(), ExpectedVersion::Any, events("x", 0, 1)),
            StreamAppend::new(to.clone(), ExpectedVersion::Any, events("x", 1, 1)),
        ])
        .await;
    assert!(matches!(r, Err(AppendError::RepeatedStream(_))), "{r:?}");
}

pub(crate) async fn streams_read_forward_backward_and_in_pages(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("order-7");
    for chunk in 0..5 {
        store
            .append_to(&s, ExpectedVersion::Any, events("e", chunk * 4, 4))
            .await
            .unwrap();
        store
            .append_to(
                &stream("noise-1"),
                ExpectedVersion::Any,
                events("noise", 100 + chunk, 1),
            )
            .await
            .unwrap();
    }
    let ns = |events: &[RecordedEvent]| events.iter().map(|e| n_of(&e.event)).collect::<Vec<_>>();
    let fwd = store
        .read_stream(&s, ReadStream::forward(StreamVersion(5)).limit(3))
        .await
        .unwrap();
    assert_eq!(ns(&fwd.events), [5, 6, 7]);
    assert_eq!(fwd.version, Some(StreamVersion(19)));
    let back = store
        .read_stream(&s, ReadStream::backward().limit(3))
        .await
        .unwrap();
    assert_eq!(ns(&back.events), [19, 18, 17]);
    let mut from_9 = ReadStream::backward().limit(100);
    from_9.from = StreamVersion(9);
    let back = store.read_stream(&s, from_9).await.unwrap();
    assert_eq!(ns(&back.events), (0..=9).rev().collect::<Vec<_>>());
    let past = store
        .read_stream(&s, ReadStream::forward(StreamVersion(20)))
        .await
        .unwrap();
    assert!(past.events.is_empty());
    let missing = store
        .read_stream(&stream("order-404"), ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!((missing.events.len(), missing.version), (0, None));

    // Paging through the whole stream forward.
    let mut seen = Vec::new();
    let mut from = StreamVersion(0);
    loop {
        let page = store
            .read_stream(&s, ReadStream::forward(from).limit(6))
            .await
            .unwrap();
        let Some(last) = page.events.last() else {
            break;
        };
        from = last.version.next();
        seen.extend(ns(&page.events));
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

pub(crate) async fn all_and_categories_read_in_global_order(b: &impl Backend) {
    let store = b.open().await;
    let mut expected_all = Vec::new();
    for i in 0..30u64 {
        let s = stream(&format!(
            "{}-{}",
            if i % 3 == 0 { "user" } else { "order" },
            i % 4
        ));
        store
            .append_to(&s, ExpectedVersion::Any, vec![event("e", i)])
            .await
            .unwrap();
        expected_all.push(i);
    }
    let mut seen = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all(&Selector::All, from, 7).await.unwrap();
        assert!(page.next >= from);
        if page.events.is_empty() {
            break;
        }
        assert!(page
            .events
            .iter()
            .all(|e| e.position >= from && e.position < page.next));
        seen.extend(page.events.iter().map(|e| n_of(&e.event)));
        from = page.next;
    }
    assert_eq!(seen, expected_all);
    assert_eq!(from, store.head().await.unwrap());

    let users = store
        .read_all(&Selector::Category("user".into()), Position::START, 1000)
        .await
        .unwrap();
    let ns: Vec<u64> = users.events.iter().map(|e| n_of(&e.event)).collect();
    assert_eq!(ns, (0..30).filter(|i| i % 3 == 0).collect::<Vec<_>>());
    assert!(users.events.iter().all(|e| e.stream.category() == "user"));
    let one = store
        .read_all(&Selector::Stream(stream("order-1")), Position::START, 1000)
        .await
        .unwrap();
    assert!(one.events.iter().all(|e| e.stream.as_str() == "order-1"));
    assert_eq!(
        one.events.len(),
        (0..30).filter(|i| i % 3 != 0 && i % 4 == 1).count()
    );
    let none = store
        .read_all(&Selector::Category("nobody".into()), Position::START, 10)
        .await
        .unwrap();
    assert!(none.events.is_empty());
    assert_eq!(
        none.next,
        store.head().await.unwrap(),
        "an empty read still moves the reader to the head"
    );
}

pub(crate) async fn subscriptions_catch_up_then_go_live_without_gap_or_duplicate(b: &impl Backend) {
    let store = b.open().await;
    // Some history to catch up on.
    for i in 0..40u64 {
        store
            .append_to(
                &stream(&format!("job-{}", i % 5)),
                ExpectedVersion::Any,
                vec![event("job", i)],
            )
            .await
            .unwrap();
    }
    let all = Subscription::new(store.clone(), Selector::All, Position::START);
    let jobs = Subscription::new(
        store.clone(),
        Selector::Category("job".into()),
        Position::START,
    );
    let consume = |mut sub: Subscription<_>, want: usize| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < want {
                let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
                    .await
                    .expect("events keep coming")
                    .unwrap();
                got.push(e);
            }
            got
        })
    };
    let (writers, per_writer) = (4u64, 40u64);
    let total_jobs = 40 + (writers * per_writer / 2) as usize;
    let all_task = consume(all, 40 + (writers * per_writer) as usize);
    let jobs_task = consume(jobs, total_jobs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let n = 1000 + w * per_writer + i;
                let name = if i % 2 == 0 {
                    format!("job-{w}")
                } else {
                    format!("mail-{w}")
                };
                store
                    .append_to(&stream(&name), ExpectedVersion::Any, events("live", n, 1))
                    .await
                    .unwrap();
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got_all = all_task.await.unwrap();
    let got_jobs = jobs_task.await.unwrap();
    let positions: Vec<u64> = got_all.iter().map(|e| e.position.0).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    assert_eq!(
        positions,
        (0..positions.len() as u64).collect::<Vec<_>>(),
        "positions are given without gaps"
    );
    let stored = store
        .read_all(&Selector::All, Position::START, 10_000)
        .await
        .unwrap();
    assert_eq!(
        positions,
        stored
            .events
            .iter()
            .map(|e| e.position.0)
            .collect::<Vec<_>>(),
        "no gap"
    );
    let job_positions: Vec<u64> = got_jobs.iter().map(|e| e.position.0).collect();
    let stored_jobs: Vec<u64> = stored
        .events
        .iter()
        .filter(|e| e.stream.category() == "job")
        .map(|e| e.position.0)
        .collect();
    assert_eq!(job_positions, stored_jobs);
}

pub(crate) async fn named_subscriptions_resume_from_their_checkpoint(b: &impl Backend) {
    let store = b.open().await;
    store
        .append_to(&stream("t-1"), ExpectedVersion::Any, events("e", 0, 10))
        .await
        .unwrap();
    let mut sub = Subscription::named(store.clone(), "mailer", Selector::All)
        .await
        .unwrap();
    for want in 0..4 {
        assert_eq!(n_of(&sub.next().await.unwrap().event), want);
    }
    sub.save_checkpoint().await.unwrap();
    let checkpoint = sub.checkpoint();
    drop(sub);
    b.close(store).await;

    let store = b.open().await;
    assert_eq!(
        store.load_checkpoint("mailer").await.unwrap(),
        Some(checkpoint)
    );
    assert_eq!(store.load_checkpoint("someone-else").await.unwrap(), None);
    let mut sub = Subscription::named(store.clone(), "mailer", Selector::All)
        .await
        .unwrap();
    assert_eq!(
        n_of(&sub.next().await.unwrap().event),
        4,
        "resumes after the last saved event"
    );
    let rest = sub
        .next_batch(100, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(rest.len(), 5);
    assert!(sub
        .next_within(Duration::from_millis(50))
        .await
        .unwrap()
        .is_none());
}

pub(crate) async fn metadata_limits_reads_and_soft_delete_restarts_a_stream(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("sensor-1");
    store
        .append_to(&s, ExpectedVersion::NoStream, events("reading", 0, 10))
        .await
        .unwrap();
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_count: Some(3),
                max_age: None,
            },
        )
        .await
        .unwrap();
    let read = store
        .read_stream(&s, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!(
        read.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        [7, 8, 9]
    );
    let info = store.stream_info(&s).await.unwrap();
    assert_eq!(
        (info.version, info.metadata.max_count, info.deleted),
        (Some(StreamVersion(9)), Some(3), false)
    );
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_count: None,
                max_age: Some(Duration::from_millis(1)),
            },
        )
        .await
        .unwrap();
    b.clock().advance(Duration::from_millis(20));
    assert!(
        store
            .read_stream(&s, ReadStream::forward(StreamVersion(0)))
            .await
            .unwrap()
            .events
            .is_empty(),
        "older than max_age"
    );
    store
        .set_stream_metadata(&s, StreamMetadata::default())
        .await
        .unwrap();
    assert_eq!(
        store
            .read_stream(&s, ReadStream::forward(StreamVersion(0)))
            .await
            .unwrap()
            .events
            .len(),
        10
    );

    let r = store
        .delete_stream(&s, ExpectedVersion::Exact(StreamVersion(3)))
        .await;
    assert!(
        matches!(
            r,
            Err(AppendError::WrongExpectedVersion {
                actual: Some(StreamVersion(9)),
                ..
            })
        ),
        "{r:?}"
    );
    store
        .delete_stream(&s, ExpectedVersion::Exact(StreamVersion(9)))
        .await
        .unwrap();
    let info = store.stream_info(&s).await.unwrap();
    assert_eq!((info.version, info.deleted), (None, true));
    assert!(store
        .read_stream(&s, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap()
        .events
        .is_empty());
    let again = store
        .append_to(&s, ExpectedVersion::NoStream, events("reading", 10, 2))
        .await
        .unwrap();
    assert_eq!(
        again.first_version,
        StreamVersion(10),
        "versions continue after a soft delete"
    );
    let read = store
        .read_stream(&s, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!(
        read.events
            .iter()
            .map(|e| n_of(&e.event))
            .collect::<Vec<_>>(),
        [10, 11]
    );
    let all = store
        .read_all(&Selector::Stream(s.clone()), Position::START, 100)
        .await
        .unwrap();
    assert_eq!(all.events.len(), 12, "$all keeps soft-deleted events");
}

/// A test aggregate: a counter.
#[derive(Default, Serialize, Deserialize, Debug)]
pub(crate) struct Counter {
    pub(crate) total: u64,
    pub(crate) adds: u64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type", content = "data")]
pub(crate) enum CounterEvent {
    #[serde(rename = "counter.added")]
    Added { by: u64 },
    #[serde(rename = "counter.reset")]
    Reset,
}

#[derive(Debug, thiserror::Error)]
#[error("adding {0} would pass the limit")]
pub(crate) struct TooMuch(u64);

impl Aggregate for Counter {
    const CATEGORY: &'static str = "counter";
    type Event = CounterEvent;
    type Command = u64;
    type Error = TooMuch;

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added { by } => {
                self.total += by;
                self.adds += 1;
            }
            CounterEvent::Reset => self.total = 0,
        }
    }

    fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, TooMuch> {
        match *by {
            0 => Ok(vec![CounterEvent::Reset]),
            by if self.total + by > 1_000_000 => Err(TooMuch(by)),
            by => Ok(vec![CounterEvent::Added { by }]),
        }
    }
}

/// The same stream read with a state of another shape.
#[derive(Default, Serialize, Deserialize, Debug)]
pub(crate) struct CounterV2 {
    sum: u64,
}

impl Aggregate for CounterV2 {
    const CATEGORY: &'static str = "counter";
    const SNAPSHOT_VERSION: u32 = 2;
    type Event = CounterEvent;
    type Command = u64;
    type Error = TooMuch;

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added { by } => self.sum += by,
            CounterEvent::Reset => self.sum = 0,
        }
    }

    fn decide(&self, _: &u64) -> Result<Vec<CounterEvent>, TooMuch> {
        Ok(Vec::new())
    }
}

fn config(snapshot_every: Option<u64>) -> RepositoryConfig {
    RepositoryConfig {
        snapshot_every,
        ..RepositoryConfig::new("/counters")
    }
}

pub(crate) async fn aggregates_snapshot_and_ignore_snapshots_of_another_shape(b: &impl Backend) {
    let store = b.open().await;
    let repo = Repository::<_, Counter>::new(store.clone(), config(Some(10)));
    for i in 1..=25 {
        let done = repo.execute("c1", &i).await.unwrap();
        assert_eq!(done.version, Some(StreamVersion(i - 1)));
    }
    let loaded = repo.load("c1").await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.state.adds),
        ((1..=25).sum(), 25)
    );
    assert_eq!(
        loaded.snapshot,
        Some(StreamVersion(19)),
        "snapshot at 20 events"
    );
    assert_eq!(loaded.events_folded, 5);
    let r = repo.execute("c1", &2_000_000).await;
    assert!(
        matches!(r, Err(RepositoryError::Rejected(TooMuch(2_000_000)))),
        "{r:?}"
    );

    let v2 = Repository::<_, CounterV2>::new(store.clone(), config(None));
    let loaded = v2.load("c1").await.unwrap();
    assert_eq!(
        loaded.snapshot, None,
        "a snapshot of another shape is not used"
    );
    assert_eq!(
        (loaded.state.sum, loaded.events_folded),
        ((1..=25).sum(), 25)
    );

    let unsnapshotted = Repository::<_, Counter>::new(store.clone(), config(None));
    unsnapshotted.execute("c2", &5).await.unwrap();
    assert_eq!(unsnapshotted.load("c2").await.unwrap().snapshot, None);
    assert_eq!(repo.load("c-new").await.unwrap().version, None);
}

pub(crate) async fn the_repository_retries_when_another_writer_wins(b: &impl Backend) {
    let store = b.open().await;
    let repo = Arc::new(Repository::<_, Counter>::new(
        store.clone(),
        RepositoryConfig {
            attempts_max: 100,
            ..config(None)
        },
    ));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let repo = Arc::clone(&repo);
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            for _ in 0..5 {
                attempts += repo.execute("shared", &1).await.unwrap().attempts;
            }
            attempts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = repo.load("shared").await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.version),
        (30, Some(StreamVersion(29)))
    );
}

pub(crate) async fn upcasters_bring_old_events_to_the_current_shape(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("counter-old");
    // Version 1 of counter.added carried `amount`; version 2 renamed it `by`.
    let old = |amount: u64| {
        tidings_types::CloudEvent::new("/legacy", "counter.added")
            .with_json(&serde_json::json!({ "amount": amount }))
            .unwrap()
    };
    store
        .append_to(&s, ExpectedVersion::NoStream, vec![old(3), old(4)])
        .await
        .unwrap();
    let v2 = event("counter.added", 0)
        .with_extension("schemaversion", 2)
        .unwrap();
    let v2 = v2.with_json(&serde_json::json!({ "by": 10 })).unwrap();
    store
        .append_to(&s, ExpectedVersion::Any, vec![v2])
        .await
        .unwrap();

    let mut upcasters = Upcasters::new();
    upcasters.register_json("counter.added", 1, |data| {
        let amount = data.get("amount").cloned().ok_or("no amount")?;
        Ok(serde_json::json!({ "by": amount }))
    });
    let plain = Repository::<_, Counter>::new(store.clone(), config(None));
    assert!(
        matches!(plain.load("old").await, Err(RepositoryError::Decode { .. })),
        "old shape does not decode unaided"
    );
    let repo = plain.with_upcasters(upcasters.clone());
    let loaded = repo.load("old").await.unwrap();
    assert_eq!((loaded.state.total, loaded.state.adds), (17, 3));

    let mut projector = Projector::new(
        store.clone(),
        Selector::Category("counter".into()),
        Totals::default(),
    )
    .with_upcasters(upcasters);
    projector.catch_up().await.unwrap();
    assert_eq!(
        projector.projection().by_stream.get("counter-old"),
        Some(&17)
    );
}

/// A read model: the sum of `by` per stream, with its checkpoint beside it.
#[derive(Default, Debug)]
pub(crate) struct Totals {
    pub(crate) by_stream: BTreeMap<String, u64>,
    pub(crate) checkpoint: Position,
    pub(crate) batches: usize,
}

impl Projection for Totals {
    async fn checkpoint(&mut self) -> Result<Position, ProjectionError> {
        Ok(self.checkpoint)
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        for e in events {
            let data: serde_json::Value = e.event.json()?;
            let by = data
                .get("by")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            *self.by_stream.entry(e.stream.to_string()).or_default() += by;
        }
        self.checkpoint = checkpoint;
        self.batches += 1;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        *self = Totals::default();
        Ok(())
    }
}

/// [`Totals`] shared with the test while a projector runs it.
#[derive(Clone, Debug)]
pub(crate) struct SharedTotals(Arc<std::sync::Mutex<Totals>>);

impl Projection for SharedTotals {
    async fn checkpoint(&mut self) -> Result<Position, ProjectionError> {
        Ok(self.0.lock().unwrap().checkpoint)
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let mut model = std::mem::take(&mut *self.0.lock().unwrap());
        let result = model.apply(events, checkpoint).await;
        *self.0.lock().unwrap() = model;
        result
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        *self.0.lock().unwrap() = Totals::default();
        Ok(())
    }
}

pub(crate) async fn projections_catch_up_continue_and_rebuild(b: &impl Backend) {
    let store = b.open().await;
    let repo = Repository::<_, Counter>::new(store.clone(), config(None));
    for i in 0..20u64 {
        repo.execute(&format!("p{}", i % 3), &(i + 1))
            .await
            .unwrap();
        store
            .append_to(
                &stream("other-1"),
                ExpectedVersion::Any,
                vec![event("other", i)],
            )
            .await
            .unwrap();
    }
    let mut projector = Projector::new(
        store.clone(),
        Selector::Category("counter".into()),
        Totals::default(),
    );
    let reached = projector.catch_up().await.unwrap();
    assert_eq!(reached, store.head().await.unwrap());
    let expected = |upto: u64| {
        let mut m = BTreeMap::new();
        for i in 0..upto {
            *m.entry(format!("counter-p{}", i % 3)).or_insert(0) += i + 1;
        }
        m
    };
    assert_eq!(projector.projection().by_stream, expected(20));

    for i in 20..30u64 {
        repo.execute(&format!("p{}", i % 3), &(i + 1))
            .await
            .unwrap();
    }
    let batches = projector.projection().batches;
    projector.catch_up().await.unwrap();
    assert_eq!(
        projector.projection().by_stream,
        expected(30),
        "continues from its checkpoint"
    );
    assert!(projector.projection().batches > batches);

    // Following live until told to stop.
    let shared = SharedTotals(Arc::new(std::sync::Mutex::new(Totals::default())));
    let mut live = Projector::new(
        store.clone(),
        Selector::Category("counter".into()),
        shared.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        live.run(async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap()
    });
    for i in 30..40u64 {
        repo.execute(&format!("p{}", i % 3), &(i + 1))
            .await
            .unwrap();
    }
    let caught_up = async {
        while shared.0.lock().unwrap().by_stream != expected(40) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), caught_up)
        .await
        .expect("the live projector sees every event");
    stop_tx.send(()).unwrap();
    assert_eq!(run.await.unwrap(), store.head().await.unwrap());
    projector.catch_up().await.unwrap();
    assert_eq!(projector.projection().by_stream, expected(40));

    let before = projector.projection().by_stream.clone();
    let rebuilt = projector.rebuild().await.unwrap();
    assert_eq!(rebuilt, store.head().await.unwrap());
    assert_eq!(
        projector.projection().by_stream,
        before,
        "a rebuild from zero gives the same model"
    );
}

pub(crate) async fn everything_survives_a_restart(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("order-9");
    store
        .append_to(&s, ExpectedVersion::NoStream, events("placed", 0, 3))
        .await
        .unwrap();
    store
        .append(vec![
            StreamAppend::new(
                s.clone(),
                ExpectedVersion::Exact(StreamVersion(2)),
                events("paid", 3, 1),
            ),
            StreamAppend::new(
                stream("invoice-9"),
                ExpectedVersion::NoStream,
                events("issued", 4, 1),
            ),
        ])
        .await
        .unwrap();
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_count: Some(100),
                max_age: None,
            },
        )
        .await
        .unwrap();
    let repeated = events("repeat", 50, 1);
    let first = store
        .append_to(&stream("r-1"), ExpectedVersion::Any, repeated.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    let all_before = store
        .read_all(&Selector::All, Position::START, 1000)
        .await
        .unwrap();
    b.close(store).await;

    let store = b.open().await;
    assert_eq!(store.head().await.unwrap(), head);
    let all_after = store
        .read_all(&Selector::All, Position::START, 1000)
        .await
        .unwrap();
    assert_eq!(all_before, all_after);
    let info = store.stream_info(&s).await.unwrap();
    assert_eq!(
        (info.version, info.metadata.max_count),
        (Some(StreamVersion(3)), Some(100))
    );
    let r = store
        .append_to(
            &s,
            ExpectedVersion::Exact(StreamVersion(2)),
            events("late", 9, 1),
        )
        .await;
    assert!(matches!(
        r,
        Err(AppendError::WrongExpectedVersion {
            actual: Some(StreamVersion(3)),
            ..
        })
    ));
    assert_eq!(
        store
            .append_to(&stream("r-1"), ExpectedVersion::Any, repeated)
            .await
            .unwrap(),
        first,
        "idempotency survives"
    );
    let next = store
        .append_to(
            &s,
            ExpectedVersion::Exact(StreamVersion(3)),
            events("shipped", 10, 1),
        )
        .await
        .unwrap();
    assert_eq!(next.first_position, head, "positions continue");
}

pub(crate) async fn bad_appends_are_refused_without_writing(b: &impl Backend) {
    let store = b.open().await;
    let s = stream("bad-1");
    assert!(matches!(
        store.append(vec![]).await,
        Err(AppendError::NoEvents)
    ));
    assert!(matches!(
        store.append_to(&s, ExpectedVersion::Any, vec![]).await,
        Err(AppendError::NoEvents)
    ));
    let twice = event("e", 1);
    let r = store
        .append_to(&s, ExpectedVersion::Any, vec![twice.clone(), twice])
        .await;
    assert!(matches!(r, Err(AppendError::RepeatedEventId(_))), "{r:?}");
    let invalid = tidings_types::CloudEvent::new("", "e");
    let r = store
        .append_to(&s, ExpectedVersion::Any, vec![event("ok", 0), invalid])
        .await;
    assert!(
        matches!(r, Err(AppendError::InvalidEvent { index: 1, .. })),
        "{r:?}"
    );
    let r = store
        .append_to(
            &s,
            ExpectedVersion::Any,
            events("e", 0, tidings_store::APPEND_EVENTS_MAX as u64 + 1),
        )
        .await;
    assert!(matches!(r, Err(AppendError::TooManyEvents(_))), "{r:?}");
    assert_eq!(store.head().await.unwrap(), Position::START);
    assert!(tidings_store::StreamName::new("$all").is_err());
    assert!(tidings_store::StreamName::new("").is_err());
    assert!(tidings_store::StreamName::new(&"x".repeat(300)).is_err());
    for bad in ["order 1", "order/1", "order\n1", "zoë-1"] {
        assert!(
            matches!(
                tidings_store::StreamName::new(bad),
                Err(tidings_store::NameError::BadCharacter { .. })
            ),
            "{bad}"
        );
    }
    assert!(tidings_store::StreamName::new("order_1.v2-17").is_ok());
}

pub(crate) async fn an_event_is_located_by_its_id(b: &impl Backend) {
    let store = b.open().await;
    let (s1, s2) = (stream("inbox-1"), stream("order-2"));
    let done = store
        .append(vec![
            StreamAppend::new(s1.clone(), ExpectedVersion::NoStream, events("a", 0, 2)),
            StreamAppend::new(s2.clone(), ExpectedVersion::NoStream, events("b", 10, 1)),
        ])
        .await
        .unwrap();
    let first = store
        .read_stream(&s1, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    for e in &first.events {
        assert_eq!(
            store.locate_event(e.event.id()).await.unwrap(),
            Some(e.position)
        );
    }
    let other = store
        .read_stream(&s2, ReadStream::forward(StreamVersion(0)))
        .await
        .unwrap();
    assert_eq!(
        store
            .locate_event(other.events[0].event.id())
            .await
            .unwrap(),
        Some(done[1].first_position)
    );
    assert_eq!(store.locate_event("never-stored").await.unwrap(), None);
    // A refused append stores no id.
    let refused = event("c", 20);
    let id = refused.id().to_owned();
    assert!(store
        .append_to(&s2, ExpectedVersion::NoStream, vec![refused])
        .await
        .is_err());
    assert_eq!(store.locate_event(&id).await.unwrap(), None);
}
