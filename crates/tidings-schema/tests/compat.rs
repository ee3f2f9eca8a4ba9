//! The compatibility check: every level on the cases registry users report,
//! each answer with its path and rule, and a property test holding the check
//! to the validator — whatever it proves a reader reads, the reader accepts.

use proptest::prelude::*;
use serde_json::{json, Value};
use tidings_schema::compat::{check, reads, Direction, Level, Rule};
use tidings_schema::JsonSchema;

/// (direction, path, rule) of every incompatibility of `new` after `old`.
fn found(level: Level, old: &Value, new: &Value) -> Vec<(Direction, String, Rule)> {
    let v = check(level, new, &[(1, old)]);
    v.incompatibilities
        .iter()
        .map(|i| (i.direction, i.finding.path.clone(), i.finding.rule))
        .collect()
}

fn order(props: Value, required: &[&str], extra: Option<Value>) -> Value {
    let mut s = json!({"type": "object", "properties": props, "required": required});
    if let Some(e) = extra {
        s["additionalProperties"] = e;
    }
    s
}

const B: Direction = Direction::Backward;
const F: Direction = Direction::Forward;

fn at(p: &str) -> String {
    format!("#/properties/{p}")
}

#[test]
fn an_optional_property_added_to_an_open_model_is_compatible_every_way() {
    let old = order(json!({"id": {"type": "string"}}), &["id"], None);
    let new = order(
        json!({"id": {"type": "string"}, "discount": {"type": "number"}}),
        &["id"],
        None,
    );
    for level in Level::ALL {
        assert_eq!(found(level, &old, &new), [], "{level}");
    }
    // The answer says what it rests on.
    let v = check(Level::Backward, &new, &[(1, &old)]);
    assert_eq!(v.notes.len(), 1, "{:?}", v.notes);
    assert_eq!(v.notes[0].finding.path, at("discount"));
    assert_eq!(v.notes[0].finding.rule, Rule::UndeclaredAssumedAbsent);
}

#[test]
fn an_optional_property_added_to_a_closed_model_breaks_forward_only() {
    let old = order(
        json!({"id": {"type": "string"}}),
        &["id"],
        Some(json!(false)),
    );
    let new = order(
        json!({"id": {"type": "string"}, "discount": {"type": "number"}}),
        &["id"],
        Some(json!(false)),
    );
    assert_eq!(found(Level::Backward, &old, &new), []);
    let forward = [(F, at("discount"), Rule::PropertyRejected)];
    assert_eq!(found(Level::Forward, &old, &new), forward);
    assert_eq!(found(Level::Full, &old, &new), forward);
    assert_eq!(found(Level::None, &old, &new), []);
}

#[test]
fn a_required_property_added_breaks_backward() {
    let old = order(json!({"id": {"type": "string"}}), &["id"], None);
    let new = order(
        json!({"id": {"type": "string"}, "currency": {"type": "string"}}),
        &["id", "currency"],
        None,
    );
    let backward = [(B, at("currency"), Rule::RequiredAdded)];
    assert_eq!(found(Level::Backward, &old, &new), backward);
    assert_eq!(found(Level::Forward, &old, &new), []);
    assert_eq!(found(Level::Full, &old, &new), backward);
    // Making an optional property required is the same break.
    let optional = order(
        json!({"id": {"type": "string"}, "currency": {"type": "string"}}),
        &["id"],
        None,
    );
    assert_eq!(found(Level::Backward, &optional, &new), backward);
}

#[test]
fn a_property_removed_breaks_only_a_closed_reader_or_one_that_required_it() {
    let old = order(
        json!({"id": {"type": "string"}, "note": {"type": "string"}}),
        &["id"],
        None,
    );
    let open = order(json!({"id": {"type": "string"}}), &["id"], None);
    let closed = order(
        json!({"id": {"type": "string"}}),
        &["id"],
        Some(json!(false)),
    );
    assert_eq!(found(Level::Full, &old, &open), []);
    assert_eq!(
        found(Level::Backward, &old, &closed),
        [(B, at("note"), Rule::PropertyRejected)]
    );
    // A required property removed: old readers miss it.
    let required = order(
        json!({"id": {"type": "string"}, "sku": {"type": "string"}}),
        &["id", "sku"],
        None,
    );
    assert_eq!(found(Level::Backward, &required, &open), []);
    assert_eq!(
        found(Level::Forward, &required, &open),
        [(F, at("sku"), Rule::RequiredAdded)]
    );
}

