//! Kafka request frames against the real listener: each input is one
//! client connection's bytes, served by `tidings_kafka::serve_stream` over
//! an in-memory pipe on a broker in a temporary directory (kept between
//! inputs, opened afresh every [`INPUTS_PER_BROKER`] inputs or when topics
//! pile up).
//!
//! The oracle: nothing panics, in the connection's task or any other (a
//! panic hook notes panics tokio would otherwise swallow); the connection
//! closes once the client's side has ended, within [`HANG`]; and what the
//! listener wrote is whole frames — a length, then that many bytes, the
//! correlation id first — ended, where a request's size bytes were an HTTP
//! method, by the listener's whole HTTP answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tidings_broker::{Broker, BrokerOptions};
use tidings_kafka::KafkaConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Inputs served by one broker before a fresh one.
const INPUTS_PER_BROKER: u64 = 5_000;
/// Topics one broker may gather before a fresh one.
const TOPICS_PER_BROKER: usize = 32;
/// Longest a connection may stay open after the client's side has ended.
const HANG: Duration = Duration::from_secs(10);

static PANICKED: AtomicBool = AtomicBool::new(false);

struct Server {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
    inputs: u64,
}

impl Server {
    fn open(runtime: tokio::runtime::Runtime) -> Server {
        // tmpfs where there is one: syncs cost nothing there.
        let dir = tempfile::Builder::new()
            .prefix("tidings-fuzz-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
        let options = BrokerOptions {
            partitions_total_max: 64,
            ..BrokerOptions::default()
        };
        let broker = {
            let _entered = runtime.enter();
            Arc::new(Broker::open(dir.path(), options).expect("open a broker"))
        };
        Server {
            runtime,
            broker,
            _dir: dir,
            inputs: 0,
        }
    }

    /// A fresh broker when this one has served enough.
    fn refresh(self) -> Server {
        if self.inputs < INPUTS_PER_BROKER && self.broker.list_topics().len() < TOPICS_PER_BROKER {
            return self;
        }
        let _ = self.broker.close();
        let Server { runtime, .. } = self;
        Server::open(runtime)
    }
}

fn server() -> &'static Mutex<Option<Server>> {
    static SERVER: OnceLock<Mutex<Option<Server>>> = OnceLock::new();
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Mutex::new(Some(Server::open(runtime)))
    })
}

fn config() -> KafkaConfig {
    KafkaConfig {
        fetch_wait_max_ms: 1,
        initial_rebalance_delay_ms: 0,
        idle_timeout_ms: tidings_kafka::IDLE_TIMEOUT_MIN_MS,
        ..KafkaConfig::default()
    }
}

