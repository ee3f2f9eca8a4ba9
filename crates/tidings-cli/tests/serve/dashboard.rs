//! The web dashboard at `/ui`, over HTTP as a browser fetches it: every
//! page reached from the overview answers, views are their addresses,
//! browsing consumes nothing, the live tail streams rows, and what the
//! principal may not see is not shown. (The same pages in a real browser:
//! `browser.rs`.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{call, create_topic, eventually, get, post_json, Server};

/// An answer with its headers.
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) text: String,
}

/// `GET url` with `headers`, keeping the answer's headers.
pub(crate) fn page_with(url: &str, headers: &[(&str, &str)]) -> Page {
    let mut request = ureq::http::Request::builder().method("GET").uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = crate::support::agent()
        .run(request.body(Vec::new()).unwrap())
        .expect("the server answers");
    // A header sent more than once (WWW-Authenticate) keeps every value.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in response.headers() {
        let value = headers.entry(k.as_str().to_owned()).or_default();
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(v.to_str().unwrap_or(""));
    }
    Page {
        status: response.status().as_u16(),
        headers,
        text: response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default(),
    }
}

pub(crate) fn page(url: &str) -> Page {
    page_with(url, &[])
}

/// The values of `attribute="..."` in `html`, unescaped.
fn attributes(html: &str, attribute: &str) -> Vec<String> {
    let marker = format!("{attribute}=\"");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest.find('"').map(|end| unescape(&rest[..end]))
        })
        .collect()
}

/// Text of an HTML attribute or element, unescaped.
fn unescape(text: &str) -> String {
    text.replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

fn title(html: &str) -> String {
    let start = html.find("<title>").map_or(0, |s| s + 7);
    let end = html.find("</title>").unwrap_or(start);
    html[start..end].to_owned()
}

/// Publishes `events` (JSON CloudEvents) to `topic` in one batch.
pub(crate) fn publish(server: &Server, topic: &str, events: &[Value]) {
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents-batch+json")],
        Value::Array(events.to_vec()).to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
}

pub(crate) fn order(n: usize, ty: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("order-{n}"),
        "source": if n.is_multiple_of(2) { "/shop/web" } else { "/shop/app" },
        "type": ty,
        "subject": format!("customer-{}", n % 5),
        "partitionkey": format!("customer-{}", n % 5),
        "region": if n == 7 { "eu-north-lapland" } else { "eu-west" },
        "datacontenttype": "application/json",
        "data": {"order": n, "total": n * 10, "note": if n == 11 { "gift wrap please" } else { "" }},
    })
}

/// A server with what every page has something to show: topic `orders`
/// (3 partitions, 30 events of two types), a stream group `billing` that
/// committed part of it and has no member now, a queue `shipping` with a
/// lease held and a dead letter, and topic `audit`.
pub(crate) fn seeded(dir: &std::path::Path, extra: &[&str]) -> Server {
    let server = Server::start(dir, extra);
    create_topic(&server, json!({"name": "orders", "partitions": 3}));
    create_topic(&server, json!({"name": "audit", "partitions": 1}));
    let events: Vec<Value> = (0..30)
        .map(|n| {
            order(
                n,
                if n.is_multiple_of(3) {
                    "order.cancelled"
                } else {
                    "order.placed"
                },
            )
        })
        .collect();
    publish(&server, "orders", &events);
    publish(
        &server,
        "audit",
        &[json!({"specversion": "1.0", "id": "a-1", "source": "/audit", "type": "audit.logged"})],
    );
    let joined = post_json(
        &server.url("/v1/groups/billing/members"),
        &json!({"topic": "orders", "from": "earliest"}),
    );
    assert_eq!(joined.status, 201, "{}", joined.text);
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let commit = call(
        "POST",
        &server.url(&format!("/v1/groups/billing/members/{member}/commit")),
        &[("content-type", "application/json")],
        json!({"offsets": {"0": 2, "1": 1}}).to_string().as_bytes(),
    );
    assert_eq!(commit.status, 204, "{}", commit.text);
    // It stops consuming: its lag is what it left.
    let left = call(
        "DELETE",
        &server.url(&format!("/v1/groups/billing/members/{member}")),
        &[],
        b"",
    );
    assert_eq!(left.status, 204, "{}", left.text);
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "shipping", "topic": "orders", "from": "earliest", "max_deliveries": 3}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let got = post_json(&server.url("/v1/queues/shipping/receive?max=2"), &json!({}));
    assert_eq!(got.status, 200, "{}", got.text);
    let lease = got.json["deliveries"][0]["lease"].as_str().unwrap();
    let rejected = post_json(
        &server.url(&format!("/v1/queues/shipping/leases/{lease}/reject")),
        &json!({"reason": "address unknown: no such street"}),
    );
    assert_eq!(rejected.status, 204, "{}", rejected.text);
    // A stream of the event store, appended to three times.
    for (version, ty) in ["order.placed", "payment.requested", "order.paid"]
        .iter()
        .enumerate()
    {
        let appended = call(
            "POST",
            &server.url("/v1/streams/order-7/events"),
            &[
                ("content-type", "application/cloudevents-batch+json"),
                ("tidings-expected-version", "any"),
            ],
            json!([{"specversion": "1.0", "id": format!("o7-{version}"), "source": "/shop", "type": ty, "data": {"order": 7}}])
                .to_string()
                .as_bytes(),
        );
        assert_eq!(appended.status, 200, "{}", appended.text);
    }
    server
}

