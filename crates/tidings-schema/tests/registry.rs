//! The registry: Confluent's rules for subjects, versions, ids, levels and
//! deletes; what was answered survives a reopen, a cut at any byte and a
//! compaction; damage is refused with its place.

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use tidings_schema::registry::OpenError;
use tidings_schema::{Level, Registry, RegistryError, SchemaInput, SchemaType, VersionRef};

fn input(schema: serde_json::Value) -> SchemaInput {
    SchemaInput {
        schema_type: SchemaType::Json,
        schema: schema.to_string(),
    }
}

fn order(extra: &str) -> SchemaInput {
    let mut props = json!({"id": {"type": "string"}});
    if !extra.is_empty() {
        props[extra] = json!({"type": "number"});
    }
    input(json!({"type": "object", "properties": props, "required": ["id"]}))
}

fn code(r: Result<impl std::fmt::Debug, RegistryError>) -> u32 {
    r.expect_err("refused").error_code()
}

#[test]
fn versions_ids_and_lookups_follow_confluents_rules() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    let v1 = r.register("orders-value", &order("")).unwrap();
    assert_eq!((v1.version, v1.schema.id), (1, 1));
    // The same schema again is the same version; whitespace and key order do not matter.
    let again = SchemaInput {
        schema_type: SchemaType::Json,
        schema: "{ \"required\": [\"id\"], \"properties\": {\"id\": {\"type\": \"string\"}}, \"type\": \"object\" }".into(),
    };
    assert_eq!(r.register("orders-value", &again).unwrap().version, 1);
    // The same schema under another subject keeps its id.
    let other = r.register("order.placed", &order("")).unwrap();
    assert_eq!((other.version, other.schema.id), (1, 1));
    let v2 = r.register("orders-value", &order("discount")).unwrap();
    assert_eq!((v2.version, v2.schema.id), (2, 2));
    assert_eq!(
        r.version("orders-value", VersionRef::Latest, false)
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        r.lookup("orders-value", &order(""), false).unwrap().version,
        1
    );
    assert_eq!(code(r.lookup("orders-value", &order("tax"), false)), 40403);
    assert_eq!(code(r.lookup("nope", &order(""), false)), 40401);
    assert_eq!(
        code(r.version("orders-value", VersionRef::Number(9), false)),
        40402
    );
    assert_eq!(code(r.schema(99)), 40403);
    assert_eq!(
        r.subjects("", false, false),
        ["order.placed", "orders-value"]
    );
    assert_eq!(r.subjects("order.", false, false), ["order.placed"]);
    assert_eq!(
        r.versions_of_schema(1, false).unwrap(),
        [("order.placed".into(), 1), ("orders-value".into(), 1)]
    );
    // Refusals name what is wrong.
    assert_eq!(code(r.register("", &order(""))), 42208);
    assert_eq!(
        code(r.register(
            "s",
            &SchemaInput {
                schema_type: SchemaType::Json,
                schema: "{".into()
            }
        )),
        42201
    );
    assert_eq!(code(r.register("s", &input(json!({"type": 7})))), 42201);
    assert_eq!(
        code(r.register("s", &input(json!({"$ref": "https://example.com/x.json"})))),
        42201
    );
    assert_eq!(code(SchemaType::parse(Some("AVRO"))), 42201);
    assert_eq!(code(VersionRef::parse("0")), 42202);
}

#[test]
fn registration_is_held_to_the_subjects_level_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    r.register("pay", &order("")).unwrap();
    let required = input(
        json!({"type": "object", "properties": {"id": {"type": "string"}, "currency": {"type": "string"}}, "required": ["id", "currency"]}),
    );
    let e = r.register("pay", &required).unwrap_err();
    assert_eq!(e.error_code(), 409);
    assert_eq!(e.http_status(), 409);
    assert!(
        e.to_string()
            .contains("#/properties/currency: required_added"),
        "{e}"
    );
    // The check endpoint answers the same without registering.
    let (level, verdict) = r.check("pay", Some(VersionRef::Latest), &required).unwrap();
    assert_eq!(level, Level::Backward);
    assert!(!verdict.compatible());
    // Under NONE for this subject only, it goes in.
    r.set_config(Some("pay"), Level::None).unwrap();
    assert_eq!(r.config(Some("pay"), false).unwrap(), Level::None);
    assert_eq!(r.register("pay", &required).unwrap().version, 2);
    assert_eq!(code(r.config(Some("other"), false)), 40408);
    assert_eq!(r.config(Some("other"), true).unwrap(), Level::Backward);
    r.set_config(None, Level::Full).unwrap();
    assert_eq!(r.config(Some("other"), true).unwrap(), Level::Full);
    assert_eq!(r.delete_config(Some("pay")).unwrap(), Level::None);
    assert_eq!(r.config(Some("pay"), true).unwrap(), Level::Full);
    assert_eq!(r.delete_config(None).unwrap(), Level::Full);
    assert_eq!(r.config(None, true).unwrap(), Level::Backward);
}