/// `len:u16` (little-endian) prefixed pieces of `data`, each sent as a
/// frame: its length as Kafka's `i32`, then the piece.
fn frames(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        out.extend_from_slice(&i32::try_from(len).expect("short").to_be_bytes());
        out.extend_from_slice(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out
}

/// Checks that `answers` is whole response frames — and, where a request's
/// size was an HTTP method, the listener's HTTP answer to it, last (its
/// length field would read as over a gigabyte, which no response is).
fn check_frames(mut answers: &[u8]) {
    while !answers.is_empty() {
        if answers.starts_with(b"HTTP/1.1 400 Bad Request\r\n") {
            let text = std::str::from_utf8(answers).expect("the HTTP answer is text");
            assert!(
                text.contains("connection: close\r\n")
                    && text.ends_with("--http-addr (127.0.0.1:8080 by default).\n"),
                "the HTTP answer is whole and ends the connection: {text:?}"
            );
            return;
        }
        assert!(answers.len() >= 4, "a response frame's length is cut");
        let len = i32::from_be_bytes(answers[..4].try_into().expect("4"));
        let len = usize::try_from(len).expect("a response length is positive");
        assert!(len >= 4, "a response holds its correlation id");
        assert!(answers.len() - 4 >= len, "a response frame is cut");
        answers = &answers[4 + len..];
    }
}

/// One connection's bytes: the first byte odd sends the rest as it is;
/// even sends it as frames (see [`frames`]), so that mutation works on
/// requests rather than on their lengths.
pub fn requests(data: &[u8]) {
    check_frames(&serve(data));
}

/// Serves `data` (as [`requests`] reads it) on one connection and answers
/// what the listener wrote back.
fn serve(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let stream = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        frames(rest)
    };
    let mut slot = server()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut server = slot.take().expect("a server").refresh();
    server.inputs += 1;
    let broker = Arc::clone(&server.broker);
    let answers = server.runtime.block_on(async move {
        let (client, connection) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(tidings_kafka::serve_stream(connection, broker, config()));
        let (mut reader, mut writer) = tokio::io::split(client);
        let writing = async move {
            // The listener may close first, on a malformed frame.
            let _ = writer.write_all(&stream).await;
            let _ = writer.shutdown().await;
        };
        let reading = async move {
            let mut answers = Vec::new();
            let _ = reader.read_to_end(&mut answers).await;
            answers
        };
        let both = async { tokio::join!(writing, reading).1 };
        let answers = tokio::time::timeout(HANG, both)
            .await
            .expect("the listener closes a connection whose client has ended");
        if let Err(e) = serving.await {
            if let Ok(panic) = e.try_into_panic() {
                std::panic::resume_unwind(panic);
            }
        }
        answers
    });
    *slot = Some(server);
    drop(slot);
    assert!(
        !PANICKED.swap(false, Ordering::SeqCst),
        "a task of the listener panicked (above)"
    );
    answers
}

/// One request as a frame piece: `len:u16`, then the request header and
/// body at `version`; `None` when the message cannot be written at it.
fn piece<R: Request>(version: i16, request: &R, correlation: i32) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, R::header_version(version)).ok()?;
    request.encode(&mut buf, version).ok()?;
    let len = u16::try_from(buf.len()).ok()?;
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&buf);
    Some(out)
}

/// Every supported request, at every supported version, with an empty
/// body; then one client's session: versions, a topic made, produced to
/// (plain and gzip), fetched, its offsets listed, a group joined, synced,
/// committed to, read back, left.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    macro_rules! each_version {
        ($($ty:ty),* $(,)?) => {$(
            let (_, min, max) = *tidings_kafka::SUPPORTED
                .iter()
                .find(|(api, _, _)| *api as i16 == <$ty as Request>::KEY)
                .expect("a supported API");
            for version in min..=max {
                if let Some(p) = piece(version, &<$ty>::default(), 1) {
                    out.push([&[0u8][..], &p].concat());
                }
            }
        )*};
    }
    each_version!(
        ProduceRequest,
        FetchRequest,
        ListOffsetsRequest,
        MetadataRequest,
        OffsetCommitRequest,
        OffsetFetchRequest,
        FindCoordinatorRequest,
        JoinGroupRequest,
        HeartbeatRequest,
        LeaveGroupRequest,
        SyncGroupRequest,
        ApiVersionsRequest,
        CreateTopicsRequest,
        InitProducerIdRequest,
        DeleteTopicsRequest,
        CreatePartitionsRequest,
        DescribeConfigsRequest,
        IncrementalAlterConfigsRequest,
        DescribeClusterRequest,
        ListGroupsRequest,
        DescribeGroupsRequest,
        DeleteGroupsRequest,
        OffsetDeleteRequest,
        SaslHandshakeRequest,
        SaslAuthenticateRequest,
        DescribeAclsRequest,
        CreateAclsRequest,
        DeleteAclsRequest,
        DescribeUserScramCredentialsRequest,
        AlterUserScramCredentialsRequest,
    );
    out.push(session());
    out
}

