//! Permissions on the HTTP API: every route of the route table (and the
//! schema registry's) tried with the API token of one user and the password
//! of another, neither with permissions on what a third user made, answering 403 (or, for listings,
//! nothing of it) and changing nothing; the owner's own requests go through.

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{json, Value};
use tidings_api::{Method, Operation, ROUTES};

use crate::support::{call, offline, ok, Answer, Server};

fn tidings(dir: &Path, args: &[&str], stdin: &str) -> String {
    ok(&offline(dir, args, stdin))
}

/// A request as `user` (whose password is `<user>-pw`).
pub(crate) fn as_user(user: &str, method: &str, url: &str, body: &Value) -> Answer {
    let login = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pw"));
    request(&format!("Basic {login}"), method, url, body)
}

/// A request with `authorization`: a JSON body, or a CloudEvents batch.
fn request(authorization: &str, method: &str, url: &str, body: &Value) -> Answer {
    let batch = matches!(body, Value::Array(_));
    let content_type = if batch {
        "application/cloudevents-batch+json"
    } else {
        "application/json"
    };
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    call(
        method,
        url,
        &[
            ("authorization", authorization),
            ("content-type", content_type),
        ],
        &bytes,
    )
}

pub(crate) fn event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/shop", "type": "order.placed", "data": {"id": id}})
}

/// What alice made, as alice reads it: the topic's events, the stream's, the
/// queue and the group, and the topics there are.
fn state(server: &Server, member: &str) -> Value {
    let get = |path: &str| as_user("alice", "GET", &server.url(path), &Value::Null);
    let events = get("/v1/topics/orders/events?partition=0&from=0");
    let stream = get("/v1/streams/order-1/events");
    let queue = get("/v1/queues/workers");
    let group = get("/v1/groups/workers-g");
    let topics = get("/v1/topics");
    json!({
        "events": events.json["events"].as_array().map(|e| e.iter().map(|e| e["event"]["id"].clone()).collect::<Vec<_>>()),
        "stream": stream.json["events"].as_array().map(Vec::len),
        "queue": [queue.status, queue.json["topic"].clone()],
        "group": [group.status, group.json["members"].as_array().map(|m| m.iter().any(|m| m["member"] == member))],
        "topics": topics.json["topics"].as_array().map(|t| t.iter().map(|t| t["name"].clone()).collect::<Vec<_>>()),
    })
}

