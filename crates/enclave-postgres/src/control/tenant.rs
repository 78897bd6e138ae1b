//! One tenant's control plane: its keys, audit log, idempotency records,\n//! usage counters, budget alerts and jobs, each in the tenant's RLS scope.

use chrono::{DateTime, Utc};
use enclave_core::TenantId;
use enclave_store::control::{
    idempotency_decision, AuditEvent, BudgetAlert, Idempotency, IdempotencyState, JobBounds,
    JobItemResult, JobRecord, KeyRecord, NewAuditEvent, NewJob, PendingJobs, TenantAudit,
    TenantJobs, TenantKeys, TenantUsage, UsageCounts,
};
use enclave_store::StoreResult;
use serde_json::Value;

use super::{key_row, PgControl, Scope, KEY_COLS};
use crate::store::db_err;

pub(super) struct PgTenantControl {
    pub(super) control: PgControl,
    pub(super) tenant: TenantId,
}

#[async_trait::async_trait]
impl TenantKeys for PgTenantControl {
    async fn insert_key(&self, key: KeyRecord) -> StoreResult<()> {
        let mut tx = self
            .control
            .begin(Scope::Tenant(self.tenant.as_str()))
            .await?;
        sqlx::query(&format!(
            "INSERT INTO public.api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
        ))
        .bind(&key.key_id)
        .bind(self.tenant.as_str())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.salt)
        .bind(&key.secret_hash)
        .bind(&key.created_by)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let mut tx = self
            .control
            .begin(Scope::Tenant(self.tenant.as_str()))
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM public.api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, key_id"
        ))
        .bind(self.tenant.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(key_row).collect()
    }

    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self
            .control
            .begin(Scope::Tenant(self.tenant.as_str()))
            .await?;
        let n = sqlx::query(
            "UPDATE public.api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND key_id = $2 AND revoked_at IS NULL",
        )
        .bind(self.tenant.as_str())
        .bind(key_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }
}

#[async_trait::async_trait]
impl TenantAudit for PgTenantControl {
    async fn append_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        self.control.append(self.tenant.as_str(), ev).await
    }
}

#[async_trait::async_trait]
impl Idempotency for PgTenantControl {
    async fn idempotency_begin(
        &self,
        key: &str,
        request_hash: &[u8],
        now: DateTime<Utc>,
        abandoned_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyState> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        // One claim of a key at a time.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('idem:' || $1 || ':' || $2, 0))",
        )
        .bind(t)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let row: Option<(Vec<u8>, Option<i32>, Option<Value>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT request_hash, status, response, created_at FROM public.idempotency_keys WHERE tenant_id = $1 AND key = $2",
        )
        .bind(t)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let stored = row.map(|(h, status, body, at)| (h, status.map(|s| s as u16).zip(body), at));
        let (state, claim) =
            idempotency_decision(stored, request_hash, abandoned_before, expired_before);
        if claim {
            sqlx::query(
                "INSERT INTO public.idempotency_keys (tenant_id, key, request_hash, status, response, created_at) \
                 VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT (tenant_id, key) DO UPDATE SET \
                 request_hash = EXCLUDED.request_hash, status = NULL, response = NULL, created_at = EXCLUDED.created_at",
            )
            .bind(t)
            .bind(key)
            .bind(request_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(state)
    }

    async fn idempotency_finish(&self, key: &str, status: u16, body: &Value) -> StoreResult<()> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        sqlx::query("UPDATE public.idempotency_keys SET status = $3, response = $4 WHERE tenant_id = $1 AND key = $2")
            .bind(t)
            .bind(key)
            .bind(status as i32)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        sqlx::query("DELETE FROM public.idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL")
            .bind(t)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }
}

#[async_trait::async_trait]
impl TenantUsage for PgTenantControl {
    async fn add_usage(&self, day: chrono::NaiveDate, u: UsageCounts) -> StoreResult<()> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        // A purged tenant (no directory entry) gets no rows back.
        sqlx::query(
            "INSERT INTO public.usage_daily (tenant_id, day, requests, searches, documents_added, tokens_embedded) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM public.tenants WHERE tenant_id = $1) \
             ON CONFLICT (tenant_id, day) DO UPDATE SET requests = usage_daily.requests + EXCLUDED.requests, \
             searches = usage_daily.searches + EXCLUDED.searches, documents_added = usage_daily.documents_added + EXCLUDED.documents_added, \
             tokens_embedded = usage_daily.tokens_embedded + EXCLUDED.tokens_embedded",
        )
        .bind(t)
        .bind(day)
        .bind(u.requests as i64)
        .bind(u.searches as i64)
        .bind(u.documents_added as i64)
        .bind(u.tokens_embedded as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn usage(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, UsageCounts)>> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let rows: Vec<(chrono::NaiveDate, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT day, requests, searches, documents_added, tokens_embedded FROM public.usage_daily \
             WHERE tenant_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(t)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|(d, r, s, a, k)| {
                (
                    d,
                    UsageCounts {
                        requests: r as u64,
                        searches: s as u64,
                        documents_added: a as u64,
                        tokens_embedded: k as u64,
                    },
                )
            })
            .collect())
    }

    async fn record_budget_alert(
        &self,
        alert: &BudgetAlert,
        retry: std::time::Duration,
    ) -> StoreResult<bool> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let stored = crate::alerts::record_alert(&mut tx, t, alert, retry).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(stored)
    }
}

#[async_trait::async_trait]
impl TenantJobs for PgTenantControl {
    async fn create_job(&self, job: NewJob, bounds: JobBounds) -> StoreResult<JobRecord> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        // One submission of the tenant at a time counts and inserts, so the
        // bounds hold across replicas.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('jobs:' || $1, 0))")
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        crate::jobs::pending(&mut tx, t)
            .await?
            .admit(job.payload.to_string().len() as u64, bounds)?;
        crate::jobs::create(&mut tx, t, &job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(JobRecord::queued(&job))
    }

    async fn pending_jobs(&self) -> StoreResult<PendingJobs> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let p = crate::jobs::pending(&mut tx, t).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(p)
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<(JobRecord, Vec<JobItemResult>)>> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let got = crate::jobs::get(&mut tx, t, job_id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(got)
    }

    async fn job_payload(&self, job_id: &str) -> StoreResult<Option<Value>> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let got = crate::jobs::payload(&mut tx, t, job_id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(got)
    }

    async fn job_progress(
        &self,
        job_id: &str,
        owner: &str,
        results: &[JobItemResult],
        lease: std::time::Duration,
    ) -> StoreResult<bool> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let held = crate::jobs::progress(&mut tx, t, job_id, owner, results, lease).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(held)
    }

    async fn finish_job(&self, job_id: &str, owner: &str) -> StoreResult<bool> {
        let t = self.tenant.as_str();
        let mut tx = self.control.begin(Scope::Tenant(t)).await?;
        let held = crate::jobs::finish(&mut tx, t, job_id, owner).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(held)
    }
}
