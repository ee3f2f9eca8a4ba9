//! The conformance suite on PostgreSQL, and what only that backend must do.
//!
//! `TIDINGS_TEST_PG_URL` names a server the tests may create databases on (the
//! project's test command starts a throwaway one). Without it these tests
//! fail, unless `TIDINGS_TEST_PG_SKIP=1` asks to skip them: a suite that passes
//! by not running must be asked for.

use std::sync::Arc;

use tidings_store::{PgOptions, PgStore};
use tidings_types::ManualClock;
use tokio_postgres::NoTls;

use crate::conformance::conformance;
use crate::support::{manual_clock, Backend};

/// A fresh database per check, and a clock the check moves.
pub(crate) struct Postgres {
    url: String,
    clock: Arc<ManualClock>,
}

impl Backend for Postgres {
    type Store = PgStore;

    async fn open(&self) -> PgStore {
        let options = PgOptions {
            clock: self.clock.clone(),
            ..PgOptions::default()
        };
        PgStore::connect(&self.url, options).await.unwrap()
    }

    async fn close(&self, store: PgStore) {
        drop(store);
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }
}

/// Creates a database for one check; `None` only when skipping was asked for.
pub(crate) async fn postgres() -> Option<Postgres> {
    let Ok(admin_url) = std::env::var("TIDINGS_TEST_PG_URL") else {
        if std::env::var("TIDINGS_TEST_PG_SKIP").as_deref() == Ok("1") {
            eprintln!("skipped: TIDINGS_TEST_PG_SKIP=1");
            return None;
        }
        panic!(
            "TIDINGS_TEST_PG_URL is not set: run ./scripts/test, which starts a PostgreSQL \
             server, or set TIDINGS_TEST_PG_SKIP=1 to skip the PostgreSQL tests"
        );
    };
    let (client, connection) = tokio_postgres::connect(&admin_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let name = format!("tidings_test_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = admin_url.parse().unwrap();
    config.dbname(&name);
    Some(Postgres {
        url: to_url(&config),
        clock: manual_clock(),
    })
}

/// A key=value connection string for `config`.
fn to_url(config: &tokio_postgres::Config) -> String {
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let mut url = format!(
        "host={host} port={} user={} dbname={}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
    );
    if let Some(password) = config.get_password() {
        url.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    url
}

conformance!(postgres());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_connections_are_killed() {
    use tidings_store::{EventStore, ExpectedVersion, Selector, StreamVersion, Subscription};

    use crate::support::{events, stream};

    let Some(backend) = postgres().await else {
        return;
    };
    let store = backend.open().await;
    let s = stream("order-1");
    store
        .append_to(&s, ExpectedVersion::NoStream, events("e", 0, 1))
        .await
        .unwrap();
    let mut sub = Subscription::new(store.clone(), Selector::All, tidings_store::Position::START);
    sub.next().await.unwrap();

    // Kill every connection to the database: pooled ones and the listener's.
    let admin_url = std::env::var("TIDINGS_TEST_PG_URL").unwrap();
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let db: tokio_postgres::Config = backend.url.parse().unwrap();
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.get_dbname().unwrap()],
        )
        .await
        .unwrap();
    assert!(killed >= 1);

    // Appends and reads carry on; the subscription sees the new event.
    let mut appended = None;
    for _ in 0..3 {
        match store
            .append_to(
                &s,
                ExpectedVersion::Exact(StreamVersion(0)),
                events("e", 1, 1),
            )
            .await
        {
            Ok(done) => {
                appended = Some(done);
                break;
            }
            // A connection the pool had not yet seen die is dropped on failure.
            Err(e) => eprintln!("append after kill: {e}"),
        }
    }
    assert_eq!(
        appended
            .expect("an append succeeds after reconnecting")
            .last_version,
        StreamVersion(1)
    );
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.version, StreamVersion(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_read_model_commits_with_its_checkpoint() {
    use tidings_store::projection::{
        PgProjection, PgReadModel, Projection, ProjectionError, Projector,
    };
    use tidings_store::{EventStore, ExpectedVersion, RecordedEvent, Selector};

    use crate::support::{events, stream};

    /// Counts events per type in a table; fails on an event of type `poison`.
    struct TypeCounts;

    impl PgProjection for TypeCounts {
        fn name(&self) -> &str {
            "type-counts"
        }

        async fn apply(
            &self,
            tx: &tokio_postgres::Transaction<'_>,
            e: &RecordedEvent,
        ) -> Result<(), ProjectionError> {
            if e.event.ty() == "poison" {
                return Err("poisoned event".into());
            }
            tx.execute(
                "INSERT INTO type_counts (ty, n) VALUES ($1, 1) ON CONFLICT (ty) DO UPDATE SET n = type_counts.n + 1",
                &[&e.event.ty()],
            )
            .await?;
            Ok(())
        }

        async fn reset(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), ProjectionError> {
            tx.execute("DELETE FROM type_counts", &[]).await?;
            Ok(())
        }
    }

    let Some(backend) = postgres().await else {
        return;
    };
    let store = backend.open().await;
    store
        .connection()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE type_counts (ty text PRIMARY KEY, n bigint NOT NULL)")
        .await
        .unwrap();
    store
        .append_to(&stream("a-1"), ExpectedVersion::Any, events("placed", 0, 5))
        .await
        .unwrap();
    store
        .append_to(&stream("a-2"), ExpectedVersion::Any, events("paid", 0, 3))
        .await
        .unwrap();
    let counts = |store: tidings_store::PgStore| async move {
        let client = store.connection().await.unwrap();
        let rows = client
            .query("SELECT ty, n FROM type_counts ORDER BY ty", &[])
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
    };

    let mut projector = Projector::new(
        store.clone(),
        Selector::All,
        PgReadModel::new(store.clone(), TypeCounts),
    );
    let reached = projector.catch_up().await.unwrap();
    assert_eq!(
        counts(store.clone()).await,
        [("paid".to_owned(), 3), ("placed".to_owned(), 5)]
    );
    assert_eq!(
        store.load_checkpoint("type-counts").await.unwrap(),
        Some(reached)
    );

    // A batch that fails halfway leaves neither the rows nor the checkpoint moved.
    store
        .append_to(
            &stream("a-3"),
            ExpectedVersion::Any,
            vec![
                crate::support::event("paid", 9),
                crate::support::event("poison", 0),
            ],
        )
        .await
        .unwrap();
    assert!(projector.catch_up().await.is_err());
    assert_eq!(
        counts(store.clone()).await,
        [("paid".to_owned(), 3), ("placed".to_owned(), 5)]
    );
    assert_eq!(
        store.load_checkpoint("type-counts").await.unwrap(),
        Some(reached)
    );

    let mut model = PgReadModel::new(store.clone(), TypeCounts);
    model.reset().await.unwrap();
    assert!(counts(store.clone()).await.is_empty());
    assert_eq!(
        model.checkpoint().await.unwrap(),
        tidings_store::Position::START
    );
}

/// Appends that arrive together commit in one transaction (the store's
/// writer takes every append waiting): each is checked against what the
/// earlier ones of its group leave, one refused for its expected version does
/// not stop the others, and repeats and id conflicts are answered as they are
/// alone. The global order stays gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_arrive_together_commit_together_each_on_its_own_terms() {
    use std::collections::BTreeSet;

    use tidings_store::{AppendError, EventStore, ExpectedVersion, Position, Selector};

    use crate::support::{event, events, stream};

    let Some(backend) = postgres().await else {
        return;
    };
    let store = backend.open().await;
    let repeated = events("r", 0, 1);
    let original = store
        .append_to(
            &stream("rep-1"),
            ExpectedVersion::NoStream,
            repeated.clone(),
        )
        .await
        .unwrap();
    let contested = event("d", 0);

    enum Kind {
        Shared,
        Own(u64),
        Repeat,
        Conflict,
    }
    let mut tasks = Vec::new();
    for round in 0..4u64 {
        let mut plan: Vec<(
            Kind,
            String,
            ExpectedVersion,
            Vec<tidings_types::CloudEvent>,
        )> = Vec::new();
        for i in 0..8 {
            plan.push((
                Kind::Shared,
                "shared-1".into(),
                ExpectedVersion::Any,
                events("s", round * 8 + i, 1),
            ));
        }
        for i in 0..4 {
            let own = round * 4 + i;
            for _ in 0..2 {
                plan.push((
                    Kind::Own(own),
                    format!("own-{own}"),
                    ExpectedVersion::NoStream,
                    events("o", own, 2),
                ));
            }
        }
        for _ in 0..2 {
            plan.push((
                Kind::Repeat,
                "rep-1".into(),
                ExpectedVersion::NoStream,
                repeated.clone(),
            ));
        }
        for i in 0..2 {
            plan.push((
                Kind::Conflict,
                format!("dup-{round}{i}"),
                ExpectedVersion::Any,
                vec![contested.clone()],
            ));
        }
        for (kind, name, expected, evs) in plan {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                (kind, store.append_to(&stream(&name), expected, evs).await)
            }));
        }
    }
    let mut shared_versions = BTreeSet::new();
    let mut own_won = std::collections::BTreeMap::<u64, usize>::new();
    let mut conflicts_won = 0;
    for t in tasks {
        let (kind, result) = t.await.unwrap();
        match kind {
            Kind::Shared => {
                let done = result.unwrap();
                assert!(
                    shared_versions.insert(done.last_version.0),
                    "a version given twice"
                );
            }
            Kind::Own(own) => match result {
                Ok(done) => {
                    assert_eq!(done.last_version.0, 1);
                    *own_won.entry(own).or_default() += 1;
                }
                Err(AppendError::WrongExpectedVersion { .. }) => {}
                Err(e) => panic!("own-{own}: {e}"),
            },
            Kind::Repeat => assert_eq!(result.unwrap(), original, "a repeat answers the original"),
            Kind::Conflict => match result {
                Ok(_) => conflicts_won += 1,
                Err(AppendError::DuplicateEventId { .. }) => {}
                Err(e) => panic!("conflict: {e}"),
            },
        }
    }
    assert_eq!(shared_versions, (0..32).collect::<BTreeSet<u64>>());
    assert_eq!(own_won.len(), 16);
    assert!(
        own_won.values().all(|&n| n == 1),
        "one of each pair: {own_won:?}"
    );
    assert_eq!(conflicts_won, 1);
    // 1 original + 32 shared + 16 × 2 own + 1 contested, gap-free.
    let all = store
        .read_all(&Selector::All, Position::START, 1000)
        .await
        .unwrap();
    let positions: Vec<u64> = all.events.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (0..66).collect::<Vec<u64>>());
    assert_eq!(store.head().await.unwrap(), Position(66));
    // The rush was written in groups, none of which had to fall back.
    let stats = store.append_stats();
    assert!(stats.groups > 0 && stats.grouped > 0, "{stats:?}");
    assert_eq!(stats.group_failures, 0, "{stats:?}");
    // Every append call answered once: the original and the rush's 80.
    assert_eq!(stats.grouped + stats.alone, 81, "{stats:?}");
}
