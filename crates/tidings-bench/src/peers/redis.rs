//! Redis Streams: `XADD` to publish, pipelined; a consumer group read with
//! `XREADGROUP` and acknowledged with one `XACK` per event.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};

use super::servers::Server;
use super::{BoxFut, Consumer, Producer, System};

const GROUP: &str = "workers";

pub(crate) struct Redis {
    client: redis::Client,
    setting: String,
}

impl Redis {
    pub(crate) async fn connect(server: &Server, durable: bool) -> Result<Redis> {
        let client = redis::Client::open(format!("redis://{}/", server.addr))?;
        let persistence = if durable {
            "appendonly yes, appendfsync always (every write synced before its reply)"
        } else {
            "no persistence (save \"\", appendonly no)"
        };
        Ok(Redis {
            client,
            setting: format!("{}; {persistence}", server.version),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }
}

impl System for Redis {
    fn name(&self) -> String {
        "Redis Streams".to_owned()
    }

    fn setting(&self) -> String {
        self.setting.clone()
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let _: () = conn.del(stream).await?;
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(RedisProducer {
                conn: self.connection().await?,
                stream: stream.to_owned(),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(RedisConsumer {
                conn: self.connection().await?,
                stream: stream.to_owned(),
                name: name.to_owned(),
                pending: Vec::new(),
            });
            Ok(c)
        })
    }
}

struct RedisProducer {
    conn: MultiplexedConnection,
    stream: String,
}

impl Producer for RedisProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for e in events {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("payload")
                    .arg(&e[..]);
            }
            let ids: Vec<String> = pipe.query_async(&mut self.conn).await?;
            if ids.len() != events.len() {
                bail!("XADD answered {} of {} events", ids.len(), events.len());
            }
            Ok(())
        })
    }
}

struct RedisConsumer {
    conn: MultiplexedConnection,
    stream: String,
    name: String,
    pending: Vec<String>,
}

impl Consumer for RedisConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            let options = StreamReadOptions::default()
                .group(GROUP, &self.name)
                .block(100)
                .count(max);
            let reply: Option<StreamReadReply> = self
                .conn
                .xread_options(&[&self.stream], &[">"], &options)
                .await?;
            let mut events = Vec::new();
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    let Some(Value::BulkString(data)) = entry.map.get("payload") else {
                        bail!("entry {} has no payload field", entry.id);
                    };
                    events.push(Bytes::copy_from_slice(data));
                    self.pending.push(entry.id);
                }
            }
            Ok(events)
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let ids = std::mem::take(&mut self.pending);
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("XACK").arg(&self.stream).arg(GROUP).arg(id);
            }
            let acked: Vec<u64> = pipe.query_async(&mut self.conn).await.context("XACK")?;
            if acked.iter().sum::<u64>() != ids.len() as u64 {
                bail!(
                    "XACK acknowledged {} of {} entries",
                    acked.iter().sum::<u64>(),
                    ids.len()
                );
            }
            Ok(())
        })
    }
}
