//! Whether one JSON Schema reads everything another writes, with the reason
//! for every "no".
//!
//! A **reader** schema reads a **writer** schema's data when every instance the
//! writer produces is valid under the reader. BACKWARD asks whether the new
//! schema reads data written under the old one; FORWARD asks the reverse; FULL
//! both. Each answer is a list of [`Finding`]s, each with the schema path it
//! concerns and the [`Rule`] it breaks; an empty list is a proof.
//!
//! What a writer produces is what it *declares*: a writer whose content model
//! is open (`additionalProperties` absent or `true`) is taken to send only the
//! properties it lists. This is the rule that lets a new version add an
//! optional property to an open model — the change Confluent's registry
//! refuses, because the old model would have allowed that name with any value.
//! Where the rule decides an answer, it is returned as a note
//! ([`Rule::UndeclaredAssumedAbsent`]). A writer that declares
//! `additionalProperties` as a schema does send other names, and the reader must
//! accept them.
//!
//! The check is sound: it never proves a reader accepts what it does not (under
//! the rule above). It is not complete: constructs it does not model on the
//! reader's side (`not`, `if`/`then`/`else`, `propertyNames`, `contains`, tuple
//! `items`, remote `$ref`, …) pass only where the writer carries the same
//! keyword with the same value, and are otherwise reported as
//! [`Rule::NotProven`]. A writer's keywords the check does not model only make
//! the writer's data smaller and are ignored. Enumerated writers (`enum`,
//! `const`, `null`, `boolean`) are decided exactly, each value run through the
//! reader's validator.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{COMPAT_DEPTH_MAX, COMPAT_FINDINGS_MAX};
use crate::validate;

/// A compatibility level, as Confluent's registry names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// The new schema reads data written with the latest version.
    Backward,
    /// The new schema reads data written with every version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
    /// No check.
    None,
}

impl Level {
    /// Every level, in Confluent's order.
    pub const ALL: [Level; 7] = [
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
        Level::None,
    ];

    /// The level's name, as the REST API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    /// The level named `s` (any case).
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether new schemas must read old data.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Whether old schemas must read new data.
    pub fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Whether the check runs against every version rather than the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The writer sends a JSON type the reader does not accept.
    TypeNarrowed,
    /// The reader requires a property the writer does not always send.
    RequiredAdded,
    /// The writer sends a property the reader's closed content model rejects.
    PropertyRejected,
    /// The writer sends undeclared properties (its `additionalProperties` is a
    /// schema) the reader rejects.
    AdditionalRejected,
    /// The reader accepts only listed values and the writer is not limited to them.
    EnumNarrowed,
    /// A value the writer may send (from its `enum` or `const`) fails the reader.
    ValueRejected,
    /// A numeric bound of the reader is tighter than the writer's.
    RangeNarrowed,
    /// A string length bound of the reader is tighter than the writer's.
    LengthNarrowed,
    /// An array length bound of the reader is tighter than the writer's.
    ItemsNarrowed,
    /// A property count bound of the reader is tighter than the writer's.
    PropertyCountNarrowed,
    /// The reader requires unique items and the writer does not.
    UniqueItemsAdded,
    /// The reader's `pattern` differs from the writer's.
    PatternChanged,
    /// The reader's `format` differs from the writer's.
    FormatChanged,
    /// The reader's `multipleOf` does not divide the writer's.
    MultipleOfChanged,
    /// The reader is the `false` schema.
    AcceptsNothing,
    /// The reader uses a construct the check does not model, differently from
    /// the writer: inclusion could not be shown either way.
    NotProven,
    /// A note, not an incompatibility: the reader declares a property the
    /// writer's open content model leaves undeclared, and the writer is taken
    /// not to send it.
    UndeclaredAssumedAbsent,
}

impl Rule {
    /// The rule's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::TypeNarrowed => "type_narrowed",
            Rule::RequiredAdded => "required_added",
            Rule::PropertyRejected => "property_rejected",
            Rule::AdditionalRejected => "additional_rejected",
            Rule::EnumNarrowed => "enum_narrowed",
            Rule::ValueRejected => "value_rejected",
            Rule::RangeNarrowed => "range_narrowed",
            Rule::LengthNarrowed => "length_narrowed",
            Rule::ItemsNarrowed => "items_narrowed",
            Rule::PropertyCountNarrowed => "property_count_narrowed",
            Rule::UniqueItemsAdded => "unique_items_added",
            Rule::PatternChanged => "pattern_changed",
            Rule::FormatChanged => "format_changed",
            Rule::MultipleOfChanged => "multiple_of_changed",
            Rule::AcceptsNothing => "accepts_nothing",
            Rule::NotProven => "not_proven",
            Rule::UndeclaredAssumedAbsent => "undeclared_assumed_absent",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a reader does not read a writer's data (or a note on how the
/// answer was reached).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Where in the schema, as a JSON pointer fragment through `properties`,
    /// `items`, `additionalProperties`, … (`#` is the root).
    pub path: String,
    /// The rule.
    pub rule: Rule,
    /// What the writer sends and what the reader does with it.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.rule, self.detail)
    }
}

