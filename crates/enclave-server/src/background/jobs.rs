//! The ingestion job runner: every replica claims queued jobs from the
//! control store (one job per tenant at a time, across all replicas; up to
//! [`crate::settings::JobSettings::workers`] per replica), processes their documents in order
//! through the tenant's handle at background priority (so the fair
//! embedding scheduler serves interactive work first), and records each
//! document's result as it goes.
//!
//! Exactly-once, as far as the user can see: a job's progress is stored
//! every few documents and its lease renewed while it runs. If the replica
//! dies, the lease expires and another replica (or the restarted one)
//! claims the job and resumes after the last recorded result. Documents
//! processed after that record are added again, which the library's
//! dedupe makes a no-op (same external id, or origin and name, and the same
//! content → `unchanged`, the same document id, nothing embedded or
//! counted twice). A job is marked `succeeded` once, by the holder of its
//! lease, in the same transaction that removes it from the queue.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_core::TenantId;
use enclave_store::control::{ClaimedJob, JobItemResult};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::service::ingest;
use crate::{ApiError, AppState};

/// Results are stored at least this often (documents).
const PROGRESS_EVERY: usize = 8;

/// This replica's runner state (shared with the routes and metrics).
#[derive(Default)]
pub struct JobRunner {
    /// Wakes the runner (a job was accepted here).
    pub(crate) wake: Notify,
    pub(crate) running: AtomicU64,
    pub(crate) documents_processed: AtomicU64,
    pub(crate) jobs_finished: AtomicU64,
}

/// The lease holder's name: unique per process start.
fn owner_id() -> String {
    format!(
        "{}:{}:{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Runs jobs until `stop` is set; then lets each running job record its
/// progress and release its lease after its current document.
pub(crate) async fn run(state: AppState, stop: Arc<AtomicBool>) {
    let opts = state.options().jobs;
    if opts.workers == 0 {
        return;
    }
    let owner = Arc::new(owner_id());
    let runner = state.inner.jobs.clone();
    let mut tasks = JoinSet::new();
    let mut backoff = opts.poll;
    while !stop.load(Ordering::Relaxed) {
        while tasks.len() < opts.workers {
            match state.control().claim_job(&owner, opts.lease).await {
                Ok(Some(ClaimedJob {
                    tenant,
                    job_id: job,
                })) => {
                    backoff = opts.poll;
                    let (state, owner, stop) = (state.clone(), owner.clone(), stop.clone());
                    tasks.spawn(async move {
                        state.inner.jobs.running.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = process(&state, &tenant, &job, &owner, &stop).await {
                            tracing::warn!(tenant_id = %tenant, job_id = %job, error = %e, "job paused; it is resumed after its lease expires");
                        }
                        state.inner.jobs.running.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = runner.wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Processes one claimed job from its first unrecorded document.
async fn process(
    state: &AppState,
    tenant: &TenantId,
    job: &str,
    owner: &str,
    stop: &AtomicBool,
) -> Result<(), ApiError> {
    let opts = state.options().jobs;
    let control = state.control().tenant(tenant);
    let lost = Arc::new(AtomicBool::new(false));
    // Renew the lease while a long document embeds.
    let heartbeat = {
        let (control, job, owner, lost) = (
            control.clone(),
            job.to_owned(),
            owner.to_owned(),
            lost.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(opts.lease / 3).await;
                match control.job_progress(&job, &owner, &[], opts.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew a job lease"),
                }
            }
        })
    };
    let out = process_documents(state, tenant, job, owner, stop, &lost).await;
    heartbeat.abort();
    out
}

async fn process_documents(
    state: &AppState,
    tenant: &TenantId,
    job: &str,
    owner: &str,
    stop: &AtomicBool,
    lost: &AtomicBool,
) -> Result<(), ApiError> {
    let opts = state.options().jobs;
    let control = state.control().tenant(tenant);
    let Some((_, recorded)) = control.get_job(job).await? else {
        return Ok(()); // purged meanwhile
    };
    let done: HashSet<u64> = recorded.iter().map(|r| r.index).collect();
    let documents = match control.job_payload(job).await? {
        Some(Value::Array(d)) => d,
        _ => Vec::new(),
    };
    // Mark it running (and that the lease is still ours) before any work.
    if !control.job_progress(job, owner, &[], opts.lease).await? {
        return Ok(());
    }
    let handle = state
        .memory()
        .tenant(tenant)
        .with_priority(enclave::Priority::Background);
    let mut pending: Vec<JobItemResult> = Vec::new();
    let mut flushed = Instant::now();
    for (i, body) in documents.into_iter().enumerate() {
        let index = i as u64;
        if done.contains(&index) {
            continue;
        }
        if lost.load(Ordering::Relaxed) {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            // Shutting down: keep what is done and let the next holder
            // start at once rather than after the lease.
            control
                .job_progress(job, owner, &pending, Duration::ZERO)
                .await?;
            return Ok(());
        }
        // The directory entry, re-read (cached briefly): limits may change,
        // and a suspended or purged tenant's job stops here.
        let Some(record) = state.tenant_record(tenant).await? else {
            return Ok(());
        };
        if record.status == enclave_core::TenantStatus::Suspended {
            control
                .job_progress(job, owner, &pending, opts.lease)
                .await?;
            return Err(ApiError::TenantSuspended);
        }
        let outcome = match ingest::parse_document(body) {
            Ok(doc) => ingest::store_document(state, &record, &handle, doc).await,
            Err(e) => Err(e),
        };
        let result = match outcome {
            Ok(created) => JobItemResult {
                index,
                document_id: Some(created.document_id.to_string()),
                error: None,
            },
            // The store is down: nothing of this document was written; the
            // job is retried (from here) once the lease lapses.
            Err(e @ ApiError::Unavailable(_)) => {
                let _ = control.job_progress(job, owner, &pending, opts.lease).await;
                return Err(e);
            }
            Err(e) => {
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(tenant_id = %tenant, job_id = %job, %cause, "a job document failed");
                }
                JobItemResult {
                    index,
                    document_id: None,
                    error: Some(e.brief_problem()),
                }
            }
        };
        state
            .inner
            .jobs
            .documents_processed
            .fetch_add(1, Ordering::Relaxed);
        pending.push(result);
        if pending.len() >= PROGRESS_EVERY || flushed.elapsed() >= opts.lease / 3 {
            if !control
                .job_progress(job, owner, &pending, opts.lease)
                .await?
            {
                return Ok(());
            }
            pending.clear();
            flushed = Instant::now();
        }
    }
    if !control
        .job_progress(job, owner, &pending, opts.lease)
        .await?
    {
        return Ok(());
    }
    if control.finish_job(job, owner).await? {
        state
            .inner
            .jobs
            .jobs_finished
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(tenant_id = %tenant, job_id = %job, "job finished");
    }
    Ok(())
}