#[test]
fn a_type_widened_breaks_forward_and_a_type_changed_breaks_both() {
    let int = order(json!({"amount": {"type": "integer"}}), &["amount"], None);
    let num = order(json!({"amount": {"type": "number"}}), &["amount"], None);
    let text = order(json!({"amount": {"type": "string"}}), &["amount"], None);
    assert_eq!(found(Level::Backward, &int, &num), []);
    assert_eq!(
        found(Level::Forward, &int, &num),
        [(F, at("amount"), Rule::TypeNarrowed)]
    );
    assert_eq!(
        found(Level::Full, &int, &text),
        [
            (B, at("amount"), Rule::TypeNarrowed),
            (F, at("amount"), Rule::TypeNarrowed)
        ]
    );
    let v = check(Level::Forward, &num, &[(1, &int)]);
    assert_eq!(
        v.incompatibilities[0].finding.detail,
        "the writer sends any number; the reader accepts only integers"
    );
}

#[test]
fn an_enum_value_added_breaks_forward_and_one_removed_breaks_backward() {
    let two = order(
        json!({"status": {"enum": ["placed", "paid"]}}),
        &["status"],
        None,
    );
    let three = order(
        json!({"status": {"enum": ["placed", "paid", "refunded"]}}),
        &["status"],
        None,
    );
    assert_eq!(found(Level::Backward, &two, &three), []);
    assert_eq!(
        found(Level::Forward, &two, &three),
        [(F, at("status"), Rule::ValueRejected)]
    );
    assert_eq!(
        found(Level::Backward, &three, &two),
        [(B, at("status"), Rule::ValueRejected)]
    );
    let v = check(Level::Backward, &two, &[(1, &three)]);
    assert!(
        v.incompatibilities[0]
            .finding
            .detail
            .contains("\"refunded\""),
        "{}",
        v.incompatibilities[0]
    );
    // An enum where any string was: old data may hold any string.
    let free = order(json!({"status": {"type": "string"}}), &["status"], None);
    assert_eq!(
        found(Level::Backward, &free, &two),
        [(B, at("status"), Rule::EnumNarrowed)]
    );
}

#[test]
fn nested_changes_are_reported_at_their_path() {
    let line = |qty: Value| {
        json!({"type": "object", "properties": {"lines": {"type": "array", "items": {
            "type": "object", "properties": {"qty": qty}, "required": ["qty"]}}}})
    };
    let old = line(json!({"type": "integer"}));
    let new = line(json!({"type": "integer", "minimum": 1}));
    assert_eq!(
        found(Level::Backward, &old, &new),
        [(
            B,
            "#/properties/lines/items/properties/qty".into(),
            Rule::RangeNarrowed
        )]
    );
    assert_eq!(found(Level::Forward, &old, &new), []);
}

