//! The permission matrix: every (principal, resource type, pattern,
//! operation, allow/deny) a permission can name, set on a running server
//! through Kafka's CreateAcls, then every probe — two users, each operation
//! on names the pattern matches and names it does not — sent through both
//! front ends, HTTP and Kafka, and each answer's decision compared with a
//! plain model of Kafka's rules written here, apart from the server's.
//!
//! Probes are chosen so that an allowed one changes nothing lasting and
//! tells "allowed" from "refused" by its answer: reads and writes on topics
//! that exist (a write appends an event), deletes and group requests on
//! names that do not exist (allowed: 404 / UNKNOWN_*; refused: 403 /
//! *_AUTHORIZATION_FAILED — permissions are decided before existence, so a
//! refusal tells nothing of what exists), creates on names that do not
//! exist (a topic made is deleted again by the super user).

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteAclsRequest, DeleteAclsResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FetchRequest, FetchResponse, GroupId, HeartbeatRequest, HeartbeatResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::permissions::{as_user, event};
use crate::support::{offline, ok, Server};
use crate::wire::Wire;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Topic,
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    Literal,
    Prefixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    All,
    Read,
    Write,
    Create,
    Delete,
    Describe,
}

/// One permission, as the model reads it.
#[derive(Clone, Debug)]
struct Rule {
    principal: &'static str,
    kind: Kind,
    pattern: Pattern,
    name: &'static str,
    op: Op,
    allow: bool,
}

/// Kafka's rules, plainly: a matching deny for the operation (or All)
/// refuses; else a matching allow for it, for All, or for an operation that
/// implies it (Read, Write, Delete imply Describe) grants; else refused.
fn model(rules: &[Rule], user: &str, kind: Kind, name: &str, op: Op) -> bool {
    let matches = |r: &&Rule| {
        (r.principal == "*" || r.principal == user)
            && r.kind == kind
            && match r.pattern {
                Pattern::Literal => r.name == "*" || r.name == name,
                Pattern::Prefixed => name.starts_with(r.name),
            }
    };
    let denied = rules
        .iter()
        .filter(matches)
        .any(|r| !r.allow && (r.op == op || r.op == Op::All));
    let granted = rules.iter().filter(matches).any(|r| {
        r.allow
            && (r.op == op
                || r.op == Op::All
                || (op == Op::Describe && matches!(r.op, Op::Read | Op::Write | Op::Delete)))
    });
    !denied && granted
}

/// Kafka's codes for the protocol.
fn acl_operation(op: Op) -> i8 {
    match op {
        Op::All => 2,
        Op::Read => 3,
        Op::Write => 4,
        Op::Create => 5,
        Op::Delete => 6,
        Op::Describe => 8,
    }
}

fn name(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(text: &str) -> TopicName {
    TopicName(name(text))
}

/// Replaces the `before` permissions of the last case with `rules`.
fn set_rules(admin: &mut Wire, before: usize, rules: &[Rule]) {
    let cleared: DeleteAclsResponse = admin.call(
        ApiKey::DeleteAcls,
        2,
        &DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
            .with_resource_type_filter(1)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(1)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1)]),
    );
    assert_eq!(cleared.filter_results[0].error_code, 0);
    assert_eq!(
        cleared.filter_results[0].matching_acls.len(),
        before,
        "the last case's permissions are all removed"
    );
    let creations = rules
        .iter()
        .map(|r| {
            AclCreation::default()
                .with_resource_type(match r.kind {
                    Kind::Topic => 2,
                    Kind::Group => 3,
                })
                .with_resource_name(name(r.name))
                .with_resource_pattern_type(match r.pattern {
                    Pattern::Literal => 3,
                    Pattern::Prefixed => 4,
                })
                .with_principal(name(&format!("User:{}", r.principal)))
                .with_host(name("*"))
                .with_operation(acl_operation(r.op))
                .with_permission_type(if r.allow { 3 } else { 2 })
        })
        .collect();
    let created: CreateAclsResponse = admin.call(
        ApiKey::CreateAcls,
        2,
        &CreateAclsRequest::default().with_creations(creations),
    );
    for result in created.results {
        assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    }
}

