//! The schema registry under `/registry`: Confluent's Schema Registry REST
//! API over [`tidings_schema::Registry`], answering in Confluent's shapes and
//! error codes so its serializers and registry clients work unchanged.
//!
//! Confluent's clients send some flags as Python spells booleans
//! (`normalize=False`), so flags are read without regard to case. Changes
//! block on the registry's journal sync and run off the async workers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tidings_api::{
    CompatibilityAnswer, ConfigAnswer, ConfigRequest, Incompatibility, ModeAnswer, RegisteredId,
    RegistryErrorBody, SchemaById, SchemaRequest, SubjectVersionBody, SubjectVersionRef,
    REGISTRY_MEDIA_TYPE,
};
use tidings_schema::compat::{Direction, Verdict};
use tidings_schema::{
    Level, Registry, RegistryError, SchemaInput, SchemaType, SubjectVersion, VersionRef,
};

use crate::Api;

/// An answer or a Confluent-shaped error.
type Answer = Result<Response, Refusal>;

/// A registry error on the wire.
pub(crate) struct Refusal {
    status: StatusCode,
    body: RegistryErrorBody,
}

impl From<RegistryError> for Refusal {
    fn from(e: RegistryError) -> Refusal {
        Refusal {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: RegistryErrorBody {
                error_code: e.error_code(),
                message: e.to_string(),
            },
        }
    }
}

impl Refusal {
    fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: RegistryErrorBody {
                error_code,
                message: message.into(),
            },
        }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, 400, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, json_body(&self.body)).into_response()
    }
}

fn json_body<T: Serialize>(value: &T) -> Response {
    (
        [(header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)],
        serde_json::to_vec(value).expect("answers serialise"),
    )
        .into_response()
}

fn ok<T: Serialize>(value: &T) -> Answer {
    Ok(json_body(value))
}

/// The query's parameters; flags read as booleans in any case.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<String>) -> Result<Query, Refusal> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|e| Refusal::bad_request(format!("the query string does not parse: {e}")))?;
        Ok(Query(pairs.into_iter().collect()))
    }

    fn flag(&self, name: &str) -> Result<bool, Refusal> {
        match self.0.get(name).map(String::as_str) {
            None | Some("") => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Refusal::bad_request(format!(
                "query parameter {name}={v:?} is not true or false"
            ))),
        }
    }

    fn text(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// `offset` and `limit` (`-1` or absent: no limit) applied to `items`.
    fn page<T>(&self, items: Vec<T>) -> Result<Vec<T>, Refusal> {
        let number = |name: &str| -> Result<Option<i64>, Refusal> {
            match self.0.get(name) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    Refusal::bad_request(format!("query parameter {name}={v:?} is not a number"))
                }),
            }
        };
        let offset = usize::try_from(number("offset")?.unwrap_or(0).max(0)).unwrap_or(usize::MAX);
        let limit = match number("limit")? {
            None => usize::MAX,
            Some(n) if n < 0 => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        Ok(items.into_iter().skip(offset).take(limit).collect())
    }
}

fn registry(api: &Api) -> Arc<Registry> {
    Arc::clone(
        api.registry()
            .expect("the registry's routes exist only with a registry"),
    )
}

/// Runs a registry call that may sync the journal, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r.map_err(Refusal::from),
        Err(e) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("a registry task failed: {e}"),
        )),
    }
}

async fn schema_body(api: &Api, headers: &HeaderMap, body: Body) -> Result<SchemaInput, Refusal> {
    let limit = api.limits().body_bytes_max;
    let bytes = crate::body::read(headers, body, limit).await.map_err(|e| {
        Refusal::new(
            StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
            400,
            e.message().to_owned(),
        )
    })?;
    let request: SchemaRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("the request body is not a schema request ({{\"schema\": \"...\", \"schemaType\": \"JSON\"}}): {e}"),
        )
    })?;
    if !request.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported yet; inline the referenced definitions under $defs".into(),
        )
        .into());
    }
    Ok(SchemaInput {
        schema_type: SchemaType::parse(request.schema_type.as_deref())?,
        schema: request.schema,
    })
}

