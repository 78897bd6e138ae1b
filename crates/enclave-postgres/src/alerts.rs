//! Budget alerts in the control plane: recorded once per tenant, month and
//! threshold; due deliveries taken with row locks so replicas share the
//! sweep (the twin of the embedded store's `sqlite/alerts.rs`).

use std::time::Duration;

use enclave_core::TenantId;
use enclave_store::{StoreError, StoreResult};
use sqlx::PgConnection;

use crate::jobs::secs;
use crate::store::db_err;

/// In tenant scope: stores the alert unless one exists for its key.
pub(crate) async fn record_alert(
    tx: &mut PgConnection,
    t: &str,
    a: &enclave_store::control::BudgetAlert,
    retry: Duration,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "INSERT INTO public.budget_alerts (tenant_id, month, threshold_percent, budget_usd, spent_usd, created_at, attempts, next_attempt_at) \
         SELECT $1, $2, $3, $4, $5, $6, 1, now() + make_interval(secs => $7) \
         WHERE EXISTS (SELECT 1 FROM public.tenants WHERE tenant_id = $1) \
         ON CONFLICT (tenant_id, month, threshold_percent) DO NOTHING",
    )
    .bind(t)
    .bind(&a.month)
    .bind(a.threshold_percent as i32)
    .bind(a.budget_usd)
    .bind(a.spent_usd)
    .bind(a.created_at)
    .bind(secs(enclave_store::control::alert_backoff(retry, 1)))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?
    .rows_affected();
    Ok(n > 0)
}

/// tenant, month, threshold, budget, spent, created, attempts
type AlertRow = (
    String,
    String,
    i32,
    f64,
    f64,
    chrono::DateTime<chrono::Utc>,
    i32,
);

/// In platform scope: takes due alerts (row locks skip ones another
/// replica's sweep holds) and moves their next attempt on.
pub(crate) async fn due_alerts(
    tx: &mut PgConnection,
    limit: u32,
    retry: Duration,
) -> StoreResult<Vec<enclave_store::control::BudgetAlert>> {
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT tenant_id, month, threshold_percent, budget_usd, spent_usd, created_at, attempts \
         FROM public.budget_alerts WHERE delivered_at IS NULL AND next_attempt_at <= now() AND attempts < $1 \
         ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(enclave_store::control::MAX_ALERT_ATTEMPTS as i32)
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for (t, month, threshold, budget, spent, created, attempts) in rows {
        let attempts = attempts as u32 + 1;
        sqlx::query(
            "UPDATE public.budget_alerts SET attempts = $4, next_attempt_at = now() + make_interval(secs => $5) \
             WHERE tenant_id = $1 AND month = $2 AND threshold_percent = $3",
        )
        .bind(&t)
        .bind(&month)
        .bind(threshold)
        .bind(attempts as i32)
        .bind(secs(enclave_store::control::alert_backoff(retry, attempts)))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        out.push(enclave_store::control::BudgetAlert {
            tenant_id: TenantId::parse(&t).map_err(|e| StoreError::Internal(e.to_string()))?,
            month,
            threshold_percent: threshold as u32,
            budget_usd: budget,
            spent_usd: spent,
            created_at: created,
            attempts,
        });
    }
    Ok(out)
}

pub(crate) async fn alert_delivered(
    tx: &mut PgConnection,
    t: &str,
    month: &str,
    threshold: u32,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE public.budget_alerts SET delivered_at = now() \
         WHERE tenant_id = $1 AND month = $2 AND threshold_percent = $3",
    )
    .bind(t)
    .bind(month)
    .bind(threshold as i32)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(())
}