/// What an answer says of a probe: allowed (`Some(true)`), refused
/// (`Some(false)`), or neither (the test fails on it).
fn http_decision(status: u16, allowed: &[u16]) -> Option<bool> {
    match status {
        403 => Some(false),
        s if allowed.contains(&s) => Some(true),
        _ => None,
    }
}

fn kafka_decision(code: i16, refused: i16, allowed: &[i16]) -> Option<bool> {
    match code {
        c if c == refused => Some(false),
        c if allowed.contains(&c) => Some(true),
        _ => None,
    }
}

const TOPIC_REFUSED: i16 = 29;
const GROUP_REFUSED: i16 = 30;
/// UNKNOWN_TOPIC_OR_PARTITION.
const NO_TOPIC: i16 = 3;

struct Probe<'a> {
    server: &'a Server,
    user: &'a str,
    wire: &'a mut Wire,
}

impl Probe<'_> {
    fn http(&self, method: &str, path: &str, body: &Value) -> u16 {
        as_user(self.user, method, &self.server.url(path), body).status
    }

    /// The decisions of both front ends on `op` for topic `name`.
    fn topic(&mut self, op: Op, name: &str) -> (Option<bool>, Option<bool>, String) {
        let t = topic(name);
        let (status, code) = match op {
            Op::Describe => {
                let status = self.http("GET", &format!("/v1/topics/{name}"), &Value::Null);
                let answer: MetadataResponse = self.wire.call(
                    ApiKey::Metadata,
                    9,
                    &MetadataRequest::default()
                        .with_topics(Some(vec![
                            MetadataRequestTopic::default().with_name(Some(t))
                        ]))
                        .with_allow_auto_topic_creation(false),
                );
                (status, answer.topics[0].error_code)
            }
            Op::Read => {
                let status = self.http(
                    "GET",
                    &format!("/v1/topics/{name}/events?partition=0&from=0"),
                    &Value::Null,
                );
                let answer: FetchResponse = self.wire.call(
                    ApiKey::Fetch,
                    11,
                    &FetchRequest::default()
                        .with_max_wait_ms(0)
                        .with_max_bytes(1 << 16)
                        .with_topics(vec![FetchTopic::default().with_topic(t).with_partitions(
                            vec![FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 16)],
                        )]),
                );
                (status, answer.responses[0].partitions[0].error_code)
            }
            Op::Write => {
                let status = self.http(
                    "POST",
                    &format!("/v1/topics/{name}/events"),
                    &json!([event("probe")]),
                );
                let answer: ProduceResponse = self.wire.call(
                    ApiKey::Produce,
                    8,
                    &ProduceRequest::default()
                        .with_acks(1)
                        .with_timeout_ms(10_000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(t)
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(crate::wire::record_batch(b"probe")))])]),
                );
                (
                    status,
                    answer.responses[0].partition_responses[0].error_code,
                )
            }
            Op::Delete => {
                let status = self.http("DELETE", &format!("/v1/topics/{name}"), &Value::Null);
                let answer: DeleteTopicsResponse = self.wire.call(
                    ApiKey::DeleteTopics,
                    4,
                    &DeleteTopicsRequest::default()
                        .with_topic_names(vec![t])
                        .with_timeout_ms(10_000),
                );
                (status, answer.responses[0].error_code)
            }
            Op::Create => {
                let status = self.http("POST", "/v1/topics", &json!({"name": name}));
                if status == 201 {
                    self.drop_topic(name);
                }
                let answer: CreateTopicsResponse = self.wire.call(
                    ApiKey::CreateTopics,
                    5,
                    &CreateTopicsRequest::default()
                        .with_timeout_ms(10_000)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(t)
                            .with_num_partitions(1)
                            .with_replication_factor(1)]),
                );
                let code = answer.topics[0].error_code;
                if code == 0 {
                    self.drop_topic(name);
                }
                (status, code)
            }
            Op::All => unreachable!("not a request"),
        };
        let http = match op {
            Op::Describe | Op::Read => http_decision(status, &[200, 404]),
            Op::Write => http_decision(status, &[200, 201, 404]),
            Op::Delete => http_decision(status, &[404]),
            Op::Create => http_decision(status, &[201]),
            Op::All => None,
        };
        let kafka = match op {
            Op::Create => kafka_decision(code, TOPIC_REFUSED, &[0]),
            Op::Delete => kafka_decision(code, TOPIC_REFUSED, &[NO_TOPIC]),
            _ => kafka_decision(code, TOPIC_REFUSED, &[0, NO_TOPIC]),
        };
        (http, kafka, format!("HTTP {status}, Kafka {code}"))
    }

    /// The super user deletes a topic a probe made.
    fn drop_topic(&self, name: &str) {
        let status = as_user(
            "admin",
            "DELETE",
            &self.server.url(&format!("/v1/topics/{name}")),
            &Value::Null,
        )
        .status;
        assert!(status < 300, "the super user deletes {name}: {status}");
    }

    /// The decisions of both front ends on `op` for group `name` (which
    /// does not exist).
    fn group(&mut self, op: Op, name: &str) -> (Option<bool>, Option<bool>, String) {
        let g = GroupId(self::name(name));
        let (status, code) = match op {
            Op::Describe => {
                let status = self.http("GET", &format!("/v1/groups/{name}"), &Value::Null);
                let answer: DescribeGroupsResponse = self.wire.call(
                    ApiKey::DescribeGroups,
                    5,
                    &DescribeGroupsRequest::default().with_groups(vec![g]),
                );
                (status, answer.groups[0].error_code)
            }
            Op::Delete => {
                let status = self.http("DELETE", &format!("/v1/groups/{name}"), &Value::Null);
                let answer: DeleteGroupsResponse = self.wire.call(
                    ApiKey::DeleteGroups,
                    2,
                    &DeleteGroupsRequest::default().with_groups_names(vec![g]),
                );
                (status, answer.results[0].error_code)
            }
            Op::Read => {
                let status = self.http(
                    "POST",
                    &format!("/v1/groups/{name}/members/m-1/heartbeat"),
                    &json!({}),
                );
                let answer: HeartbeatResponse = self.wire.call(
                    ApiKey::Heartbeat,
                    3,
                    &HeartbeatRequest::default()
                        .with_group_id(g)
                        .with_generation_id(1)
                        .with_member_id(self::name("m-1")),
                );
                (status, answer.error_code)
            }
            _ => unreachable!("not a group probe"),
        };
        let http = http_decision(status, &[200, 404]);
        // GROUP_ID_NOT_FOUND, UNKNOWN_MEMBER_ID, or a dead group described.
        let kafka = kafka_decision(code, GROUP_REFUSED, &[0, 25, 69]);
        (http, kafka, format!("HTTP {status}, Kafka {code}"))
    }
}