/// Every `/ui` page the overview links to, and every page those link to,
/// answers 200 HTML under the Content-Security-Policy, never cached, with
/// a title and a heading; its assets are served with a long cache.
#[test]
fn every_page_reached_from_the_overview_answers_html_under_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &["--ui-environment", "orders-staging"]);
    let mut queue = VecDeque::from(["/ui".to_owned()]);
    let mut seen = BTreeSet::new();
    let mut assets = BTreeSet::new();
    let mut titles = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) || seen.len() > 400 {
            continue;
        }
        let answer = page(&server.url(&path));
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        let kind = answer.headers["content-type"].clone();
        if path.contains("/export") {
            assert_eq!(kind, "application/x-ndjson", "{path}");
            continue;
        }
        assert_eq!(kind, "text/html; charset=utf-8", "{path}");
        assert_eq!(answer.headers["cache-control"], "no-store", "{path}");
        let policy = &answer.headers["content-security-policy"];
        assert!(
            policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        assert!(answer.text.contains("<h1"), "{path} has no heading");
        let t = title(&answer.text);
        assert!(t.ends_with("· Tidings · orders-staging"), "{path}: {t}");
        titles.insert(t);
        // Nothing from beyond the server: no address with a scheme.
        for attribute in ["src", "href", "action"] {
            for value in attributes(&answer.text, attribute) {
                assert!(!value.contains("://"), "{path} links outside: {value}");
                if value.starts_with("/ui/assets/") {
                    assets.insert(value);
                } else if value.starts_with("/ui") && attribute == "href" {
                    let value = value.split('#').next().unwrap().to_owned();
                    if !seen.contains(&value) {
                        queue.push_back(value);
                    }
                }
            }
        }
    }
    for expected in [
        "/ui/topics",
        "/ui/topics/orders",
        "/ui/topics/orders/events",
        "/ui/topics/orders/events/0/0",
        "/ui/groups/billing",
        "/ui/queues/shipping",
        "/ui/queues/shipping/dead-letters/0",
        "/ui/help",
        "/ui/store",
        "/ui/streams/order-7",
        "/ui/catalog",
        "/ui/journey",
    ] {
        assert!(
            seen.contains(expected),
            "{expected} is not linked: {seen:?}"
        );
    }
    assert!(titles.len() >= 10, "{titles:?}");
    assert_eq!(assets.len(), 3, "{assets:?}");
    for asset in &assets {
        let answer = page(&server.url(asset));
        assert_eq!(answer.status, 200, "{asset}");
        assert_eq!(
            answer.headers["cache-control"], "public, max-age=31536000, immutable",
            "{asset}"
        );
    }
    // The dashboard's own 404, and an unknown topic's: pages, not JSON.
    for (path, says) in [
        ("/ui/nowhere", "the dashboard has no page /ui/nowhere"),
        ("/ui/topics/ghost", "topic ghost does not exist"),
        (
            "/ui/topics/orders/events/0/999",
            "partition 0 of orders holds offsets 0..",
        ),
    ] {
        let answer = page(&server.url(path));
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.text.contains(says), "{path}: {}", answer.text);
        assert!(answer.text.contains("<h1>404 Not Found</h1>"), "{path}");
    }
}

/// The events shown on a page of the browser, as `partition:offset`.
fn shown(html: &str, topic: &str) -> Vec<String> {
    let marker = format!("href=\"/ui/topics/{topic}/events/");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest[..rest.find('"').unwrap()].replace('/', ":")
        })
        .collect()
}

