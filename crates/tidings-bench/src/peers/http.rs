//! Tidings over HTTP: `tidings serve` in its own process, driven through
//! `tidings-client` with one client (one HTTP/1.1 connection) per producer and
//! consumer. A single event is published in the CloudEvents binary mode
//! (attributes in `ce-` headers, the payload as the body), a batch as one
//! `application/cloudevents-batch+json` request (binary data as
//! `data_base64`); a consumer receives from the queue group with a long poll
//! and acks a whole receive with one batch ack.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tidings_api::{CreateQueue, CreateTopic, ReceiveQuery, TopicSettings};
use tidings_client::Client;
use tidings_types::CloudEvent;

use super::{BoxFut, Consumer, Producer, System};

/// A client of the server at `addr`.
pub(crate) fn client(addr: SocketAddr) -> Result<Client> {
    Ok(Client::new(&format!("http://{addr}"))?)
}

/// Creates `topic` with one partition and the fsync policy of the run, through
/// the HTTP API.
pub(crate) async fn create_topic(client: &Client, topic: &str, durable: bool) -> Result<()> {
    let fsync = if durable { "always" } else { "never" };
    client
        .create_topic(&CreateTopic {
            name: topic.to_owned(),
            settings: TopicSettings {
                partitions: Some(1),
                fsync: Some(fsync.to_owned()),
                ..TopicSettings::default()
            },
        })
        .await?;
    Ok(())
}

/// Tidings over HTTP.
pub(crate) struct Http {
    pub(crate) addr: SocketAddr,
    pub(crate) durable: bool,
}

/// Topic names of this system: the server is shared with the Kafka one.
fn topic(stream: &str) -> String {
    format!("http-{stream}")
}

fn group(stream: &str) -> String {
    format!("http-{stream}-workers")
}

impl System for Http {
    fn name(&self) -> String {
        "Tidings (HTTP)".to_owned()
    }

    fn setting(&self) -> String {
        let fsync = if self.durable { "always" } else { "never" };
        format!(
            "`tidings serve` in its own process; one partition, fsync = {fsync}, dedup on \
             (120 s window); one HTTP/1.1 connection per client; a batch is one \
             cloudevents-batch+json request, one event a binary-mode request; a queue group \
             with durable acks, a receive acked with one batch ack"
        )
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let client = client(self.addr)?;
            create_topic(&client, &topic(stream), self.durable).await?;
            client
                .create_queue(&CreateQueue::new(group(stream), topic(stream)))
                .await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(HttpProducer {
                client: client(self.addr)?,
                topic: topic(stream),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(HttpConsumer {
                client: client(self.addr)?,
                group: group(stream),
                leases: Vec::new(),
            });
            Ok(c)
        })
    }
}

struct HttpProducer {
    client: Client,
    topic: String,
}

fn event(data: &Bytes) -> CloudEvent {
    CloudEvent::new("/bench", "bench.event")
        .with_time(None)
        .with_data("application/octet-stream", data.clone())
}

impl Producer for HttpProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if let [one] = events {
                self.client.publish_binary(&self.topic, &event(one)).await?;
            } else {
                let batch: Vec<CloudEvent> = events.iter().map(event).collect();
                self.client.publish(&self.topic, &batch).await?;
            }
            Ok(())
        })
    }
}

struct HttpConsumer {
    client: Client,
    group: String,
    leases: Vec<String>,
}

impl Consumer for HttpConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            let query = ReceiveQuery {
                max: Some(max),
                wait_ms: Some(100),
                max_in_flight: None,
            };
            let answer = self.client.receive(&self.group, &query).await?;
            let mut events = Vec::with_capacity(answer.deliveries.len());
            for d in answer.deliveries {
                let json = d.entry.event.context("a delivery without an event")?;
                let event = CloudEvent::from_json_value(json)?;
                events.push(event.data().cloned().unwrap_or_default());
                self.leases.push(d.lease);
            }
            Ok(events)
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            if self.leases.is_empty() {
                return Ok(());
            }
            let leases = std::mem::take(&mut self.leases);
            let answer = self.client.ack_many(&self.group, &leases).await?;
            if !answer.failed.is_empty() {
                bail!("a batch ack failed in part: {:?}", answer.failed);
            }
            Ok(())
        })
    }
}