#[test]
fn soft_then_hard_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    r.register("s", &order("")).unwrap();
    r.register("s", &order("a")).unwrap();
    assert_eq!(
        code(r.delete_version("s", VersionRef::Number(1), true)),
        40407
    );
    assert_eq!(
        r.delete_version("s", VersionRef::Number(1), false).unwrap(),
        1
    );
    assert_eq!(
        code(r.delete_version("s", VersionRef::Number(1), false)),
        40406
    );
    assert_eq!(r.versions("s", false, false).unwrap(), [2]);
    assert_eq!(r.versions("s", true, false).unwrap(), [1, 2]);
    assert_eq!(r.versions("s", false, true).unwrap(), [1]);
    // A soft-deleted version's schema is still readable by id, and by version with deleted=true.
    assert_eq!(r.schema(1).unwrap().id, 1);
    assert!(r.version("s", VersionRef::Number(1), true).unwrap().deleted);
    assert_eq!(code(r.version("s", VersionRef::Number(1), false)), 40402);
    assert_eq!(code(r.delete_subject("s", true)), 40405);
    assert_eq!(r.delete_subject("s", false).unwrap(), [2]);
    assert_eq!(code(r.delete_subject("s", false)), 40404);
    assert!(r.subjects("", false, false).is_empty());
    assert_eq!(r.subjects("", true, false), ["s"]);
    assert_eq!(r.subjects("", false, true), ["s"]);
    assert_eq!(r.delete_subject("s", true).unwrap(), [1, 2]);
    assert_eq!(code(r.versions("s", true, false)), 40401);
    assert_eq!(code(r.schema(1)), 40403);
    // Registering again starts a new history; the identical schema keeps its id.
    let back = r.register("s", &order("")).unwrap();
    assert_eq!((back.version, back.schema.id), (1, 1));
}

/// Everything a client can observe, for comparing two registries.
fn observe(r: &Registry) -> String {
    let mut out = String::new();
    for s in r.subjects("", true, false) {
        out += &format!("{s}: level {:?}\n", r.config(Some(&s), false).ok());
        for v in r.versions(&s, true, false).unwrap() {
            let got = r.version(&s, VersionRef::Number(v), true).unwrap();
            out += &format!(
                "  v{v} id {} deleted {} {}\n",
                got.schema.id, got.deleted, got.schema.schema
            );
        }
    }
    out += &format!("global {:?}\n", r.config(None, true).ok());
    out
}

#[derive(Clone, Debug)]
enum Op {
    Register(usize, usize),
    SoftDeleteVersion(usize, u32),
    HardDeleteVersion(usize, u32),
    SoftDeleteSubject(usize),
    HardDeleteSubject(usize),
    Level(Option<usize>, usize),
    ClearLevel(Option<usize>),
}

const SUBJECTS: [&str; 3] = ["a-value", "order.placed", "b"];

fn schema_n(n: usize) -> SchemaInput {
    let mut props = serde_json::Map::new();
    for i in 0..=n {
        props.insert(format!("p{i}"), json!({"type": "string"}));
    }
    input(json!({"type": "object", "properties": props}))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..6usize).prop_map(|(s, n)| Op::Register(s, n)),
        1 => (0..3usize, 1..5u32).prop_map(|(s, v)| Op::SoftDeleteVersion(s, v)),
        1 => (0..3usize, 1..5u32).prop_map(|(s, v)| Op::HardDeleteVersion(s, v)),
        1 => (0..3usize).prop_map(Op::SoftDeleteSubject),
        1 => (0..3usize).prop_map(Op::HardDeleteSubject),
        1 => (proptest::option::of(0..3usize), 0..7usize).prop_map(|(s, l)| Op::Level(s, l)),
        1 => proptest::option::of(0..3usize).prop_map(Op::ClearLevel),
    ]
}

fn run(r: &Registry, op: &Op) {
    let _ = match op {
        Op::Register(s, n) => r.register(SUBJECTS[*s], &schema_n(*n)).map(|_| ()),
        Op::SoftDeleteVersion(s, v) => r
            .delete_version(SUBJECTS[*s], VersionRef::Number(*v), false)
            .map(|_| ()),
        Op::HardDeleteVersion(s, v) => r
            .delete_version(SUBJECTS[*s], VersionRef::Number(*v), true)
            .map(|_| ()),
        Op::SoftDeleteSubject(s) => r.delete_subject(SUBJECTS[*s], false).map(|_| ()),
        Op::HardDeleteSubject(s) => r.delete_subject(SUBJECTS[*s], true).map(|_| ()),
        Op::Level(s, l) => r.set_config(s.map(|s| SUBJECTS[s]), Level::ALL[*l]),
        Op::ClearLevel(s) => r.delete_config(s.map(|s| SUBJECTS[s])).map(|_| ()),
    };
}