/// The ids of the events an NDJSON export holds.
fn exported(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Filters on CloudEvents attributes and text, the partition and the start
/// are the address; Next continues without a gap or a repeat; the export
/// of a view holds what the view shows.
#[test]
fn views_are_addresses_and_pages_continue_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let events = |query: &str| {
        let answer = page(&server.url(&format!("/ui/topics/orders/events?{query}")));
        assert_eq!(answer.status, 200, "{query}: {}", answer.text);
        answer.text
    };
    // Everything from the start, 7 a page, following Next.
    let mut all = Vec::new();
    let mut next = "from=earliest&limit=7".to_owned();
    for _ in 0..10 {
        let html = events(&next);
        all.extend(shown(&html, "orders"));
        match attributes(&html, "href")
            .into_iter()
            .find(|h| h.starts_with("/ui/topics/orders/events?at="))
        {
            Some(href) => next = href.split_once('?').unwrap().1.to_owned(),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 30, "{all:?}");
    assert_eq!(unique.len(), 30, "a repeat: {all:?}");

    // A type filter, exact and by prefix; the form keeps what was asked.
    let cancelled = events("from=earliest&type=order.cancelled");
    assert_eq!(shown(&cancelled, "orders").len(), 10);
    assert!(cancelled.contains("value=\"order.cancelled\""));
    assert_eq!(
        shown(&events("from=earliest&type=order.*"), "orders").len(),
        30
    );
    assert_eq!(
        shown(&events("from=earliest&type=order"), "orders").len(),
        0
    );
    // Source, subject and id.
    assert_eq!(
        shown(&events("from=earliest&source=/shop/web"), "orders").len(),
        15
    );
    assert_eq!(
        shown(&events("from=earliest&subject=customer-3"), "orders").len(),
        6
    );
    let one = events("from=earliest&id=order-17");
    assert_eq!(shown(&one, "orders").len(), 1, "{one}");
    // Text: in the data, and in an extension.
    let gift = events("q=GIFT+wrap");
    assert_eq!(shown(&gift, "orders").len(), 1, "{gift}");
    assert!(gift.contains("order-11"));
    let lapland = events("q=lapland");
    assert_eq!(shown(&lapland, "orders").len(), 1);
    assert!(lapland.contains("order-7"));
    // One partition, from an offset; an offset across partitions is refused.
    let p1 = events("partition=1&from=1");
    let rows = shown(&p1, "orders");
    assert!(!rows.is_empty() && rows.iter().all(|r| r.starts_with("1:")));
    assert!(!rows.contains(&"1:0".to_owned()));
    let refused = page(&server.url("/ui/topics/orders/events?from=3"));
    assert_eq!(refused.status, 400);
    assert!(refused.text.contains("an offset needs a partition"));
    // Latest: the newest first.
    let latest = shown(&events("limit=5"), "orders");
    assert_eq!(latest.len(), 5);

    // The export of a filtered view holds its events, as the API shows them.
    let export = page(&server.url("/ui/topics/orders/export?from=earliest&type=order.cancelled"));
    assert_eq!(export.status, 200);
    assert!(export.headers["content-disposition"].contains("orders.ndjson"));
    let mut ids = exported(&export.text);
    ids.sort();
    let mut expected: Vec<String> = (0..30)
        .filter(|n| n % 3 == 0)
        .map(|n| format!("order-{n}"))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);

    // The view as commands: kcat from the view's partition and offset.
    let commands = events("partition=2&from=1&limit=5");
    assert!(
        commands.contains(" -C -t orders -p 2 -o 1 -c 5 -e -J"),
        "{commands}"
    );
    // One event's own page: its attributes, extension and data.
    let html = page(&server.url("/ui/topics/orders/events/0/0")).text;
    for part in [
        "specversion",
        "partitionkey",
        "&#34;order&#34;",
        "kcat -b 127.0.0.1:",
    ] {
        assert!(html.contains(part), "{part}: {html}");
    }
}

/// Looking at a topic, a group and a queue, and tailing the topic, leases,
/// commits and moves nothing.
#[test]
fn browsing_consumes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let before = (
        get(&server.url("/v1/queues/shipping")).json,
        get(&server.url("/v1/groups/billing")).json,
    );
    for path in [
        "/ui",
        "/ui/topics/orders",
        "/ui/topics/orders/events?from=earliest&limit=500",
        "/ui/topics/orders/export?from=earliest",
        "/ui/groups/billing",
        "/ui/queues/shipping",
        "/ui/queues/shipping/dead-letters/0",
    ] {
        assert_eq!(page(&server.url(path)).status, 200, "{path}");
    }
    let after = (
        get(&server.url("/v1/queues/shipping")).json,
        get(&server.url("/v1/groups/billing")).json,
    );
    assert_eq!(before, after);
    assert_eq!(after.0["in_flight"], 1, "{}", after.0);
    assert_eq!(after.0["counters"]["delivered"], 2, "{}", after.0);
}