#[test]
fn every_permission_is_decided_alike_by_both_front_ends_and_the_model() {
    let dir = tempfile::tempdir().unwrap();
    for user in ["admin", "alice", "bob"] {
        ok(&offline(
            dir.path(),
            &["users", "add", user],
            &format!("{user}-pw\n"),
        ));
    }
    let server = Server::start(
        dir.path(),
        &[
            "--super-user",
            "admin",
            "--kafka-auto-create-topics",
            "false",
        ],
    );
    for t in ["orders", "payments"] {
        let made = as_user(
            "admin",
            "POST",
            &server.url("/v1/topics"),
            &json!({"name": t, "partitions": 1}),
        );
        assert_eq!(made.status, 201, "{}", made.text);
    }
    let mut admin = Wire::login(&server, "admin", "admin-pw");
    let mut wires = [
        ("alice", Wire::login(&server, "alice", "alice-pw")),
        ("bob", Wire::login(&server, "bob", "bob-pw")),
    ];

    // Names the probes use: existing and missing topics, missing groups;
    // each pattern below matches some of them and not others.
    let topic_probes: Vec<(Op, &str)> = [Op::Describe, Op::Read, Op::Write]
        .into_iter()
        .flat_map(|op| ["orders", "orders.eu", "payments", "pay.old"].map(move |t| (op, t)))
        .chain(
            [Op::Delete, Op::Create]
                .into_iter()
                .flat_map(|op| ["orders.eu", "pay.old"].map(move |t| (op, t))),
        )
        .collect();
    let group_probes: Vec<(Op, &str)> = [Op::Describe, Op::Read, Op::Delete]
        .into_iter()
        .flat_map(|op| ["billing", "billing.eu", "shipping"].map(move |g| (op, g)))
        .collect();
    let patterns = |kind| match kind {
        Kind::Topic => [
            (Pattern::Literal, "orders"),
            (Pattern::Literal, "*"),
            (Pattern::Prefixed, "orders"),
            (Pattern::Prefixed, "pay"),
        ],
        Kind::Group => [
            (Pattern::Literal, "billing"),
            (Pattern::Literal, "*"),
            (Pattern::Prefixed, "billing"),
            (Pattern::Prefixed, "ship"),
        ],
    };

    let (mut compared, mut cases, mut set) = (0, 0, 0);
    let mut seen = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for kind in [Kind::Topic, Kind::Group] {
        let ops: &[Op] = match kind {
            Kind::Topic => &[
                Op::Read,
                Op::Write,
                Op::Create,
                Op::Delete,
                Op::Describe,
                Op::All,
            ],
            Kind::Group => &[Op::Read, Op::Delete, Op::Describe, Op::All],
        };
        for principal in ["alice", "*"] {
            for (pattern, pattern_name) in patterns(kind) {
                for &op in ops {
                    for allow in [true, false] {
                        let mut rules = vec![Rule {
                            principal,
                            kind,
                            pattern,
                            name: pattern_name,
                            op,
                            allow,
                        }];
                        // A deny is seen against a broad allow.
                        if !allow {
                            rules.push(Rule {
                                principal: "alice",
                                kind,
                                pattern: Pattern::Literal,
                                name: "*",
                                op: Op::All,
                                allow: true,
                            });
                        }
                        set_rules(&mut admin, set, &rules);
                        set = rules.len();
                        cases += 1;
                        for (user, wire) in &mut wires {
                            let mut probe = Probe {
                                server: &server,
                                user,
                                wire,
                            };
                            let probes = match kind {
                                Kind::Topic => &topic_probes,
                                Kind::Group => &group_probes,
                            };
                            for &(probe_op, probed) in probes {
                                let expected = model(&rules, user, kind, probed, probe_op);
                                let (http, kafka, said) = match kind {
                                    Kind::Topic => probe.topic(probe_op, probed),
                                    Kind::Group => probe.group(probe_op, probed),
                                };
                                for (front, decision) in [("HTTP", http), ("Kafka", kafka)] {
                                    compared += 1;
                                    seen.insert((front, decision));
                                    if decision != Some(expected) {
                                        wrong.push(format!(
                                            "{rules:?}: {user} {probe_op:?} {kind:?} {probed:?} through {front}: expected {}, answered {said}",
                                            if expected { "allowed" } else { "refused" }
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {compared} decisions differ from the model (the first 40):\n{}",
        wrong.len(),
        wrong[..wrong.len().min(40)].join("\n")
    );
    assert_eq!(cases, 2 * 4 * 2 * (6 + 4));
    // Both outcomes came through both front ends.
    for front in ["HTTP", "Kafka"] {
        for decision in [true, false] {
            assert!(
                seen.contains(&(front, Some(decision))),
                "{front} {decision}"
            );
        }
    }
    eprintln!("{compared} decisions in {cases} cases agree with the model");
}
