//! `GET /v1/usage` (API.md §7): the credential's tenant's counters.

use axum::Json;
use chrono::{Datelike, NaiveDate, Utc};
use enclave_core::TenantId;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Viewer, Q};
use crate::service::quota;
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(admin_usage))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
}

/// A day (`2026-12-01`) or an RFC 3339 timestamp (its UTC day), in years
/// 1–9999 as written (a timestamp whose UTC day falls just outside them
/// counts as their first or last day).
fn day(v: &str, field: &str) -> ApiResult<NaiveDate> {
    let invalid = || {
        ApiError::invalid(format!(
            "{field}: must be a date (YYYY-MM-DD, years 1-9999) or an RFC 3339 timestamp"
        ))
    };
    if let Ok(d) = v.parse::<NaiveDate>() {
        return Some(d)
            .filter(|d| (1..=9999).contains(&d.year()))
            .ok_or_else(invalid);
    }
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|_| invalid())?;
    let t = enclave_core::check::timestamp(field, t.with_timezone(&Utc))?;
    Ok(t.date_naive())
}

#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "tenant",
    params(("from" = Option<String>, Query, description = "first day (default: 30 days ago)"), ("to" = Option<String>, Query, description = "last day (default: today)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the tenant's usage, totals and by day", body = serde_json::Value)
    )
)]
async fn usage(caller: Caller<Viewer>, Q(q): Q<UsageQuery>) -> ApiResult<Json<serde_json::Value>> {
    let _ = (q.tenant_id, q.owner_id);
    let (from, to) = period(q.from.as_deref(), q.to.as_deref())?;
    let state = caller.state();
    let tenant = caller.ctx.tenant_id();
    state
        .inner
        .usage
        .flush(state.control().as_ref(), Some(tenant))
        .await;
    let stats = caller.reader().statistics().await?;
    let used = quota::storage_used(
        state,
        tenant,
        caller.tenant_handle(),
        stats.total_size_bytes,
    )
    .await?;
    let mut body = tenant_usage(state, tenant, from, to).await?;
    body["from"] = json!(from);
    body["to"] = json!(to);
    body["storage_bytes"] = json!(used.total());
    Ok(Json(body))
}

/// `from`/`to` of a usage query: days, by default the last 30, at most
/// [`crate::schema_rules::MAX_USAGE_DAYS`] of them.
fn period(from: Option<&str>, to: Option<&str>) -> ApiResult<(NaiveDate, NaiveDate)> {
    let today = Utc::now().date_naive();
    let to = to.map(|v| day(v, "to")).transpose()?.unwrap_or(today);
    let from = from
        .map(|v| day(v, "from"))
        .transpose()?
        .unwrap_or_else(|| {
            to.checked_sub_days(chrono::Days::new(30))
                .filter(|d| d.year() >= 1)
                .or(NaiveDate::from_ymd_opt(1, 1, 1))
                .unwrap_or(to)
        });
    // A longer period starts MAX_USAGE_DAYS before its end (the answer's
    // `from` says where); `from` after `to` is an empty period, all zeros.
    let longest = crate::schema_rules::MAX_USAGE_DAYS - 1;
    let from = if (to - from).num_days() > longest {
        to - chrono::Duration::days(longest)
    } else {
        from
    };
    Ok((from, to))
}

/// One tenant's stored counters in `[from, to]`, totals and by day, priced
/// now with the configured prices (`[prices]`).
async fn tenant_usage(
    state: &AppState,
    tenant: &TenantId,
    from: NaiveDate,
    to: NaiveDate,
) -> ApiResult<serde_json::Value> {
    let days = state.control().tenant(tenant).usage(from, to).await?;
    let (prices, model) = (&state.options().prices, state.memory().embedding_model());
    let mut total = enclave_store::control::UsageCounts::default();
    let by_day: Vec<serde_json::Value> = days
        .iter()
        .map(|(d, c)| {
            total.add(c);
            json!({"day": d, "requests": c.requests, "searches": c.searches,
                   "documents_added": c.documents_added, "tokens_embedded": c.tokens_embedded,
                   "cost_usd": prices.cost(c, model)})
        })
        .collect();
    Ok(json!({
        "requests": total.requests,
        "searches": total.searches,
        "documents_added": total.documents_added,
        "tokens_embedded": total.tokens_embedded,
        "cost_usd": prices.cost(&total, model),
        "by_day": by_day,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminUsageQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    tag = "admin",
    params(("from" = Option<String>, Query, description = "first day (default: 30 days ago)"), ("to" = Option<String>, Query, description = "last day (default: today)"), ("limit" = Option<u32>, Query, description = "tenants per page, 1-100 (default 20)"), ("cursor" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "usage and cost of every tenant, in tenant id order", body = serde_json::Value)
    )
)]
async fn admin_usage(
    _: crate::auth::PlatformAdmin,
    axum::extract::State(state): axum::extract::State<AppState>,
    Q(q): Q<AdminUsageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let (from, to) = period(q.from.as_deref(), q.to.as_deref())?;
    let (limit, after) = super::paging::tenant_page(q.limit, q.cursor.as_deref())?;
    state
        .inner
        .usage
        .flush(state.control().as_ref(), None)
        .await;
    let tenants = state.control().list_tenants(after.as_ref(), limit).await?;
    let mut rows = Vec::with_capacity(tenants.len());
    // Each tenant is read through its own scoped handles, as its own
    // /v1/usage would be: the admin view needs no cross-tenant query.
    for t in &tenants {
        let mut row = tenant_usage(&state, &t.id, from, to).await?;
        let handle = state.memory().tenant(&t.id);
        let stats = handle.statistics().await?;
        let used = quota::storage_used(&state, &t.id, &handle, stats.total_size_bytes).await?;
        row["tenant_id"] = json!(t.id);
        row["plan"] = json!(t.plan);
        row["status"] = json!(t.status);
        row["storage_bytes"] = json!(used.total());
        row["document_count"] = json!(stats.document_count);
        if let Some(budget) = t.limits.monthly_budget_usd() {
            row["monthly_budget_usd"] = json!(budget);
            row["month_to_date_usd"] = json!(quota::month_to_date_usd(&state, &t.id).await?);
        }
        rows.push(row);
    }
    let next = (tenants.len() == limit as usize)
        .then(|| tenants.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(
        json!({"from": from, "to": to, "tenants": rows, "next_cursor": next}),
    ))
}
