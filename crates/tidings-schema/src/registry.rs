//! The registry: subjects holding numbered versions of schemas, each distinct
//! schema with a registry-wide id, compatibility levels globally and per
//! subject, soft and hard deletes — the model of Confluent's Schema Registry.
//!
//! State lives in memory and in one journal file,
//! `<data dir>/registry/registry.journal`: a 16-byte header (magic `TDSR`, the
//! format version), then one frame ([`tidings_log::format::frame`]) per change,
//! its body a JSON [`Entry`]. A change is written and `fdatasync`ed before it is
//! applied in memory and answered, so what was answered survives a crash; only
//! the tail can be torn, and opening cuts it off. A frame that checks out but
//! does not make sense (an unknown change, a version naming an id never
//! stored) is damage, and opening refuses with the file and offset. A failed
//! write or sync stops changes for good (fail-stop, as the log's partitions
//! do); reads go on from memory, which never got the failed change. Opening
//! rewrites the journal as a snapshot of what is live when it has grown to
//! several times that.
//!
//! Changes are serialised by one writer lock; readers take the state's read
//! lock, never held across a sync.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidings_log::format;

use crate::compat::{self, Level, Verdict};
use crate::limits::{
    RECORD_BYTES_MAX, SCHEMAS_MAX, SUBJECTS_MAX, SUBJECT_BYTES_MAX, VERSIONS_PER_SUBJECT_MAX,
};
use crate::validate::{JsonSchema, SchemaError};

const MAGIC: [u8; 4] = *b"TDSR";
const HEADER_BYTES: usize = 16;
/// A journal at least this large is compacted at open when most of it is dead.
const COMPACT_BYTES_MIN: u64 = 4 * 1024 * 1024;

/// The kinds of schema Confluent's registry knows; Tidings holds JSON Schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchemaType {
    /// JSON Schema.
    Json,
}

impl SchemaType {
    /// The name the REST API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Json => "JSON",
        }
    }

    /// Parses a REST API `schemaType`; Confluent's default (absent) is AVRO.
    pub fn parse(s: Option<&str>) -> Result<SchemaType, RegistryError> {
        match s {
            Some(t) if t.eq_ignore_ascii_case("JSON") => Ok(SchemaType::Json),
            Some(t) => Err(RegistryError::InvalidSchema(format!(
                "schema type {t} is not supported; Tidings' registry holds JSON Schema (schemaType \"JSON\")"
            ))),
            None => Err(RegistryError::InvalidSchema(
                "no schemaType given, which means AVRO; Tidings' registry holds JSON Schema (schemaType \"JSON\")".into(),
            )),
        }
    }
}

/// Which version of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionRef {
    /// The highest live version.
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionRef {
    /// Parses `latest`, `-1` or a positive number, as the REST API spells them.
    pub fn parse(s: &str) -> Result<VersionRef, RegistryError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_owned())),
        }
    }
}

/// A schema as submitted.
#[derive(Clone, Debug)]
pub struct SchemaInput {
    /// The kind.
    pub schema_type: SchemaType,
    /// The text.
    pub schema: String,
}

/// A registered schema.
#[derive(Clone, Debug)]
pub struct StoredSchema {
    /// Its registry-wide id.
    pub id: u32,
    /// The kind.
    pub schema_type: SchemaType,
    /// The text as first registered.
    pub schema: Arc<str>,
    /// Compiled, for validating events.
    pub compiled: Arc<JsonSchema>,
}

/// One version of a subject.
#[derive(Clone, Debug)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: u32,
    /// Whether it is soft-deleted.
    pub deleted: bool,
    /// Its schema.
    pub schema: StoredSchema,
}