/// The answer to "does this reader read that writer's data?".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Why not; empty when it does.
    pub findings: Vec<Finding>,
    /// How assumptions decided the answer.
    pub notes: Vec<Finding>,
}

impl Reading {
    /// Whether the reader reads everything the writer sends.
    pub fn reads(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Whether `reader` reads every instance `writer` produces. Both must be valid
/// schemas (the registry compiles them before asking).
pub fn reads(reader: &Value, writer: &Value) -> Reading {
    let mut c = Checker {
        reader_root: reader,
        writer_root: writer,
        findings: Vec::new(),
        notes: Vec::new(),
        visiting: Vec::new(),
        depth: 0,
        reader_map: None,
    };
    c.covers(Node::root(reader), Node::root(writer), "#");
    c.findings.truncate(COMPAT_FINDINGS_MAX);
    c.notes.truncate(COMPAT_FINDINGS_MAX);
    Reading {
        findings: c.findings,
        notes: c.notes,
    }
}

/// Which way one check of a level ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The new schema reading data written with an existing version.
    Backward,
    /// An existing version reading data written with the new schema.
    Forward,
}

/// A finding of one check against one existing version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incompatibility {
    /// The existing version checked against.
    pub version: u32,
    /// Which way.
    pub direction: Direction,
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.direction {
            Direction::Backward => "the new schema cannot read data written with",
            Direction::Forward => "data written with the new schema cannot be read by",
        };
        write!(f, "{how} version {}: {}", self.version, self.finding)
    }
}

/// The answer to a compatibility check under a level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every incompatibility; empty when compatible.
    pub incompatibilities: Vec<Incompatibility>,
    /// Notes on assumptions the answer rests on.
    pub notes: Vec<Incompatibility>,
}

impl Verdict {
    /// Whether the new schema is compatible.
    pub fn compatible(&self) -> bool {
        self.incompatibilities.is_empty()
    }
}

/// Checks `new` under `level` against `existing` (live versions, oldest first,
/// with their numbers): the latest only, or all of them for transitive levels.
pub fn check(level: Level, new: &Value, existing: &[(u32, &Value)]) -> Verdict {
    let mut verdict = Verdict::default();
    if level == Level::None {
        return verdict;
    }
    let against: &[(u32, &Value)] = if level.transitive() {
        existing
    } else {
        existing.last().map_or(&[], std::slice::from_ref)
    };
    for &(version, old) in against.iter().rev() {
        let mut record = |direction, reading: Reading| {
            let wrap = |finding| Incompatibility {
                version,
                direction,
                finding,
            };
            verdict
                .incompatibilities
                .extend(reading.findings.into_iter().map(wrap));
            verdict.notes.extend(reading.notes.into_iter().map(wrap));
        };
        if level.backward() {
            record(Direction::Backward, reads(new, old));
        }
        if level.forward() {
            record(Direction::Forward, reads(old, new));
        }
    }
    verdict.incompatibilities.truncate(COMPAT_FINDINGS_MAX);
    verdict.notes.truncate(COMPAT_FINDINGS_MAX);
    verdict
}

// ---------------------------------------------------------------------------

const SKIP_REF: u8 = 1;
const SKIP_ALL_OF: u8 = 2;
const SKIP_ANY_OF: u8 = 4;
const SKIP_ONE_OF: u8 = 8;

static TRUE: Value = Value::Bool(true);

/// Keywords that only annotate: they never decide validity.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$vocabulary",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords the check models on the reader's side.
const MODELLED: &[&str] = &[
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// A schema node: a value inside its document, the pointer to it, and the
/// keywords already accounted for by the caller.
#[derive(Clone)]
struct Node<'a> {
    value: &'a Value,
    pointer: String,
    skip: u8,
    /// Only this JSON type of the writer's data is under consideration.
    only: Option<&'static str>,
}

