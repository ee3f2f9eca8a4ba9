//! Tidings over the Kafka protocol: the same `tidings serve` process as the HTTP
//! system, driven through its Kafka listener by a small client written against
//! the protocol's own message types. A producer sends each publish as one
//! record batch in one Produce request with `acks=all` (what a Kafka producer's
//! batching makes of the events it holds); a consumer fetches from the
//! partition with a long poll and commits its position after each receive, as
//! a consumer that assigns its own partitions does.
//!
//! Kafka has no per-event acknowledgement and gives each partition to one
//! member of a group, so the work-queue workload does not apply.

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BoxFut, Consumer, Producer, System};

const PRODUCE_VERSION: i16 = 8;
const FETCH_VERSION: i16 = 11;
const OFFSET_COMMIT_VERSION: i16 = 7;
/// Largest answer a Fetch asks for.
const FETCH_BYTES: i32 = 1 << 20;

/// One connection to the Kafka listener, one request at a time.
struct Conn {
    stream: TcpStream,
    correlation: i32,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the Kafka listener at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            correlation: 0,
            buf: BytesMut::new(),
        })
    }

    /// Sends `request` as `api` at `version` and reads its answer.
    async fn call<Q: Encodable, A: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<A> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("tidings-bench")));
        let buf = &mut self.buf;
        buf.clear();
        buf.put_i32(0);
        header.encode(buf, api.request_header_version(version))?;
        request.encode(buf, version)?;
        let size = i32::try_from(buf.len() - 4)?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(buf).await?;
        let size = self.stream.read_i32().await.context("reading an answer")?;
        let mut frame = vec![0; usize::try_from(size)?];
        self.stream.read_exact(&mut frame).await?;
        let mut frame = Bytes::from(frame);
        let answer = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
        if answer.correlation_id != self.correlation {
            bail!(
                "{api:?}: answer {} to request {}",
                answer.correlation_id,
                self.correlation
            );
        }
        A::decode(&mut frame, version)
    }
}

/// Tidings over the Kafka protocol.
pub(crate) struct Kafka {
    /// The server's HTTP API, where topics are created with their fsync policy.
    pub(crate) http: SocketAddr,
    pub(crate) addr: SocketAddr,
    pub(crate) durable: bool,
}

/// Topic names of this system: the server is shared with the HTTP one.
fn topic(stream: &str) -> String {
    format!("kafka-{stream}")
}

impl System for Kafka {
    fn name(&self) -> String {
        "Tidings (Kafka)".to_owned()
    }

    fn setting(&self) -> String {
        let fsync = if self.durable { "always" } else { "never" };
        format!(
            "`tidings serve`'s Kafka listener, the same process as Tidings (HTTP); one \
             partition, fsync = {fsync}; a publish is one uncompressed record batch in one \
             Produce v{PRODUCE_VERSION} request with acks=all; consumers Fetch \
             v{FETCH_VERSION} with a 100 ms long poll and commit their offset after each \
             receive; no work queue (Kafka has no per-event acks)"
        )
    }

    fn queues(&self) -> bool {
        false
    }

    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let client = super::http::client(self.http)?;
            super::http::create_topic(&client, &topic(stream), self.durable).await
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(KafkaProducer {
                conn: Conn::open(self.addr).await?,
                topic: TopicName(StrBytes::from_string(topic(stream))),
                batch: BytesMut::new(),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(KafkaConsumer {
                conn: Conn::open(self.addr).await?,
                topic: TopicName(StrBytes::from_string(topic(stream))),
                group: GroupId(StrBytes::from_string(format!("{}-readers", topic(stream)))),
                fetched: 0,
                taken: 0,
                buffered: VecDeque::new(),
            });
            Ok(c)
        })
    }
}

struct KafkaProducer {
    conn: Conn,
    topic: TopicName,
    batch: BytesMut,
}

impl Producer for KafkaProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis(),
            )?;
            let records: Vec<Record> = events
                .iter()
                .enumerate()
                .map(|(i, value)| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: now,
                    key: None,
                    value: Some(value.clone()),
                    headers: Default::default(),
                })
                .collect();
            self.batch.clear();
            RecordBatchEncoder::encode(
                &mut self.batch,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )?;
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(self.topic.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(self.batch.split().freeze()))])]);
            let answer: ProduceResponse = self
                .conn
                .call(ApiKey::Produce, PRODUCE_VERSION, &request)
                .await?;
            for t in &answer.responses {
                for p in &t.partition_responses {
                    if p.error_code != 0 {
                        bail!(
                            "Produce refused with error {}: {:?}",
                            p.error_code,
                            p.error_message
                        );
                    }
                }
            }
            Ok(())
        })
    }
}

struct KafkaConsumer {
    conn: Conn,
    topic: TopicName,
    group: GroupId,
    /// The next offset to fetch.
    fetched: i64,
    /// The offset after the last event handed out, committed by `ack`.
    taken: i64,
    /// Fetched and not yet handed out: offset and value.
    buffered: VecDeque<(i64, Bytes)>,
}

impl KafkaConsumer {
    async fn fetch(&mut self) -> Result<()> {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(self.topic.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(self.fetched)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(FETCH_BYTES)])]);
        let answer: FetchResponse = self
            .conn
            .call(ApiKey::Fetch, FETCH_VERSION, &request)
            .await?;
        if answer.error_code != 0 {
            bail!("Fetch refused with error {}", answer.error_code);
        }
        for t in answer.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!("Fetch refused with error {}", p.error_code);
                }
                let Some(mut records) = p.records else {
                    continue;
                };
                while records.has_remaining() {
                    let set = RecordBatchDecoder::decode(&mut records)?;
                    for r in set.records {
                        // A fetch answers with whole batches, which may start
                        // before the offset asked for.
                        if r.offset < self.fetched {
                            continue;
                        }
                        self.fetched = r.offset + 1;
                        let value = r.value.context("a record without a value")?;
                        self.buffered.push_back((r.offset, value));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Consumer for KafkaConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            if self.buffered.is_empty() {
                self.fetch().await?;
            }
            let n = max.min(self.buffered.len());
            let mut events = Vec::with_capacity(n);
            for (offset, value) in self.buffered.drain(..n) {
                self.taken = offset + 1;
                events.push(value);
            }
            Ok(events)
        })
    }

    fn ack(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            // A consumer that assigns its own partitions: generation -1, no
            // member id.
            let request = OffsetCommitRequest::default()
                .with_group_id(self.group.clone())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(self.topic.clone())
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(self.taken)])]);
            let answer: OffsetCommitResponse = self
                .conn
                .call(ApiKey::OffsetCommit, OFFSET_COMMIT_VERSION, &request)
                .await?;
            for t in &answer.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        bail!("OffsetCommit refused with error {}", p.error_code);
                    }
                }
            }
            Ok(())
        })
    }
}
