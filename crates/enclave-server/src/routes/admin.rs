//! The platform plane (API.md §8): tenants, bootstrap keys, purge, audit.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use enclave_core::{Isolation, Slug, TenantId, TenantStatus};
use enclave_store::control::{verify_chain, NewTenant, TenantRecord, TenantUpdate, PLATFORM_SCOPE};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{PlatformAdmin, Q};
use crate::routes::tenant::{new_key, store_key, NewKeyBody};
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, purge))
        .routes(routes!(bootstrap_key))
        .routes(routes!(audit))
}

/// Limits a tenant may carry (API.md §8); anything else is refused.
const LIMIT_FIELDS: [&str; 6] = [
    "requests_per_second",
    "burst",
    "max_documents",
    "max_storage_bytes",
    "embedding_tokens_per_day",
    "monthly_budget_usd",
];

/// Largest value of any limit: 2^53, the integers a JSON number holds exactly.
pub(crate) const MAX_LIMIT_VALUE: f64 = 9_007_199_254_740_992.0;

fn check_limits(v: Option<Value>) -> ApiResult<Option<Map<String, Value>>> {
    let m = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::invalid("limits: must be an object")),
    };
    for (k, v) in &m {
        if !LIMIT_FIELDS.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "limits.{k}: unknown limit; expected one of {}",
                LIMIT_FIELDS.join(", ")
            )));
        }
        // Bounded so every store reads back the number it was given
        // (PostgreSQL's jsonb spells 1e308 out in 309 digits).
        if !(v.is_null()
            || v.as_f64()
                .is_some_and(|x| (0.0..=MAX_LIMIT_VALUE).contains(&x)))
        {
            return Err(ApiError::invalid(format!(
                "limits.{k}: must be a number from 0 to 2^53, or null"
            )));
        }
        // The rate buckets cannot be empty (suspend a tenant to stop it).
        match k.as_str() {
            "requests_per_second" if v.as_f64().is_some_and(|x| !(1e-6..=1e6).contains(&x)) => {
                return Err(ApiError::invalid(
                    "limits.requests_per_second: must be between 0.000001 and 1000000",
                ))
            }
            "burst"
                if !v.is_null()
                    && !v
                        .as_u64()
                        .is_some_and(|b| (1..=u32::MAX as u64).contains(&b)) =>
            {
                return Err(ApiError::invalid(
                    "limits.burst: must be a whole number of at least 1",
                ))
            }
            _ => {}
        }
    }
    // One spelling per value, whatever the store does to numbers: whole
    // values (and -0.0) as integers, the rest as floats. jsonb would turn
    // -0.0 into 0 and 1.50 into 1.5, and the audit event's hash, computed
    // on what was sent, would no longer verify.
    let m = m
        .into_iter()
        .map(|(k, v)| {
            let v = match v.as_f64() {
                Some(x) if x.fract() == 0.0 && x.abs() <= MAX_LIMIT_VALUE => {
                    Value::from(x.abs() as u64)
                }
                Some(x) => Value::from(x),
                None => v,
            };
            (k, v)
        })
        .collect();
    Ok(Some(m))
}

/// `NotFound` unless the tenant has a directory entry.
async fn exists(state: &AppState, id: &TenantId) -> ApiResult<()> {
    state
        .control()
        .get_tenant(id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound)
}

