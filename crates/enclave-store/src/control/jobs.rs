//! Ingestion job records, bounds and states.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use enclave_core::TenantId;

use crate::StoreResult;

/// A job accepted with `202` (docs/API-EXTENSIONS.md): stored with its
/// whole input before the answer, so it is finished after any restart.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job_id: String,
    /// What the job does (`documents`: add the payload's documents).
    pub kind: String,
    /// The input (for `documents`: the array of document bodies).
    pub payload: Value,
    /// Items in the payload.
    pub total: u64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// What one tenant may have waiting in the job queue (checked with the
/// insert, in its transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobBounds {
    /// Unfinished jobs.
    pub max_jobs: u64,
    /// Bytes of the unfinished jobs' stored payloads.
    pub max_bytes: u64,
}

/// A tenant's unfinished jobs and the bytes of their stored payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingJobs {
    pub jobs: u64,
    pub bytes: u64,
}

impl PendingJobs {
    /// `Full` when one more job of `bytes` would pass `bounds`.
    pub fn admit(&self, bytes: u64, bounds: JobBounds) -> StoreResult<()> {
        if self.jobs >= bounds.max_jobs {
            return Err(crate::StoreError::Full(format!(
                "the tenant has {} unfinished jobs, the most it may have queued",
                self.jobs
            )));
        }
        if self.bytes + bytes > bounds.max_bytes {
            return Err(crate::StoreError::Full(format!(
                "the tenant's unfinished jobs hold {} bytes; this one ({bytes}) would pass the {} allowed",
                self.bytes, bounds.max_bytes
            )));
        }
        Ok(())
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    Queued,
    Running,
    /// Every item was processed (each has its own result, maybe an error).
    Succeeded,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            _ => return None,
        })
    }
}

/// A stored job, without its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    pub kind: String,
    pub status: JobStatus,
    pub total: u64,
    /// Items with a result.
    pub done: u64,
    /// Items whose result is an error.
    pub failed: u64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// A job just accepted: queued, nothing done.
    pub fn queued(job: &NewJob) -> Self {
        Self {
            job_id: job.job_id.clone(),
            kind: job.kind.clone(),
            status: JobStatus::Queued,
            total: job.total,
            done: 0,
            failed: 0,
            created_by: job.created_by.clone(),
            created_at: job.created_at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// The outcome of one item of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobItemResult {
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// A problem object (`code`, `detail`) when the item failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// A job a replica now holds the lease of ([`super::JobQueue::claim_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub tenant: TenantId,
    pub job_id: String,
}
