//! Tenant self-service (API.md §7): stats, export, API keys.

use axum::body::Body as HttpBody;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Body, Caller, Viewer, Q};
use crate::service::keys::{new_key, store_key, CreatedKey, KeyView, NewKeyBody};
use crate::service::quota;
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(export))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    #[serde(default)]
    breakdown: Option<bool>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "tenant",
    params(("breakdown" = Option<bool>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "counts of the credential's tenant", body = serde_json::Value)
    )
)]
async fn stats(caller: Caller<Viewer>, Q(q): Q<StatsQuery>) -> ApiResult<impl IntoResponse> {
    let _ = (q.tenant_id, q.owner_id);
    let s = caller.reader().statistics().await?;
    let used = quota::storage_used(
        caller.state(),
        caller.ctx.tenant_id(),
        caller.tenant_handle(),
        s.total_size_bytes,
    )
    .await?;
    let mut body = json!({
        "document_count": s.document_count,
        "chunk_count": s.chunk_count,
        "total_size_bytes": s.total_size_bytes,
        "total_tokens": s.total_tokens,
        "message_count": used.message_count,
        "message_bytes": used.messages,
        "pending_job_bytes": used.pending_jobs,
        "storage_bytes": used.total(),
    });
    if q.breakdown.unwrap_or(true) {
        body["by_type"] = json!(s.by_type);
    }
    Ok(Json(body))
}

/// What a second concurrent export of a tenant is told to wait.
const EXPORT_RETRY_SECS: u64 = 5;

/// NDJSON, one document per line with its chunks and vectors, streamed
/// page by page from the store; one at a time per tenant.
#[utoipa::path(
    get,
    path = "/v1/export",
    tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "one document per line with its chunks and vectors", body = String, content_type = "application/x-ndjson")
    )
)]
async fn export(caller: Caller<Admin>) -> ApiResult<Response> {
    // One export per tenant at a time (per process): a second is 429 at
    // once, before it is audited or reads anything.
    let turn = caller
        .state()
        .export_turn(caller.ctx.tenant_id())
        .ok_or(ApiError::RateLimited(EXPORT_RETRY_SECS))?;
    caller.audit("tenant.export", None, json!({})).await?;
    // One document per line, written as its pieces arrive: the record,
    // then its chunks a page at a time, then the line's end — memory is a
    // page of chunks, not a document (a 20,000-chunk document's line is
    // tens of MB).
    let mut first_chunk = true;
    let stream = caller.exporter().export_pieces().map(move |piece| {
        let _turn = &turn;
        let mut out = Vec::new();
        piece
            .and_then(|p| p.write_ndjson(&mut first_chunk, &mut out))
            .map_err(|e| {
                tracing::error!(error = %e, "export failed mid-stream");
                std::io::Error::other("export failed")
            })?;
        Ok::<_, std::io::Error>(out)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        HttpBody::from_stream(stream),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = NewKeyBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the key, shown only here", body = CreatedKey)
    )
)]
async fn create_key(
    caller: Caller<Admin>,
    Body(b): Body<NewKeyBody>,
) -> ApiResult<impl IntoResponse> {
    if !caller.ctx.role.allows(b.role) {
        caller
            .audit(
                "role.denied",
                None,
                json!({"wanted_key_role": b.role.as_str()}),
            )
            .await?;
        return Err(ApiError::forbidden(format!(
            "a {} credential cannot create a {} key",
            caller.ctx.role, b.role
        )));
    }
    let role = b.role;
    let pending = new_key(caller.ctx.tenant_id(), b, &caller.ctx.actor)?;
    // Audited before the key exists: an unaudited key is never made.
    caller
        .audit(
            "key.create",
            Some(pending.key_id().to_owned()),
            json!({"role": role.as_str()}),
        )
        .await?;
    let created = store_key(caller.keys().as_ref(), pending).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "keys without secrets", body = serde_json::Value)
    )
)]
async fn list_keys(caller: Caller<Admin>) -> ApiResult<impl IntoResponse> {
    let keys: Vec<KeyView> = caller
        .keys()
        .list_keys()
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[utoipa::path(
    delete,
    path = "/v1/keys/{key_id}",
    tag = "keys",
    params(("key_id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "revoked, effective on the next request")
    )
)]
async fn revoke_key(caller: Caller<Admin>, Path(key_id): Path<String>) -> ApiResult<StatusCode> {
    // Audited first (fail closed); a missing or foreign id is then the
    // same 404 as ever.
    caller
        .audit("key.revoke", Some(key_id.clone()), json!({}))
        .await?;
    // As with minting: no key above the caller's own role (an admin key
    // cannot revoke the owner's). The listing is the tenant's own keys, so
    // a foreign id is simply not in it.
    let target = caller
        .keys()
        .list_keys()
        .await?
        .into_iter()
        .find(|k| k.key_id == key_id);
    if let Some(k) = &target {
        if !caller.ctx.role.allows(k.role) {
            return Err(ApiError::forbidden(format!(
                "a {} credential cannot revoke a {} key",
                caller.ctx.role, k.role
            )));
        }
    }
    if target.is_none() || !caller.keys().revoke_key(&key_id, Utc::now()).await? {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