#[test]
fn bounds_lengths_patterns_formats_and_multiples() {
    let s = |extra: Value| {
        let mut leaf = json!({"type": "string"});
        leaf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        order(json!({"v": leaf}), &["v"], None)
    };
    let n = |extra: Value| {
        let mut leaf = json!({"type": "number"});
        leaf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        order(json!({"v": leaf}), &["v"], None)
    };
    let cases: Vec<(Value, Value, Rule)> = vec![
        (
            s(json!({"maxLength": 10})),
            s(json!({"maxLength": 5})),
            Rule::LengthNarrowed,
        ),
        (
            s(json!({})),
            s(json!({"minLength": 1})),
            Rule::LengthNarrowed,
        ),
        (
            s(json!({})),
            s(json!({"pattern": "^[A-Z]+$"})),
            Rule::PatternChanged,
        ),
        (
            s(json!({})),
            s(json!({"format": "email"})),
            Rule::FormatChanged,
        ),
        (
            n(json!({"maximum": 10})),
            n(json!({"exclusiveMaximum": 10})),
            Rule::RangeNarrowed,
        ),
        (
            n(json!({"minimum": 0})),
            n(json!({"minimum": 1})),
            Rule::RangeNarrowed,
        ),
        (
            n(json!({"multipleOf": 0.5})),
            n(json!({"multipleOf": 1})),
            Rule::MultipleOfChanged,
        ),
        (
            n(json!({})),
            n(json!({"multipleOf": 2})),
            Rule::MultipleOfChanged,
        ),
    ];
    for (old, new, rule) in cases {
        assert_eq!(
            found(Level::Backward, &old, &new),
            [(B, at("v"), rule)],
            "{old} -> {new}"
        );
        assert_eq!(found(Level::Forward, &old, &new), [], "{old} -> {new}");
    }
    // A multiple of a multiple, and a bound the writer already keeps, read fine.
    assert_eq!(
        found(
            Level::Backward,
            &n(json!({"multipleOf": 4})),
            &n(json!({"multipleOf": 2}))
        ),
        []
    );
    assert_eq!(
        found(
            Level::Backward,
            &n(json!({"exclusiveMinimum": 3})),
            &n(json!({"minimum": 3}))
        ),
        []
    );
    // Draft 4's boolean exclusiveMaximum.
    assert_eq!(
        found(
            Level::Backward,
            &n(json!({"maximum": 10})),
            &n(json!({"maximum": 10, "exclusiveMaximum": true}))
        ),
        [(B, at("v"), Rule::RangeNarrowed)]
    );
}