/// The live tail streams each new event of its view as a table row, and
/// leaves out what its filter does not match.
#[test]
fn the_live_tail_streams_new_events_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let lines = event_stream(server.url("/ui/topics/orders/tail?type=order.shipped"));
    // The tail starts where the topic ended when it was opened, which the
    // log's line for the request follows.
    eventually("the tail is open", || {
        server.logs().contains("path=/ui/topics/orders/tail")
    });
    publish(
        &server,
        "orders",
        &[order(100, "order.placed"), order(101, "order.shipped")],
    );
    let text = lines_until(&lines, "order-101");
    assert!(text.contains("order-101"), "{text}");
    assert!(
        text.contains("<tr>") && text.contains("order.shipped"),
        "{text}"
    );
    assert!(
        !text.contains("order-100"),
        "the filter let through: {text}"
    );
    assert!(text.lines().any(|l| l.starts_with("id: ")), "{text}");
}

/// A stream group's page shows the committed offset against the end of
/// each partition and how long ago the oldest unconsumed event came; a
/// queue's shows the lease held and the dead letter grouped by its error.
#[test]
fn groups_show_lag_in_events_and_time_and_queues_their_leases_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let group = page(&server.url("/ui/groups/billing")).text;
    let described = get(&server.url("/v1/groups/billing")).json;
    let lag = described["lag"].as_u64().unwrap();
    assert!(lag > 0, "{described}");
    assert!(
        group.contains(&format!("{lag} events, the oldest appended")),
        "{group}"
    );
    assert!(group.contains("ago"), "{group}");
    let queue = page(&server.url("/ui/queues/shipping")).text;
    assert!(queue.contains("leased ("), "{queue}");
    assert!(queue.contains("address unknown: no such street"), "{queue}");
    let filtered =
        page(&server.url("/ui/queues/shipping?error=address+unknown%3A+no+such+street")).text;
    assert!(
        filtered.contains("1 of 1 dead letter with this error"),
        "{filtered}"
    );
    let none = page(&server.url("/ui/queues/shipping?error=other")).text;
    assert!(
        none.contains("0 of 0 dead letters with this error"),
        "{none}"
    );
    // A consumer that took a lease and went quiet: the lease is stuck past
    // its deadline until a receive takes it back.
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "slow", "topic": "audit", "from": "earliest", "ack_timeout_ms": 100}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let got = post_json(&server.url("/v1/queues/slow/receive?max=1"), &json!({}));
    assert_eq!(
        got.json["deliveries"].as_array().unwrap().len(),
        1,
        "{}",
        got.text
    );
    eventually("the overview names the stuck lease", || {
        page(&server.url("/ui"))
            .text
            .contains("1 past their deadline, the oldest by")
    });
    let overview = page(&server.url("/ui")).text;
    assert!(
        overview.contains("href=\"/ui/queues/shipping#leases\">shipping</a></td><td class=\"num\">1</td><td>none</td>"),
        "a lease within its deadline is not stuck: {overview}"
    );
    for part in [
        "href=\"/ui/groups/billing\"",
        "href=\"/ui/queues/shipping#dead-letters\"",
        "href=\"/ui/queues/shipping#leases\"",
    ] {
        assert!(overview.contains(part), "{part}: {overview}");
    }
}

/// The theme and time settings are kept in cookies for the next page's
/// first byte; a change from another site is refused; `--ui false` turns
/// the dashboard off.
#[test]
fn preferences_come_back_from_the_server_and_other_sites_cannot_set_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let form = b"theme=dark&time=local&back=%2Fui%2Ftopics";
    let origin = server.url("");
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(server.url("/ui/prefs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", origin.as_str())
        .header("sec-fetch-site", "same-origin")
        .body(form.to_vec())
        .unwrap();
    let set = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
        .run(request)
        .unwrap();
    assert_eq!(set.status().as_u16(), 303);
    assert_eq!(set.headers()["location"], "/ui/topics");
    let cookies: Vec<&str> = set
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("tidings_theme=dark;"))
            && cookies.iter().any(|c| c.starts_with("tidings_time=local;")),
        "{cookies:?}"
    );
    let dark = page_with(
        &server.url("/ui/topics"),
        &[("cookie", "tidings_theme=dark; tidings_time=local")],
    );
    assert!(
        dark.text.starts_with(
            "<!doctype html>\n<html lang=\"en\" data-theme=\"dark\" data-time=\"local\">"
        ),
        "{}",
        &dark.text[..200]
    );
    let elsewhere = call(
        "POST",
        &server.url("/ui/prefs"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        form,
    );
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.text);
    // A way back that is not the dashboard's, or could not be a header,
    // goes to the overview.
    for back in [
        "https%3A%2F%2Fevil.example",
        "%2Fui%0D%0ASet-Cookie%3A+x%3D1",
        "%2F%2Fevil.example",
    ] {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(server.url("/ui/prefs"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("theme=dark&back={back}").into_bytes())
            .unwrap();
        let answer = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent()
            .run(request)
            .unwrap();
        assert_eq!(answer.status().as_u16(), 303, "{back}");
        assert_eq!(answer.headers()["location"], "/ui", "{back}");
    }
    assert!(elsewhere
        .text
        .contains("a change from another site is refused"));
    drop(server);

    let off = Server::start(dir.path(), &["--ui", "false"]);
    let answer = get(&off.url("/ui"));
    assert_eq!(answer.status, 404);
    assert_eq!(answer.code(), "not_found");
}