/// Why a registry request was refused, with Confluent's error code.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such subject (or only soft-deleted versions, where those are not asked for).
    #[error("subject {0:?} not found")]
    SubjectNotFound(String),
    /// No such version of the subject.
    #[error("version {version} of subject {subject:?} not found")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// No schema with this id, or the schema is not registered under the subject.
    #[error("{0}")]
    SchemaNotFound(String),
    /// A soft delete of a subject whose versions are all soft-deleted already.
    #[error("subject {0:?} was soft deleted; set permanent=true to delete it permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that still has live versions.
    #[error("subject {0:?} was not soft deleted first; delete it without permanent=true before deleting it permanently")]
    SubjectNotSoftDeleted(String),
    /// A soft delete of a version soft-deleted already.
    #[error("version {version} of subject {subject:?} was soft deleted; set permanent=true to delete it permanently")]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a live version.
    #[error("version {version} of subject {subject:?} was not soft deleted first; delete it without permanent=true before deleting it permanently")]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no compatibility level of its own.
    #[error("subject {0:?} has no compatibility level of its own; the global level applies (ask with defaultToGlobal=true)")]
    SubjectLevelNotConfigured(String),
    /// The schema breaks the subject's compatibility level.
    #[error("{}", incompatible_message(.level, .verdict))]
    Incompatible {
        /// The level checked.
        level: Level,
        /// What breaks it.
        verdict: Verdict,
    },
    /// Not a schema this registry can hold.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// Not a version number.
    #[error("the version must be a number from 1 to 2147483647, or latest; got {0:?}")]
    InvalidVersion(String),
    /// Not a compatibility level.
    #[error("invalid compatibility level {0:?}; one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE")]
    InvalidCompatibilityLevel(String),
    /// Not a subject name.
    #[error("invalid subject name: {0}")]
    InvalidSubject(String),
    /// A limit of the registry is reached.
    #[error("{0}")]
    LimitReached(String),
    /// The journal could not be written; the registry takes no more changes.
    #[error("the registry's store failed and takes no more changes until a restart: {0}")]
    Store(Arc<str>),
}

fn incompatible_message(level: &Level, verdict: &Verdict) -> String {
    let mut out = format!("schema being registered is incompatible with an earlier schema under compatibility level {level}");
    for i in &verdict.incompatibilities {
        out.push_str("; ");
        out.push_str(&i.to_string());
    }
    out
}

impl RegistryError {
    /// Confluent's error code.
    pub fn error_code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted { .. } => 40406,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::SubjectLevelNotConfigured(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibilityLevel(_) => 42203,
            RegistryError::InvalidSubject(_) => 42208,
            RegistryError::LimitReached(_) => 42209,
            RegistryError::Store(_) => 50001,
        }
    }

    /// The HTTP status Confluent answers with.
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            409 => 409,
            c => (c / 100) as u16,
        }
    }
}

impl From<SchemaError> for RegistryError {
    fn from(e: SchemaError) -> RegistryError {
        RegistryError::InvalidSchema(e.to_string())
    }
}

/// Why the registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file holds something this build does not read, or damage past a
    /// torn tail.
    #[error("{path} at byte {offset}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What.
        reason: String,
    },
}

/// One change, as the journal holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Entry {
    /// A schema got its id.
    Schema {
        id: u32,
        schema_type: SchemaType,
        schema: String,
    },
    /// A subject got a version.
    Version {
        subject: String,
        version: u32,
        id: u32,
    },
    /// A version was soft-deleted, or removed for good.
    Delete {
        subject: String,
        version: u32,
        permanent: bool,
    },
    /// A compatibility level was set (`Some`) or removed, for a subject or globally.
    Config {
        subject: Option<String>,
        compatibility: Option<Level>,
    },
}

#[derive(Clone, Debug)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Clone, Debug, Default)]
struct Subject {
    /// In version order.
    versions: Vec<Version>,
    compatibility: Option<Level>,
}

impl Subject {
    fn live(&self) -> impl DoubleEndedIterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    fn find(&self, version: VersionRef, deleted: bool) -> Option<&Version> {
        match version {
            VersionRef::Latest => self
                .live()
                .next_back()
                .or_else(|| deleted.then(|| self.versions.last()).flatten()),
            VersionRef::Number(n) => self
                .versions
                .iter()
                .find(|v| v.version == n && (deleted || !v.deleted)),
        }
    }

    fn next_version(&self) -> u32 {
        self.versions.last().map_or(1, |v| v.version + 1)
    }
}

#[derive(Default)]
struct State {
    schemas: BTreeMap<u32, StoredSchema>,
    /// Canonical text (sorted keys, no spaces) to id.
    ids: HashMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, Subject>,
    global: Option<Level>,
}