#[test]
fn arrays_items_counts_and_uniqueness() {
    let a = |extra: Value| {
        let mut s = json!({"type": "array", "items": {"type": "string"}});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    assert_eq!(
        found(Level::Backward, &a(json!({})), &a(json!({"minItems": 1}))),
        [(B, "#".into(), Rule::ItemsNarrowed)]
    );
    assert_eq!(
        found(
            Level::Backward,
            &a(json!({})),
            &a(json!({"uniqueItems": true}))
        ),
        [(B, "#".into(), Rule::UniqueItemsAdded)]
    );
    assert_eq!(
        found(
            Level::Backward,
            &a(json!({})),
            &json!({"type": "array", "items": {"type": "integer"}})
        ),
        [(B, "#/items".into(), Rule::TypeNarrowed)]
    );
}

#[test]
fn nullable_by_type_list_or_any_of_reads_the_plain_type() {
    let plain = order(json!({"email": {"type": "string"}}), &["email"], None);
    let listed = order(
        json!({"email": {"type": ["string", "null"]}}),
        &["email"],
        None,
    );
    let alternatives = order(
        json!({"email": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
        &["email"],
        None,
    );
    let exclusive = order(
        json!({"email": {"oneOf": [{"type": "string"}, {"type": "null"}]}}),
        &["email"],
        None,
    );
    for nullable in [&listed, &alternatives, &exclusive] {
        assert_eq!(found(Level::Backward, &plain, nullable), [], "{nullable}");
        assert_eq!(
            found(Level::Forward, &plain, nullable),
            [(F, at("email"), Rule::TypeNarrowed)],
            "{nullable}"
        );
        // Each nullable form reads the others.
        for other in [&listed, &alternatives, &exclusive] {
            assert_eq!(
                found(Level::Full, nullable, other),
                [],
                "{nullable} / {other}"
            );
        }
    }
    // oneOf whose branches overlap cannot be shown to accept exactly once.
    let overlapping = order(
        json!({"email": {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 5}]}}),
        &["email"],
        None,
    );
    assert_eq!(
        found(Level::Backward, &plain, &overlapping),
        [(B, at("email"), Rule::NotProven)]
    );
}

#[test]
fn references_are_followed_and_recursive_schemas_end() {
    let tree = |leaf: &str| {
        json!({
            "$defs": {"node": {"type": "object", "properties": {
                "value": {"type": leaf},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}},
            "$ref": "#/$defs/node"
        })
    };
    assert_eq!(found(Level::Full, &tree("integer"), &tree("integer")), []);
    assert_eq!(
        found(Level::Backward, &tree("integer"), &tree("number")),
        []
    );
    assert_eq!(
        found(Level::Forward, &tree("integer"), &tree("number")),
        [(F, at("value"), Rule::TypeNarrowed)]
    );
    // The same text naming different definitions is not taken as equal.
    let money = |t: &str| {
        json!({"$defs": {"money": {"type": t}}, "type": "object",
               "properties": {"total": {"$ref": "#/$defs/money"}}})
    };
    assert_eq!(
        found(Level::Backward, &money("number"), &money("integer")),
        [(B, at("total"), Rule::TypeNarrowed)]
    );
}

#[test]
fn constructs_the_check_does_not_model_are_not_proven_unless_unchanged() {
    let with_not = order(
        json!({"code": {"type": "string", "not": {"const": "x"}}}),
        &["code"],
        None,
    );
    let without = order(json!({"code": {"type": "string"}}), &["code"], None);
    assert_eq!(
        found(Level::Backward, &without, &with_not),
        [(B, at("code"), Rule::NotProven)]
    );
    // On the writer's side it only narrows what is sent.
    assert_eq!(found(Level::Forward, &without, &with_not), []);
    assert_eq!(found(Level::Full, &with_not, &with_not), []);
}

#[test]
fn transitive_levels_check_every_version_and_name_the_one_that_breaks() {
    let v1 = order(
        json!({"id": {"type": "string"}}),
        &["id"],
        Some(json!(false)),
    );
    let v2 = order(
        json!({"id": {"type": "string"}, "tag": {"type": "string"}}),
        &["id"],
        Some(json!(false)),
    );
    // v3 drops `tag` again: it reads v2's data only if open; closed, it does not.
    let v3 = order(
        json!({"id": {"type": "string"}, "tag": {"type": "integer"}}),
        &["id"],
        Some(json!(false)),
    );
    let history = [(1, &v1), (2, &v2)];
    let latest = check(Level::Backward, &v3, &history);
    assert_eq!(
        latest.incompatibilities.len(),
        1,
        "{:?}",
        latest.incompatibilities
    );
    assert_eq!(latest.incompatibilities[0].version, 2);
    let all = check(Level::ForwardTransitive, &v3, &history);
    let versions: Vec<u32> = all.incompatibilities.iter().map(|i| i.version).collect();
    assert_eq!(versions, [2, 1], "{:?}", all.incompatibilities);
    assert!(check(Level::Forward, &v2, &[(1, &v1)])
        .incompatibilities
        .iter()
        .all(|i| i.finding.rule == Rule::PropertyRejected));
    assert!(check(Level::None, &v3, &history).compatible());
    assert_eq!(
        latest.incompatibilities[0].to_string(),
        "the new schema cannot read data written with version 2: #/properties/tag: type_narrowed: the writer sends string; the reader accepts only integer"
    );
}

#[test]
fn boolean_schemas_and_additional_property_schemas() {
    assert!(reads(&json!(true), &json!({"type": "string"})).reads());
    assert!(reads(&json!({"type": "string"}), &json!(false)).reads());
    assert_eq!(
        reads(&json!(false), &json!({"type": "string"})).findings[0].rule,
        Rule::AcceptsNothing
    );
    // A writer whose additionalProperties is a schema sends other names.
    let typed_extra = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let closed = json!({"type": "object", "additionalProperties": false});
    let ints = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    assert_eq!(
        reads(&closed, &typed_extra).findings[0].rule,
        Rule::AdditionalRejected
    );
    let r = reads(&ints, &typed_extra);
    assert_eq!(r.findings[0].path, "#/additionalProperties");
    assert_eq!(r.findings[0].rule, Rule::TypeNarrowed);
    let declared = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let r = reads(&declared, &typed_extra);
    assert_eq!(
        (r.findings[0].path.as_str(), r.findings[0].rule),
        ("#/properties/n", Rule::TypeNarrowed)
    );
}

// ---------------------------------------------------------------------------
// Soundness against the validator.

/// Closes every open content model: the writer as the check reads it (sending
/// only what it declares).
fn closed(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let v = match k.as_str() {
                    "properties" => Value::Object(
                        v.as_object()
                            .unwrap()
                            .iter()
                            .map(|(n, s)| (n.clone(), closed(s)))
                            .collect(),
                    ),
                    "items" | "additionalProperties" => closed(v),
                    "anyOf" | "oneOf" | "allOf" => {
                        Value::Array(v.as_array().unwrap().iter().map(closed).collect())
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            if !matches!(
                m.get("additionalProperties"),
                Some(Value::Object(_)) | Some(Value::Bool(false))
            ) {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "string"})),
        (0u64..4).prop_map(|n| json!({"type": "string", "maxLength": n})),
        (0u64..3).prop_map(|n| json!({"type": "string", "minLength": n})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "number"})),
        (-2i64..3).prop_map(|n| json!({"type": "integer", "minimum": n})),
        (-2i64..3).prop_map(|n| json!({"type": "number", "exclusiveMaximum": n})),
        (-2i64..3).prop_map(|n| json!({"type": "number", "maximum": n})),
        (-2i64..3).prop_map(|n| json!({"type": "integer", "exclusiveMinimum": n})),
        (1u64..4).prop_map(|n| json!({"type": "integer", "multipleOf": n})),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": ["string", "null"]})),
        Just(json!({"anyOf": [{"type": "integer"}, {"type": "null"}]})),
        Just(json!({"oneOf": [{"type": "string"}, {"type": "integer"}]})),
        Just(json!({"enum": ["a", "b", 1]})),
        Just(json!({"enum": ["a"]})),
        Just(json!({"const": 2})),
        Just(json!({})),
        Just(json!({"type": "array", "items": {"type": "integer"}})),
        (0u64..3).prop_map(|n| json!({"type": "array", "maxItems": n})),
        Just(json!({"type": "array", "uniqueItems": true})),
    ]
}