/// Posts a form as the dashboard's own page does (`Origin` of the server),
/// with `authorization` when given.
pub(crate) fn post_form(
    server: &Server,
    path: &str,
    form: &str,
    authorization: Option<&str>,
) -> Page {
    let origin = server.url("");
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", origin.as_str())
        .header("sec-fetch-site", "same-origin");
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let mut response = crate::support::agent()
        .run(request.body(form.as_bytes().to_vec()).unwrap())
        .expect("the server answers");
    Page {
        status: response.status().as_u16(),
        headers: BTreeMap::new(),
        text: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Forms that change something on a page (the preferences' form is
/// written differently, and changes only cookies).
fn change_forms(html: &str) -> Vec<String> {
    html.match_indices("<form method=\"post\" action=\"")
        .map(|(at, m)| {
            let rest = &html[at + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Each change previews what it will do, asks for the name where it cannot
/// be undone, does it, and is in the audit log, done or failed.
#[test]
fn changes_preview_confirm_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    // A topic created and published to from the dashboard.
    let created = post_form(&server, "/ui/topics", "name=refunds&partitions=2", None);
    assert_eq!(created.status, 200, "{}", created.text);
    assert!(
        created.text.contains("done: created with 2 partitions"),
        "{}",
        created.text
    );
    assert_eq!(get(&server.url("/v1/topics/refunds")).status, 200);
    let published = post_form(
        &server,
        "/ui/topics/refunds/events",
        "type=refund.issued&source=%2Fdesk&subject=order-3&key=customer-3&data=%7B%22amount%22%3A12%7D",
        None,
    );
    assert!(published.text.contains("appended at"), "{}", published.text);
    let read = get(&server.url("/v1/topics/refunds/events?from=earliest"));
    let event = &read.json["events"][0]["event"];
    assert_eq!(event["type"], "refund.issued", "{}", read.text);
    assert_eq!(event["data"], json!({"amount": 12}), "{}", read.text);

    // Reset: the preview shows each partition before and after; a wrong
    // confirmation changes nothing and is recorded as failed.
    let preview = page(&server.url("/ui/groups/billing/reset?to=earliest")).text;
    assert!(
        preview.contains("The group would read 3 events again."),
        "{preview}"
    );
    assert!(preview.contains("replays 2"), "{preview}");
    let before = get(&server.url("/v1/groups/billing")).json;
    let wrong = post_form(
        &server,
        "/ui/groups/billing/reset",
        "to=earliest&confirm=bill",
        None,
    );
    assert_eq!(wrong.status, 400, "{}", wrong.text);
    assert!(
        wrong.text.contains("type &#34;billing&#34; to confirm"),
        "{}",
        wrong.text
    );
    assert_eq!(get(&server.url("/v1/groups/billing")).json, before);
    let reset = post_form(
        &server,
        "/ui/groups/billing/reset",
        "to=earliest&confirm=billing",
        None,
    );
    assert_eq!(reset.status, 200, "{}", reset.text);
    let after = get(&server.url("/v1/groups/billing")).json;
    assert_eq!(after["lag"], 30, "{after}");

    // Redrive one dead letter to the queue: the preview counts it first.
    let preview = page(&server.url("/ui/queues/shipping/redrive?max=5")).text;
    assert!(
        preview.contains("1 of its 1 dead letters, oldest first"),
        "{preview}"
    );
    let redriven = post_form(&server, "/ui/queues/shipping/redrive", "max=5", None);
    assert!(
        redriven.text.contains("done: 1 redriven"),
        "{}",
        redriven.text
    );
    assert_eq!(
        get(&server.url("/v1/queues/shipping")).json["dead_letters"],
        0
    );
    // Another one, purged by name.
    let got = post_json(&server.url("/v1/queues/shipping/receive?max=1"), &json!({}));
    let lease = got.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    post_json(
        &server.url(&format!("/v1/queues/shipping/leases/{lease}/reject")),
        &json!({"reason": "carrier down"}),
    );
    let purge = page(&server.url("/ui/queues/shipping/purge")).text;
    assert!(purge.contains("Its 1 dead letters are dropped"), "{purge}");
    let purged = post_form(
        &server,
        "/ui/queues/shipping/purge",
        "confirm=shipping",
        None,
    );
    assert!(purged.text.contains("done: 1 purged"), "{}", purged.text);
    // The topic deleted by name.
    let deleted = post_form(
        &server,
        "/ui/topics/refunds/delete",
        "confirm=refunds",
        None,
    );
    assert!(deleted.text.contains("done: deleted"), "{}", deleted.text);
    assert_eq!(get(&server.url("/v1/topics/refunds")).status, 404);

    let audit = page(&server.url("/ui/audit")).text;
    for line in [
        "create topic",
        "publish",
        "failed: type &#34;billing&#34; to confirm",
        "reset offsets",
        "redrive dead letters",
        "purge dead letters",
        "delete topic",
        "User:ANONYMOUS",
    ] {
        assert!(audit.contains(line), "{line}: {audit}");
    }
    // Kept on disk: a restarted server shows the same log.
    drop(server);
    let again = Server::start(dir.path(), &[]);
    let audit_again = page(&again.url("/ui/audit")).text;
    assert_eq!(
        audit_again.matches("<tr><td><time").count(),
        7,
        "{audit_again}"
    );
}

/// Read-only mode offers no control that changes anything, on any page, and
/// refuses a change posted anyway; a change from another site is refused.
#[test]
fn read_only_offers_no_change_and_refuses_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &["--ui-read-only"]);
    for path in [
        "/ui",
        "/ui/topics",
        "/ui/topics/orders",
        "/ui/topics/orders/events",
        "/ui/groups/billing",
        "/ui/queues/shipping",
    ] {
        let html = page(&server.url(path)).text;
        assert_eq!(change_forms(&html), Vec::<String>::new(), "{path}");
        assert!(!html.contains("/delete\""), "{path}");
        assert!(!html.contains("/purge\""), "{path}");
        assert!(!html.contains("/reset\""), "{path}");
        assert!(html.contains(">read-only<"), "{path}");
    }
    for path in ["/ui/queues/shipping/purge", "/ui/groups/billing/reset"] {
        let refused = page(&server.url(path));
        assert_eq!(refused.status, 403, "{path}");
    }
    let refused = post_form(
        &server,
        "/ui/queues/shipping/purge",
        "confirm=shipping",
        None,
    );
    assert_eq!(refused.status, 403);
    assert!(refused.text.contains("read-only"), "{}", refused.text);
    assert_eq!(
        get(&server.url("/v1/queues/shipping")).json["dead_letters"],
        1
    );
    drop(server);

    let server = Server::start(dir.path(), &[]);
    let html = page(&server.url("/ui/queues/shipping")).text;
    assert!(
        change_forms(&html).is_empty(),
        "the redrive is a preview (GET) first"
    );
    assert!(html.contains("/ui/queues/shipping/purge"));
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(server.url("/ui/queues/shipping/purge"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://attacker.example")
        .body(b"confirm=shipping".to_vec())
        .unwrap();
    let answer = crate::support::agent().run(request).unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    assert_eq!(
        get(&server.url("/v1/queues/shipping")).json["dead_letters"],
        1
    );
}

/// With permissions, a user sees only what they may describe and is offered
/// only the changes they may make.
#[test]
fn a_user_sees_and_is_offered_only_what_their_permissions_allow() {
    let dir = tempfile::tempdir().unwrap();
    let tidings = |args: &[&str], stdin: &str| {
        crate::support::ok(&crate::support::offline(dir.path(), args, stdin))
    };
    tidings(&["users", "add", "admin"], "admin-pw\n");
    tidings(&["users", "add", "viewer"], "viewer-pw\n");
    tidings(
        &[
            "acls",
            "add",
            "--principal",
            "viewer",
            "--operation",
            "Describe,Read",
            "--topic",
            "orders",
        ],
        "",
    );
    let server = Server::start(dir.path(), &["--super-user", "admin"]);
    let basic = |user: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pw"))
        )
    };
    let (admin, viewer) = (basic("admin"), basic("viewer"));
    let as_admin = |path: &str| page_with(&server.url(path), &[("authorization", &admin)]);
    let as_viewer = |path: &str| page_with(&server.url(path), &[("authorization", &viewer)]);
    // Without a login: the browser is asked for one.
    let anonymous = page(&server.url("/ui"));
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.headers["www-authenticate"].contains("Basic"));
    for topic in ["orders", "secret"] {
        let created = post_form(
            &server,
            "/ui/topics",
            &format!("name={topic}&partitions=1"),
            Some(&admin),
        );
        assert!(created.text.contains("done: created"), "{}", created.text);
    }
    let listed = as_viewer("/ui/topics").text;
    assert!(listed.contains("/ui/topics/orders\""), "{listed}");
    assert!(!listed.contains("/ui/topics/secret\""), "{listed}");
    assert!(!listed.contains("Create a topic"), "{listed}");
    assert!(as_admin("/ui/topics").text.contains("Create a topic"));
    let topic = as_viewer("/ui/topics/orders").text;
    assert!(!topic.contains("/delete\""), "{topic}");
    assert!(as_admin("/ui/topics/orders")
        .text
        .contains("/ui/topics/orders/delete"));
    let events = as_viewer("/ui/topics/orders/events").text;
    assert!(!events.contains("Publish a test event"), "{events}");
    assert!(!events.contains("Audit log"), "{events}");
    let forbidden = as_viewer("/ui/topics/secret");
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden
            .text
            .contains("User:viewer may not Describe topic"),
        "{}",
        forbidden.text
    );
    let refused = post_form(
        &server,
        "/ui/topics/orders/delete",
        "confirm=orders",
        Some(&viewer),
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(as_viewer("/ui/audit").status, 403);
    let audit = as_admin("/ui/audit").text;
    assert!(audit.contains("User:admin"), "{audit}");
}

/// A redrive of the dead letters with one error sends those alone, and the
/// queue's counts and groups change by them only.
#[test]
fn a_redrive_of_one_error_changes_only_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let got = post_json(&server.url("/v1/queues/shipping/receive?max=2"), &json!({}));
    for d in got.json["deliveries"].as_array().unwrap() {
        let lease = d["lease"].as_str().unwrap();
        let rejected = post_json(
            &server.url(&format!("/v1/queues/shipping/leases/{lease}/reject")),
            &json!({"reason": "carrier down"}),
        );
        assert_eq!(rejected.status, 204, "{}", rejected.text);
    }
    let queue = page(&server.url("/ui/queues/shipping")).text;
    assert!(
        queue.contains("/ui/queues/shipping/redrive?error=carrier+down"),
        "{queue}"
    );
    let preview = page(&server.url("/ui/queues/shipping/redrive?error=carrier+down")).text;
    assert!(
        preview
            .contains("2 of the 2 dead letters with the error &#34;carrier down&#34; (3 in all)"),
        "{preview}"
    );
    assert!(
        preview.contains("&#34;error&#34;:&#34;carrier down&#34;"),
        "the curl carries it: {preview}"
    );
    let done = post_form(
        &server,
        "/ui/queues/shipping/redrive",
        "max=&error=carrier+down",
        None,
    );
    assert!(done.text.contains("done: 2 redriven"), "{}", done.text);
    let after = get(&server.url("/v1/queues/shipping")).json;
    assert_eq!(after["dead_letters"], 1, "{after}");
    let left = get(&server.url("/v1/queues/shipping/dead-letters")).json;
    assert_eq!(
        left["dead_letters"][0]["error"], "address unknown: no such street",
        "{left}"
    );
    let queue = page(&server.url("/ui/queues/shipping")).text;
    assert!(!queue.contains("carrier down"), "{queue}");
    // The API takes the same filter.
    let none = post_json(
        &server.url("/v1/queues/shipping/dead-letters/redrive"),
        &json!({"error": "carrier down"}),
    );
    assert_eq!(none.json["redriven"], 0, "{}", none.text);
}

/// The event store's pages: `$all` newest last, a category, a stream as a
/// timeline with the gaps between its events, and the follow stream.
#[test]
fn the_event_store_shows_all_a_category_and_a_stream_as_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let all = page(&server.url("/ui/store")).text;
    for id in ["o7-0", "o7-1", "o7-2"] {
        assert!(all.contains(id), "{id}: {all}");
    }
    assert!(all.contains("href=\"/ui/streams/order-7\""), "{all}");
    let category = page(&server.url("/ui/store?category=order")).text;
    assert!(category.contains("o7-2"), "{category}");
    let other = page(&server.url("/ui/store?category=payment")).text;
    assert!(!other.contains("o7-2"), "{other}");
    let bad = page(&server.url("/ui/store?category=a-b"));
    assert_eq!(bad.status, 400, "{}", bad.text);
    let stream = page(&server.url("/ui/streams/order-7")).text;
    assert!(stream.contains("<svg class=\"timeline\""), "{stream}");
    assert!(stream.contains("3 events of order-7 over"), "{stream}");
    assert_eq!(stream.matches("<circle").count(), 3, "{stream}");
    for ty in ["order.placed", "payment.requested", "order.paid"] {
        assert!(stream.contains(ty), "{ty}");
    }
    assert!(
        stream.contains(">+"),
        "the gap since the event before: {stream}"
    );
    // The follow stream sends a row for each event appended from then on.
    let lines = event_stream(server.url("/ui/store/follow"));
    crate::support::eventually("the follow is open", || {
        server.logs().contains("path=/ui/store/follow")
    });
    let appended = call(
        "POST",
        &server.url("/v1/streams/order-8/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        json!([{"specversion": "1.0", "id": "o8-0", "source": "/shop", "type": "order.placed"}])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(appended.status, 200, "{}", appended.text);
    let text = lines_until(&lines, "o8-0");
    assert!(text.contains("href=\"/ui/streams/order-8\""), "{text}");
    assert!(!text.contains("o7-0"), "it starts at the end: {text}");
}

/// The lines of a Server-Sent Events stream, read on a thread.
fn event_stream(url: String) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let request = ureq::http::Request::builder()
            .uri(url)
            .header("accept", "text/event-stream")
            .body(Vec::new())
            .unwrap();
        let response = crate::support::agent().run(request).unwrap();
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// What `lines` brought until one held `needle` (or 20 s passed).
fn lines_until(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                break;
            }
        }
    }
    seen.join("\n")
}