impl State {
    fn apply(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Schema {
                id,
                schema_type,
                schema,
            } => {
                if self.schemas.contains_key(&id) {
                    return Err(format!("schema id {id} stored twice"));
                }
                let compiled =
                    JsonSchema::parse(&schema).map_err(|e| format!("schema id {id}: {e}"))?;
                let canonical = canonical(compiled.value());
                self.ids.insert((schema_type, canonical), id);
                self.schemas.insert(
                    id,
                    StoredSchema {
                        id,
                        schema_type,
                        schema: schema.into(),
                        compiled: Arc::new(compiled),
                    },
                );
            }
            Entry::Version {
                subject,
                version,
                id,
            } => {
                if !self.schemas.contains_key(&id) {
                    return Err(format!(
                        "subject {subject:?} version {version} names unknown schema id {id}"
                    ));
                }
                let s = self.subjects.entry(subject.clone()).or_default();
                if version < s.next_version() {
                    return Err(format!(
                        "subject {subject:?} version {version} is not after its last"
                    ));
                }
                s.versions.push(Version {
                    version,
                    id,
                    deleted: false,
                });
            }
            Entry::Delete {
                subject,
                version,
                permanent,
            } => {
                let s = self
                    .subjects
                    .get_mut(&subject)
                    .ok_or_else(|| format!("delete of unknown subject {subject:?}"))?;
                let at = s
                    .versions
                    .iter()
                    .position(|v| v.version == version)
                    .ok_or_else(|| format!("delete of unknown version {version} of {subject:?}"))?;
                if permanent {
                    s.versions.remove(at);
                    if s.versions.is_empty() {
                        self.subjects.remove(&subject);
                    }
                } else {
                    s.versions[at].deleted = true;
                }
            }
            Entry::Config {
                subject: None,
                compatibility,
            } => self.global = compatibility,
            Entry::Config {
                subject: Some(subject),
                compatibility,
            } => match compatibility {
                Some(level) => {
                    self.subjects.entry(subject).or_default().compatibility = Some(level)
                }
                None => {
                    if let Some(s) = self.subjects.get_mut(&subject) {
                        s.compatibility = None;
                        if s.versions.is_empty() {
                            self.subjects.remove(&subject);
                        }
                    }
                }
            },
        }
        Ok(())
    }

    /// The entries that rebuild this state.
    fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut used: Vec<u32> = self
            .subjects
            .values()
            .flat_map(|s| s.versions.iter().map(|v| v.id))
            .collect();
        used.sort_unstable();
        used.dedup();
        for id in used {
            let s = &self.schemas[&id];
            out.push(Entry::Schema {
                id,
                schema_type: s.schema_type,
                schema: s.schema.to_string(),
            });
        }
        if let Some(level) = self.global {
            out.push(Entry::Config {
                subject: None,
                compatibility: Some(level),
            });
        }
        for (name, s) in &self.subjects {
            for v in &s.versions {
                out.push(Entry::Version {
                    subject: name.clone(),
                    version: v.version,
                    id: v.id,
                });
                if v.deleted {
                    out.push(Entry::Delete {
                        subject: name.clone(),
                        version: v.version,
                        permanent: false,
                    });
                }
            }
            if let Some(level) = s.compatibility {
                out.push(Entry::Config {
                    subject: Some(name.clone()),
                    compatibility: Some(level),
                });
            }
        }
        out
    }

    fn subject(&self, name: &str) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(name)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| RegistryError::SubjectNotFound(name.to_owned()))
    }

    fn level(&self, subject: &str) -> Level {
        self.subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .or(self.global)
            .unwrap_or(Level::Backward)
    }

    fn version_of(&self, subject: &str, v: &Version) -> SubjectVersion {
        SubjectVersion {
            subject: subject.to_owned(),
            version: v.version,
            deleted: v.deleted,
            schema: self.schemas[&v.id].clone(),
        }
    }

    fn next_id(&self) -> u32 {
        self.schemas.keys().next_back().map_or(1, |id| id + 1)
    }
}

/// The canonical text of a schema: keys sorted, no whitespace. Two schemas with
/// the same canonical text get the same id.
fn canonical(value: &Value) -> String {
    // serde_json's map is ordered by key in this build (no `preserve_order`).
    serde_json::to_string(value).expect("a Value serialises")
}

