//! The conformance suite on the PostgreSQL backend, a fresh database per
//! check: queue mode, and a few checks in stream mode, which the same queue
//! groups serve (they share partitions rather than assign them).
//!
//! `TIDINGS_TEST_PG_URL` names a server the tests may create databases on
//! (the project's test command starts a throwaway one). Without it these
//! tests fail, unless `TIDINGS_TEST_PG_SKIP=1` asks to skip them.

use std::sync::Arc;

use tidings::postgres::Postgres;
use tidings::{Backend, Mode};
use tokio_postgres::NoTls;

use crate::conformance::conformance;
use crate::support::Harness;

/// A backend on a database of its own.
pub(crate) struct PgHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    admin_url: String,
    database: String,
}

impl Harness for PgHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    /// Cuts every connection to the check's database, as a failover or a
    /// restart of the server does.
    async fn restart(&self) -> bool {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let cut = client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.database],
            )
            .await
            .unwrap();
        assert!(cut > 0, "the backend had connections to cut");
        true
    }
}

/// A database for one check; `None` only when skipping was asked for.
pub(crate) async fn postgres(mode: Mode) -> Option<PgHarness> {
    let (admin_url, database) = create_database("tidings_toolkit").await?;
    let url = database_url(&admin_url, &database);
    let backend = Postgres::connect(&url).await.unwrap();
    Some(PgHarness {
        backend: Arc::new(backend),
        mode,
        admin_url,
        database,
    })
}

/// A fresh, empty database named after `prefix`: the server's admin URL
/// and the database's name; `None` only when skipping was asked for.
async fn create_database(prefix: &str) -> Option<(String, String)> {
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
    let database = crate::support::fresh(prefix).replace('-', "_");
    client
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    Some((admin_url, database))
}

/// A fresh database named after `prefix`, a client connected to it and its
/// URL; `None` only when skipping was asked for.
pub(crate) async fn fresh_database(prefix: &str) -> Option<(tokio_postgres::Client, String)> {
    let (admin_url, database) = create_database(prefix).await?;
    let url = database_url(&admin_url, &database);
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((client, url))
}

/// `admin_url` with its database replaced by `database`.
pub(crate) fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

mod queue {
    use super::*;
    conformance!(postgres(Mode::Queue));
}

/// Stream mode is the same queue groups: enough checks to show it is served.
mod stream {
    use super::*;
    conformance!(@each postgres(Mode::Stream);
        events_round_trip_with_their_attributes,
        groups_share_the_load_and_fan_out,
        a_subscriber_that_restarts_resumes_where_it_left
    );
}
