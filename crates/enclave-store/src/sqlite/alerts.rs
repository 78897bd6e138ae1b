//! Budget alerts in the embedded control plane: one row per tenant, month
//! and threshold (the primary key is the dedupe), kept undelivered until a
//! delivery succeeds.

use std::time::Duration;

use chrono::Utc;
use enclave_core::TenantId;
use rusqlite::{params, Connection, TransactionBehavior};

use super::db::sql_err;
use super::sql::{row_ts, ts};
use crate::control::{alert_backoff, BudgetAlert, MAX_ALERT_ATTEMPTS};
use crate::{StoreError, StoreResult};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS budget_alerts (
    tenant_id         TEXT NOT NULL,
    month             TEXT NOT NULL,
    threshold_percent INTEGER NOT NULL,
    budget_usd        REAL NOT NULL,
    spent_usd         REAL NOT NULL,
    created_at        TEXT NOT NULL,
    attempts          INTEGER NOT NULL,
    next_attempt_at   TEXT NOT NULL,
    delivered_at      TEXT,
    PRIMARY KEY (tenant_id, month, threshold_percent)
) WITHOUT ROWID;
";

fn later(d: Duration) -> String {
    ts(Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1)))
}

pub(crate) fn record(
    c: &mut Connection,
    tenant: &TenantId,
    a: &BudgetAlert,
    retry: Duration,
) -> StoreResult<bool> {
    let n = c
        .execute(
            "INSERT INTO budget_alerts (tenant_id, month, threshold_percent, budget_usd, spent_usd, created_at, attempts, next_attempt_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, 1, ?7 WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant_id = ?1) \
             ON CONFLICT (tenant_id, month, threshold_percent) DO NOTHING",
            params![
                tenant.as_str(),
                a.month,
                a.threshold_percent,
                a.budget_usd,
                a.spent_usd,
                ts(a.created_at),
                later(alert_backoff(retry, 1))
            ],
        )
        .map_err(sql_err)?;
    Ok(n > 0)
}

pub(crate) fn due(
    c: &mut Connection,
    limit: u32,
    retry: Duration,
) -> StoreResult<Vec<BudgetAlert>> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let rows = {
        let mut st = tx
            .prepare(
                "SELECT tenant_id, month, threshold_percent, budget_usd, spent_usd, created_at, attempts \
                 FROM budget_alerts WHERE delivered_at IS NULL AND next_attempt_at <= ?1 AND attempts < ?2 \
                 ORDER BY next_attempt_at LIMIT ?3",
            )
            .map_err(sql_err)?;
        let rows = st
            .query_map(params![ts(Utc::now()), MAX_ALERT_ATTEMPTS, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, u32>(6)?,
                ))
            })
            .map_err(sql_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_err)?;
        rows
    };
    let mut out = Vec::with_capacity(rows.len());
    for (t, month, threshold, budget, spent, created, attempts) in rows {
        let attempts = attempts + 1;
        tx.execute(
            "UPDATE budget_alerts SET attempts = ?4, next_attempt_at = ?5 \
             WHERE tenant_id = ?1 AND month = ?2 AND threshold_percent = ?3",
            params![
                t,
                month,
                threshold,
                attempts,
                later(alert_backoff(retry, attempts))
            ],
        )
        .map_err(sql_err)?;
        out.push(BudgetAlert {
            tenant_id: TenantId::parse(&t).map_err(|e| StoreError::Internal(e.to_string()))?,
            month,
            threshold_percent: threshold,
            budget_usd: budget,
            spent_usd: spent,
            created_at: row_ts(&created).map_err(sql_err)?,
            attempts,
        });
    }
    tx.commit().map_err(sql_err)?;
    Ok(out)
}

pub(crate) fn delivered(
    c: &mut Connection,
    tenant: &TenantId,
    month: &str,
    threshold: u32,
) -> StoreResult<()> {
    c.execute(
        "UPDATE budget_alerts SET delivered_at = ?4 WHERE tenant_id = ?1 AND month = ?2 AND threshold_percent = ?3",
        params![tenant.as_str(), month, threshold, ts(Utc::now())],
    )
    .map_err(sql_err)?;
    Ok(())
}