impl<'a> Node<'a> {
    fn root(value: &'a Value) -> Node<'a> {
        Node {
            value,
            pointer: "#".into(),
            skip: 0,
            only: None,
        }
    }

    fn detached(value: &'a Value) -> Node<'a> {
        Node {
            value,
            pointer: String::new(),
            skip: 0,
            only: None,
        }
    }

    fn skipped(key: &str, skip: u8) -> bool {
        match key {
            "$ref" => skip & SKIP_REF != 0,
            "allOf" => skip & SKIP_ALL_OF != 0,
            "anyOf" => skip & SKIP_ANY_OF != 0,
            "oneOf" => skip & SKIP_ONE_OF != 0,
            _ => false,
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        if Node::skipped(key, self.skip) {
            return None;
        }
        self.value.as_object()?.get(key)
    }

    fn keys(&self) -> impl Iterator<Item = &'a String> + '_ {
        self.value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(move |k| !Node::skipped(k, self.skip))
    }

    fn without(&self, skip: u8) -> Node<'a> {
        Node {
            skip: self.skip | skip,
            ..self.clone()
        }
    }

    fn only(&self, t: &'static str) -> Node<'a> {
        Node {
            only: Some(t),
            ..self.clone()
        }
    }

    fn child(&self, value: &'a Value, segments: &[&str]) -> Node<'a> {
        let mut pointer = String::new();
        if !self.pointer.is_empty() {
            pointer.push_str(&self.pointer);
            for s in segments {
                pointer.push('/');
                pointer.push_str(&s.replace('~', "~0").replace('/', "~1"));
            }
        }
        Node {
            value,
            pointer,
            skip: 0,
            only: None,
        }
    }

    fn map(&self, key: &str) -> Option<&'a Map<String, Value>> {
        self.get(key).and_then(Value::as_object)
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    fn count(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// The JSON types the node admits, `None` for any.
    fn types(&self) -> Option<BTreeSet<&'static str>> {
        let declared: Option<BTreeSet<&'static str>> = match self.get("type") {
            Some(Value::String(t)) => Some(TYPES.iter().copied().filter(|x| x == t).collect()),
            Some(Value::Array(ts)) => Some(
                TYPES
                    .iter()
                    .copied()
                    .filter(|x| ts.iter().any(|t| t == x))
                    .collect(),
            ),
            _ => None,
        };
        match (declared, self.only) {
            (Some(d), Some(o)) => Some(d.into_iter().filter(|t| *t == o).collect()),
            (None, Some(o)) => Some([o].into()),
            (d, None) => d,
        }
    }

    fn is_trivially_true(&self) -> bool {
        match self.value {
            Value::Bool(b) => *b,
            Value::Object(_) => self.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
            _ => false,
        }
    }
}

/// Whether `value` holds a `$ref` anywhere (so equal text may mean different
/// things in two documents).
fn has_ref(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.iter().any(|(k, v)| k == "$ref" || has_ref(v)),
        Value::Array(a) => a.iter().any(has_ref),
        _ => false,
    }
}

/// Whether JSON type `t` of the writer is accepted by the reader's type set.
fn type_accepted(t: &str, reader: &Option<BTreeSet<&'static str>>) -> bool {
    match reader {
        None => true,
        Some(r) => r.contains(t) || (t == "integer" && r.contains("number")),
    }
}

fn list(types: &BTreeSet<&str>) -> String {
    types.iter().copied().collect::<Vec<_>>().join(", ")
}

/// A numeric bound: value and whether it is exclusive.
#[derive(Clone, Copy, Debug)]
struct Bound {
    at: f64,
    exclusive: bool,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusive {
            write!(f, "{} (exclusive)", self.at)
        } else {
            write!(f, "{}", self.at)
        }
    }
}

/// The node's lower (`low`) or upper bound, drafts 4 and 6+ alike.
fn bound(n: &Node<'_>, low: bool) -> Option<Bound> {
    let (inclusive, exclusive) = if low {
        ("minimum", "exclusiveMinimum")
    } else {
        ("maximum", "exclusiveMaximum")
    };
    let mut out: Option<Bound> = None;
    let mut tighter = |b: Bound| {
        out = Some(match out {
            None => b,
            Some(o) => {
                let (ob, nb) = if low { (o.at, b.at) } else { (-o.at, -b.at) };
                if nb > ob || (nb == ob && b.exclusive) {
                    b
                } else {
                    o
                }
            }
        })
    };
    let draft4_exclusive = n.get(exclusive) == Some(&Value::Bool(true));
    if let Some(at) = n.number(inclusive) {
        tighter(Bound {
            at,
            exclusive: draft4_exclusive,
        });
    }
    if let Some(at) = n.number(exclusive) {
        tighter(Bound {
            at,
            exclusive: true,
        });
    }
    out
}

/// Whether the reader's bound admits every value within the writer's.
fn bound_admits(reader: Bound, writer: Bound, low: bool) -> bool {
    let (r, w) = if low {
        (reader.at, writer.at)
    } else {
        (-reader.at, -writer.at)
    };
    r < w || (r == w && (!reader.exclusive || writer.exclusive))
}

struct Checker<'a> {
    reader_root: &'a Value,
    writer_root: &'a Value,
    findings: Vec<Finding>,
    notes: Vec<Finding>,
    /// (reader pointer, skip, writer pointer, skip) pairs being checked: a pair
    /// met again is assumed to hold (recursive schemas).
    visiting: Vec<(String, u8, String, u8)>,
    depth: usize,
    reader_map: Option<Option<jsonschema::ValidatorMap>>,
}

