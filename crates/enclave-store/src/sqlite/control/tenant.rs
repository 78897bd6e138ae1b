//! One tenant's control plane: its keys, audit log, idempotency records,\n//! usage counters, budget alerts and jobs.

use chrono::{DateTime, Utc};
use enclave_core::TenantId;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::{bad, key_row, SqliteControl, KEY_COLS};
use crate::control::{
    idempotency_decision, AuditEvent, BudgetAlert, Idempotency, IdempotencyState, JobBounds,
    JobItemResult, JobRecord, KeyRecord, NewAuditEvent, NewJob, PendingJobs, TenantAudit,
    TenantJobs, TenantKeys, TenantUsage, UsageCounts,
};
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::{row_ts, ts};
use crate::{StoreError, StoreResult};

pub(super) struct SqliteTenantControl {
    pub(super) control: SqliteControl,
    pub(super) tenant: TenantId,
}

#[async_trait::async_trait]
impl TenantKeys for SqliteTenantControl {
    async fn insert_key(&self, key: KeyRecord) -> StoreResult<()> {
        if key.tenant_id != self.tenant {
            return Err(StoreError::Internal("key of another tenant".into()));
        }
        self.control
            .run(move |c| {
                c.execute(
                    &format!("INSERT INTO api_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)"),
                    params![
                        key.key_id,
                        key.tenant_id.as_str(),
                        key.name,
                        key.role.as_str(),
                        key.salt,
                        key.secret_hash,
                        key.created_by,
                        ts(key.created_at),
                        key.expires_at.map(ts)
                    ],
                )
                .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let t = self.tenant.clone();
        self.control
            .run(move |c| {
                let mut st = c
                    .prepare(&format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at DESC, key_id"
                    ))
                    .map_err(sql_err)?;
                let rows = st
                    .query_map([t.as_str()], key_row)
                    .map_err(sql_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql_err)?;
                Ok(rows)
            })
            .await
    }

    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (t, key_id) = (self.tenant.clone(), key_id.to_owned());
        self.control
            .run(move |c| {
                let n = c
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?3 WHERE tenant_id = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                        params![t.as_str(), key_id, ts(at)],
                    )
                    .map_err(sql_err)?;
                Ok(n > 0)
            })
            .await
    }
}

#[async_trait::async_trait]
impl TenantAudit for SqliteTenantControl {
    async fn append_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        let scope = self.tenant.as_str().to_owned();
        self.control
            .run(move |c| SqliteControl::append(c, scope, ev))
            .await
    }
}

