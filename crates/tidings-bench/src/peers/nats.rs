//! NATS JetStream: async publishes with their acks awaited together; a durable
//! pull consumer shared by the group's members, with explicit acks each confirmed
//! by the server (`double_ack`).

use std::time::Duration;

use anyhow::{bail, Result};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream::StorageType};
use bytes::Bytes;
use futures_util::future::try_join_all;
use futures_util::{FutureExt, StreamExt};

use super::servers::{NatsSync, Server};
use super::{BoxFut, Consumer, Producer, System};

const GROUP: &str = "workers";

pub(crate) struct Nats {
    addr: String,
    client: async_nats::Client,
    storage: StorageType,
    setting: String,
}

impl Nats {
    pub(crate) async fn connect(server: &Server, sync: &NatsSync, durable: bool) -> Result<Nats> {
        let addr = server.addr.to_string();
        let client = async_nats::connect(&addr).await?;
        // The durable runs keep streams in file storage, which the server
        // started with `sync_interval: always` syncs on every write (nats-server
        // 2.10 on; an older one only on its 2-minute timer, which `sync` then
        // says); the not-durable runs keep them in memory, as Redis does
        // without persistence.
        let (storage, setting) = if durable {
            (StorageType::File, format!("file storage, {}", sync.setting))
        } else {
            (StorageType::Memory, "memory storage".to_owned())
        };
        Ok(Nats {
            addr,
            client,
            storage,
            setting: format!("{}; {setting}", server.version),
        })
    }

    fn context(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }
}

impl System for Nats {
    fn name(&self) -> String {
        "NATS JetStream".to_owned()
    }

    fn setting(&self) -> String {
        self.setting.clone()
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let js = self.context();
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: stream.to_owned(),
                    subjects: vec![stream.to_owned()],
                    storage: self.storage,
                    ..Default::default()
                })
                .await?;
            created
                .create_consumer(pull::Config {
                    durable_name: Some(GROUP.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                })
                .await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            // Each producer has its own connection, as on the other systems.
            let client = async_nats::connect(&self.addr).await?;
            let p: Box<dyn Producer> = Box::new(NatsProducer {
                js: jetstream::new(client),
                subject: stream.to_owned(),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let js = self.context();
            let consumer: jetstream::consumer::Consumer<pull::Config> = js
                .get_stream(stream)
                .await?
                .get_consumer(GROUP)
                .await
                .map_err(|e| anyhow::anyhow!("NATS consumer {GROUP}: {e}"))?;
            // Short pull requests with heartbeats: nats-server 2.9 now and
            // then leaves a pull request unanswered, and the client notices
            // only when heartbeats stop (by default after half a minute).
            let messages = consumer
                .stream()
                .max_messages_per_batch(super::IN_FLIGHT)
                .expires(Duration::from_secs(1))
                .heartbeat(Duration::from_millis(250))
                .messages()
                .await?;
            let c: Box<dyn Consumer> = Box::new(NatsConsumer {
                messages,
                pending: Vec::new(),
            });
            Ok(c)
        })
    }
}

struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut acks = Vec::with_capacity(events.len());
            for e in events {
                acks.push(self.js.publish(self.subject.clone(), e.clone()).await?);
            }
            try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
            Ok(())
        })
    }
}

struct NatsConsumer {
    messages: pull::Stream,
    pending: Vec<jetstream::Message>,
}

impl Consumer for NatsConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            let first =
                tokio::time::timeout(Duration::from_millis(100), self.messages.next()).await;
            let mut events = Vec::new();
            let mut next = match first {
                Err(_) => return Ok(events),
                Ok(m) => m,
            };
            // The first message waited for; the rest only if already here.
            while let Some(m) = next {
                let m = match m {
                    Ok(m) => m,
                    // The client pulls again on its own; so does the caller.
                    Err(e) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => break,
                    Err(e) => bail!("NATS consumer: {e}"),
                };
                events.push(m.payload.clone());
                self.pending.push(m);
                if events.len() == max {
                    break;
                }
                next = match self.messages.next().now_or_never() {
                    Some(m) => m,
                    None => break,
                };
            }
            Ok(events)
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let pending = std::mem::take(&mut self.pending);
            try_join_all(pending.iter().map(|m| m.double_ack()))
                .await
                .map_err(|e| anyhow::anyhow!("NATS ack: {e}"))?;
            Ok(())
        })
    }
}
