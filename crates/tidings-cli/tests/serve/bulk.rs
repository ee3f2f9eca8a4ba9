//! Many events through the CLI: `publish --file` and standard input, checked
//! before sending and sized under the server's limits, and `replay`, which
//! copies every record and says what it did.

use std::fmt::Write as _;

use serde_json::Value;

use crate::support::{failure, kcat, ok, tidings, Server};

/// Every event of `topic` as the CLI's JSON lines.
fn read_all(server: &Server, topic: &str) -> Vec<Value> {
    ok(&tidings(
        server,
        &[
            "--json", "tail", topic, "--from", "earliest", "-n", "100000",
        ],
        "",
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The values of a topic's raw records, in offset order, as kcat reads them.
fn raw_values(server: &Server, topic: &str) -> Vec<String> {
    kcat(
        server,
        &["-C", "-t", topic, "-e", "-q", "-f", "%k:%s\\n"],
        "",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn replay_copies_raw_kafka_records_as_raw_and_says_what_it_copied() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // 600 records from a plain Kafka client, no CloudEvents headers; then 5
    // CloudEvents. A page of the source holds no CloudEvent at all.
    let raw: String = (1..=600).map(|n| format!("k:{n}\n")).collect();
    kcat(&server, &["-P", "-t", "rawmany", "-K:"], &raw);
    ok(&tidings(
        &server,
        &["publish", "rawmany", "a", "b", "c", "d", "e"],
        "",
    ));

    let missing = failure(&tidings(
        &server,
        &["replay", "rawmany", "--to", "rawmany-r"],
        "",
    ));
    assert!(
        missing.contains("the target topic rawmany-r does not exist")
            && missing.contains("--create"),
        "{missing}"
    );

    let out = ok(&tidings(
        &server,
        &["replay", "rawmany", "--to", "rawmany-r", "--create"],
        "",
    ));
    assert_eq!(
        out,
        "replayed 605 records from rawmany to rawmany-r (5 events and 600 raw records without CloudEvents headers)\n"
    );
    let copied = read_all(&server, "rawmany-r");
    assert_eq!(copied.len(), 605);
    assert_eq!(
        copied.iter().filter(|e| e["record"].is_object()).count(),
        600
    );
    // The raw records keep key, value and order.
    let values: Vec<String> = raw_values(&server, "rawmany-r")
        .into_iter()
        .filter(|l| l.starts_with("k:"))
        .collect();
    let expected: Vec<String> = (1..=600).map(|n| format!("k:{n}")).collect();
    assert_eq!(values, expected);

    // Again, inside the dedup window: the events are not doubled, and the
    // answer says so; raw records have no id to recognise them by.
    let again = ok(&tidings(
        &server,
        &["--json", "replay", "rawmany", "--to", "rawmany-r"],
        "",
    ));
    let answer: Value = serde_json::from_str(again.lines().last().unwrap()).unwrap();
    assert_eq!(answer["events"], 0, "{again}");
    assert_eq!(answer["duplicates"], 5, "{again}");
    assert_eq!(answer["raw_records"], 600, "{again}");
    let text = ok(&tidings(
        &server,
        &["replay", "rawmany", "--to", "rawmany-r"],
        "",
    ));
    assert!(
        text.ends_with(
            "; 5 events were already in rawmany-r within its dedup window, so not appended again\n"
        ),
        "{text}"
    );
}

/// A file of `n` JSON lines of about `pad` bytes each.
fn lines(range: std::ops::RangeInclusive<u32>, pad: usize) -> String {
    let mut out = String::new();
    for n in range {
        writeln!(out, "{{\"n\": {n}, \"pad\": \"{}\"}}", "x".repeat(pad)).unwrap();
    }
    out
}

#[test]
fn bulk_publish_and_replay_size_their_batches_under_the_servers_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-bytes-max", "65536"]);
    ok(&tidings(
        &server,
        &["topics", "create", "big", "--partitions", "2"],
        "",
    ));
    ok(&tidings(&server, &["topics", "create", "big-copy"], ""));
    // 300 events of 1 KB: 300 KB, far over one request, under the event count
    // a batch may hold.
    let file = dir.path().join("big.jsonl");
    std::fs::write(&file, lines(1..=300, 1000)).unwrap();
    let out = ok(&tidings(
        &server,
        &["publish", "big", "--file", file.to_str().unwrap()],
        "",
    ));
    assert_eq!(out, "published 300 events to big\n");
    let out = ok(&tidings(
        &server,
        &["publish", "big"],
        &lines(301..=400, 1000),
    ));
    assert_eq!(out, "published 100 events to big\n");
    let out = ok(&tidings(
        &server,
        &["replay", "big", "--to", "big-copy"],
        "",
    ));
    assert_eq!(out, "replayed 400 events from big to big-copy\n");
    assert_eq!(read_all(&server, "big-copy").len(), 400);

    // One event larger than a request can be: named, and nothing sent.
    let file = dir.path().join("one-too-big.jsonl");
    let mut content = lines(1..=2, 10);
    content.push_str(&lines(3..=3, 70_000));
    std::fs::write(&file, content).unwrap();
    let err = failure(&tidings(
        &server,
        &["publish", "big-copy", "--file", file.to_str().unwrap()],
        "",
    ));
    assert!(
        err.contains("line 3: it is ")
            && err.contains("the server takes at most 65536 bytes per request"),
        "{err}"
    );
    assert_eq!(read_all(&server, "big-copy").len(), 400);

    // A request over the limit all the same is reported as what it is.
    let err = failure(&tidings(
        &server,
        &["streams", "append", "s-1"],
        &"y".repeat(500_000),
    ));
    assert!(
        err.contains("exceeds the limit of 65536 bytes (too_large, HTTP 413)"),
        "{err}"
    );
}

#[test]
fn a_bad_line_stops_a_file_before_anything_is_sent_and_a_rerun_appends_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&tidings(
        &server,
        &["topics", "create", "orders", "--partitions", "3"],
        "",
    ));
    let file = dir.path().join("orders.jsonl");
    let mut content = lines(1..=750, 10);
    content.push_str("{\"n\": 751, \"pad\": \n");
    content.push_str(&lines(752..=800, 10));
    std::fs::write(&file, &content).unwrap();
    let path = file.to_str().unwrap();

    let err = failure(&tidings(
        &server,
        &["publish", "orders", "--file", path],
        "",
    ));
    assert!(
        err.contains("1 entry of ")
            && err.contains("cannot be published, so nothing was")
            && err.contains("line 751: this looks like JSON but does not parse"),
        "{err}"
    );
    assert!(read_all(&server, "orders").is_empty());

    // The first 500 lines go out (as if a run stopped there), then the whole
    // file, fixed: only the missing 300 are appended.
    std::fs::write(&file, lines(1..=500, 10)).unwrap();
    ok(&tidings(
        &server,
        &["publish", "orders", "--file", path],
        "",
    ));
    std::fs::write(&file, lines(1..=800, 10)).unwrap();
    let out = ok(&tidings(
        &server,
        &["publish", "orders", "--file", path],
        "",
    ));
    assert_eq!(
        out,
        "published 300 events to orders (500 events were already there within its dedup window: not appended again)\n"
    );
    let events = read_all(&server, "orders");
    assert_eq!(events.len(), 800);
    let mut ns: Vec<u64> = events
        .iter()
        .map(|e| e["event"]["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=800).collect::<Vec<u64>>());

    // Refused by the server part-way: what was published and what was not is
    // said by line.
    let file = dir.path().join("late.txt");
    let mut content = String::from("one\ntwo\nthree\n");
    // Data at the event limit, over the log's record limit once its headers
    // are added: only the server can tell.
    content.push_str(&"z".repeat(1024 * 1024));
    content.push('\n');
    std::fs::write(&file, content).unwrap();
    let late = file.to_str().unwrap();
    let err = failure(&tidings(
        &server,
        &["publish", "orders", "--file", late, "--batch", "3"],
        "",
    ));
    assert!(
        err.starts_with("error: publishing line 4 to orders failed: ")
            && err.contains("(too_large, HTTP 413)\nnone of them was published; lines 1–3 before them were published (3 entries); nothing after them was sent\n")
            && err.contains("publishing the file again appends only what is missing"),
        "{err}"
    );

    // Ids from the data: a line without the member is named.
    let keyed = "{\"order_id\": \"o-1\"}\n{\"order_id\": 2}\n{\"other\": 3}\n";
    let err = failure(&tidings(
        &server,
        &["publish", "orders", "--id-from", "order_id"],
        keyed,
    ));
    assert!(
        err.contains("line 3: the data has no order_id (from --id-from)"),
        "{err}"
    );
    let out = ok(&tidings(
        &server,
        &["--json", "publish", "orders", "--id-from", "/order_id"],
        "{\"order_id\": \"o-1\"}\n{\"order_id\": 2}\n",
    ));
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["o-1", "2"]);
}
