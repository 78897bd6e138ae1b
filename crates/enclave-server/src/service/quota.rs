//! Where quotas are enforced: the one answer to "what may this tenant still
//! do?" (API.md §8 `limits`). Documents and bytes come from the store's
//! statistics, embedded tokens and spend from the usage counters (stored
//! and not yet flushed), priced with `[prices]`.

use chrono::{Datelike, NaiveDate, Utc};
use enclave_core::TenantId;
use enclave_store::control::{TenantLimits, TenantRecord, UsageCounts};

use crate::{ApiError, ApiResult, AppState};

/// What the tenant's quotas (`max_documents`, `max_storage_bytes`,
/// `embedding_tokens_per_day`, `monthly_budget_usd`) leave for one write.
pub(crate) async fn write_budget(
    state: &AppState,
    tenant: &TenantRecord,
    handle: &enclave::Tenant,
) -> ApiResult<enclave::WriteBudget> {
    let limits = &tenant.limits;
    let (max_docs, max_bytes, max_tokens) = (
        limits.max_documents(),
        limits.max_storage_bytes(),
        limits.embedding_tokens_per_day(),
    );
    let mut budget = enclave::WriteBudget::default();
    if max_docs.is_some() || max_bytes.is_some() {
        let stats = handle.statistics().await?;
        budget.documents = max_docs.map(|m| m.saturating_sub(stats.document_count));
        if let Some(m) = max_bytes {
            let used = storage_used(state, &tenant.id, handle, stats.total_size_bytes).await?;
            budget.bytes = Some(m.saturating_sub(used.total()));
        }
    }
    // A monthly budget also caps the tokens this write may embed (what the
    // dollars left buy at the model's price).
    if let Some(left) = budget_left_usd(state, &tenant.id, limits).await? {
        let per_million = state
            .options()
            .prices
            .embedding_usd_per_million_tokens
            .get(state.memory().embedding_model())
            .copied()
            .unwrap_or(0.0);
        if per_million > 0.0 {
            let affordable = (left / per_million * 1e6).floor() as u64;
            budget.embedding_tokens = Some(affordable);
        }
    }
    if let Some(max) = max_tokens {
        let today = Utc::now().date_naive();
        let used = counts_since(state, &tenant.id, today)
            .await?
            .tokens_embedded;
        let today_left = max.saturating_sub(used);
        budget.embedding_tokens = Some(
            budget
                .embedding_tokens
                .map_or(today_left, |t| t.min(today_left)),
        );
    }
    Ok(budget)
}

/// What a tenant's data holds, as charged against `max_storage_bytes`:
/// documents (content, metadata, chunk labels, sections, precomputed
/// vectors), conversation messages, and the payloads of unfinished jobs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StorageUsed {
    pub documents: u64,
    pub messages: u64,
    pub message_count: u64,
    pub pending_jobs: u64,
}

impl StorageUsed {
    pub fn total(&self) -> u64 {
        self.documents + self.messages + self.pending_jobs
    }
}

pub(crate) async fn storage_used(
    state: &AppState,
    tenant: &TenantId,
    handle: &enclave::Tenant,
    document_bytes: u64,
) -> ApiResult<StorageUsed> {
    let messages = handle.message_usage().await?;
    let jobs = state.control().tenant(tenant).pending_jobs().await?;
    Ok(StorageUsed {
        documents: document_bytes,
        messages: messages.bytes,
        message_count: messages.count,
        pending_jobs: jobs.bytes,
    })
}

/// Refuses (429 `quota_exceeded`) storing `bytes` more than the tenant's
/// `max_storage_bytes` leaves; `what` says what needs them ("the message
/// needs").
pub(crate) async fn check_storage_for(
    state: &AppState,
    tenant: &TenantRecord,
    handle: &enclave::Tenant,
    what: &str,
    bytes: u64,
) -> ApiResult<()> {
    let Some(max) = tenant.limits.max_storage_bytes() else {
        return Ok(());
    };
    let stats = handle.statistics().await?;
    let used = storage_used(state, &tenant.id, handle, stats.total_size_bytes).await?;
    let left = max.saturating_sub(used.total());
    if bytes > left {
        return Err(ApiError::QuotaExceeded(format!(
            "max_storage_bytes: {what} {bytes} bytes and {left} are left"
        )));
    }
    Ok(())
}

/// The tenant's counters from `first` to today (UTC): the stored ones and
/// today's not yet flushed.
pub(crate) async fn counts_since(
    state: &AppState,
    tenant: &TenantId,
    first: NaiveDate,
) -> ApiResult<UsageCounts> {
    let today = Utc::now().date_naive();
    let mut total = UsageCounts::default();
    for (_, c) in state.control().tenant(tenant).usage(first, today).await? {
        total.add(&c);
    }
    total.add(&state.inner.usage.pending(tenant, today));
    Ok(total)
}

/// What the tenant has spent this (UTC) month, at the configured prices:
/// the stored counters and the ones not yet flushed.
pub(crate) async fn month_to_date_usd(state: &AppState, tenant: &TenantId) -> ApiResult<f64> {
    let today = Utc::now().date_naive();
    let total = counts_since(state, tenant, today.with_day(1).unwrap_or(today)).await?;
    Ok(state
        .options()
        .prices
        .cost(&total, state.memory().embedding_model()))
}

/// The tenant's `monthly_budget_usd` minus this month's spend, if it has a
/// budget; 429 `quota_exceeded` when nothing is left (so a caller that only
/// needs "may it spend at all?" just calls this).
pub(crate) async fn budget_left_usd(
    state: &AppState,
    tenant: &TenantId,
    limits: &TenantLimits,
) -> ApiResult<Option<f64>> {
    let Some(budget) = limits.monthly_budget_usd() else {
        return Ok(None);
    };
    let left = budget - month_to_date_usd(state, tenant).await?;
    if left <= 0.0 {
        return Err(ApiError::QuotaExceeded(format!(
            "monthly_budget_usd: this month's {budget} USD are spent"
        )));
    }
    Ok(Some(left))
}