fn check_subject(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        return Err(RegistryError::InvalidSubject(
            "the subject name is empty".into(),
        ));
    }
    if name.len() > SUBJECT_BYTES_MAX {
        return Err(RegistryError::InvalidSubject(format!(
            "the subject name is {} bytes; at most {SUBJECT_BYTES_MAX} are accepted",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject(
            "the subject name holds a control character".into(),
        ));
    }
    Ok(())
}

struct Writer {
    file: File,
    len: u64,
    failed: Option<Arc<str>>,
}

/// The schema registry. Its methods block on the disk when they change
/// something; call them off the async runtime (`spawn_blocking`).
pub struct Registry {
    path: PathBuf,
    writer: Mutex<Writer>,
    state: RwLock<State>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish()
    }
}

fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    h.resize(HEADER_BYTES, 0);
    h
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let body = serde_json::to_vec(e).expect("entries serialise");
        debug_assert!(body.len() <= RECORD_BYTES_MAX);
        format::frame(&mut out, &body);
    }
    out
}

impl Registry {
    /// The journal's path under a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("registry").join("registry.journal")
    }

    /// Opens (or creates) the registry under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Registry, OpenError> {
        Registry::open_inner(data_dir, false)
    }

    /// Opens the registry and rewrites its journal as a snapshot whatever its
    /// size (for tests of the snapshot).
    #[doc(hidden)]
    pub fn open_compacted(data_dir: &Path) -> Result<Registry, OpenError> {
        Registry::open_inner(data_dir, true)
    }

    fn open_inner(data_dir: &Path, compact: bool) -> Result<Registry, OpenError> {
        let path = Registry::path_in(data_dir);
        let io_err = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("a directory")).map_err(io_err)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        let damaged = |offset: usize, reason: String| OpenError::Damaged {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < HEADER_BYTES {
            // Never written past its creation (the header is written and
            // synced before any change): start afresh.
            format::replace_durably(&path, &header()).map_err(io_err)?;
            return Ok(Registry::with(
                path.clone(),
                File::options()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err)?,
                HEADER_BYTES as u64,
                State::default(),
            ));
        }
        if bytes[..4] != MAGIC {
            return Err(damaged(
                0,
                format!("magic {:?} is not {MAGIC:?}", &bytes[..4]),
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != format::FORMAT_VERSION {
            return Err(damaged(
                4,
                format!(
                    "format version {version} is not supported (this build reads version {})",
                    format::FORMAT_VERSION
                ),
            ));
        }
        let (frames, end) = format::frames(&bytes, HEADER_BYTES, RECORD_BYTES_MAX);
        let mut state = State::default();
        let mut at = HEADER_BYTES;
        let count = frames.len();
        for body in frames {
            let entry: Entry = serde_json::from_slice(body)
                .map_err(|e| damaged(at, format!("a change this build does not read: {e}")))?;
            state.apply(entry).map_err(|reason| damaged(at, reason))?;
            at += 8 + body.len();
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        if end < bytes.len() {
            tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - end, "cutting a torn tail off the schema registry's journal");
            file.set_len(end as u64).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let registry = Registry::with(path.clone(), file, end as u64, state);
        let live = registry.read().snapshot();
        if compact || (end as u64 >= COMPACT_BYTES_MIN && count > 2 * live.len()) {
            let mut image = header();
            image.extend(encode(&live));
            format::replace_durably(&path, &image).map_err(io_err)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err)?;
            let mut w = registry.writer.lock().expect("registry writer");
            w.file = file;
            w.len = image.len() as u64;
        }
        Ok(registry)
    }

    fn with(path: PathBuf, file: File, len: u64, state: State) -> Registry {
        Registry {
            path,
            writer: Mutex::new(Writer {
                file,
                len,
                failed: None,
            }),
            state: RwLock::new(state),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("registry state")
    }

    /// Writes `entries` durably, then applies them. The caller holds the writer.
    fn commit(&self, w: &mut Writer, entries: Vec<Entry>) -> Result<(), RegistryError> {
        if let Some(f) = &w.failed {
            return Err(RegistryError::Store(Arc::clone(f)));
        }
        let bytes = encode(&entries);
        let written = w
            .file
            .write_all_at(&bytes, w.len)
            .and_then(|()| w.file.sync_data());
        if let Err(e) = written {
            // The page cache may now hold bytes the disk does not; nothing
            // more is written until a restart reads what is durable.
            tracing::error!(path = %self.path.display(), error = %e, "schema registry write failed; it takes no more changes until a restart");
            let reason: Arc<str> = format!("writing {} failed: {e}", self.path.display()).into();
            w.failed = Some(Arc::clone(&reason));
            return Err(RegistryError::Store(reason));
        }
        w.len += bytes.len() as u64;
        let mut state = self.state.write().expect("registry state");
        for e in entries {
            state
                .apply(e)
                .expect("a change checked before it was written applies");
        }
        Ok(())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().expect("registry writer")
    }

    /// Registers `input` under `subject`: the existing version when the
    /// subject holds the same schema live, else a new version once the
    /// subject's compatibility level allows it. Returns the version.
    pub fn register(
        &self,
        subject: &str,
        input: &SchemaInput,
    ) -> Result<SubjectVersion, RegistryError> {
        check_subject(subject)?;
        let compiled = JsonSchema::parse(&input.schema)?;
        let canonical = canonical(compiled.value());
        let mut w = self.writer();
        let mut entries = Vec::new();
        {
            let state = self.read();
            let known = state
                .ids
                .get(&(input.schema_type, canonical.clone()))
                .copied();
            let subj = state.subjects.get(subject);
            if let (Some(id), Some(s)) = (known, subj) {
                if let Some(v) = s.live().rev().find(|v| v.id == id) {
                    return Ok(state.version_of(subject, v));
                }
            }
            let level = state.level(subject);
            let existing: Vec<(u32, &Value)> = subj
                .map(|s| {
                    s.live()
                        .map(|v| (v.version, state.schemas[&v.id].compiled.value()))
                        .collect()
                })
                .unwrap_or_default();
            let verdict = compat::check(level, compiled.value(), &existing);
            if !verdict.compatible() {
                return Err(RegistryError::Incompatible { level, verdict });
            }
            if subj.is_none() && state.subjects.len() >= SUBJECTS_MAX {
                return Err(RegistryError::LimitReached(format!(
                    "the registry holds {SUBJECTS_MAX} subjects, its most"
                )));
            }
            let version = subj.map_or(1, Subject::next_version);
            if subj.is_some_and(|s| s.versions.len() >= VERSIONS_PER_SUBJECT_MAX) {
                return Err(RegistryError::LimitReached(format!(
                    "subject {subject:?} holds {VERSIONS_PER_SUBJECT_MAX} versions, its most; delete some permanently first"
                )));
            }
            let id = match known {
                Some(id) => id,
                None => {
                    if state.schemas.len() >= SCHEMAS_MAX {
                        return Err(RegistryError::LimitReached(format!(
                            "the registry holds {SCHEMAS_MAX} schemas, its most"
                        )));
                    }
                    let id = state.next_id();
                    entries.push(Entry::Schema {
                        id,
                        schema_type: input.schema_type,
                        schema: input.schema.clone(),
                    });
                    id
                }
            };
            entries.push(Entry::Version {
                subject: subject.to_owned(),
                version,
                id,
            });
        }
        self.commit(&mut w, entries)?;
        let state = self.read();
        let s = state.subject(subject)?;
        Ok(state.version_of(subject, s.versions.last().expect("just added")))
    }

    /// The version of `subject` holding `input`'s schema.
    pub fn lookup(
        &self,
        subject: &str,
        input: &SchemaInput,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let compiled = JsonSchema::parse(&input.schema)?;
        let state = self.read();
        let s = state.subject(subject)?;
        let id = state
            .ids
            .get(&(input.schema_type, canonical(compiled.value())))
            .copied();
        let found = s
            .versions
            .iter()
            .rev()
            .find(|v| Some(v.id) == id && (deleted || !v.deleted))
            .ok_or_else(|| {
                RegistryError::SchemaNotFound(format!("schema not found under subject {subject:?}"))
            })?;
        Ok(state.version_of(subject, found))
    }

    /// The schema with `id`, while a version (live or soft-deleted) holds it.
    pub fn schema(&self, id: u32) -> Result<StoredSchema, RegistryError> {
        let state = self.read();
        let held = state
            .subjects
            .values()
            .any(|s| s.versions.iter().any(|v| v.id == id));
        match state.schemas.get(&id) {
            Some(s) if held => Ok(s.clone()),
            _ => Err(RegistryError::SchemaNotFound(format!(
                "schema {id} not found"
            ))),
        }
    }

    /// The (subject, version) pairs holding schema `id`.
    pub fn versions_of_schema(
        &self,
        id: u32,
        deleted: bool,
    ) -> Result<Vec<(String, u32)>, RegistryError> {
        let state = self.read();
        let out: Vec<(String, u32)> = state
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(move |v| v.id == id && (deleted || !v.deleted))
                    .map(move |v| (name.clone(), v.version))
            })
            .collect();
        if out.is_empty() && !state.schemas.contains_key(&id) {
            return Err(RegistryError::SchemaNotFound(format!(
                "schema {id} not found"
            )));
        }
        Ok(out)
    }

    /// Every subject name: those with a live version, and with `deleted`
    /// those whose versions are all soft-deleted; with `deleted_only` only those.
    pub fn subjects(&self, prefix: &str, deleted: bool, deleted_only: bool) -> Vec<String> {
        let state = self.read();
        state
            .subjects
            .iter()
            .filter(|(name, s)| {
                if !name.starts_with(prefix) || s.versions.is_empty() {
                    return false;
                }
                let live = s.live().next().is_some();
                if deleted_only {
                    !live
                } else {
                    live || deleted
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The version numbers of `subject`.
    pub fn versions(
        &self,
        subject: &str,
        deleted: bool,
        deleted_only: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let state = self.read();
        let s = state.subject(subject)?;
        let out: Vec<u32> = s
            .versions
            .iter()
            .filter(|v| {
                if deleted_only {
                    v.deleted
                } else {
                    deleted || !v.deleted
                }
            })
            .map(|v| v.version)
            .collect();
        if out.is_empty() && !deleted && !deleted_only {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(out)
    }

    /// One version of `subject`.
    pub fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let state = self.read();
        let s = state.subject(subject)?;
        let v = s.find(version, deleted).ok_or_else(|| match version {
            VersionRef::Latest => RegistryError::SubjectNotFound(subject.to_owned()),
            VersionRef::Number(n) => RegistryError::VersionNotFound {
                subject: subject.to_owned(),
                version: n.to_string(),
            },
        })?;
        Ok(state.version_of(subject, v))
    }

    /// Deletes every version of `subject`: soft (kept, hidden, ids still
    /// readable) or, after a soft delete, permanently. Returns the versions.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let mut w = self.writer();
        let (entries, versions) = {
            let state = self.read();
            let s = state.subject(subject)?;
            let live: Vec<u32> = s.live().map(|v| v.version).collect();
            if permanent {
                if !live.is_empty() {
                    return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
                }
                let all: Vec<u32> = s.versions.iter().map(|v| v.version).collect();
                let mut entries: Vec<Entry> = all
                    .iter()
                    .map(|&version| Entry::Delete {
                        subject: subject.to_owned(),
                        version,
                        permanent: true,
                    })
                    .collect();
                if s.compatibility.is_some() {
                    entries.push(Entry::Config {
                        subject: Some(subject.to_owned()),
                        compatibility: None,
                    });
                }
                (entries, all)
            } else {
                if live.is_empty() {
                    return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
                }
                let entries = live
                    .iter()
                    .map(|&version| Entry::Delete {
                        subject: subject.to_owned(),
                        version,
                        permanent: false,
                    })
                    .collect();
                (entries, live)
            }
        };
        self.commit(&mut w, entries)?;
        Ok(versions)
    }

    /// Deletes one version: soft, or permanently after a soft delete.
    pub fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let mut w = self.writer();
        let number = {
            let state = self.read();
            let s = state.subject(subject)?;
            let found = match version {
                VersionRef::Latest if permanent => s.versions.last(),
                VersionRef::Latest => s.live().next_back(),
                VersionRef::Number(n) => s.versions.iter().find(|v| v.version == n),
            };
            let v = found.ok_or_else(|| RegistryError::VersionNotFound {
                subject: subject.to_owned(),
                version: match version {
                    VersionRef::Latest => "latest".into(),
                    VersionRef::Number(n) => n.to_string(),
                },
            })?;
            if permanent && !v.deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version: v.version,
                });
            }
            if !permanent && v.deleted {
                return Err(RegistryError::VersionSoftDeleted {
                    subject: subject.to_owned(),
                    version: v.version,
                });
            }
            v.version
        };
        self.commit(
            &mut w,
            vec![Entry::Delete {
                subject: subject.to_owned(),
                version: number,
                permanent,
            }],
        )?;
        Ok(number)
    }

    /// Checks `input` against `subject` under its level: against one version
    /// (`Some(Number)`), as registering would (`Some(Latest)`), or against
    /// every live version (`None`). A subject with no live version accepts anything.
    pub fn check(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        input: &SchemaInput,
    ) -> Result<(Level, Verdict), RegistryError> {
        let compiled = JsonSchema::parse(&input.schema)?;
        let state = self.read();
        let level = state.level(subject);
        let Some(s) = state.subjects.get(subject) else {
            if let Some(VersionRef::Number(n)) = version {
                return Err(RegistryError::VersionNotFound {
                    subject: subject.to_owned(),
                    version: n.to_string(),
                });
            }
            return Ok((level, Verdict::default()));
        };
        let existing: Vec<(u32, &Value)> = match version {
            Some(VersionRef::Number(n)) => {
                let v = s.find(VersionRef::Number(n), false).ok_or_else(|| {
                    RegistryError::VersionNotFound {
                        subject: subject.to_owned(),
                        version: n.to_string(),
                    }
                })?;
                vec![(v.version, state.schemas[&v.id].compiled.value())]
            }
            _ => s
                .live()
                .map(|v| (v.version, state.schemas[&v.id].compiled.value()))
                .collect(),
        };
        let effective = match (version, level) {
            // Against every version: the level's directions, transitively.
            (None, Level::Backward) => Level::BackwardTransitive,
            (None, Level::Forward) => Level::ForwardTransitive,
            (None, Level::Full) => Level::FullTransitive,
            (_, l) => l,
        };
        Ok((level, compat::check(effective, compiled.value(), &existing)))
    }

    /// The compatibility level set for `subject` (or globally for `None`); with
    /// `default_to_global`, the level that applies.
    pub fn config(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Level, RegistryError> {
        let state = self.read();
        match subject {
            None => Ok(state.global.unwrap_or(Level::Backward)),
            Some(s) => match state.subjects.get(s).and_then(|s| s.compatibility) {
                Some(l) => Ok(l),
                None if default_to_global => Ok(state.level(s)),
                None => Err(RegistryError::SubjectLevelNotConfigured(s.to_owned())),
            },
        }
    }

    /// Sets the compatibility level of `subject` (or the global one).
    pub fn set_config(&self, subject: Option<&str>, level: Level) -> Result<(), RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let mut w = self.writer();
        if let Some(name) = subject {
            let state = self.read();
            if state.subjects.len() >= SUBJECTS_MAX && !state.subjects.contains_key(name) {
                return Err(RegistryError::LimitReached(format!(
                    "the registry holds {SUBJECTS_MAX} subjects, its most"
                )));
            }
        }
        self.commit(
            &mut w,
            vec![Entry::Config {
                subject: subject.map(str::to_owned),
                compatibility: Some(level),
            }],
        )
    }

    /// Removes the level of `subject` (the global one then applies) or resets
    /// the global one to BACKWARD. Returns the level removed.
    pub fn delete_config(&self, subject: Option<&str>) -> Result<Level, RegistryError> {
        let mut w = self.writer();
        let previous = {
            let state = self.read();
            match subject {
                None => state.global.unwrap_or(Level::Backward),
                Some(s) => state
                    .subjects
                    .get(s)
                    .and_then(|s| s.compatibility)
                    .ok_or_else(|| RegistryError::SubjectNotFound(s.to_owned()))?,
            }
        };
        self.commit(
            &mut w,
            vec![Entry::Config {
                subject: subject.map(str::to_owned),
                compatibility: None,
            }],
        )?;
        Ok(previous)
    }

    /// The latest live schema of `subject`, for validating events.
    pub fn latest(&self, subject: &str) -> Option<StoredSchema> {
        let state = self.read();
        let s = state.subjects.get(subject)?;
        let v = s.live().next_back()?;
        Some(state.schemas[&v.id].clone())
    }

    /// Every subject with its live versions' ids, for the catalog.
    pub fn live_subjects(&self) -> Vec<(String, Vec<(u32, u32)>)> {
        let state = self.read();
        state
            .subjects
            .iter()
            .filter_map(|(name, s)| {
                let live: Vec<(u32, u32)> = s.live().map(|v| (v.version, v.id)).collect();
                (!live.is_empty()).then(|| (name.clone(), live))
            })
            .collect()
    }
}