/// One event's journey: published to a topic, not consumed by the stream
/// group that stopped before it, dead-lettered by the queue with its error,
/// then redriven and waiting in the queue's lane.
#[test]
fn an_events_journey_goes_from_topic_to_dead_letter_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    let dead = get(&server.url("/v1/queues/shipping/dead-letters")).json;
    let id = dead["dead_letters"][0]["event"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let journey = page(&server.url(&format!("/ui/journey?id={id}"))).text;
    assert!(
        journey.contains(
            "dead-lettered by queue shipping after 1 attempt: address unknown: no such street"
        ),
        "{journey}"
    );
    assert!(journey.contains("stream group billing"), "{journey}");
    assert!(
        journey.contains("queue shipping</a>: acked (or dead-lettered"),
        "{journey}"
    );
    assert!(
        journey.contains("/ui/queues/shipping/dead-letters/0"),
        "{journey}"
    );
    let redriven = post_json(
        &server.url("/v1/queues/shipping/dead-letters/redrive"),
        &json!({}),
    );
    assert_eq!(redriven.json["redriven"], 1, "{}", redriven.text);
    let journey = page(&server.url(&format!("/ui/journey?id={id}"))).text;
    assert!(journey.contains(">redrive<"), "{journey}");
    assert!(
        journey.contains("redriven to it; not delivered yet"),
        "{journey}"
    );
    // Found from the event's own page, and nothing for an unknown id.
    let none = page(&server.url("/ui/journey?id=nobody")).text;
    assert!(none.contains("No event with the id"), "{none}");
    let event = page(&server.url("/ui/topics/orders/events/0/0")).text;
    assert!(event.contains("/ui/journey?id=order-"), "{event}");
}