fn object_schema() -> impl Strategy<Value = Value> {
    let names = ["a", "b", "c"];
    (
        proptest::collection::vec(proptest::option::of(leaf()), 3),
        proptest::collection::vec(any::<bool>(), 3),
        prop_oneof![
            Just(None),
            Just(Some(json!(false))),
            Just(Some(json!(true))),
            Just(Some(json!({"type": "string"}))),
        ],
        proptest::option::of(0u64..3),
    )
        .prop_map(move |(props, req, extra, max)| {
            let mut properties = serde_json::Map::new();
            let mut required = Vec::new();
            for (i, p) in props.into_iter().enumerate() {
                if let Some(p) = p {
                    properties.insert(names[i].into(), p);
                    if req[i] {
                        required.push(names[i]);
                    }
                }
            }
            let mut s = json!({"type": "object", "properties": properties, "required": required});
            if let Some(e) = extra {
                s["additionalProperties"] = e;
            }
            if let Some(m) = max {
                s["maxProperties"] = json!(m);
            }
            s
        })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        Just(json!(1.5)),
        Just(json!(-0.5)),
        prop_oneof![Just(""), Just("a"), Just("b"), Just("abcd"), Just("xyz")]
            .prop_map(|s| json!(s)),
    ]
}

fn instance() -> impl Strategy<Value = Value> {
    let value = scalar().prop_recursive(1, 6, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(Value::Array)
    });
    proptest::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")].prop_map(String::from),
        value,
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever the check proves, the validator agrees with: every instance the
    /// writer (sending what it declares) produces, the reader accepts.
    #[test]
    fn what_the_check_proves_the_validator_confirms(
        reader in object_schema(),
        writer in object_schema(),
        instances in proptest::collection::vec(instance(), 40),
    ) {
        let reading = reads(&reader, &writer);
        if reading.reads() {
            let sent = JsonSchema::compile(closed(&writer)).unwrap();
            let read = JsonSchema::compile(reader.clone()).unwrap();
            for i in &instances {
                if sent.is_valid(i) {
                    prop_assert!(read.is_valid(i), "reader {reader} rejects {i}, which writer {writer} sends");
                }
            }
        }
    }

    /// A schema reads its own data with every open model closed (so the check
    /// walks it rather than matching equal text).
    #[test]
    fn every_schema_reads_its_closed_self(s in object_schema()) {
        let r = reads(&s, &closed(&s));
        prop_assert!(r.reads(), "{s}: {:?}", r.findings);
    }
}
