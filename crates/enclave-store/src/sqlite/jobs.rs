//! Jobs in the embedded control plane (`control.sqlite`): `jobs` (the
//! payload and status), `job_results` (one row per processed item) and
//! `job_queue` (lease holder and expiry), `tenant_id` leading every key.
//! One process owns the file, so claims are serialised by its connection
//! lock; leases still expire, so a job held by a killed process is taken
//! again after a restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use enclave_core::TenantId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::db::sql_err;
use super::sql::{opt_row_ts, row_ts, ts};
use crate::control::{
    ClaimedJob, JobBounds, JobItemResult, JobRecord, JobStatus, NewJob, PendingJobs,
};
use crate::StoreResult;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    tenant_id   TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    payload     TEXT,
    total       INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (tenant_id, job_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_results (
    tenant_id   TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    document_id TEXT,
    error       TEXT,
    PRIMARY KEY (tenant_id, job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_queue (
    tenant_id   TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    enqueued_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    PRIMARY KEY (tenant_id, job_id)
) WITHOUT ROWID;
";

/// The tables a purge empties (and `tenant_rows_left` counts).
pub(crate) const TABLES: [&str; 3] = ["jobs", "job_results", "job_queue"];

fn lease_end(lease: Duration) -> String {
    ts(Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30)))
}

pub(crate) fn claim(
    c: &mut Connection,
    owner: &str,
    lease: Duration,
) -> StoreResult<Option<ClaimedJob>> {
    let now = ts(Utc::now());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let found: Option<(String, String)> = tx
        .query_row(
            "SELECT q.tenant_id, q.job_id FROM job_queue q \
             WHERE (q.lease_until IS NULL OR q.lease_until < ?1) \
               AND NOT EXISTS (SELECT 1 FROM job_queue r WHERE r.tenant_id = q.tenant_id \
                               AND r.job_id <> q.job_id AND r.lease_until >= ?1) \
             ORDER BY q.enqueued_at, q.job_id LIMIT 1",
            [&now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
    let Some((tenant, job)) = found else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE job_queue SET lease_owner = ?3, lease_until = ?4 WHERE tenant_id = ?1 AND job_id = ?2",
        params![tenant, job, owner, lease_end(lease)],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    let tenant =
        TenantId::parse(&tenant).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
    Ok(Some(ClaimedJob {
        tenant,
        job_id: job,
    }))
}

pub(crate) fn unfinished(c: &mut Connection) -> StoreResult<u64> {
    c.query_row("SELECT count(*) FROM job_queue", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(sql_err)
}

/// The tenant's unfinished jobs and their payload bytes.
pub(crate) fn pending(c: &Connection, tenant: &TenantId) -> StoreResult<PendingJobs> {
    c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(CAST(payload AS BLOB))), 0) FROM jobs \
         WHERE tenant_id = ?1 AND status <> 'succeeded'",
        [tenant.as_str()],
        |r| {
            Ok(PendingJobs {
                jobs: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .map_err(sql_err)
}

pub(crate) fn create(
    c: &mut Connection,
    tenant: &TenantId,
    job: &NewJob,
    bounds: JobBounds,
) -> StoreResult<()> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    // Inside the IMMEDIATE transaction: concurrent submissions are counted
    // one after the other.
    pending(&tx, tenant)?.admit(job.payload.to_string().len() as u64, bounds)?;
    tx.execute(
        "INSERT INTO jobs (tenant_id, job_id, kind, status, payload, total, created_by, created_at) \
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7)",
        params![
            tenant.as_str(),
            job.job_id,
            job.kind,
            job.payload.to_string(),
            job.total as i64,
            job.created_by,
            ts(job.created_at)
        ],
    )
    .map_err(sql_err)?;
    tx.execute(
        "INSERT INTO job_queue (tenant_id, job_id, enqueued_at) VALUES (?1, ?2, ?3)",
        params![tenant.as_str(), job.job_id, ts(job.created_at)],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

pub(crate) fn get(
    c: &mut Connection,
    tenant: &TenantId,
    job_id: &str,
) -> StoreResult<Option<(JobRecord, Vec<JobItemResult>)>> {
    let t = tenant.as_str();
    let rec = c
        .query_row(
            "SELECT job_id, kind, status, total, created_by, created_at, started_at, finished_at, \
             (SELECT count(*) FROM job_results r WHERE r.tenant_id = j.tenant_id AND r.job_id = j.job_id), \
             (SELECT count(*) FROM job_results r WHERE r.tenant_id = j.tenant_id AND r.job_id = j.job_id AND r.error IS NOT NULL) \
             FROM jobs j WHERE tenant_id = ?1 AND job_id = ?2",
            params![t, job_id],
            |r| {
                let status: String = r.get(2)?;
                Ok(JobRecord {
                    job_id: r.get(0)?,
                    kind: r.get(1)?,
                    status: JobStatus::parse(&status).unwrap_or(JobStatus::Queued),
                    total: r.get::<_, i64>(3)? as u64,
                    created_by: r.get(4)?,
                    created_at: row_ts(&r.get::<_, String>(5)?)?,
                    started_at: opt_row_ts(r.get(6)?)?,
                    finished_at: opt_row_ts(r.get(7)?)?,
                    done: r.get::<_, i64>(8)? as u64,
                    failed: r.get::<_, i64>(9)? as u64,
                })
            },
        )
        .optional()
        .map_err(sql_err)?;
    let Some(rec) = rec else { return Ok(None) };
    let mut st = c
        .prepare("SELECT idx, document_id, error FROM job_results WHERE tenant_id = ?1 AND job_id = ?2 ORDER BY idx")
        .map_err(sql_err)?;
    let results = st
        .query_map(params![t, job_id], |r| {
            let error: Option<String> = r.get(2)?;
            Ok(JobItemResult {
                index: r.get::<_, i64>(0)? as u64,
                document_id: r.get(1)?,
                error: error.and_then(|e| serde_json::from_str(&e).ok()),
            })
        })
        .map_err(sql_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_err)?;
    Ok(Some((rec, results)))
}

pub(crate) fn payload(
    c: &mut Connection,
    tenant: &TenantId,
    job_id: &str,
) -> StoreResult<Option<Value>> {
    let p: Option<Option<String>> = c
        .query_row(
            "SELECT payload FROM jobs WHERE tenant_id = ?1 AND job_id = ?2",
            params![tenant.as_str(), job_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    p.flatten()
        .map(|s| serde_json::from_str(&s).map_err(|e| crate::StoreError::Internal(e.to_string())))
        .transpose()
}

fn holds(tx: &rusqlite::Transaction<'_>, t: &str, job_id: &str, owner: &str) -> StoreResult<bool> {
    tx.query_row(
        "SELECT count(*) FROM job_queue WHERE tenant_id = ?1 AND job_id = ?2 AND lease_owner = ?3",
        params![t, job_id, owner],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sql_err)
}

pub(crate) fn progress(
    c: &mut Connection,
    tenant: &TenantId,
    job_id: &str,
    owner: &str,
    results: &[JobItemResult],
    lease: Duration,
) -> StoreResult<bool> {
    let t = tenant.as_str();
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if !holds(&tx, t, job_id, owner)? {
        return Ok(false);
    }
    for r in results {
        tx.execute(
            "INSERT INTO job_results (tenant_id, job_id, idx, document_id, error) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (tenant_id, job_id, idx) DO UPDATE SET document_id = excluded.document_id, error = excluded.error",
            params![t, job_id, r.index as i64, r.document_id, r.error.as_ref().map(Value::to_string)],
        )
        .map_err(sql_err)?;
    }
    tx.execute(
        "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?3) WHERE tenant_id = ?1 AND job_id = ?2",
        params![t, job_id, ts(Utc::now())],
    )
    .map_err(sql_err)?;
    tx.execute(
        "UPDATE job_queue SET lease_until = ?3 WHERE tenant_id = ?1 AND job_id = ?2",
        params![t, job_id, lease_end(lease)],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(true)
}

pub(crate) fn finish(
    c: &mut Connection,
    tenant: &TenantId,
    job_id: &str,
    owner: &str,
) -> StoreResult<bool> {
    let t = tenant.as_str();
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if !holds(&tx, t, job_id, owner)? {
        return Ok(false);
    }
    let now: DateTime<Utc> = Utc::now();
    tx.execute(
        "UPDATE jobs SET status = 'succeeded', payload = NULL, started_at = COALESCE(started_at, ?3), finished_at = ?3 \
         WHERE tenant_id = ?1 AND job_id = ?2",
        params![t, job_id, ts(now)],
    )
    .map_err(sql_err)?;
    tx.execute(
        "DELETE FROM job_queue WHERE tenant_id = ?1 AND job_id = ?2",
        params![t, job_id],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(true)
}