fn version_body(v: SubjectVersion) -> SubjectVersionBody {
    SubjectVersionBody {
        subject: v.subject,
        version: v.version,
        id: v.schema.id,
        schema_type: v.schema.schema_type.as_str().to_owned(),
        schema: v.schema.schema.to_string(),
        references: Vec::new(),
        deleted: v.deleted,
    }
}

fn parse_id(raw: &str) -> Result<u32, Refusal> {
    raw.parse::<u32>()
        .map_err(|_| RegistryError::SchemaNotFound(format!("schema {raw} not found")).into())
}

fn level_of(raw: &str) -> Result<Level, Refusal> {
    Level::parse(raw).ok_or_else(|| RegistryError::InvalidCompatibilityLevel(raw.to_owned()).into())
}

/// The routes, to be nested under [`tidings_api::REGISTRY_PREFIX`].
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(schema_text_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_one),
        )
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(mode))
        .route("/mode/{subject}", get(mode))
        .route(
            "/associations/resources/{context}/{resource}",
            get(associations),
        )
        .fallback(not_found)
}

async fn root() -> Answer {
    ok(&serde_json::json!({}))
}

async fn not_found(request: axum::extract::Request) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        404,
        format!(
            "the schema registry has no route for {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn types() -> Answer {
    ok(&[SchemaType::Json.as_str()])
}

async fn schema_by_id(State(api): State<Api>, Path(id): Path<String>) -> Answer {
    let s = registry(&api).schema(parse_id(&id)?)?;
    ok(&SchemaById {
        schema: s.schema.to_string(),
        schema_type: s.schema_type.as_str().to_owned(),
        references: Vec::new(),
    })
}

async fn schema_text_by_id(State(api): State<Api>, Path(id): Path<String>) -> Answer {
    let s = registry(&api).schema(parse_id(&id)?)?;
    Ok((
        [(header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)],
        s.schema.to_string(),
    )
        .into_response())
}

async fn subjects_of_id(
    State(api): State<Api>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q)?;
    let mut subjects: Vec<String> = registry(&api)
        .versions_of_schema(parse_id(&id)?, q.flag("deleted")?)?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(&subjects)
}

async fn versions_of_id(
    State(api): State<Api>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q)?;
    let refs: Vec<SubjectVersionRef> = registry(&api)
        .versions_of_schema(parse_id(&id)?, q.flag("deleted")?)?
        .into_iter()
        .map(|(subject, version)| SubjectVersionRef { subject, version })
        .collect();
    ok(&refs)
}

async fn subjects(State(api): State<Api>, RawQuery(q): RawQuery) -> Answer {
    let q = Query::parse(q)?;
    let all = registry(&api).subjects(
        q.text("subjectPrefix"),
        q.flag("deleted")?,
        q.flag("deleted_only")?,
    );
    ok(&q.page(all)?)
}

async fn versions(
    State(api): State<Api>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q)?;
    let all = registry(&api).versions(&subject, q.flag("deleted")?, q.flag("deleted_only")?)?;
    ok(&q.page(all)?)
}

async fn register(
    State(api): State<Api>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let input = schema_body(&api, &headers, body).await?;
    let r = registry(&api);
    let v = blocking(move || r.register(&subject, &input)).await?;
    ok(&RegisteredId { id: v.schema.id })
}

async fn lookup(
    State(api): State<Api>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let q = Query::parse(q)?;
    let input = schema_body(&api, &headers, body).await?;
    let v = registry(&api).lookup(&subject, &input, q.flag("deleted")?)?;
    ok(&version_body(v))
}

async fn version(
    State(api): State<Api>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q)?;
    let v = registry(&api).version(&subject, VersionRef::parse(&version)?, q.flag("deleted")?)?;
    ok(&version_body(v))
}

async fn version_schema(
    State(api): State<Api>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let q = Query::parse(q)?;
    let v = registry(&api).version(&subject, VersionRef::parse(&version)?, q.flag("deleted")?)?;
    Ok((
        [(header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)],
        v.schema.schema.to_string(),
    )
        .into_response())
}

async fn referenced_by(
    State(api): State<Api>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    // Schemas cannot reference others yet, so none refers to this one; the
    // version must still exist.
    registry(&api).version(&subject, VersionRef::parse(&version)?, true)?;
    ok(&Vec::<u32>::new())
}