/// The catalog lists each topic's types with their counts; a member's page
/// row says when it was last heard from; a topic's settings change from its
/// page.
#[test]
fn the_catalog_members_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &[]);
    crate::support::eventually("the catalog scanned the topics", || {
        let catalog = page(&server.url("/ui/catalog")).text;
        catalog.contains(">order.cancelled</a>") && catalog.contains(">10<")
    });
    let joined = post_json(
        &server.url("/v1/groups/billing/members"),
        &json!({"topic": "orders"}),
    );
    assert_eq!(joined.status, 201, "{}", joined.text);
    let group = page(&server.url("/ui/groups/billing")).text;
    assert!(group.contains("ago (session"), "{group}");
    let changed = post_form(
        &server,
        "/ui/topics/audit/settings",
        "partitions=2&retention_ms=86400000&dedup_window_ms=none&schema_validation=",
        None,
    );
    assert!(
        changed.text.contains("done: now 2 partitions"),
        "{}",
        changed.text
    );
    let described = get(&server.url("/v1/topics/audit")).json;
    assert_eq!(
        described["config"]["retention_ms"], 86_400_000,
        "{described}"
    );
    assert_eq!(
        described["config"]["dedup_window_ms"],
        Value::Null,
        "{described}"
    );
    let refused = post_form(&server, "/ui/topics/audit/settings", "partitions=1", None);
    assert_eq!(refused.status, 400, "{}", refused.text);
}
