//! Jobs in the main database (migration 0009): `jobs` and `job_results`
//! are the tenant's (RLS on `app.tenant_id`), `job_queue` holds only ids and
//! leases and is also visible in platform scope, where replicas claim work.
//! Lease times use the database's clock, so replicas' clocks do not matter.

use std::time::Duration;

use enclave_core::TenantId;
use enclave_store::control::{
    ClaimedJob, JobItemResult, JobRecord, JobStatus, NewJob, PendingJobs,
};
use enclave_store::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::store::db_err;

pub(crate) fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64().max(0.001)
}

/// In platform scope. Claims are serialised by a transaction-level advisory
/// lock, so two replicas never take one job, nor two jobs of one tenant.
pub(crate) async fn claim(
    tx: &mut PgConnection,
    owner: &str,
    lease: Duration,
) -> StoreResult<Option<ClaimedJob>> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('enclave:job-claim', 0))")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE public.job_queue q SET lease_owner = $1, lease_until = now() + make_interval(secs => $2) \
         FROM (SELECT c.tenant_id, c.job_id FROM public.job_queue c \
               WHERE (c.lease_until IS NULL OR c.lease_until < now()) \
                 AND NOT EXISTS (SELECT 1 FROM public.job_queue r WHERE r.tenant_id = c.tenant_id \
                                 AND r.job_id <> c.job_id AND r.lease_until >= now()) \
               ORDER BY c.enqueued_at, c.job_id LIMIT 1) pick \
         WHERE q.tenant_id = pick.tenant_id AND q.job_id = pick.job_id \
         RETURNING q.tenant_id, q.job_id",
    )
    .bind(owner)
    .bind(secs(lease))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    row.map(|(t, j)| {
        TenantId::parse(&t)
            .map(|tenant| ClaimedJob { tenant, job_id: j })
            .map_err(|e| StoreError::Internal(e.to_string()))
    })
    .transpose()
}

pub(crate) async fn unfinished(tx: &mut PgConnection) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.job_queue")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    Ok(n as u64)
}

/// The tenant's unfinished jobs and the bytes of their stored payloads.
pub(crate) async fn pending(tx: &mut PgConnection, t: &str) -> StoreResult<PendingJobs> {
    let (jobs, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(octet_length(payload::text)), 0)::int8 FROM public.jobs \
         WHERE tenant_id = $1 AND status <> 'succeeded'",
    )
    .bind(t)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(PendingJobs {
        jobs: jobs as u64,
        bytes: bytes as u64,
    })
}

pub(crate) async fn create(tx: &mut PgConnection, t: &str, job: &NewJob) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO public.jobs (tenant_id, job_id, kind, status, payload, total, created_by, created_at) \
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7)",
    )
    .bind(t)
    .bind(&job.job_id)
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.total as i32)
    .bind(&job.created_by)
    .bind(job.created_at)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO public.job_queue (tenant_id, job_id, enqueued_at) VALUES ($1, $2, $3)",
    )
    .bind(t)
    .bind(&job.job_id)
    .bind(job.created_at)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn get(
    tx: &mut PgConnection,
    t: &str,
    job_id: &str,
) -> StoreResult<Option<(JobRecord, Vec<JobItemResult>)>> {
    let row = sqlx::query(
        "SELECT job_id, kind, status, total, created_by, created_at, started_at, finished_at, \
         (SELECT count(*) FROM public.job_results r WHERE r.tenant_id = j.tenant_id AND r.job_id = j.job_id), \
         (SELECT count(*) FROM public.job_results r WHERE r.tenant_id = j.tenant_id AND r.job_id = j.job_id AND r.error IS NOT NULL) \
         FROM public.jobs j WHERE tenant_id = $1 AND job_id = $2",
    )
    .bind(t)
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let Some(r) = row else { return Ok(None) };
    let status: String = r.try_get(2).map_err(db_err)?;
    let rec = JobRecord {
        job_id: r.try_get(0).map_err(db_err)?,
        kind: r.try_get(1).map_err(db_err)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Queued),
        total: r.try_get::<i32, _>(3).map_err(db_err)? as u64,
        created_by: r.try_get(4).map_err(db_err)?,
        created_at: r.try_get(5).map_err(db_err)?,
        started_at: r.try_get(6).map_err(db_err)?,
        finished_at: r.try_get(7).map_err(db_err)?,
        done: r.try_get::<i64, _>(8).map_err(db_err)? as u64,
        failed: r.try_get::<i64, _>(9).map_err(db_err)? as u64,
    };
    let rows: Vec<(i32, Option<String>, Option<Value>)> = sqlx::query_as(
        "SELECT idx, document_id, error FROM public.job_results WHERE tenant_id = $1 AND job_id = $2 ORDER BY idx",
    )
    .bind(t)
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let results = rows
        .into_iter()
        .map(|(i, d, e)| JobItemResult {
            index: i as u64,
            document_id: d,
            error: e,
        })
        .collect();
    Ok(Some((rec, results)))
}