fn name(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

/// Batches a producer sends: three records plain, and eight gzipped (the
/// log's own seeds, which hold one batch per codec).
fn batches() -> [bytes::Bytes; 2] {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(bytes::Bytes::from(format!("o-{i}"))),
            value: Some(bytes::Bytes::from(format!("{{\"order\":{i}}}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("a batch");
    let gzipped = tidings_log::fuzz::seeds("producer_batches")[2][1..].to_vec();
    [buf.freeze(), gzipped.into()]
}

fn session() -> Vec<u8> {
    let topic = name("orders");
    let group = name("billing");
    let mut s = vec![0u8];
    let mut add = |p: Option<Vec<u8>>| s.extend_from_slice(&p.expect("a request"));
    add(piece(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(name("fuzz"))
            .with_client_software_version(name("1")),
        1,
    ));
    add(piece(
        5,
        &CreateTopicsRequest::default().with_topics(vec![creatable_topic(&topic)]),
        2,
    ));
    add(piece(
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic.clone().into()))
        ])),
        3,
    ));
    for (i, batch) in batches().into_iter().enumerate() {
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone().into())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        add(piece(9, &produce, 4 + i as i32));
    }
    add(piece(
        12,
        &FetchRequest::default()
            .with_max_wait_ms(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone().into())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]),
        6,
    ));
    add(piece(
        7,
        &ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic.clone().into())
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]),
        7,
    ));
    add(piece(
        3,
        &FindCoordinatorRequest::default().with_key(group.clone()),
        8,
    ));
    let protocol = JoinGroupRequestProtocol::default()
        .with_name(name("range"))
        .with_metadata(bytes::Bytes::from_static(
            b"\x00\x01\x00\x00\x00\x01\x00\x06orders\x00\x00\x00\x00",
        ));
    add(piece(
        5,
        &JoinGroupRequest::default()
            .with_group_id(group.clone().into())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(name(""))
            .with_protocol_type(name("consumer"))
            .with_protocols(vec![protocol]),
        9,
    ));
    add(piece(
        3,
        &SyncGroupRequest::default()
            .with_group_id(group.clone().into())
            .with_generation_id(1)
            .with_member_id(name("m")),
        10,
    ));
    add(piece(
        8,
        &OffsetCommitRequest::default()
            .with_group_id(group.clone().into())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic.clone().into())
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(3)])]),
        11,
    ));
    add(piece(
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group.clone().into())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic.clone().into())
                .with_partition_indexes(vec![0])])),
        12,
    ));
    add(piece(
        3,
        &HeartbeatRequest::default()
            .with_group_id(group.clone().into())
            .with_generation_id(1)
            .with_member_id(name("m")),
        13,
    ));
    add(piece(
        3,
        &LeaveGroupRequest::default()
            .with_group_id(group.into())
            .with_members(vec![MemberIdentity::default().with_member_id(name("m"))]),
        14,
    ));
    s
}

fn creatable_topic(topic: &StrBytes) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic.clone().into())
        .with_num_partitions(2)
        .with_replication_factor(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The correlation ids of the response frames in `answers`.
    fn correlations(mut answers: &[u8]) -> Vec<i32> {
        let mut out = Vec::new();
        while answers.len() >= 8 {
            let len =
                usize::try_from(i32::from_be_bytes(answers[..4].try_into().unwrap())).unwrap();
            out.push(i32::from_be_bytes(answers[4..8].try_into().unwrap()));
            answers = &answers[4 + len..];
        }
        out
    }

    #[test]
    fn the_session_seed_is_answered_request_by_request() {
        let answers = serve(&session());
        check_frames(&answers);
        assert_eq!(correlations(&answers), (1..=14).collect::<Vec<_>>());
    }

    #[test]
    fn every_empty_request_seed_is_answered_or_refused_by_closing() {
        let seeds = seeds();
        // The last is the session.
        for seed in &seeds[..seeds.len() - 1] {
            let answers = serve(seed);
            check_frames(&answers);
            assert!(correlations(&answers).len() <= 1);
        }
    }

    #[test]
    fn a_bad_length_closes_the_connection_without_an_answer() {
        let mut raw = vec![1u8];
        raw.extend_from_slice(&(-5i32).to_be_bytes());
        raw.extend_from_slice(b"garbage");
        assert!(serve(&raw).is_empty());
    }
}