impl<'a> Checker<'a> {
    fn find(&mut self, path: &str, rule: Rule, detail: impl Into<String>) {
        if self.findings.len() < COMPAT_FINDINGS_MAX {
            self.findings.push(Finding {
                path: path.to_owned(),
                rule,
                detail: detail.into(),
            });
        }
    }

    fn note(&mut self, path: &str, detail: impl Into<String>) {
        if self.notes.len() < COMPAT_FINDINGS_MAX {
            self.notes.push(Finding {
                path: path.to_owned(),
                rule: Rule::UndeclaredAssumedAbsent,
                detail: detail.into(),
            });
        }
    }

    /// Runs `f`, then takes back what it found: (findings, notes).
    fn attempt(&mut self, f: impl FnOnce(&mut Self)) -> (Vec<Finding>, Vec<Finding>) {
        let (nf, nn) = (self.findings.len(), self.notes.len());
        f(self);
        (self.findings.split_off(nf), self.notes.split_off(nn))
    }

    fn keep(&mut self, (findings, notes): (Vec<Finding>, Vec<Finding>)) {
        self.findings.extend(findings);
        self.notes.extend(notes);
        self.findings.truncate(COMPAT_FINDINGS_MAX);
        self.notes.truncate(COMPAT_FINDINGS_MAX);
    }