#[test]
fn every_route_refuses_a_user_without_permissions_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // eve logs in with a password, mallory by API token (and has none):
    // every route is tried by both.
    for user in ["admin", "alice", "eve"] {
        tidings(dir.path(), &["users", "add", user], &format!("{user}-pw\n"));
    }
    let token = tidings(dir.path(), &["users", "token", "add", "mallory"], "");
    let bearer = format!("Bearer {}", token.trim());
    let as_mallory = |method: &str, url: &str, body: &Value| request(&bearer, method, url, body);
    for (resource, operation) in [
        (&["--topic", "orders"][..], "All"),
        (&["--group", "workers"], "All"),
        (&["--stream", "order-"], "All"),
        (&["--stream", "$all"], "Read"),
        (&["--cluster"], "Describe,Create,Alter"),
    ] {
        let mut args = vec![
            "acls",
            "add",
            "--principal",
            "alice",
            "--operation",
            operation,
        ];
        args.extend_from_slice(resource);
        args.push("--prefixed");
        if resource[0] == "--cluster" {
            args.pop();
        }
        tidings(dir.path(), &args, "");
    }
    // mallory may read one unrelated topic: a logged-in user with
    // permissions, none on what alice made.
    tidings(
        dir.path(),
        &[
            "acls",
            "add",
            "--principal",
            "mallory",
            "--operation",
            "Read,Describe",
            "--topic",
            "public",
        ],
        "",
    );
    let server = Server::start(dir.path(), &["--super-user", "admin"]);
    let alice = |method: &str, path: &str, body: Value| {
        let answer = as_user("alice", method, &server.url(path), &body);
        assert!(
            answer.status < 300,
            "alice {method} {path}: {}",
            answer.text
        );
        answer
    };
    alice(
        "POST",
        "/v1/topics",
        json!({"name": "orders", "partitions": 1}),
    );
    alice(
        "POST",
        "/v1/topics/orders/events",
        json!([event("o-1"), event("o-2")]),
    );
    alice(
        "POST",
        "/v1/queues",
        json!({"name": "workers", "topic": "orders"}),
    );
    let joined = alice(
        "POST",
        "/v1/groups/workers-g/members",
        json!({"topic": "orders", "from": "earliest"}),
    );
    let member = joined.json["member"].as_str().unwrap().to_owned();
    alice("POST", "/v1/streams/order-1/events", json!([event("s-1")]));
    let before = state(&server, &member);
    assert_eq!(before["events"], json!(["o-1", "o-2"]), "{before}");

    let mut tried = 0;
    for route in ROUTES {
        let path = route
            .path
            .replace("{topic}", "orders")
            .replace("{stream}", "order-1")
            .replace("{member}", &member)
            .replace("{lease}", "0-0-1")
            .replace("{offset}", "0")
            .replace("{saga}", "checkout")
            .replace("{key}", "o-1")
            .replace(
                "{group}",
                if route.path.starts_with("/v1/groups") {
                    "workers-g"
                } else {
                    "workers"
                },
            );
        let body = match route.operation {
            Operation::CreateTopic => json!({"name": "orders.new"}),
            Operation::CreateQueue => json!({"name": "workers.new", "topic": "orders"}),
            Operation::PublishEvents | Operation::AppendToStream => json!([event("m-1")]),
            Operation::JoinGroup => json!({"topic": "orders"}),
            _ if matches!(route.method, Method::Post | Method::Patch) => json!({}),
            _ => Value::Null,
        };
        for who in ["mallory", "eve"] {
            let send = |method: &str, url: &str, body: &Value| match who {
                "mallory" => as_mallory(method, url, body),
                _ => as_user(who, method, url, body),
            };
            let answer = send(route.method.as_str(), &server.url(&path), &body);
            let expected = match route.operation {
                Operation::Health | Operation::OpenApi | Operation::GetLimits => 200,
                Operation::ListTopics | Operation::ListGroups | Operation::ListQueues => {
                    // Listed, without what mallory may not describe.
                    assert!(
                        !answer.text.contains("orders") && !answer.text.contains("workers"),
                        "{} {path}: {}",
                        route.method.as_str(),
                        answer.text
                    );
                    200
                }
                _ => 403,
            };
            assert_eq!(
                answer.status,
                expected,
                "{} {path} as {who}: {}",
                route.method.as_str(),
                answer.text
            );
            if expected == 403 {
                assert_eq!(answer.code(), "forbidden", "{path}");
                assert!(
                    answer.text.contains(&format!("User:{who} may not")),
                    "{}",
                    answer.text
                );
                // HEAD runs a GET route's handler: refused the same.
                if route.method == Method::Get {
                    let head = send("HEAD", &server.url(&path), &Value::Null);
                    assert_eq!(head.status, 403, "HEAD {path}");
                }
            }
        }
        tried += 1;
    }
    assert_eq!(tried, ROUTES.len());
    for (method, path, body) in [
        ("GET", "/registry/subjects", Value::Null),
        (
            "POST",
            "/registry/subjects/order.placed/versions",
            json!({"schemaType": "JSON", "schema": "{}"}),
        ),
    ] {
        let answer = as_mallory(method, &server.url(path), &body);
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text);
    }
    assert_eq!(state(&server, &member), before, "nothing changed");

    // The super user passes whatever the permissions say; alice's own
    // grants work.
    let admin = as_user("admin", "GET", &server.url("/v1/topics"), &Value::Null);
    assert!(admin.text.contains("orders"), "{}", admin.text);
    let created = as_user(
        "alice",
        "POST",
        &server.url("/v1/topics"),
        &json!({"name": "orders.eu"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let other = as_user(
        "alice",
        "POST",
        &server.url("/v1/topics"),
        &json!({"name": "payments"}),
    );
    assert_eq!(
        other.status, 201,
        "Create on the cluster covers every topic"
    );
    let metrics = as_user("admin", "GET", &server.url("/metrics"), &Value::Null);
    let denied: f64 = metrics
        .text
        .lines()
        .filter(|l| l.starts_with("tidings_denied_total{listener=\"http\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(denied >= (ROUTES.len() - 6) as f64, "{denied}");
}

/// kcat as `user` (password `<user>-pw`, SCRAM-SHA-256): its output and
/// whether it succeeded.
fn kcat_as(server: &Server, user: &str, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = crate::support::third_party("kcat")
        .arg("-b")
        .arg(server.kafka_addr.to_string())
        .args(["-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", "sasl.mechanisms=SCRAM-SHA-256"])
        .args(["-X", &format!("sasl.username={user}")])
        .args(["-X", &format!("sasl.password={user}-pw")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && !text.contains("ERROR") && !text.contains("failed"),
        text,
    )
}

/// The Kafka listener asks the same permissions: kcat as a user with them
/// produces, consumes in its group and auto-creates; as one without, its
/// produce and fetch are refused with Kafka's authorization errors, its
/// listing shows nothing, and nothing it asked for is created.
#[test]
fn kafka_requests_are_decided_by_the_same_permissions() {
    let dir = tempfile::tempdir().unwrap();
    for user in ["admin", "alice", "mallory"] {
        tidings(dir.path(), &["users", "add", user], &format!("{user}-pw\n"));
    }
    for args in [
        &["--operation", "All", "--topic", "orders", "--prefixed"][..],
        &["--operation", "Read", "--group", "billing"],
        &["--operation", "Create", "--cluster"],
    ] {
        let mut all = vec!["acls", "add", "--principal", "alice"];
        all.extend_from_slice(args);
        tidings(dir.path(), &all, "");
    }
    // mallory may see orders, so its client gets as far as Produce and
    // Fetch, which are refused themselves.
    tidings(
        dir.path(),
        &[
            "acls",
            "add",
            "--principal",
            "mallory",
            "--operation",
            "Describe",
            "--topic",
            "orders",
        ],
        "",
    );
    let server = Server::start(dir.path(), &["--super-user", "admin"]);
    let (produced, said) = kcat_as(&server, "alice", &["-P", "-t", "orders"], "a-1\na-2\n");
    assert!(produced, "{said}");
    let (_, said) = kcat_as(&server, "mallory", &["-P", "-t", "orders"], "m-1\n");
    assert!(said.contains("Topic authorization failed"), "{said}");
    let (_, said) = kcat_as(&server, "mallory", &["-C", "-t", "orders", "-e"], "");
    assert!(said.contains("Topic authorization failed"), "{said}");
    // Auto-creation needs Create: mallory's topic is not made, alice's is.
    kcat_as(&server, "mallory", &["-P", "-t", "mallory.topic"], "m-2\n");
    kcat_as(&server, "alice", &["-P", "-t", "orders.auto"], "a-3\n");
    let (_, listing) = kcat_as(&server, "admin", &["-L"], "");
    assert!(listing.contains("topic \"orders.auto\""), "{listing}");
    assert!(!listing.contains("mallory.topic"), "{listing}");
    // A listing shows only what the principal may describe.
    let (_, listing) = kcat_as(&server, "mallory", &["-L"], "");
    assert!(
        listing.contains("topic \"orders\"") && !listing.contains("orders.auto"),
        "{listing}"
    );

    // alice reads in the group she may use; another group is refused.
    let (read, said) = kcat_as(
        &server,
        "alice",
        &[
            "-C",
            "-G",
            "billing",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\\n",
            "orders",
        ],
        "",
    );
    assert!(
        read && said.contains("a-1") && !said.contains("m-1"),
        "{said}"
    );
    let (_, said) = kcat_as(
        &server,
        "alice",
        &["-C", "-G", "shipping", "-e", "orders"],
        "",
    );
    assert!(
        said.contains("User:alice may not Describe group \"shipping\""),
        "{said}"
    );
    let metrics = as_user("admin", "GET", &server.url("/metrics"), &Value::Null);
    assert!(
        metrics
            .text
            .contains("tidings_denied_total{listener=\"kafka\",resource=\"topic\"}"),
        "{}",
        metrics.text
    );
}

/// Kafka's admin APIs for permissions (CreateAcls, DescribeAcls,
/// DeleteAcls) through kafka-python's KafkaAdminClient: a super user
/// changes them on the running server, effective at once and durable; a
/// user without Alter on the cluster is refused.
#[test]
fn kafka_admin_clients_manage_the_permissions_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    for user in ["admin", "alice", "bob"] {
        tidings(dir.path(), &["users", "add", user], &format!("{user}-pw\n"));
    }
    let server = Server::start(dir.path(), &["--super-user", "admin"]);
    let broker = server.kafka_addr.to_string();
    // No permission yet: the server lets every user do anything.
    let (produced, said) = kcat_as(&server, "bob", &["-P", "-t", "orders"], "b-1\n");
    assert!(produced, "{said}");

    let out = crate::support::python(
        "kafka_python_acls.py",
        &[&broker, "admin", "admin-pw", "User:bob"],
        &server,
    );
    assert_eq!(out["failed"], json!([]), "{out}");
    assert_eq!(
        out["listed"],
        json!([
            "User:bob ALLOW READ GROUP LITERAL billing",
            "User:bob ALLOW READ TOPIC PREFIXED orders"
        ]),
        "{out}"
    );
    assert_eq!(
        out["removed"],
        json!([["User:bob ALLOW READ TOPIC PREFIXED orders"]]),
        "{out}"
    );
    assert_eq!(
        out["after"],
        json!(["User:bob ALLOW READ GROUP LITERAL billing"]),
        "{out}"
    );
    // A permission now exists: what none allows is refused, at once.
    let (_, said) = kcat_as(&server, "bob", &["-P", "-t", "orders"], "b-2\n");
    assert!(said.contains("Topic authorization failed"), "{said}");

    let refused = crate::support::python(
        "kafka_python_acls.py",
        &[&broker, "alice", "alice-pw", "User:alice"],
        &server,
    );
    assert!(
        refused.to_string().contains("ClusterAuthorizationFailed"),
        "{refused}"
    );
    // Durable: the stopped server's store holds what the admin client left.
    server.terminate();
    let listed = tidings(dir.path(), &["acls", "list"], "");
    assert_eq!(
        listed.trim(),
        "User:bob Allow Read on Group Literal \"billing\" from *"
    );
}

/// Read on a group is not Read on what it consumes: a user allowed the
/// group but not its topic cannot poll another's member or receive from
/// the queue (a Kafka Fetch checks the topic too).
#[test]
fn consuming_a_group_needs_read_on_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    for user in ["alice", "bob", "carol"] {
        tidings(dir.path(), &["users", "add", user], &format!("{user}-pw\n"));
    }
    // carol may read orders and two groups, and create one of their
    // dead-letter topics.
    for (operation, resource) in [
        ("Read", ["--topic", "orders"]),
        ("Read", ["--group", "audit"]),
        ("Read", ["--group", "billing"]),
        ("Create", ["--topic", "orders.billing.dlq"]),
    ] {
        let mut args = vec![
            "acls",
            "add",
            "--principal",
            "carol",
            "--operation",
            operation,
        ];
        args.extend_from_slice(&resource);
        tidings(dir.path(), &args, "");
    }
    tidings(
        dir.path(),
        &[
            "acls",
            "add",
            "--principal",
            "alice",
            "--operation",
            "All",
            "--topic",
            "orders",
        ],
        "",
    );
    tidings(
        dir.path(),
        &[
            "acls",
            "add",
            "--principal",
            "alice",
            "--operation",
            "Create",
            "--cluster",
        ],
        "",
    );
    for user in ["alice", "bob"] {
        for group in ["workers", "workers-g"] {
            tidings(
                dir.path(),
                &[
                    "acls",
                    "add",
                    "--principal",
                    user,
                    "--operation",
                    "Read",
                    "--group",
                    group,
                ],
                "",
            );
        }
    }
    let server = Server::start(dir.path(), &[]);
    let alice = |method: &str, path: &str, body: Value| {
        let answer = as_user("alice", method, &server.url(path), &body);
        assert!(
            answer.status < 300,
            "alice {method} {path}: {}",
            answer.text
        );
        answer
    };
    alice("POST", "/v1/topics", json!({"name": "orders"}));
    alice("POST", "/v1/topics/orders/events", json!([event("o-1")]));
    alice(
        "POST",
        "/v1/queues",
        json!({"name": "workers", "topic": "orders"}),
    );
    let joined = alice(
        "POST",
        "/v1/groups/workers-g/members",
        json!({"topic": "orders", "from": "earliest"}),
    );
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let poll = format!("/v1/groups/workers-g/members/{member}/events?wait_ms=0");
    for (method, path) in [
        ("GET", poll.as_str()),
        ("POST", "/v1/queues/workers/receive"),
    ] {
        let refused = as_user("bob", method, &server.url(path), &Value::Null);
        assert_eq!(refused.status, 403, "{path}: {}", refused.text);
        assert_eq!(
            refused.json["message"], "User:bob may not Read topic \"orders\"",
            "{}",
            refused.text
        );
    }
    let polled = alice("GET", &poll, Value::Null);
    assert_eq!(
        polled.json["events"][0]["event"]["id"], "o-1",
        "{}",
        polled.text
    );
    // A queue group's dead-letter topic is made as any topic: with Create
    // on it (or on the cluster).
    let refused = as_user(
        "carol",
        "POST",
        &server.url("/v1/queues"),
        &json!({"name": "audit", "topic": "orders"}),
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(
        refused.json["message"], "User:carol may not Create topic \"orders.audit.dlq\"",
        "{}",
        refused.text
    );
    let made = as_user(
        "carol",
        "POST",
        &server.url("/v1/queues"),
        &json!({"name": "billing", "topic": "orders"}),
    );
    assert_eq!(made.status, 201, "{}", made.text);
}