#[async_trait::async_trait]
impl Idempotency for SqliteTenantControl {
    async fn idempotency_begin(
        &self,
        key: &str,
        request_hash: &[u8],
        now: DateTime<Utc>,
        abandoned_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyState> {
        let (t, key, hash) = (self.tenant.clone(), key.to_owned(), request_hash.to_vec());
        self.control
            .run(move |c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_err)?;
                let stored = tx
                    .query_row(
                        "SELECT request_hash, status, response, created_at FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2",
                        params![t.as_str(), key],
                        |r| {
                            let status: Option<u16> = r.get(1)?;
                            let body: Option<String> = r.get(2)?;
                            Ok((
                                r.get::<_, Vec<u8>>(0)?,
                                status.zip(body.and_then(|b| serde_json::from_str(&b).ok())),
                                row_ts(&r.get::<_, String>(3)?)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql_err)?;
                let (state, claim) =
                    idempotency_decision(stored, &hash, abandoned_before, expired_before);
                if claim {
                    tx.execute(
                        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response, created_at) \
                         VALUES (?1, ?2, ?3, NULL, NULL, ?4) ON CONFLICT (tenant_id, key) DO UPDATE SET \
                         request_hash = excluded.request_hash, status = NULL, response = NULL, created_at = excluded.created_at",
                        params![t.as_str(), key, hash, ts(now)],
                    )
                    .map_err(sql_err)?;
                }
                tx.commit().map_err(sql_err)?;
                Ok(state)
            })
            .await
    }

    async fn idempotency_finish(&self, key: &str, status: u16, body: &Value) -> StoreResult<()> {
        let (t, key, body) = (self.tenant.clone(), key.to_owned(), body.to_string());
        self.control
            .run(move |c| {
                c.execute(
                    "UPDATE idempotency_keys SET status = ?3, response = ?4 WHERE tenant_id = ?1 AND key = ?2",
                    params![t.as_str(), key, status, body],
                )
                .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        let (t, key) = (self.tenant.clone(), key.to_owned());
        self.control
            .run(move |c| {
                c.execute(
                    "DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2 AND status IS NULL",
                    params![t.as_str(), key],
                )
                .map_err(sql_err)?;
                Ok(())
            })
            .await
    }
}

#[async_trait::async_trait]
impl TenantUsage for SqliteTenantControl {
    async fn add_usage(&self, day: chrono::NaiveDate, u: UsageCounts) -> StoreResult<()> {
        let t = self.tenant.clone();
        self.control
            .run(move |c| {
                c.execute(
                    "INSERT INTO usage_daily (tenant_id, day, requests, searches, documents_added, tokens_embedded) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant_id = ?1) \
                     ON CONFLICT (tenant_id, day) DO UPDATE SET requests = requests + excluded.requests, \
                     searches = searches + excluded.searches, documents_added = documents_added + excluded.documents_added, \
                     tokens_embedded = tokens_embedded + excluded.tokens_embedded",
                    params![
                        t.as_str(),
                        day.to_string(),
                        u.requests as i64,
                        u.searches as i64,
                        u.documents_added as i64,
                        u.tokens_embedded as i64
                    ],
                )
                .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn usage(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, UsageCounts)>> {
        let t = self.tenant.clone();
        self.control
            .run(move |c| {
                let mut st = c
                    .prepare(
                        "SELECT day, requests, searches, documents_added, tokens_embedded FROM usage_daily \
                         WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day",
                    )
                    .map_err(sql_err)?;
                let rows = st
                    .query_map(params![t.as_str(), from.to_string(), to.to_string()], |r| {
                        let day: String = r.get(0)?;
                        Ok((
                            day.parse::<chrono::NaiveDate>().map_err(bad)?,
                            UsageCounts {
                                requests: r.get::<_, i64>(1)? as u64,
                                searches: r.get::<_, i64>(2)? as u64,
                                documents_added: r.get::<_, i64>(3)? as u64,
                                tokens_embedded: r.get::<_, i64>(4)? as u64,
                            },
                        ))
                    })
                    .map_err(sql_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql_err)?;
                Ok(rows)
            })
            .await
    }

    async fn record_budget_alert(
        &self,
        alert: &BudgetAlert,
        retry: std::time::Duration,
    ) -> StoreResult<bool> {
        let (t, a) = (self.tenant.clone(), alert.clone());
        self.control
            .run(move |c| crate::sqlite::alerts::record(c, &t, &a, retry))
            .await
    }
}

#[async_trait::async_trait]
impl TenantJobs for SqliteTenantControl {
    async fn create_job(&self, job: NewJob, bounds: JobBounds) -> StoreResult<JobRecord> {
        let t = self.tenant.clone();
        let rec = JobRecord::queued(&job);
        self.control
            .run(move |c| crate::sqlite::jobs::create(c, &t, &job, bounds))
            .await?;
        Ok(rec)
    }

    async fn pending_jobs(&self) -> StoreResult<PendingJobs> {
        let t = self.tenant.clone();
        self.control
            .run(move |c| crate::sqlite::jobs::pending(c, &t))
            .await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<(JobRecord, Vec<JobItemResult>)>> {
        let (t, job) = (self.tenant.clone(), job_id.to_owned());
        self.control
            .run(move |c| crate::sqlite::jobs::get(c, &t, &job))
            .await
    }

    async fn job_payload(&self, job_id: &str) -> StoreResult<Option<Value>> {
        let (t, job) = (self.tenant.clone(), job_id.to_owned());
        self.control
            .run(move |c| crate::sqlite::jobs::payload(c, &t, &job))
            .await
    }

    async fn job_progress(
        &self,
        job_id: &str,
        owner: &str,
        results: &[JobItemResult],
        lease: std::time::Duration,
    ) -> StoreResult<bool> {
        let (t, job, owner, results) = (
            self.tenant.clone(),
            job_id.to_owned(),
            owner.to_owned(),
            results.to_vec(),
        );
        self.control
            .run(move |c| crate::sqlite::jobs::progress(c, &t, &job, &owner, &results, lease))
            .await
    }

    async fn finish_job(&self, job_id: &str, owner: &str) -> StoreResult<bool> {
        let (t, job, owner) = (self.tenant.clone(), job_id.to_owned(), owner.to_owned());
        self.control
            .run(move |c| crate::sqlite::jobs::finish(c, &t, &job, &owner))
            .await
    }
}