    /// Resolves a local `$ref` in `root`.
    fn resolve(root: &'a Value, reference: &str) -> Option<Node<'a>> {
        let fragment = reference.strip_prefix('#')?;
        let mut at = root;
        let mut pointer = String::from("#");
        if !fragment.is_empty() {
            for raw in fragment.strip_prefix('/')?.split('/') {
                pointer.push('/');
                pointer.push_str(raw);
                let segment = raw.replace("~1", "/").replace("~0", "~");
                at = match at {
                    Value::Object(m) => m.get(&segment)?,
                    Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
        }
        Some(Node {
            value: at,
            pointer,
            skip: 0,
            only: None,
        })
    }

    fn covers(&mut self, r: Node<'a>, w: Node<'a>, path: &str) {
        if self.findings.len() >= COMPAT_FINDINGS_MAX {
            return;
        }
        if self.depth >= COMPAT_DEPTH_MAX {
            self.find(
                path,
                Rule::NotProven,
                format!("schemas nest deeper than {COMPAT_DEPTH_MAX} levels"),
            );
            return;
        }
        self.depth += 1;
        self.covers_node(r, w, path);
        self.depth -= 1;
    }

    fn covers_node(&mut self, r: Node<'a>, w: Node<'a>, path: &str) {
        // The trivial schemas.
        if w.value == &Value::Bool(false) || r.is_trivially_true() {
            return;
        }
        if r.value == &Value::Bool(false) {
            self.find(
                path,
                Rule::AcceptsNothing,
                "the reader is the schema `false` and rejects every value",
            );
            return;
        }
        if r.skip == 0
            && w.skip == 0
            && r.only.is_none()
            && w.only.is_none()
            && r.value == w.value
            && !has_ref(r.value)
        {
            return;
        }

        // References, followed with a guard against recursion.
        if let Some(reference) = r.get("$ref").and_then(Value::as_str) {
            let Some(target) = Checker::resolve(self.reader_root, reference) else {
                self.find(
                    path,
                    Rule::NotProven,
                    format!("the reader's $ref {reference:?} is not a reference within the schema"),
                );
                return;
            };
            let rest = r.without(SKIP_REF);
            self.guarded(target, w.clone(), path);
            if !rest.is_trivially_true() {
                self.covers(rest, w, path);
            }
            return;
        }
        if let Some(reference) = w.get("$ref").and_then(Value::as_str) {
            // The writer's data is within its target and within its siblings:
            // covered when either is.
            let rest = w.without(SKIP_REF);
            let Some(target) = Checker::resolve(self.writer_root, reference) else {
                // An unresolvable writer reference narrows nothing we can see.
                self.covers(r, rest, path);
                return;
            };
            let target = Node {
                only: w.only,
                ..target
            };
            let via_target = self.attempt(|c| c.guarded(r.clone(), target, path));
            if via_target.0.is_empty() || rest.is_trivially_true() {
                self.keep(via_target);
                return;
            }
            let via_rest = self.attempt(|c| c.covers(r, rest, path));
            self.keep(if via_rest.0.is_empty() {
                via_rest
            } else {
                via_target
            });
            return;
        }

        // The writer's combinators: its data lies within its base and within
        // each conjunct, and within the union of its alternatives.
        if let Some(branches) = w
            .get("anyOf")
            .or_else(|| w.get("oneOf"))
            .and_then(Value::as_array)
        {
            let key = if w.get("anyOf").is_some() {
                "anyOf"
            } else {
                "oneOf"
            };
            let base = w.without(SKIP_ANY_OF | SKIP_ONE_OF);
            let via_base = self.attempt(|c| c.covers(r.clone(), base.clone(), path));
            if via_base.0.is_empty() {
                self.keep(via_base);
                return;
            }
            let via_branches = self.attempt(|c| {
                for (i, b) in branches.iter().enumerate() {
                    let mut branch = w.child(b, &[key, &i.to_string()]);
                    branch.only = w.only;
                    c.covers(r.clone(), branch, path);
                }
            });
            self.keep(if via_branches.0.is_empty() || base.is_trivially_true() {
                via_branches
            } else {
                via_base
            });
            return;
        }
        if let Some(conjuncts) = w.get("allOf").and_then(Value::as_array) {
            let base = w.without(SKIP_ALL_OF);
            let mut best: Option<(Vec<Finding>, Vec<Finding>)> = None;
            let mut candidates: Vec<Node<'a>> = Vec::new();
            if !base.is_trivially_true() {
                candidates.push(base);
            }
            for (i, c) in conjuncts.iter().enumerate() {
                let mut n = w.child(c, &["allOf", &i.to_string()]);
                n.only = w.only;
                candidates.push(n);
            }
            for candidate in candidates {
                let got = self.attempt(|c| c.covers(r.clone(), candidate, path));
                if got.0.is_empty() {
                    self.keep(got);
                    return;
                }
                if best.as_ref().is_none_or(|b| got.0.len() < b.0.len()) {
                    best = Some(got);
                }
            }
            if let Some(best) = best {
                self.keep(best);
            }
            return;
        }

        // The reader's combinators.
        if let Some(conjuncts) = r.get("allOf").and_then(Value::as_array) {
            for (i, c) in conjuncts.iter().enumerate() {
                self.covers(r.child(c, &["allOf", &i.to_string()]), w.clone(), path);
            }
            let base = r.without(SKIP_ALL_OF);
            if !base.is_trivially_true() {
                self.covers(base, w, path);
            }
            return;
        }
        for (key, exclusive) in [("anyOf", false), ("oneOf", true)] {
            if let Some(branches) = r.get(key).and_then(Value::as_array) {
                let skip = if exclusive { SKIP_ONE_OF } else { SKIP_ANY_OF };
                let base = r.without(skip);
                if !base.is_trivially_true() {
                    self.covers(base, w.clone(), path);
                }
                self.alternatives(&r, key, branches, exclusive, w, path);
                return;
            }
        }

        // Reader keywords the check does not model hold only where the writer
        // states the same.
        for key in r.keys() {
            let k = key.as_str();
            if ANNOTATIONS.contains(&k) || MODELLED.contains(&k) {
                continue;
            }
            let same = w.get(k) == r.get(k) && !r.get(k).is_some_and(has_ref);
            if !same || k.starts_with("unevaluated") {
                self.find(
                    path,
                    Rule::NotProven,
                    format!("the reader's keyword {k:?} is not modelled by the check and the writer does not state the same"),
                );
            }
        }

        // Enumerated writers are decided value by value.
        if let Some(values) = self.writer_values(&w, &r) {
            for v in values {
                if !self.accepts(&r, &v) {
                    self.find(
                        path,
                        Rule::ValueRejected,
                        format!("the writer may send {v}, which the reader rejects"),
                    );
                }
            }
            return;
        }
        if r.get("enum").is_some() || r.get("const").is_some() {
            self.find(
                path,
                Rule::EnumNarrowed,
                "the reader accepts only listed values (enum or const) and the writer is not limited to them",
            );
            return;
        }

        // Types, then each type's keywords.
        let wt = w.types();
        let rt = r.types();
        let sent: BTreeSet<&'static str> = match &wt {
            Some(t) => t.clone(),
            None => {
                if let Some(accepted) = &rt {
                    self.find(
                        path,
                        Rule::TypeNarrowed,
                        format!(
                            "the writer does not restrict the type; the reader accepts only {}",
                            list(accepted)
                        ),
                    );
                }
                TYPES.into_iter().collect()
            }
        };
        let mut checked: BTreeSet<&'static str> = BTreeSet::new();
        for t in &sent {
            if !type_accepted(t, &rt) {
                if wt.is_some() {
                    let detail = if *t == "number"
                        && rt.as_ref().is_some_and(|r| r.contains("integer"))
                    {
                        "the writer sends any number; the reader accepts only integers".to_owned()
                    } else {
                        format!(
                            "the writer sends {t}; the reader accepts only {}",
                            list(rt.as_ref().expect("narrowed"))
                        )
                    };
                    self.find(path, Rule::TypeNarrowed, detail);
                }
                continue;
            }
            checked.insert(t);
        }
        if checked.contains("object") {
            self.objects(&r, &w, path);
        }
        if checked.contains("array") {
            self.arrays(&r, &w, path);
        }
        if checked.contains("string") {
            self.strings(&r, &w, path);
        }
        if checked.contains("number") || checked.contains("integer") {
            self.numbers(&r, &w, path, !checked.contains("number"));
        }
    }

    fn guarded(&mut self, r: Node<'a>, w: Node<'a>, path: &str) {
        let key = (r.pointer.clone(), r.skip, w.pointer.clone(), w.skip);
        if !key.0.is_empty() && !key.2.is_empty() && self.visiting.contains(&key) {
            return;
        }
        self.visiting.push(key);
        self.covers(r, w, path);
        self.visiting.pop();
    }

    /// A reader `anyOf`/`oneOf`: the writer's data, type by type, must fall in
    /// one branch (and for `oneOf`, provably in no other).
    fn alternatives(
        &mut self,
        r: &Node<'a>,
        key: &str,
        branches: &'a [Value],
        exclusive: bool,
        w: Node<'a>,
        path: &str,
    ) {
        let parts: Vec<Node<'a>> = match w.types() {
            Some(ts) if ts.len() > 1 => ts.into_iter().map(|t| w.only(t)).collect(),
            _ => vec![w.clone()],
        };
        for part in parts {
            let mut best: Option<(Vec<Finding>, Vec<Finding>)> = None;
            let mut matched = None;
            for (i, b) in branches.iter().enumerate() {
                let branch = r.child(b, &[key, &i.to_string()]);
                let got = self.attempt(|c| c.covers(branch, part.clone(), path));
                if got.0.is_empty() {
                    matched = Some(i);
                    self.keep(got);
                    break;
                }
                if best.as_ref().is_none_or(|b| got.0.len() < b.0.len()) {
                    best = Some(got);
                }
            }
            match matched {
                None => {
                    if let Some(best) = best {
                        self.keep(best);
                    }
                }
                Some(i) if exclusive => {
                    let sent = part.types();
                    for (j, b) in branches.iter().enumerate() {
                        if j == i {
                            continue;
                        }
                        let other = r.child(b, &[key, &j.to_string()]).types();
                        let disjoint = match (&sent, &other) {
                            (Some(s), Some(o)) => {
                                s.iter().all(|t| !type_accepted(t, &Some(o.clone())))
                            }
                            _ => false,
                        };
                        if !disjoint {
                            self.find(
                                path,
                                Rule::NotProven,
                                format!("the writer's data fits oneOf branch {i}, and branch {j} may accept it too, which oneOf rejects"),
                            );
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// The values a writer can send when they are few: its `enum` or `const`,
    /// or the values of `null` and `boolean` when those are its only types (and
    /// the reader takes those types at all).
    fn writer_values(&self, w: &Node<'a>, r: &Node<'a>) -> Option<Vec<Value>> {
        let typed = |v: &Value| match (w.only, v) {
            (None, _) => true,
            (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Some("number"), Value::Number(_)) => true,
            (Some("null"), Value::Null) => true,
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("string"), Value::String(_)) => true,
            (Some("array"), Value::Array(_)) => true,
            (Some("object"), Value::Object(_)) => true,
            _ => false,
        };
        if let Some(v) = w.get("const") {
            return Some([v.clone()].into_iter().filter(typed).collect());
        }
        if let Some(Value::Array(vs)) = w.get("enum") {
            return Some(vs.iter().filter(|v| typed(v)).cloned().collect());
        }
        let types = w.types()?;
        // A type the reader refuses outright is reported as such, below.
        let reader_types = r.types();
        if !types.is_empty()
            && types
                .iter()
                .all(|t| matches!(*t, "null" | "boolean") && type_accepted(t, &reader_types))
        {
            let mut out = Vec::new();
            if types.contains("null") {
                out.push(Value::Null);
            }
            if types.contains("boolean") {
                out.extend([Value::Bool(false), Value::Bool(true)]);
            }
            return Some(out);
        }
        None
    }

    /// Whether the reader node accepts `value`, by the reader's validator.
    fn accepts(&mut self, r: &Node<'a>, value: &Value) -> bool {
        if self.reader_map.is_none() {
            self.reader_map = Some(validate::options().build_map(self.reader_root).ok());
        }
        if let Some(validator) = self
            .reader_map
            .as_ref()
            .and_then(Option::as_ref)
            .and_then(|m| m.get(&r.pointer))
        {
            return validator.is_valid(value);
        }
        if !has_ref(r.value) {
            if let Ok(v) = validate::options().build(r.value) {
                return v.is_valid(value);
            }
        }
        false
    }

    fn objects(&mut self, r: &Node<'a>, w: &Node<'a>, path: &str) {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let empty = EMPTY.get_or_init(Map::new);
        let rprops = r.map("properties").unwrap_or(empty);
        let wprops = w.map("properties").unwrap_or(empty);
        let required = |n: &Node<'a>| -> BTreeSet<&'a str> {
            n.get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        let (rreq, wreq) = (required(r), required(w));
        let at = |name: &str| {
            format!(
                "{path}/properties/{}",
                name.replace('~', "~0").replace('/', "~1")
            )
        };

        for name in &rreq {
            if !wreq.contains(name) {
                let detail = if wprops.contains_key(*name) {
                    format!("the reader requires {name:?}; the writer declares it optional")
                } else {
                    format!("the reader requires {name:?}; the writer does not declare it")
                };
                self.find(&at(name), Rule::RequiredAdded, detail);
            }
        }

        let rpatterns: Vec<(&'a String, &'a Value)> = r
            .map("patternProperties")
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        let raddl = r.get("additionalProperties");
        let waddl = w.get("additionalProperties");

        // Every property the writer declares, through whatever the reader
        // applies to that name.
        for (name, ws) in wprops {
            if ws == &Value::Bool(false) {
                continue;
            }
            let wn = w.child(ws, &["properties", name]);
            let here = at(name);
            let mut matched = false;
            if let Some(rs) = rprops.get(name) {
                matched = true;
                self.covers(r.child(rs, &["properties", name]), wn.clone(), &here);
            }
            for (pattern, rs) in &rpatterns {
                match regex::Regex::new(pattern) {
                    Ok(re) if re.is_match(name) => {
                        matched = true;
                        self.covers(
                            r.child(rs, &["patternProperties", pattern]),
                            wn.clone(),
                            &here,
                        );
                    }
                    Ok(_) => {}
                    Err(_) => {
                        matched = true;
                        self.find(
                            &here,
                            Rule::NotProven,
                            format!("the reader's patternProperties pattern {pattern:?} is not a regular expression the check can run"),
                        );
                    }
                }
            }
            if matched {
                continue;
            }
            match raddl {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => self.find(
                    &here,
                    Rule::PropertyRejected,
                    format!("the writer sends {name:?}; the reader does not declare it and its additionalProperties is false"),
                ),
                Some(rs) => self.covers(r.child(rs, &["additionalProperties"]), wn, &here),
            }
        }

        // The names the writer does not declare.
        let wpatterns = w.map("patternProperties");
        if let Some(wp) = wpatterns {
            let same = r.map("patternProperties") == Some(wp)
                && raddl == waddl
                && !has_ref(&Value::Object(wp.clone()));
            let open_reader = rpatterns.is_empty()
                && matches!(raddl, None | Some(Value::Bool(true)))
                && !wp.keys().any(|p| {
                    regex::Regex::new(p).map_or(true, |re| {
                        rprops
                            .keys()
                            .any(|n| !wprops.contains_key(n) && re.is_match(n))
                    })
                });
            if !same && !open_reader {
                self.find(
                    &format!("{path}/patternProperties"),
                    Rule::NotProven,
                    "the writer sends properties matching its patternProperties; the check cannot show the reader accepts them",
                );
            }
        }
        match waddl {
            Some(Value::Bool(false)) => {}
            None | Some(Value::Bool(true)) => {
                for name in rprops.keys().filter(|n| !wprops.contains_key(*n)) {
                    self.note(
                        &at(name),
                        format!("the reader declares {name:?}; the writer's open content model does not, and writers are taken to send only what they declare"),
                    );
                }
            }
            Some(ws) => {
                let wn = w.child(ws, &["additionalProperties"]);
                for (name, rs) in rprops.iter().filter(|(n, _)| !wprops.contains_key(*n)) {
                    self.covers(r.child(rs, &["properties", name]), wn.clone(), &at(name));
                }
                if !rpatterns.is_empty() {
                    self.find(
                        &format!("{path}/additionalProperties"),
                        Rule::NotProven,
                        "the writer sends undeclared properties and the reader applies patternProperties to them",
                    );
                }
                match raddl {
                    None | Some(Value::Bool(true)) => {}
                    Some(Value::Bool(false)) => self.find(
                        &format!("{path}/additionalProperties"),
                        Rule::AdditionalRejected,
                        "the writer sends properties it does not declare (its additionalProperties is a schema); the reader's additionalProperties is false",
                    ),
                    Some(rs) => self.covers(
                        r.child(rs, &["additionalProperties"]),
                        wn,
                        &format!("{path}/additionalProperties"),
                    ),
                }
            }
        }

        // How many properties.
        let sendable = wprops
            .values()
            .filter(|v| *v != &Value::Bool(false))
            .count() as u64;
        let wmin = w.count("minProperties").unwrap_or(0).max(wreq.len() as u64);
        if let Some(rmin) = r.count("minProperties") {
            if rmin > wmin {
                self.find(
                    path,
                    Rule::PropertyCountNarrowed,
                    format!("the reader requires at least {rmin} properties; the writer may send {wmin}"),
                );
            }
        }
        if let Some(rmax) = r.count("maxProperties") {
            let declared_only = wpatterns.is_none() && matches!(waddl, None | Some(Value::Bool(_)));
            let wmax = match (w.count("maxProperties"), declared_only) {
                (Some(m), true) => Some(m.min(sendable)),
                (Some(m), false) => Some(m),
                (None, true) => Some(sendable),
                (None, false) => None,
            };
            if wmax.is_none_or(|m| m > rmax) {
                self.find(
                    path,
                    Rule::PropertyCountNarrowed,
                    format!(
                        "the reader accepts at most {rmax} properties; the writer may send {}",
                        wmax.map_or("more".to_owned(), |m| m.to_string())
                    ),
                );
            }
        }
    }

    fn arrays(&mut self, r: &Node<'a>, w: &Node<'a>, path: &str) {
        let here = format!("{path}/items");
        match (r.get("items"), w.get("items")) {
            (None, _) => {}
            (Some(ri), wi) if ri.is_array() || wi.is_some_and(Value::is_array) => {
                if Some(ri) != wi || has_ref(ri) {
                    self.find(
                        &here,
                        Rule::NotProven,
                        "tuple-form items differ between reader and writer; the check does not model them",
                    );
                }
            }
            (Some(ri), wi) => {
                let wn = match wi {
                    Some(wi) => w.child(wi, &["items"]),
                    None => Node::detached(&TRUE),
                };
                self.covers(r.child(ri, &["items"]), wn, &here);
            }
        }
        let wmin = w.count("minItems").unwrap_or(0);
        if let Some(rmin) = r.count("minItems") {
            if rmin > wmin {
                self.find(
                    path,
                    Rule::ItemsNarrowed,
                    format!(
                        "the reader requires at least {rmin} items; the writer may send {wmin}"
                    ),
                );
            }
        }
        if let Some(rmax) = r.count("maxItems") {
            match w.count("maxItems") {
                Some(wmax) if wmax <= rmax => {}
                wmax => self.find(
                    path,
                    Rule::ItemsNarrowed,
                    format!(
                        "the reader accepts at most {rmax} items; the writer may send {}",
                        wmax.map_or("more".to_owned(), |m| m.to_string())
                    ),
                ),
            }
        }
        if r.get("uniqueItems") == Some(&Value::Bool(true))
            && w.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.find(
                path,
                Rule::UniqueItemsAdded,
                "the reader requires unique items; the writer may repeat them",
            );
        }
    }

    fn strings(&mut self, r: &Node<'a>, w: &Node<'a>, path: &str) {
        let wmin = w.count("minLength").unwrap_or(0);
        if let Some(rmin) = r.count("minLength") {
            if rmin > wmin {
                self.find(
                    path,
                    Rule::LengthNarrowed,
                    format!("the reader requires at least {rmin} characters; the writer may send {wmin}"),
                );
            }
        }
        if let Some(rmax) = r.count("maxLength") {
            match w.count("maxLength") {
                Some(wmax) if wmax <= rmax => {}
                wmax => self.find(
                    path,
                    Rule::LengthNarrowed,
                    format!(
                        "the reader accepts at most {rmax} characters; the writer may send {}",
                        wmax.map_or("more".to_owned(), |m| m.to_string())
                    ),
                ),
            }
        }
        if let Some(rp) = r.get("pattern") {
            if w.get("pattern") != Some(rp) {
                self.find(
                    path,
                    Rule::PatternChanged,
                    format!(
                        "the reader requires pattern {rp}; the writer's strings are not held to it"
                    ),
                );
            }
        }
        if let Some(rf) = r.get("format") {
            if w.get("format") != Some(rf) {
                self.find(
                    path,
                    Rule::FormatChanged,
                    format!(
                        "the reader requires format {rf}; the writer's strings are not held to it"
                    ),
                );
            }
        }
    }

    fn numbers(&mut self, r: &Node<'a>, w: &Node<'a>, path: &str, integers_only: bool) {
        for (low, word) in [(true, "lower"), (false, "upper")] {
            let Some(rb) = bound(r, low) else { continue };
            match bound(w, low) {
                Some(wb) if bound_admits(rb, wb, low) => {}
                wb => self.find(
                    path,
                    Rule::RangeNarrowed,
                    format!(
                        "the reader's {word} bound is {rb}; the writer's is {}",
                        wb.map_or("unbounded".to_owned(), |b| b.to_string())
                    ),
                ),
            }
        }
        if let Some(rm) = r.number("multipleOf") {
            let divides = |m: f64| {
                let q = m / rm;
                (q - q.round()).abs() < 1e-9 && q.round() >= 1.0
            };
            let ok = match w.number("multipleOf") {
                Some(wm) => divides(wm),
                None => integers_only && divides(1.0),
            };
            if !ok {
                self.find(
                    path,
                    Rule::MultipleOfChanged,
                    format!(
                        "the reader requires multiples of {rm}; the writer's numbers are {}",
                        w.number("multipleOf")
                            .map_or("not held to a multiple".to_owned(), |m| format!(
                                "multiples of {m}"
                            ))
                    ),
                );
            }
        }
    }
}