pub(crate) async fn payload(
    tx: &mut PgConnection,
    t: &str,
    job_id: &str,
) -> StoreResult<Option<Value>> {
    let p: Option<Option<Value>> =
        sqlx::query_scalar("SELECT payload FROM public.jobs WHERE tenant_id = $1 AND job_id = $2")
            .bind(t)
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
    Ok(p.flatten())
}

/// Whether `owner` holds the job's lease (the row is locked until commit).
async fn holds(tx: &mut PgConnection, t: &str, job_id: &str, owner: &str) -> StoreResult<bool> {
    let n: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM public.job_queue WHERE tenant_id = $1 AND job_id = $2 AND lease_owner = $3 FOR UPDATE",
    )
    .bind(t)
    .bind(job_id)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(n.is_some())
}

pub(crate) async fn progress(
    tx: &mut PgConnection,
    t: &str,
    job_id: &str,
    owner: &str,
    results: &[JobItemResult],
    lease: Duration,
) -> StoreResult<bool> {
    if !holds(tx, t, job_id, owner).await? {
        return Ok(false);
    }
    if !results.is_empty() {
        let idx: Vec<i32> = results.iter().map(|r| r.index as i32).collect();
        let docs: Vec<Option<String>> = results.iter().map(|r| r.document_id.clone()).collect();
        let errors: Vec<Option<Value>> = results.iter().map(|r| r.error.clone()).collect();
        sqlx::query(
            "INSERT INTO public.job_results (tenant_id, job_id, idx, document_id, error) \
             SELECT $1, $2, i, d, e FROM unnest($3::int[], $4::text[], $5::jsonb[]) AS u(i, d, e) \
             ON CONFLICT (tenant_id, job_id, idx) DO UPDATE SET document_id = EXCLUDED.document_id, error = EXCLUDED.error",
        )
        .bind(t)
        .bind(job_id)
        .bind(&idx)
        .bind(&docs)
        .bind(&errors)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    sqlx::query(
        "UPDATE public.jobs SET status = 'running', started_at = COALESCE(started_at, now()) \
         WHERE tenant_id = $1 AND job_id = $2",
    )
    .bind(t)
    .bind(job_id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "UPDATE public.job_queue SET lease_until = now() + make_interval(secs => $3) \
         WHERE tenant_id = $1 AND job_id = $2",
    )
    .bind(t)
    .bind(job_id)
    .bind(secs(lease))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(true)
}

pub(crate) async fn finish(
    tx: &mut PgConnection,
    t: &str,
    job_id: &str,
    owner: &str,
) -> StoreResult<bool> {
    if !holds(tx, t, job_id, owner).await? {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE public.jobs SET status = 'succeeded', payload = NULL, \
         started_at = COALESCE(started_at, now()), finished_at = now() WHERE tenant_id = $1 AND job_id = $2",
    )
    .bind(t)
    .bind(job_id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query("DELETE FROM public.job_queue WHERE tenant_id = $1 AND job_id = $2")
        .bind(t)
        .bind(job_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    Ok(true)
}
