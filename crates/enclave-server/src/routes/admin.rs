//! The platform plane (API.md §8): tenants, bootstrap keys, purge, audit.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use enclave_core::{Isolation, Slug, TenantId, TenantStatus};
use enclave_store::control::{NewTenant, TenantRecord, TenantUpdate, PLATFORM_SCOPE};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{PlatformAdmin, Q};
use crate::service::keys::{new_key, store_key, NewKeyBody};
use crate::service::{purge, tenants};
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, purge))
        .routes(routes!(bootstrap_key))
        .routes(routes!(audit))
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
    /// The fusion, alpha and aggregation the tenant's searches use when a
    /// request names none (docs/API-EXTENSIONS.md).
    #[serde(default)]
    search: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/tenants",
    tag = "admin",
    request_body = CreateTenant,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the tenant", body = serde_json::Value),
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
    let new = NewTenant {
        id,
        slug,
        name: b.name,
        plan: b.plan.unwrap_or_else(|| "free".into()),
        isolation: Isolation::Shared,
        limits: Default::default(),
        search: Default::default(),
        now: Utc::now(),
    };
    let isolation = b.isolation.unwrap_or_default();
    let rec =
        tenants::create_tenant(&state, &admin.actor, new, b.limits, b.search, isolation).await?;
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

#[utoipa::path(
    get,
    path = "/admin/v1/tenants",
    tag = "admin",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "tenants in id order", body = serde_json::Value)
    )
)]
async fn list(
    _: PlatformAdmin,
    State(state): State<AppState>,
    Q(p): Q<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = super::paging::tenant_page(p.limit, p.cursor.as_deref())?;
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
        (status = 200, description = "the tenant", body = serde_json::Value)
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
    /// Replaces the tenant's search defaults (`{}` clears them).
    #[serde(default)]
    search: Option<Value>,
}

#[utoipa::path(
    patch,
    path = "/admin/v1/tenants/{id}",
    tag = "admin",
    request_body = PatchTenant,
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the tenant", body = serde_json::Value)
    )
)]
async fn update(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::auth::Body(b): crate::auth::Body<PatchTenant>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    let update = TenantUpdate {
        status: b.status,
        plan: b.plan,
        limits: tenants::check_limits(b.limits)?,
        search: tenants::check_search(b.search)?,
    };
    let rec = tenants::update_tenant(&state, &admin.actor, &id, update).await?;
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
        (status = 201, description = "the key, shown only here", body = crate::service::keys::CreatedKey)
    )
)]
async fn bootstrap_key(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::auth::Body(b): crate::auth::Body<NewKeyBody>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    tenants::exists(&state, &id).await?;
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
        (status = 200, description = "the purge receipt", body = serde_json::Value)
    )
)]
async fn purge(
    admin: PlatformAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    let receipt = purge::purge_tenant(&state, &admin.actor, &id).await?;
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
        (status = 200, description = "audit events, oldest first", body = serde_json::Value)
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
