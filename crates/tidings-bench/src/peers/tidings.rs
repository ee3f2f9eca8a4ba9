//! Tidings embedded: the broker in the benchmark's own process, on a throwaway
//! data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tidings_broker::{
    Broker, BrokerOptions, LeaseId, Payload, QueueConfig, StartPosition, TopicSpec,
};
use tidings_log::FsyncPolicy;
use tidings_types::CloudEvent;

use super::{BoxFut, Consumer, Producer, System};

pub(crate) struct Embedded {
    broker: Arc<Broker>,
    durable: bool,
    _data: tempfile::TempDir,
}

impl Embedded {
    pub(crate) fn open(dir: &Path, durable: bool) -> Result<Embedded> {
        let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
        let broker = Broker::open(data.path(), BrokerOptions::default())?;
        Ok(Embedded {
            broker: Arc::new(broker),
            durable,
            _data: data,
        })
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.broker.close();
    }
}

fn event(data: &Bytes) -> CloudEvent {
    CloudEvent::new("/bench", "bench.event").with_data("application/octet-stream", data.clone())
}

impl System for Embedded {
    fn name(&self) -> String {
        "Tidings (embedded)".to_owned()
    }

    fn setting(&self) -> String {
        let fsync = if self.durable { "always" } else { "never" };
        format!("one partition, fsync = {fsync}, dedup on (120 s window), queue group with durable acks")
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut spec = TopicSpec::with_partitions(1);
            spec.log.fsync = if self.durable {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Never
            };
            self.broker.create_topic(stream, spec)?;
            self.broker.create_queue_group(
                &group(stream),
                stream,
                QueueConfig::default(),
                StartPosition::Earliest,
            )?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(EmbeddedProducer {
                broker: Arc::clone(&self.broker),
                topic: stream.to_owned(),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(EmbeddedConsumer {
                broker: Arc::clone(&self.broker),
                group: group(stream),
                leases: Vec::new(),
            });
            Ok(c)
        })
    }
}

fn group(stream: &str) -> String {
    format!("{stream}-workers")
}

struct EmbeddedProducer {
    broker: Arc<Broker>,
    topic: String,
}

impl Producer for EmbeddedProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if let [one] = events {
                self.broker.publish(&self.topic, event(one)).await?;
            } else {
                let batch = events.iter().map(event).collect();
                self.broker.publish_batch(&self.topic, batch).await?;
            }
            Ok(())
        })
    }
}

struct EmbeddedConsumer {
    broker: Arc<Broker>,
    group: String,
    leases: Vec<LeaseId>,
}

impl Consumer for EmbeddedConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            let deliveries = self
                .broker
                .receive_wait(&self.group, max, Duration::from_millis(100))
                .await?;
            let mut events = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let Payload::Event(e) = &d.entry.payload else {
                    anyhow::bail!("a raw record in the benchmark topic")
                };
                events.push(e.data().context("an event without data")?.clone());
                self.leases.push(d.lease);
            }
            Ok(events)
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let leases = std::mem::take(&mut self.leases);
            for result in self.broker.ack_many(&self.group, &leases).await? {
                result?;
            }
            Ok(())
        })
    }
}
