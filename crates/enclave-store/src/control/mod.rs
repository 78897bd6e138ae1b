//! The control plane's storage seam: the tenant directory, API keys and the
//! audit log (API.md §1, §7, §8), idempotency keys, usage, jobs and alerts.
//!
//! Two kinds of handle, as for data, each the sum of small capability
//! traits (a caller, a test double or a new backend deals in the one it
//! needs):
//! - [`ControlStore`] is the platform's: [`TenantDirectory`] (create, list,
//!   change, purge tenants; the change feed), [`KeyDirectory`] (an API key's
//!   public id to its record: authentication happens before a tenant is
//!   known — the key says which), [`PlatformAudit`], [`JobQueue`] and
//!   [`AlertQueue`] (work across tenants);
//! - [`TenantControl`] (from [`ControlStore::tenant`]) is one tenant's:
//!   [`TenantKeys`], [`TenantAudit`], [`Idempotency`], [`TenantUsage`],
//!   [`TenantJobs`]; its methods take no tenant argument.
//!
//! The audit log is append-only and hash-chained per scope (a tenant, or the
//! platform): each event's hash covers the previous event's hash, so an
//! edited, removed or reordered event breaks [`verify_chain`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::{Isolation, TenantId};
use serde_json::Value;

use crate::StoreResult;

mod alerts;
mod audit;
mod directory;
mod idempotency;
mod jobs;
mod keys;
mod limits;
mod usage;

pub use alerts::*;
pub use audit::*;
pub use directory::*;
pub use idempotency::*;
pub use jobs::*;
pub use keys::*;
pub use limits::*;
pub use usage::*;