fn tenant_id(s: &str) -> ApiResult<TenantId> {
    TenantId::parse(s).map_err(|_| ApiError::NotFound)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    slug: String,
    name: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    isolation: Option<Isolation>,
    #[serde(default)]
    limits: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/tenants",
    tag = "admin",
    request_body = CreateTenant,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the tenant", body = serde_json::Value),
        (status = 400, description = "invalid_request", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn create(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    crate::auth::Body(b): crate::auth::Body<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    let id = TenantId::parse(&b.id)?;
    let slug = Slug::parse(&b.slug)?;
    enclave_core::check::name("name", &b.name, enclave_core::check::MAX_LABEL_CHARS)?;
    let isolation = b.isolation.unwrap_or_default();
    let placer = match (isolation, &state.inner.placer) {
        (Isolation::Shared, _) => None,
        (_, Some(p)) => Some(p.clone()),
        (i, None) => {
            return Err(ApiError::invalid(format!(
                "isolation: {:?} needs a server that places tenants (PostgreSQL with \
                 placement_owner_url set); otherwise tenants start shared and move with \
                 `enclave move-tenant`",
                i.as_str()
            )))
        }
    };
    let mut rec = state
        .control()
        .create_tenant(NewTenant {
            id: id.clone(),
            slug,
            name: b.name,
            plan: b.plan.unwrap_or_else(|| "free".into()),
            // Every tenant starts shared; the placer moves it (still empty).
            isolation: Isolation::Shared,
            limits: check_limits(b.limits)?.unwrap_or_default(),
            now: Utc::now(),
        })
        .await?;
    state.inner.usage.revive(&id);
    if let Some(placer) = placer {
        if let Err(e) = placer.place(&id, isolation).await {
            // No half-made tenant: the entry goes again (it holds nothing).
            state.control().purge_tenant(&id).await?;
            state.invalidate_tenant(&id);
            return Err(e.into());
        }
        rec = state
            .control()
            .get_tenant(&id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("tenant {id} vanished while placed")))?;
    }
    state
        .audit(
            None,
            &admin.actor,
            "tenant.create",
            Some(id.to_string()),
            json!({}),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `limit` (1–100, default 20) and `cursor` (the last tenant id of the
/// previous page) of a page of tenants.
pub(crate) fn tenant_page(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<(u32, Option<TenantId>)> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 100"));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(
            TenantId::parse(c)
                .map_err(|_| ApiError::invalid("cursor: not a cursor this server issued"))?,
        ),
    };
    Ok((limit, after))
}

#[utoipa::path(
    get,
    path = "/admin/v1/tenants",
    tag = "admin",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "tenants in id order", body = serde_json::Value),
        (status = 400, description = "invalid_request", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn list(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Q(p): Q<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = tenant_page(p.limit, p.cursor.as_deref())?;
    let tenants: Vec<TenantRecord> = state.control().list_tenants(after.as_ref(), limit).await?;
    let next = (tenants.len() == limit as usize)
        .then(|| tenants.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(json!({"tenants": tenants, "next_cursor": next})))
}

#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}",
    tag = "admin",
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the tenant", body = serde_json::Value),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (also another tenant's id)", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn get_one(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    let rec = state
        .control()
        .get_tenant(&id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(rec))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchTenant {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    status: Option<TenantStatus>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    limits: Option<Value>,
}

#[utoipa::path(
    patch,
    path = "/admin/v1/tenants/{id}",
    tag = "admin",
    request_body = PatchTenant,
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the tenant", body = serde_json::Value),
        (status = 400, description = "invalid_request", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (also another tenant's id)", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn update(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::auth::Body(b): crate::auth::Body<PatchTenant>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    let limits = check_limits(b.limits)?;
    let detail = json!({"status": b.status, "plan": b.plan, "limits": limits});
    exists(&state, &id).await?;
    // Audited before it takes effect (fail closed).
    state
        .audit(
            None,
            &admin.actor,
            "tenant.update",
            Some(id.to_string()),
            detail,
        )
        .await?;
    let rec = state
        .control()
        .update_tenant(
            &id,
            TenantUpdate {
                status: b.status,
                plan: b.plan,
                limits,
            },
            Utc::now(),
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    state.invalidate_tenant(&id);
    Ok(Json(rec))
}

#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{id}/keys",
    tag = "admin",
    request_body = NewKeyBody,
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the key, shown only here", body = crate::routes::tenant::CreatedKey),
        (status = 400, description = "invalid_request", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (also another tenant's id)", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn bootstrap_key(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::auth::Body(b): crate::auth::Body<NewKeyBody>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    exists(&state, &id).await?;
    let role = b.role;
    let pending = new_key(&id, b, &admin.actor)?;
    state
        .audit(
            Some(&id),
            &admin.actor,
            "key.create",
            Some(pending.key_id().to_owned()),
            json!({"role": role.as_str(), "bootstrap": true}),
        )
        .await?;
    let created = store_key(state.control().tenant(&id).as_ref(), pending).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Deletes every document (chunks, vectors, index entries), then the
/// tenant's keys, audit log and directory entry, then checks each store
/// holds nothing of it. The purge itself is recorded in the platform log.
#[utoipa::path(
    delete,
    path = "/admin/v1/tenants/{id}",
    tag = "admin",
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the purge receipt", body = serde_json::Value),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (also another tenant's id)", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn purge(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    exists(&state, &id).await?;
    // The purge is in the platform log before anything is deleted (fail
    // closed); the receipt follows it.
    state
        .audit(
            None,
            &admin.actor,
            "tenant.purge.begin",
            Some(id.to_string()),
            json!({}),
        )
        .await?;
    // Suspend, and (PostgreSQL) wait for every writer of the tenant on
    // every replica and mark the entry purging: later writes refuse to add
    // data. Handles made before the purge below can no longer write here.
    if !state.control().begin_purge(&id).await? {
        return Err(ApiError::NotFound);
    }
    state.invalidate_tenant(&id);
    let tenant = state.memory().tenant(&id);
    let purged = tenant.purge().await?;
    let (documents_deleted, chunks_deleted, messages_deleted) =
        (purged.documents, purged.chunks, purged.messages);
    let control = {
        // No flush may write this tenant's counts while (or after) they
        // are deleted.
        let _no_flush = state.inner.usage.flushing.lock().await;
        state.inner.usage.forget(&id);
        state.inner.usage.tombstone(&id);
        state.control().purge_tenant(&id).await?
    };
    state.invalidate_tenant(&id);
    let after = tenant.statistics().await?;
    let messages_left = tenant.message_count().await?;
    let left = state.control().tenant_rows_left(&id).await?;
    let verified_empty =
        after.document_count == 0 && after.chunk_count == 0 && messages_left == 0 && left == 0;
    let receipt = json!({
        "tenant_id": id.as_str(),
        "documents_deleted": documents_deleted,
        "chunks_deleted": chunks_deleted,
        "messages_deleted": messages_deleted,
        "keys_revoked": control.keys_revoked,
        "verified_empty": verified_empty,
    });
    state
        .audit(
            None,
            &admin.actor,
            "tenant.purge",
            Some(id.to_string()),
            receipt.clone(),
        )
        .await?;
    if !verified_empty {
        return Err(ApiError::Internal(format!(
            "purge of {id} left data behind: {after:?}, {left} control rows"
        )));
    }
    Ok(Json(receipt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "admin",
    params(("tenant_id" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "audit events, oldest first", body = serde_json::Value),
        (status = 400, description = "invalid_request", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn audit(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Q(q): Q<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let scope = match q.tenant_id.as_deref() {
        None | Some("") => PLATFORM_SCOPE.to_owned(),
        Some(t) => TenantId::parse(t)?.to_string(),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 500"));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("cursor: not a cursor this server issued"))?,
    };
    // This replica's aggregated refusals first, so a read sees them.
    state.inner.failures.flush(state.control().as_ref()).await;
    let events = state.control().audit_events(&scope, after, limit).await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(json!({"events": events, "next_cursor": next})))
}

/// Verifies every audit chain; used by `enclave audit verify`.
pub async fn verify_all(
    control: &dyn enclave_store::control::ControlStore,
) -> ApiResult<Vec<(String, Result<u64, i64>)>> {
    let mut out = Vec::new();
    for scope in control.audit_scopes().await? {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = control.audit_events(&scope, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            events.extend(page);
        }
        out.push((scope, verify_chain(&events)));
    }
    Ok(out)
}
