//! Documents (API.md §4) and search (§5).

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use enclave::ListParams;
use enclave_core::{DocumentId, DocumentPatch, SearchParams};
use enclave_store::control::{IdempotencyState, UsageCounts};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Body, Caller, HashedBody, Member, Viewer, Q};
use crate::service::ingest::{self, Created, NewDocumentBody};
use crate::service::quota;
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(delete_many))
        .routes(routes!(get_one, update, delete_one))
        .routes(routes!(search))
}

fn parse_id(s: &str) -> ApiResult<DocumentId> {
    // A malformed id cannot name a document of this tenant: 404, exactly as
    // a well-formed id of another tenant.
    DocumentId::parse(s).map_err(|_| ApiError::NotFound)
}

/// `Idempotency-Key`: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid("Idempotency-Key: must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(k.to_owned()))
}

/// How long a completed key is remembered, and after how long a pending one
/// (its request died mid-way) may be taken over.
const IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);

#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    request_body = NewDocumentBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key and body replay the first result")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the document, its chunks and vectors, stored atomically", body = Created),
        (status = 409, description = "conflict", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn create(
    caller: Caller<Member>,
    headers: HeaderMap,
    body: HashedBody<NewDocumentBody>,
) -> ApiResult<Response> {
    let Some(key) = idempotency_key(&headers)? else {
        let created = add(&caller, body.value).await?;
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    };
    let control = caller.state().control().tenant(caller.ctx.tenant_id());
    let now = Utc::now();
    let abandoned = now
        - chrono::Duration::from_std(caller.state().options().request_timeout)
            .unwrap_or(chrono::Duration::seconds(60))
            * 2;
    match control
        .idempotency_begin(&key, &body.sha256, now, abandoned, now - IDEMPOTENCY_TTL)
        .await?
    {
        IdempotencyState::Acquired => {}
        IdempotencyState::Completed { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
            return Ok((status, [("idempotent-replayed", "true")], Json(body)).into_response());
        }
        IdempotencyState::Mismatch => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used with a different body".into(),
            ))
        }
        IdempotencyState::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed; retry later".into(),
            ))
        }
    }
    match add(&caller, body.value).await {
        Ok(created) => {
            let value =
                serde_json::to_value(&created).map_err(|e| ApiError::Internal(e.to_string()))?;
            control.idempotency_finish(&key, 201, &value).await?;
            Ok((StatusCode::CREATED, Json(value)).into_response())
        }
        Err(e) => {
            // The request changed nothing: a retry may run it again.
            if let Err(abort) = control.idempotency_abort(&key).await {
                tracing::warn!(error = %abort, "could not release an idempotency key");
            }
            Err(e)
        }
    }
}

async fn add(caller: &Caller<Member>, b: NewDocumentBody) -> ApiResult<Created> {
    ingest::store_document(
        caller.state(),
        &caller.ctx.tenant,
        caller.writer(),
        b.into_document()?,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    params(("limit" = Option<u32>, Query, description = "1-100, default 20"), ("cursor" = Option<String>, Query), ("offset" = Option<u64>, Query), ("origin" = Option<String>, Query), ("type" = Option<String>, Query), ("created_after" = Option<String>, Query), ("created_before" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of documents, newest first", body = serde_json::Value)
    )
)]
async fn list(
    caller: Caller<Viewer>,
    Q(q): Q<Vec<(String, String)>>,
) -> ApiResult<impl IntoResponse> {
    let mut p = ListParams::default();
    for (k, v) in q {
        let num = |v: &str, f: &str| {
            v.parse::<u64>()
                .map_err(|_| ApiError::invalid(format!("{f}: must be a non-negative integer")))
        };
        let time = |v: &str, f: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid(format!("{f}: must be an RFC 3339 timestamp")))
        };
        match k.as_str() {
            "limit" => p.limit = Some(num(&v, "limit")?.min(u32::MAX as u64) as u32),
            "offset" => p.offset = Some(num(&v, "offset")?),
            "cursor" => p.cursor = Some(v),
            "origin" => p.origin = Some(v),
            "type" => p.doc_type = Some(v),
            "created_after" => p.created_after = Some(time(&v, "created_after")?),
            "created_before" => p.created_before = Some(time(&v, "created_before")?),
            // Checked against the credential by the extractor.
            "tenant_id" | "owner_id" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    Ok(Json(caller.reader().list_documents(p).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    #[serde(default)]
    include_chunks: bool,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path), ("include_chunks" = Option<bool>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the document", body = serde_json::Value)
    )
)]
async fn get_one(
    caller: Caller<Viewer>,
    Path(id): Path<String>,
    Q(q): Q<GetQuery>,
) -> ApiResult<impl IntoResponse> {
    let _ = (q.tenant_id, q.owner_id);
    let id = parse_id(&id)?;
    Ok(Json(
        caller.reader().get_document(&id, q.include_chunks).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[utoipa::path(
    patch,
    path = "/v1/documents/{id}",
    tag = "documents",
    request_body = PatchBody,
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the updated document", body = serde_json::Value),
        (status = 409, description = "conflict: another document of the same origin has that name", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn update(
    caller: Caller<Member>,
    Path(id): Path<String>,
    Body(b): Body<PatchBody>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let metadata = match b.metadata {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(ApiError::invalid("metadata: must be a JSON object")),
    };
    let info = caller
        .writer()
        .update_document(
            &id,
            DocumentPatch {
                name: b.name,
                metadata,
            },
        )
        .await?;
    Ok(Json(info))
}

#[utoipa::path(
    delete,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted with its chunks and vectors")
    )
)]
async fn delete_one(caller: Caller<Member>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    // Audited before it takes effect: if the audit cannot be written,
    // nothing is deleted.
    caller
        .audit("document.delete", Some(id.to_string()), json!({}))
        .await?;
    caller.writer().delete_document(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeleteMany {
    document_ids: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/documents/delete",
    tag = "documents",
    request_body = DeleteMany,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the number deleted; other tenants' ids are not counted", body = serde_json::Value)
    )
)]
async fn delete_many(
    caller: Caller<Member>,
    Body(b): Body<DeleteMany>,
) -> ApiResult<impl IntoResponse> {
    // Ids that are not ids cannot be this tenant's: not counted, like
    // another tenant's.
    let ids: Vec<DocumentId> = b
        .document_ids
        .iter()
        .filter_map(|s| DocumentId::parse(s).ok())
        .collect();
    if b.document_ids.len() > 1000 {
        return Err(ApiError::invalid("document_ids: at most 1000 ids per call"));
    }
    caller
        .audit(
            "document.delete_many",
            None,
            json!({"requested": b.document_ids.len(), "ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()}),
        )
        .await?;
    let n = caller.writer().delete_documents(&ids).await?;
    Ok(Json(json!({"deleted_count": n})))
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    request_body = serde_json::Value,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "results from the credential's tenant only", body = serde_json::Value)
    )
)]
async fn search(
    caller: Caller<Viewer>,
    State(_): State<AppState>,
    Body(mut p): Body<SearchParams>,
) -> ApiResult<impl IntoResponse> {
    let started = Instant::now();
    caller.ctx.tenant.search.apply(&mut p);
    quota::budget_left_usd(
        caller.state(),
        caller.ctx.tenant_id(),
        &caller.ctx.tenant.limits,
    )
    .await?;
    let mut r = caller.reader().search(p).await?;
    caller.state().inner.usage.record(
        caller.ctx.tenant_id(),
        UsageCounts {
            searches: 1,
            ..Default::default()
        },
    );
    r.took_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Json(r))
}
