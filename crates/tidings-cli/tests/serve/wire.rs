//! A blocking Kafka connection for tests that need a request's exact
//! answer (an error code per topic or group), written against the
//! `kafka-protocol` crate's message types: one request at a time, a SASL
//! PLAIN login when asked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::support::Server;

/// One connection to the Kafka listener.
pub(crate) struct Wire {
    stream: TcpStream,
    correlation: i32,
}

impl Wire {
    /// A connection that has not logged in.
    pub(crate) fn open(server: &Server) -> Wire {
        let stream = TcpStream::connect(server.kafka_addr).expect("the Kafka listener");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            correlation: 0,
        }
    }

    /// A connection logged in as `user` with `password` (SASL PLAIN).
    pub(crate) fn login(server: &Server, user: &str, password: &str) -> Wire {
        let mut wire = Wire::open(server);
        let handshake: SaslHandshakeResponse = wire.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(handshake.error_code, 0, "SaslHandshake");
        let authenticated: SaslAuthenticateResponse = wire.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("\0{user}\0{password}"))),
        );
        assert_eq!(
            authenticated.error_code, 0,
            "{user} logs in: {:?}",
            authenticated.error_message
        );
        wire
    }

    /// Sends `request` as `api` at `version` and reads its answer.
    pub(crate) fn call<Q: Encodable, A: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> A {
        self.try_call(api, version, request)
            .unwrap_or_else(|e| panic!("{api:?} v{version}: no answer: {e}"))
    }

    /// Sends `request` and reads no answer (a Produce with acks=0).
    pub(crate) fn send<Q: Encodable>(&mut self, api: ApiKey, version: i16, request: &Q) {
        self.write(api, version, request).unwrap();
    }

    /// Whether the server closes the connection within `patience` (reads
    /// end-of-stream or a reset; nothing else is expected).
    pub(crate) fn closed_within(&mut self, patience: Duration) -> bool {
        self.stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("an answer came where none was expected"),
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        }
    }

    fn write<Q: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> std::io::Result<()> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("tidings-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        request.encode(&mut buf, version).unwrap();
        let size = i32::try_from(buf.len() - 4).unwrap();
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf)
    }

    /// Sends `request` and reads its answer, or says why none came (the
    /// server closed the connection).
    pub(crate) fn try_call<Q: Encodable, A: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> std::io::Result<A> {
        self.write(api, version, request)?;
        let mut size = [0; 4];
        self.stream.read_exact(&mut size)?;
        let mut frame = vec![0; usize::try_from(i32::from_be_bytes(size)).unwrap()];
        self.stream.read_exact(&mut frame)?;
        let mut frame = Bytes::from(frame);
        let answer =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(answer.correlation_id, self.correlation, "{api:?}");
        Ok(A::decode(&mut frame, version).unwrap())
    }
}

/// One uncompressed record batch holding `value`.
pub(crate) fn record_batch(value: &'static [u8]) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from_static(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}
