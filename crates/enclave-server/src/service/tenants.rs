//! The tenant directory as the platform plane changes it (API.md §8):
//! creation with placement, limits checked to one spelling, updates audited
//! before they take effect.

use chrono::Utc;
use enclave_core::{Isolation, SearchDefaults, TenantId};
use enclave_store::control::{LimitValue, NewTenant, TenantLimits, TenantRecord, TenantUpdate};
use serde_json::{json, Value};

use crate::{ApiError, ApiResult, AppState};

/// Limits a tenant may carry (API.md §8); anything else is refused.
/// Largest value of any limit: 2^53, the integers a JSON number holds exactly.
pub(crate) const MAX_LIMIT_VALUE: f64 = 9_007_199_254_740_992.0;

/// A request's `limits` checked and in one spelling per value.
pub(crate) fn check_limits(v: Option<Value>) -> ApiResult<Option<TenantLimits>> {
    let m = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::invalid("limits: must be an object")),
    };
    for (k, v) in &m {
        if !TenantLimits::FIELDS.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "limits.{k}: unknown limit; expected one of {}",
                TenantLimits::FIELDS.join(", ")
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
    let one = |v: &Value| v.as_f64().map(LimitValue::new);
    Ok(Some(TenantLimits {
        burst: m.get("burst").map(one),
        embedding_tokens_per_day: m.get("embedding_tokens_per_day").map(one),
        max_documents: m.get("max_documents").map(one),
        max_storage_bytes: m.get("max_storage_bytes").map(one),
        monthly_budget_usd: m.get("monthly_budget_usd").map(one),
        requests_per_second: m.get("requests_per_second").map(one),
    }))
}

/// A request's `search` defaults (docs/API-EXTENSIONS.md) checked: every
/// field one a search could use, `-0` spelled `0` (the audit event's hash
/// is computed on what is stored, and jsonb has no negative zero).
pub(crate) fn check_search(v: Option<Value>) -> ApiResult<Option<SearchDefaults>> {
    let v = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::invalid("search: must be an object")),
    };
    let mut d: SearchDefaults = serde_json::from_value(v).map_err(|e| {
        ApiError::invalid(format!(
            "search: {e}; fields: fusion, alpha, aggregation, aggregation_decay"
        ))
    })?;
    d.check()?;
    d.alpha = d.alpha.map(|a| a + 0.0);
    Ok(Some(d))
}

/// `NotFound` unless the tenant has a directory entry.
pub(crate) async fn exists(state: &AppState, id: &TenantId) -> ApiResult<()> {
    state
        .control()
        .get_tenant(id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound)
}

/// Creates a tenant (always shared first, still empty) with `limits`
/// checked, and, for `schema` or `database` isolation, has the placer move
/// it; no half-made tenant is left when placing fails.
pub(crate) async fn create_tenant(
    state: &AppState,
    actor: &str,
    new: NewTenant,
    limits: Option<Value>,
    search: Option<Value>,
    isolation: Isolation,
) -> ApiResult<TenantRecord> {
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
    let id = new.id.clone();
    let mut rec = state
        .control()
        .create_tenant(NewTenant {
            isolation: Isolation::Shared,
            limits: check_limits(limits)?.unwrap_or_default(),
            search: check_search(search)?.unwrap_or_default(),
            ..new
        })
        .await?;
    state.inner.usage.revive(&id);
    if let Some(placer) = placer {
        if let Err(e) = placer.place(&id, isolation).await {
            // The entry goes again (it holds nothing).
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
            actor,
            "tenant.create",
            Some(id.to_string()),
            json!({}),
        )
        .await?;
    Ok(rec)
}

/// Changes a tenant's status, plan, limits or search defaults, audited
/// first (fail closed);
/// this process forgets its cached entry, other replicas hear of it.
pub(crate) async fn update_tenant(
    state: &AppState,
    actor: &str,
    id: &TenantId,
    update: TenantUpdate,
) -> ApiResult<TenantRecord> {
    let detail = json!({"status": update.status, "plan": update.plan, "limits": update.limits,
        "search": update.search});
    exists(state, id).await?;
    state
        .audit(None, actor, "tenant.update", Some(id.to_string()), detail)
        .await?;
    let rec = state
        .control()
        .update_tenant(id, update, Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    state.invalidate_tenant(id);
    Ok(rec)
}
