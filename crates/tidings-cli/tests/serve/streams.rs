//! Server-Sent Events: following a topic, a group member and a queue, and the
//! limit on open streams.

use std::io::{BufRead, BufReader, Read};

use serde_json::{json, Value};

use crate::support::{call, create_topic, post_json, Server};

/// An open event stream.
pub(crate) struct Stream {
    lines: BufReader<Box<dyn Read + Send>>,
}

pub(crate) fn open(method: &str, url: &str) -> Result<Stream, (u16, String)> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("accept", "text/event-stream")
        .body(Vec::new())
        .unwrap();
    let response = crate::support::agent()
        .run(request)
        .expect("the server answers");
    if response.status() != 200 {
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        return Err((status, text));
    }
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
    Ok(Stream {
        lines: BufReader::new(reader),
    })
}

impl Stream {
    /// The next message's data, as JSON, skipping keep-alive comments.
    pub(crate) fn next(&mut self) -> Value {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.lines.read_line(&mut line).unwrap() > 0,
                "the stream ended"
            );
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
    }
}

fn publish(server: &Server, topic: &str, id: &str) {
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents+json")],
        json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[test]
fn topics_group_members_and_queues_stream_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders"}));
    publish(&server, "orders", "before");

    let mut topic = open("GET", &server.url("/v1/topics/orders/events?from=earliest")).unwrap();
    assert_eq!(topic.next()["event"]["id"], "before");

    let member = post_json(
        &server.url("/v1/groups/g/members"),
        &json!({"topic": "orders"}),
    );
    let member = member.json["member"].as_str().unwrap().to_owned();
    let mut group = open(
        "GET",
        &server.url(&format!("/v1/groups/g/members/{member}/events")),
    )
    .unwrap();
    assert_eq!(group.next()["event"]["id"], "before");

    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "q", "topic": "orders"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let mut queue = open("POST", &server.url("/v1/queues/q/receive?max=10")).unwrap();
    let delivery = queue.next();
    assert_eq!(delivery["event"]["id"], "before");
    let lease = delivery["lease"].as_str().unwrap();
    let acked = call(
        "POST",
        &server.url(&format!("/v1/queues/q/leases/{lease}/ack")),
        &[],
        b"",
    );
    assert_eq!(acked.status, 204, "{}", acked.text);

    for id in ["after-1", "after-2"] {
        publish(&server, "orders", id);
    }
    for stream in [&mut topic, &mut group, &mut queue] {
        assert_eq!(stream.next()["event"]["id"], "after-1");
        assert_eq!(stream.next()["event"]["id"], "after-2");
    }
}

#[test]
fn streams_beyond_the_limit_are_refused_and_unknown_members_get_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sse-connections-max", "1"]);
    create_topic(&server, json!({"name": "orders"}));
    let Err((status, text)) = open("GET", &server.url("/v1/groups/g/members/nobody/events")) else {
        panic!("a stream for an unknown member was opened");
    };
    assert_eq!(status, 404, "{text}");
    let _first = open("GET", &server.url("/v1/topics/orders/events")).unwrap();
    let Err((status, text)) = open("GET", &server.url("/v1/topics/orders/events")) else {
        panic!("a second stream was opened past the limit of one");
    };
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("too_many_streams"), "{text}");
}