fn copy_cut(from: &Path, to: &Path, len: usize) {
    let bytes = std::fs::read(Registry::path_in(from)).unwrap();
    let path = Registry::path_in(to);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &bytes[..len.min(bytes.len())]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any sequence of changes, a reopened registry (replayed, or
    /// compacted into a snapshot and replayed) answers exactly as the live one.
    #[test]
    fn a_reopened_or_compacted_registry_answers_as_the_live_one(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let live = Registry::open(dir.path()).unwrap();
        for o in &ops {
            run(&live, o);
        }
        let expected = observe(&live);
        drop(live);
        let reopened = Registry::open(dir.path()).unwrap();
        prop_assert_eq!(observe(&reopened), expected.clone());
        drop(reopened);
        let compacted_dir = tempfile::tempdir().unwrap();
        copy_cut(dir.path(), compacted_dir.path(), usize::MAX);
        let compacted = Registry::open_compacted(compacted_dir.path()).unwrap();
        prop_assert_eq!(observe(&compacted), expected.clone());
        // And the snapshot itself reopens to the same.
        drop(compacted);
        prop_assert_eq!(observe(&Registry::open(compacted_dir.path()).unwrap()), expected);
    }
}

/// A crash leaves a prefix of the journal: cut at every byte, the registry
/// opens to the state after the last whole change, then takes changes again.
#[test]
fn a_journal_cut_at_any_byte_opens_to_its_last_whole_change() {
    let dir = tempfile::tempdir().unwrap();
    let live = Registry::open(dir.path()).unwrap();
    let journal = Registry::path_in(dir.path());
    // The state after each change, and the journal's length then.
    let mut states = vec![(
        std::fs::metadata(&journal).unwrap().len() as usize,
        observe(&live),
    )];
    let ops = [
        Op::Register(0, 0),
        Op::Register(0, 1),
        Op::Level(Some(1), 3),
        Op::Register(1, 2),
        Op::SoftDeleteVersion(0, 1),
        Op::Register(2, 0),
        Op::SoftDeleteSubject(2),
        Op::HardDeleteSubject(2),
        Op::Level(None, 4),
    ];
    for o in &ops {
        run(&live, o);
        states.push((
            std::fs::metadata(&journal).unwrap().len() as usize,
            observe(&live),
        ));
    }
    drop(live);
    let total = states.last().unwrap().0;
    for cut in 0..=total {
        let at = tempfile::tempdir().unwrap();
        copy_cut(dir.path(), at.path(), cut);
        let r = Registry::open(at.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let expected = &states
            .iter()
            .rev()
            .find(|(len, _)| *len <= cut)
            .map_or(&states[0].1, |(_, s)| s);
        assert_eq!(&observe(&r), *expected, "cut at {cut}");
        // The torn tail was cut off: the next change lands whole.
        r.set_config(Some("after"), Level::Full).unwrap();
        drop(r);
        let r = Registry::open(at.path()).unwrap();
        assert_eq!(
            r.config(Some("after"), false).unwrap(),
            Level::Full,
            "cut at {cut}"
        );
    }
}

#[test]
fn damage_is_refused_with_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = Registry::open(dir.path()).unwrap();
        r.register("s", &order("")).unwrap();
    }
    let path = Registry::path_in(dir.path());
    let good = std::fs::read(&path).unwrap();
    // Another magic, another format version.
    let mut bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&path, &bad).unwrap();
    let e = Registry::open(dir.path()).unwrap_err();
    assert!(matches!(e, OpenError::Damaged { offset: 0, .. }), "{e}");
    let mut bad = good.clone();
    bad[4] = 9;
    std::fs::write(&path, &bad).unwrap();
    let e = Registry::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("format version 9"), "{e}");
    // A frame whose checksum holds but whose change makes no sense.
    let mut bad = good[..16].to_vec();
    tidings_log::format::frame(
        &mut bad,
        br#"{"op":"version","subject":"s","version":1,"id":7}"#,
    );
    std::fs::write(&path, &bad).unwrap();
    let e = Registry::open(dir.path()).unwrap_err();
    assert!(matches!(e, OpenError::Damaged { offset: 16, .. }), "{e}");
    assert!(e.to_string().contains("unknown schema id 7"), "{e}");
    let mut bad = good[..16].to_vec();
    tidings_log::format::frame(&mut bad, br#"{"op":"rename"}"#);
    std::fs::write(&path, &bad).unwrap();
    let e = Registry::open(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("a change this build does not read"),
        "{e}"
    );
}
