//! `GET /v1/sagas/...`: instances of the toolkit's sagas, read from the
//! database `tidings serve --sagas-database` names.

use axum::extract::State;
use axum::Json;
use tidings_api::{
    ErrorCode, SagaCompensation, SagaInstance, SagaInstanceList, SagaInstanceSummary,
    SagaListQuery, SagaTimeout, SagaTransition, SAGA_LIST_MAX,
};
use tidings_store::sagas::{SagaReader, Status};

use crate::extract::{PathJson, QueryJson};
use crate::{Api, ApiError};

/// Instances listed when the query names no limit.
const LIST_DEFAULT: usize = 100;

fn reader(api: &Api) -> Result<&SagaReader, ApiError> {
    api.sagas().ok_or_else(|| {
        ApiError::new(
            ErrorCode::SagasNotConfigured,
            "this server reads no sagas' database: start it with --sagas-database <url>",
        )
    })
}

fn unreachable(e: tidings_store::StoreError) -> ApiError {
    ApiError::new(
        ErrorCode::StorageFailed,
        format!("the sagas' database: {e}"),
    )
}

/// `GET /v1/sagas/{saga}/instances`.
pub(crate) async fn list(
    State(api): State<Api>,
    PathJson(saga): PathJson<String>,
    QueryJson(query): QueryJson<SagaListQuery>,
) -> Result<Json<SagaInstanceList>, ApiError> {
    let reader = reader(&api)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).map_err(|_| {
            ApiError::invalid_request(format!(
                "status {s:?} is not a saga status: running, completed, compensating, compensated or failed"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=SAGA_LIST_MAX).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "limit {limit} is not between 1 and {SAGA_LIST_MAX}"
        )));
    }
    let instances = reader
        .list(&saga, status, limit)
        .await
        .map_err(unreachable)?
        .into_iter()
        .map(|i| SagaInstanceSummary {
            key: i.key,
            status: i.status.as_str().to_owned(),
            version: i.version,
            updated_ms: i.updated_at_ms,
        })
        .collect();
    Ok(Json(SagaInstanceList { saga, instances }))
}

/// `GET /v1/sagas/{saga}/instances/{key}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson((saga, key)): PathJson<(String, String)>,
) -> Result<Json<SagaInstance>, ApiError> {
    let reader = reader(&api)?;
    let Some(i) = reader.instance(&saga, &key).await.map_err(unreachable)? else {
        return Err(ApiError::new(
            ErrorCode::UnknownSagaInstance,
            format!("saga {saga} has no instance {key}"),
        ));
    };
    Ok(Json(SagaInstance {
        saga: i.saga,
        key: i.key,
        status: i.status.as_str().to_owned(),
        state: i.state,
        version: i.version,
        correlation: i.correlation,
        started_ms: i.started_at_ms,
        updated_ms: i.updated_at_ms,
        history: i
            .history
            .into_iter()
            .map(|h| SagaTransition {
                version: h.version,
                input: h.input,
                status: h.status.as_str().to_owned(),
                note: h.note,
                at_ms: h.at_ms,
            })
            .collect(),
        timeouts: i
            .timeouts
            .into_iter()
            .map(|t| SagaTimeout {
                name: t.name,
                due_ms: t.due_at_ms,
            })
            .collect(),
        compensations: i
            .compensations
            .into_iter()
            .map(|c| SagaCompensation {
                name: c.name,
                data: c.data,
            })
            .collect(),
    }))
}