/// The tenant directory: create, read, change and purge entries.
#[async_trait::async_trait]
pub trait TenantDirectory: Send + Sync {
    /// Creates a tenant; `Conflict` when the id or slug is taken.
    async fn create_tenant(&self, t: NewTenant) -> StoreResult<TenantRecord>;
    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRecord>>;
    /// Tenants in id order, after `after`.
    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<TenantRecord>>;
    async fn update_tenant(
        &self,
        id: &TenantId,
        update: TenantUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TenantRecord>>;
    /// Starts a purge: suspends the tenant and, where replicas share the
    /// store, waits for every writer of the tenant already past its write
    /// lock and marks the entry so later writers refuse to add data.
    /// `false` when there is no such tenant.
    async fn begin_purge(&self, id: &TenantId) -> StoreResult<bool>;
    /// Removes the tenant's directory entry, keys and audit events (the
    /// platform's own log keeps the purge). Its data is purged through the
    /// data store first.
    async fn purge_tenant(&self, id: &TenantId) -> StoreResult<ControlPurge>;
    /// Whether anything of the tenant is left in the control plane.
    async fn tenant_rows_left(&self, id: &TenantId) -> StoreResult<u64>;
    /// Where replicas share this store: a feed of directory entries changed
    /// by any of them (updated, suspended, purging, purged), so each can
    /// drop its cached copy at once. `None` where no other process writes
    /// the directory. Call it once, from inside a Tokio runtime.
    fn tenant_changes(&self) -> Option<tokio::sync::mpsc::Receiver<TenantChange>> {
        None
    }
}

/// API keys by their public id, whatever their tenant (authentication).
#[async_trait::async_trait]
pub trait KeyDirectory: Send + Sync {
    /// The key with this public id, whatever its tenant (authentication).
    async fn find_key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>>;
    /// Records that a key was used (coarse: callers throttle it).
    async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<()>;
}

/// The platform's audit log, and reading any scope's.
#[async_trait::async_trait]
pub trait PlatformAudit: Send + Sync {
    /// Appends to the platform's own audit log.
    async fn append_platform_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Audit events of one scope (a tenant id or [`PLATFORM_SCOPE`]) after
    /// `after_seq`, oldest first.
    async fn audit_events(
        &self,
        scope: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// Every scope that has audit events.
    async fn audit_scopes(&self) -> StoreResult<Vec<String>>;
}

/// The ingestion job queue across tenants.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// Takes the oldest queued job whose lease is free (never held, or
    /// expired: its holder died) among tenants with no other job held, and
    /// leases it to `owner` for `lease`. Claims are serialised, so one job
    /// has one holder; a tenant has at most one job running at a time.
    async fn claim_job(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> StoreResult<Option<ClaimedJob>>;
    /// Jobs accepted and not finished, all tenants (a metric).
    async fn unfinished_jobs(&self) -> StoreResult<u64>;
}

/// Budget alerts due for delivery, across tenants.
#[async_trait::async_trait]
pub trait AlertQueue: Send + Sync {
    /// Takes up to `limit` undelivered alerts whose next attempt is due
    /// (fewer than [`MAX_ALERT_ATTEMPTS`] tries), counting this attempt and
    /// moving their next one [`alert_backoff`] later, so a concurrent
    /// sweep of another replica does not take them too.
    async fn due_budget_alerts(
        &self,
        limit: u32,
        retry: std::time::Duration,
    ) -> StoreResult<Vec<BudgetAlert>>;
    /// Marks an alert delivered (never sent again).
    async fn budget_alert_delivered(
        &self,
        tenant: &TenantId,
        month: &str,
        threshold_percent: u32,
    ) -> StoreResult<()>;
}

/// The platform's control-plane handle: every platform capability, and
/// each tenant's handle ([`TenantControl`]).
pub trait ControlStore:
    TenantDirectory + KeyDirectory + PlatformAudit + JobQueue + AlertQueue + 'static
{
    /// One tenant's keys and audit log.
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantControl>;
}

/// One item of [`TenantDirectory::tenant_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantChange {
    /// This tenant's directory entry changed.
    Changed(TenantId),
    /// The feed (re)started: changes made before it may have been missed,
    /// so every cached entry is suspect.
    Restarted,
}

/// The tenant's API keys.
#[async_trait::async_trait]
pub trait TenantKeys: Send + Sync {
    async fn insert_key(&self, key: KeyRecord) -> StoreResult<()>;
    /// The tenant's keys, newest first (revoked ones included).
    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Revokes a key of this tenant; false if it has no such (live) key.
    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
}

/// The tenant's audit log.
#[async_trait::async_trait]
pub trait TenantAudit: Send + Sync {
    /// Appends to the tenant's audit log (chained to its previous event).
    async fn append_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent>;
}

/// The tenant's idempotency keys.
#[async_trait::async_trait]
pub trait Idempotency: Send + Sync {
    /// Claims `key` for a request whose body hashes to `request_hash`. A
    /// record older than `expired_before` counts as absent; a pending one
    /// older than `abandoned_before` (its request died) is taken over.
    async fn idempotency_begin(
        &self,
        key: &str,
        request_hash: &[u8],
        now: DateTime<Utc>,
        abandoned_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyState>;
    /// Stores the response of a claimed key.
    async fn idempotency_finish(&self, key: &str, status: u16, body: &Value) -> StoreResult<()>;
    /// Releases a claimed key whose request failed (a retry may run again).
    async fn idempotency_abort(&self, key: &str) -> StoreResult<()>;
}

/// The tenant's usage counters and budget alerts.
#[async_trait::async_trait]
pub trait TenantUsage: Send + Sync {
    /// Adds to the tenant's counters of `day` (nothing when the tenant no
    /// longer exists: a purge is final).
    async fn add_usage(&self, day: chrono::NaiveDate, counts: UsageCounts) -> StoreResult<()>;
    /// Counters per day in `[from, to]`, oldest first.
    async fn usage(
        &self,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, UsageCounts)>>;
    /// Stores a budget alert unless this tenant already has one for its
    /// month and threshold; true when stored now (the caller then delivers
    /// it; its next attempt, should that fail, is due after `retry`).
    async fn record_budget_alert(
        &self,
        alert: &BudgetAlert,
        retry: std::time::Duration,
    ) -> StoreResult<bool>;
}

/// The tenant's ingestion jobs.
#[async_trait::async_trait]
pub trait TenantJobs: Send + Sync {
    /// Stores a job with its payload and queues it, in one transaction.
    /// Stores a job, unless the tenant's unfinished jobs would pass
    /// `bounds` (`Full`; checked in the insert's transaction).
    async fn create_job(&self, job: NewJob, bounds: JobBounds) -> StoreResult<JobRecord>;
    /// The tenant's unfinished jobs and their payload bytes.
    async fn pending_jobs(&self) -> StoreResult<PendingJobs>;
    /// A job of this tenant, with its results in item order.
    async fn get_job(&self, job_id: &str) -> StoreResult<Option<(JobRecord, Vec<JobItemResult>)>>;
    /// The job's payload (`None` once finished or when there is no such job).
    async fn job_payload(&self, job_id: &str) -> StoreResult<Option<Value>>;
    /// While `owner` holds the job's lease: stores `results` (an item's
    /// result replaces an earlier one: a redo after a crash), marks the job
    /// running and extends the lease by `lease`. False when `owner` no
    /// longer holds it (expired and taken, or the job is gone).
    async fn job_progress(
        &self,
        job_id: &str,
        owner: &str,
        results: &[JobItemResult],
        lease: std::time::Duration,
    ) -> StoreResult<bool>;
    /// While `owner` holds the lease: marks the job succeeded, drops its
    /// payload and removes it from the queue. False when it no longer holds it.
    async fn finish_job(&self, job_id: &str, owner: &str) -> StoreResult<bool>;
}

/// One tenant's keys, audit log, idempotency keys, usage and jobs: every
/// tenant capability. No method takes a tenant.
pub trait TenantControl: TenantKeys + TenantAudit + Idempotency + TenantUsage + TenantJobs {}

impl<T: TenantKeys + TenantAudit + Idempotency + TenantUsage + TenantJobs> TenantControl for T {}

/// Places a new tenant's data in its own schema or database: DDL the
/// server's own role may not run, so a deployment that wants it at tenant
/// creation configures a placer holding the owner's credentials (PostgreSQL:
/// `enclave_postgres::PgPlacer`). Without one, tenants start shared and are
/// moved with `enclave move-tenant`.
#[async_trait::async_trait]
pub trait TenantPlacer: Send + Sync + 'static {
    /// Moves the (new, empty) tenant to `isolation`; `Invalid` when this
    /// placer cannot provide that mode.
    async fn place(&self, tenant: &TenantId, isolation: Isolation) -> StoreResult<()>;
}
