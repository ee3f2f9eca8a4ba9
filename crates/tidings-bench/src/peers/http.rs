//! Tidings over HTTP: `tidings serve` in its own process, driven through its
//! JSON API with one HTTP/1.1 connection per producer and consumer. A single
//! event is published in the CloudEvents binary mode (attributes in `ce-`
//! headers, the payload as the body), a batch as one
//! `application/cloudevents-batch+json` request with `data_base64`; a consumer
//! receives from the queue group with a long poll and acks a whole receive with
//! one batch ack.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{BoxFut, Consumer, Producer, System};

/// One HTTP/1.1 connection to the server.
pub(crate) struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the Tidings server at {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Conn {
            send,
            host: addr.to_string(),
        })
    }

    /// Sends one request; returns the answer's body when its status is
    /// `expect`, else fails with the server's error.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        expect: StatusCode,
    ) -> Result<Bytes> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body))?;
        self.send.ready().await.context("the connection closed")?;
        let answer = self.send.send_request(request).await?;
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        if status != expect {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    async fn post_json(&mut self, path: &str, body: &Value, expect: StatusCode) -> Result<Bytes> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.call(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body,
            expect,
        )
        .await
    }
}

/// Creates `topic` with one partition and the fsync policy of the run, through
/// the HTTP API.
pub(crate) async fn create_topic(conn: &mut Conn, topic: &str, durable: bool) -> Result<()> {
    let fsync = if durable { "always" } else { "never" };
    conn.post_json(
        "/v1/topics",
        &json!({"name": topic, "partitions": 1, "fsync": fsync}),
        StatusCode::CREATED,
    )
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
            let mut conn = Conn::open(self.addr).await?;
            create_topic(&mut conn, &topic(stream), self.durable).await?;
            conn.post_json(
                "/v1/queues",
                &json!({"name": group(stream), "topic": topic(stream)}),
                StatusCode::CREATED,
            )
            .await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let p: Box<dyn Producer> = Box::new(HttpProducer {
                conn: Conn::open(self.addr).await?,
                path: format!("/v1/topics/{}/events", topic(stream)),
            });
            Ok(p)
        })
    }

    fn consumer<'a>(&'a self, stream: &'a str, _name: &'a str) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let c: Box<dyn Consumer> = Box::new(HttpConsumer {
                conn: Conn::open(self.addr).await?,
                group: group(stream),
                leases: Vec::new(),
            });
            Ok(c)
        })
    }
}

struct HttpProducer {
    conn: Conn,
    path: String,
}

impl Producer for HttpProducer {
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if let [one] = events {
                let id = tidings_types::uuid_v7().to_string();
                let headers = [
                    ("ce-specversion", "1.0"),
                    ("ce-id", id.as_str()),
                    ("ce-source", "/bench"),
                    ("ce-type", "bench.event"),
                    ("content-type", "application/octet-stream"),
                ];
                self.conn
                    .call(
                        Method::POST,
                        &self.path,
                        &headers,
                        one.clone(),
                        StatusCode::OK,
                    )
                    .await?;
            } else {
                let batch: Vec<Value> = events
                    .iter()
                    .map(|data| {
                        json!({
                            "specversion": "1.0",
                            "id": tidings_types::uuid_v7().to_string(),
                            "source": "/bench",
                            "type": "bench.event",
                            "datacontenttype": "application/octet-stream",
                            "data_base64": BASE64.encode(data),
                        })
                    })
                    .collect();
                let body = Bytes::from(serde_json::to_vec(&batch)?);
                self.conn
                    .call(
                        Method::POST,
                        &self.path,
                        &[("content-type", "application/cloudevents-batch+json")],
                        body,
                        StatusCode::OK,
                    )
                    .await?;
            }
            Ok(())
        })
    }
}

struct HttpConsumer {
    conn: Conn,
    group: String,
    leases: Vec<String>,
}

impl Consumer for HttpConsumer {
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>> {
        Box::pin(async move {
            let path = format!("/v1/queues/{}/receive?max={max}&wait_ms=100", self.group);
            let body = self
                .conn
                .call(Method::POST, &path, &[], Bytes::new(), StatusCode::OK)
                .await?;
            let answer: Value = serde_json::from_slice(&body)?;
            let deliveries = answer["deliveries"]
                .as_array()
                .context("a receive answer without deliveries")?;
            let mut events = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let data = d["event"]["data_base64"]
                    .as_str()
                    .context("a delivery without data_base64")?;
                events.push(Bytes::from(BASE64.decode(data)?));
                let lease = d["lease"].as_str().context("a delivery without a lease")?;
                self.leases.push(lease.to_owned());
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
            let path = format!("/v1/queues/{}/acks", self.group);
            let body = self
                .conn
                .post_json(&path, &json!({ "leases": leases }), StatusCode::OK)
                .await?;
            let answer: Value = serde_json::from_slice(&body)?;
            if answer["failed"].as_array().is_none_or(|f| !f.is_empty()) {
                bail!("a batch ack failed in part: {answer}");
            }
            Ok(())
        })
    }
}