async fn delete_subject(
    State(api): State<Api>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let permanent = Query::parse(q)?.flag("permanent")?;
    let r = registry(&api);
    ok(&blocking(move || r.delete_subject(&subject, permanent)).await?)
}

async fn delete_version(
    State(api): State<Api>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let permanent = Query::parse(q)?.flag("permanent")?;
    let version = VersionRef::parse(&version)?;
    let r = registry(&api);
    ok(&blocking(move || r.delete_version(&subject, version, permanent)).await?)
}

fn compatibility(verdict: Verdict, verbose: bool) -> CompatibilityAnswer {
    let wire = |i: &tidings_schema::compat::Incompatibility| Incompatibility {
        version: i.version,
        direction: match i.direction {
            Direction::Backward => "backward",
            Direction::Forward => "forward",
        }
        .to_owned(),
        path: i.finding.path.clone(),
        rule: i.finding.rule.as_str().to_owned(),
        detail: i.finding.detail.clone(),
    };
    CompatibilityAnswer {
        is_compatible: verdict.compatible(),
        messages: if verbose {
            verdict
                .incompatibilities
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        },
        incompatibilities: if verbose {
            verdict.incompatibilities.iter().map(wire).collect()
        } else {
            Vec::new()
        },
        notes: if verbose {
            verdict.notes.iter().map(wire).collect()
        } else {
            Vec::new()
        },
    }
}

async fn check_all(
    State(api): State<Api>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let verbose = Query::parse(q)?.flag("verbose")?;
    let input = schema_body(&api, &headers, body).await?;
    let (_, verdict) = registry(&api).check(&subject, None, &input)?;
    ok(&compatibility(verdict, verbose))
}

async fn check_one(
    State(api): State<Api>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let verbose = Query::parse(q)?.flag("verbose")?;
    let version = VersionRef::parse(&version)?;
    let input = schema_body(&api, &headers, body).await?;
    let (_, verdict) = registry(&api).check(&subject, Some(version), &input)?;
    ok(&compatibility(verdict, verbose))
}

async fn config_body(api: &Api, headers: &HeaderMap, body: Body) -> Result<Level, Refusal> {
    let bytes = crate::body::read(headers, body, api.limits().body_bytes_max)
        .await
        .map_err(|e| Refusal::bad_request(e.message().to_owned()))?;
    let request: ConfigRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("the request body is not {{\"compatibility\": \"<level>\"}}: {e}"),
        )
    })?;
    level_of(&request.compatibility)
}

fn config_answer(level: Level) -> Answer {
    ok(&ConfigAnswer {
        compatibility_level: level.as_str().to_owned(),
    })
}

async fn global_config(State(api): State<Api>) -> Answer {
    config_answer(registry(&api).config(None, true)?)
}

async fn subject_config(
    State(api): State<Api>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let to_global = Query::parse(q)?.flag("defaultToGlobal")?;
    config_answer(registry(&api).config(Some(&subject), to_global)?)
}

async fn set_global_config(State(api): State<Api>, headers: HeaderMap, body: Body) -> Answer {
    let level = config_body(&api, &headers, body).await?;
    let r = registry(&api);
    blocking(move || r.set_config(None, level)).await?;
    ok(&ConfigRequest {
        compatibility: level.as_str().to_owned(),
    })
}

async fn set_subject_config(
    State(api): State<Api>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let level = config_body(&api, &headers, body).await?;
    let r = registry(&api);
    blocking(move || r.set_config(Some(&subject), level)).await?;
    ok(&ConfigRequest {
        compatibility: level.as_str().to_owned(),
    })
}

async fn delete_global_config(State(api): State<Api>) -> Answer {
    let r = registry(&api);
    config_answer(blocking(move || r.delete_config(None)).await?)
}

async fn delete_subject_config(State(api): State<Api>, Path(subject): Path<String>) -> Answer {
    let r = registry(&api);
    config_answer(blocking(move || r.delete_config(Some(&subject))).await?)
}

async fn mode() -> Answer {
    ok(&ModeAnswer {
        mode: "READWRITE".into(),
    })
}

/// Confluent's newer serializers first ask which subject a topic is
/// associated with; Tidings keeps no associations, so they fall back to
/// their naming strategy (`<topic>-value`).
async fn associations() -> Answer {
    ok(&Vec::<String>::new())
}
