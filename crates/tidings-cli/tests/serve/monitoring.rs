//! What ships in `deploy/` for monitoring a server, checked against a live one
//! with Prometheus' own `promtool`: the alert rules are valid and their unit
//! tests pass, a scrape passes promtool's lint, and every series the rules
//! and the Grafana dashboard query is one the server exports.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::support::{call, create_topic, get, kcat, post_json, Server};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run ./scripts/test, which installs it");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn succeeded(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}:\n{text}");
    text
}

/// Every `tidings_*` metric name in PromQL `expr`, a histogram's
/// `_bucket`, `_sum` and `_count` series named by their family.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("tidings_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        into.insert(family.to_owned());
        rest = &tail[end..];
    }
}

/// The `expr` of every alert rule, read from its YAML block scalar.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "expr: |" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut expr = String::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !deeper && !next.trim().is_empty() {
                break;
            }
            expr.push_str(next.trim());
            expr.push('\n');
            lines.next();
        }
        exprs.push(expr);
    }
    exprs
}

/// The queries of the dashboard's panels and template variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs
}

/// The families a scrape declares with `# TYPE`.
fn families(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "tidings-alerts.yml"], None);
    let said = succeeded("promtool check rules", &checked);
    assert!(said.contains("SUCCESS: 6 rules found"), "{said}");
    let tested = promtool(&["test", "rules", "tidings-alerts.test.yml"], None);
    succeeded("promtool test rules", &tested);
}

#[test]
fn the_rules_and_the_dashboard_query_what_a_live_server_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Traffic that gives every family a series: an HTTP publish, a queue
    // group that acks one event and rejects one (a dead letter), a Kafka
    // producer and a Kafka consumer group.
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "billing", "topic": "orders"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let published = call(
        "POST",
        &server.url("/v1/topics/orders/events"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "order-1"),
            ("ce-source", "/shop"),
            ("ce-type", "order.placed"),
            ("content-type", "application/json"),
        ],
        b"{\"total\": 42}",
    );
    assert_eq!(published.status, 200, "{}", published.text);
    kcat(&server, &["-P", "-t", "orders", "-K", ":"], "k1:a\n");
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        let got = post_json(
            &server.url("/v1/queues/billing/receive?max=2&wait_ms=2000"),
            &json!({}),
        );
        deliveries.extend(got.json["deliveries"].as_array().unwrap().iter().cloned());
        if deliveries.len() >= 2 {
            break;
        }
    }
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for (d, answer) in deliveries.iter().zip(["ack", "reject"]) {
        let lease = d["lease"].as_str().unwrap();
        let settled = post_json(
            &server.url(&format!("/v1/queues/billing/leases/{lease}/{answer}")),
            &json!({}),
        );
        assert_eq!(settled.status, 204, "{}", settled.text);
    }
    kcat(
        &server,
        &[
            "-G",
            "audit",
            "-e",
            "-q",
            "-X",
            "auto.offset.reset=earliest",
            "orders",
        ],
        "",
    );
    let scrape = get(&server.url("/metrics")).text;

    // Prometheus' own lint of the exposition format and naming.
    let linted = promtool(&["check", "metrics"], Some(&scrape));
    succeeded("promtool check metrics", &linted);

    let exported = families(&scrape);
    let rules = std::fs::read_to_string(deploy().join("prometheus/tidings-alerts.yml")).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/tidings-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    let rule_exprs = rule_exprs(&rules);
    assert_eq!(rule_exprs.len(), 6, "{rule_exprs:?}");
    let dashboard_exprs = dashboard_exprs(&dashboard);
    assert!(dashboard_exprs.len() >= 30, "{dashboard_exprs:?}");
    for expr in rule_exprs.iter().chain(&dashboard_exprs) {
        metric_names(expr, &mut queried);
    }
    // Series that only exist once something went wrong: a partition refused,
    // a Kafka error answered, a connection refused or closed idle. Their
    // names must still be the server's, so they are looked for in the
    // telemetry crate's source.
    let telemetry = include_str!("../../../tidings-telemetry/src/lib.rs");
    let on_trouble = [
        "tidings_partition_refused",
        "tidings_kafka_request_errors_total",
        "tidings_kafka_connections_refused_total",
        "tidings_kafka_connections_idle_closed_total",
    ];
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported.contains(*name))
        .filter(|name| {
            !(on_trouble.contains(&name.as_str()) && telemetry.contains(&format!("\"{name}\"")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    assert!(queried.len() >= 25, "{queried:?}");

    // The dashboard: panel ids unique, every query on the chosen data source.
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
    }
}
