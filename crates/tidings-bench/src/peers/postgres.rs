//! PostgreSQL as a queue: a table per stream; publish is one multi-row `INSERT`
//! per batch; a consumer takes rows with `SELECT … FOR UPDATE SKIP LOCKED` in a
//! transaction and acks by deleting them and committing. The fixed-rate
//! end-to-end run adds `LISTEN`/`NOTIFY` so that consumers wake on new rows
//! instead of polling.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{BoxFut, Consumer, Producer, System};

pub(crate) struct Postgres {
    url: String,
    durable: bool,
    version: String,
}

impl Postgres {
    /// `url` names a database of the benchmark's own.
    pub(crate) async fn connect(url: &str, durable: bool) -> Result<Postgres> {
        let client = connect(url, durable).await?;
        let row = client.query_one("SHOW server_version", &[]).await?;
        Ok(Postgres {
            url: url.to_owned(),
            durable,
            version: row.get(0),
        })
    }
}

async fn connect(url: &str, durable: bool) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    if !durable {
        client.batch_execute("SET synchronous_commit = off").await?;
    }
    Ok(client)
}

/// Only the end-to-end stream notifies its consumers: `NOTIFY` serializes
/// commits, a cost the throughput runs' users would not pay.
fn notifies(stream: &str) -> bool {
    stream == "e2e"
}

impl System for Postgres {
    fn name(&self) -> String {
        "PostgreSQL (queue table)".to_owned()
    }

    fn setting(&self) -> String {
        let commit = if self.durable {
            "synchronous_commit = on (each commit's WAL flushed before it returns)"
        } else {
            "synchronous_commit = off (WAL flushed in the background)"
        };
        format!("PostgreSQL {}; fsync = on, {commit}", self.version)
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let client = connect(&self.url, true).await?;
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {stream};
                     CREATE TABLE {stream} (id bigserial PRIMARY KEY, payload bytea NOT NULL)"
                ))
                .await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let client = connect(&self.url, self.durable).await?;
            let insert = format!("INSERT INTO {stream} (payload) SELECT unnest($1::bytea[])");
            let sql = if notifies(stream) {
                format!("WITH ins AS ({insert}) SELECT pg_notify('{stream}', '')")
            } else {
                insert
            };
            let statement = client.prepare(&sql).await?;
            let p: Box<dyn Producer> = Box::new(PgProducer { client, statement });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls).await?;
            let wake = Arc::new(Notify::new());
            let w = Arc::clone(&wake);
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(m)) = messages.next().await {
                    if let AsyncMessage::Notification(_) = m {
                        w.notify_one();
                    }
                }
            });
            if !self.durable {
                client.batch_execute("SET synchronous_commit = off").await?;
            }
            if notifies(stream) {
                client.batch_execute(&format!("LISTEN {stream}")).await?;
            }
            let select = client
                .prepare(&format!(
                    "SELECT id, payload FROM {stream} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
                ))
                .await?;
            let delete = client
                .prepare(&format!("DELETE FROM {stream} WHERE id = ANY($1)"))
                .await?;
            let c: Box<dyn Consumer> = Box::new(PgConsumer {
                client,
                select,
                delete,
                wake,
                taken: Vec::new(),
            });
            Ok(c)
        })
    }
}

struct PgProducer {
    client: Client,
    statement: tokio_postgres::Statement,
}

impl Producer for PgProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let rows: Vec<&[u8]> = events.iter().map(|e| &e[..]).collect();
            self.client.execute(&self.statement, &[&rows]).await?;
            Ok(())
        })
    }
}

struct PgConsumer {
    client: Client,
    select: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
    wake: Arc<Notify>,
    /// Rows locked by the open transaction.
    taken: Vec<i64>,
}

impl PgConsumer {
    /// Opens a transaction and locks up to `max` rows no one else holds.
    async fn take(&mut self, max: usize) -> Result<Vec<Bytes>> {
        let limit = i64::try_from(max)?;
        // Pipelined: one round trip for both.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&limit];
        let (begin, rows) = tokio::join!(
            self.client.batch_execute("BEGIN"),
            self.client.query(&self.select, &params)
        );
        begin?;
        let rows = rows?;
        if rows.is_empty() {
            self.client.batch_execute("COMMIT").await?;
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            self.taken.push(row.get(0));
            events.push(Bytes::from(row.get::<_, Vec<u8>>(1)));
        }
        Ok(events)
    }
}

impl Consumer for PgConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            if !self.taken.is_empty() {
                bail!("receive before the last events were acked");
            }
            let wake = Arc::clone(&self.wake);
            let woken = wake.notified();
            let events = self.take(max).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            // Nothing yet: wait for a notification (or a short while), then look
            // once more.
            let _ = tokio::time::timeout(Duration::from_millis(100), woken).await;
            self.take(max).await
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let ids = std::mem::take(&mut self.taken);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
            let (deleted, commit) = tokio::join!(
                self.client.execute(&self.delete, &params),
                self.client.batch_execute("COMMIT")
            );
            let deleted = deleted?;
            commit?;
            if deleted != ids.len() as u64 {
                bail!("deleted {deleted} of {} acked rows", ids.len());
            }
            Ok(())
        })
    }
}
