//! The control plane's storage seam: the tenant directory, API keys and the
//! audit log (API.md §1, §7, §8).
//!
//! Two kinds of handle, as for data:
//! - [`ControlStore`] is the platform's: it creates, lists, changes and
//!   purges tenants, and resolves an API key's public id to its record
//!   (authentication happens before a tenant is known — the key says which);
//! - [`TenantControl`] (from [`ControlStore::tenant`]) is one tenant's keys and
//!   audit log; its methods take no tenant argument.
//!
//! The audit log is append-only and hash-chained per scope (a tenant, or the
//! platform): each event's hash covers the previous event's hash, so an
//! edited, removed or reordered event breaks [`verify_chain`].

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use enclave_core::{Isolation, Role, Slug, TenantId, TenantStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::StoreResult;

/// A tenant's directory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub status: TenantStatus,
    pub isolation: Isolation,
    /// Per-tenant overrides of the plan's limits (API.md §8 `limits`).
    pub limits: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `create_tenant` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub isolation: Isolation,
    pub limits: Map<String, Value>,
    pub now: DateTime<Utc>,
}

/// Changes to a tenant (API.md §8 PATCH); `limits` replaces the object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantUpdate {
    pub status: Option<TenantStatus>,
    pub plan: Option<String>,
    pub limits: Option<Map<String, Value>>,
}

/// A stored API key: its public id and a salted hash of its secret, never
/// the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The `<public-id>` of `ek_<public-id>_<secret>`.
    pub key_id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: Role,
    pub salt: Vec<u8>,
    /// SHA-256 of salt ‖ secret.
    pub secret_hash: Vec<u8>,
    /// Who created it (`key:<id>`, `user:<sub>`, `platform`).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An event to append to an audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// A stored audit event. `scope` is the tenant id, or [`PLATFORM_SCOPE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub scope: String,
    pub seq: i64,
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
    #[serde(with = "hex_opt")]
    pub prev_hash: Option<Vec<u8>>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// The audit scope of platform (admin plane) events. Tenant ids start with a
/// letter or digit, so no tenant can own this scope.
pub const PLATFORM_SCOPE: &str = "_platform";

/// Where an `Idempotency-Key` stands when a request arrives with it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// First use (or the earlier attempt expired or was abandoned): the
    /// caller now holds the key and must `finish` or `abort` it.
    Acquired,
    /// The same key and body completed before: replay this response.
    Completed { status: u16, body: Value },
    /// The key was used with a different body.
    Mismatch,
    /// The same request is being processed right now.
    InProgress,
}

/// Usage of one tenant on one day (UTC), as counted by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageCounts {
    pub requests: u64,
    pub searches: u64,
    pub documents_added: u64,
    pub tokens_embedded: u64,
}

impl UsageCounts {
    pub fn add(&mut self, o: &UsageCounts) {
        self.requests += o.requests;
        self.searches += o.searches;
        self.documents_added += o.documents_added;
        self.tokens_embedded += o.tokens_embedded;
    }
    pub fn is_zero(&self) -> bool {
        *self == UsageCounts::default()
    }
}

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

/// A tenant's spend crossed a share of its `monthly_budget_usd`
/// (docs/API-EXTENSIONS.md, "Budget alerts"). One per tenant, month and
/// threshold, ever: stored before it is sent, so neither a second replica
/// nor a restart sends it again; kept until a delivery succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlert {
    pub tenant_id: TenantId,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// 80 or 100.
    pub threshold_percent: u32,
    pub budget_usd: f64,
    pub spent_usd: f64,
    pub created_at: DateTime<Utc>,
    /// Deliveries tried so far (including the one about to be made).
    pub attempts: u32,
}

impl BudgetAlert {
    /// The alert's stable id (receivers deduplicate on it).
    pub fn id(&self) -> String {
        format!(
            "budget:{}:{}:{}",
            self.tenant_id, self.month, self.threshold_percent
        )
    }
}

/// Undelivered alerts are retried at most this many times.
pub const MAX_ALERT_ATTEMPTS: u32 = 20;

/// When the next delivery of an alert tried `attempts` times is due:
/// `retry` doubled per attempt, at most an hour.
pub fn alert_backoff(retry: std::time::Duration, attempts: u32) -> std::time::Duration {
    retry
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(std::time::Duration::from_secs(3600))
}

/// What purging a tenant's control-plane rows removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlPurge {
    pub keys_revoked: u64,
    pub audit_events_deleted: u64,
}

/// The hash of an audit event: SHA-256 over the previous hash and a canonical
/// line of the event's fields (timestamps at microsecond precision, detail as
/// key-sorted JSON).
pub fn audit_hash(
    scope: &str,
    seq: i64,
    event_id: &str,
    ev: &NewAuditEvent,
    prev: Option<&[u8]>,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or(&[0u8; 32]));
    let line = serde_json::json!([
        scope,
        seq,
        event_id,
        ev.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        ev.actor,
        ev.action,
        ev.target,
        ev.detail,
    ]);
    h.update(canonical_json(&line).as_bytes());
    h.finalize().to_vec()
}

/// JSON text with every object's keys in byte order, whatever order the
/// `Map` keeps (serde_json's `preserve_order` feature may be on in some
/// builds) or the store returns (PostgreSQL's jsonb reorders keys).
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Truncates a timestamp to what every backend stores (microseconds), so a
/// hash computed before the write matches the stored event.
pub fn audit_time(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Checks a scope's events, oldest first: consecutive sequence numbers, each
/// `prev_hash` equal to the previous event's hash, each hash recomputed.
/// Returns the first broken event's sequence number.
pub fn verify_chain(events: &[AuditEvent]) -> Result<u64, i64> {
    let mut prev: Option<&AuditEvent> = None;
    for e in events {
        let ok_link = match prev {
            None => e.prev_hash.is_none() && e.seq == 1,
            Some(p) => e.seq == p.seq + 1 && e.prev_hash.as_deref() == Some(&p.hash[..]),
        };
        let ev = NewAuditEvent {
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
            at: e.at,
        };
        let expect = audit_hash(&e.scope, e.seq, &e.event_id, &ev, e.prev_hash.as_deref());
        if !ok_link || expect != e.hash {
            return Err(e.seq);
        }
        prev = Some(e);
    }
    Ok(events.len() as u64)
}

/// The platform's control-plane handle.
#[async_trait::async_trait]
pub trait ControlStore: Send + Sync + 'static {
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
    /// The key with this public id, whatever its tenant (authentication).
    async fn find_key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>>;
    /// Records that a key was used (coarse: callers throttle it).
    async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<()>;
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
    /// Takes the oldest queued job whose lease is free (never held, or
    /// expired: its holder died) among tenants with no other job held, and
    /// leases it to `owner` for `lease`. Claims are serialised, so one job
    /// has one holder; a tenant has at most one job running at a time.
    async fn claim_job(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> StoreResult<Option<(TenantId, String)>>;
    /// Jobs accepted and not finished, all tenants (a metric).
    async fn unfinished_jobs(&self) -> StoreResult<u64>;
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
    /// One tenant's keys and audit log.
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantControl>;
    /// Where replicas share this store: a feed of directory entries changed
    /// by any of them (updated, suspended, purging, purged), so each can
    /// drop its cached copy at once. `None` where no other process writes
    /// the directory. Call it once, from inside a Tokio runtime.
    fn tenant_changes(&self) -> Option<tokio::sync::mpsc::Receiver<TenantChange>> {
        None
    }
}

/// One item of [`ControlStore::tenant_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantChange {
    /// This tenant's directory entry changed.
    Changed(TenantId),
    /// The feed (re)started: changes made before it may have been missed,
    /// so every cached entry is suspect.
    Restarted,
}

/// One tenant's keys and audit log. No method takes a tenant.
#[async_trait::async_trait]
pub trait TenantControl: Send + Sync {
    async fn insert_key(&self, key: KeyRecord) -> StoreResult<()>;
    /// The tenant's keys, newest first (revoked ones included).
    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Revokes a key of this tenant; false if it has no such (live) key.
    async fn revoke_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Appends to the tenant's audit log (chained to its previous event).
    async fn append_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent>;
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

/// A stored idempotency record: request hash, the completed response
/// (status, body) if any, and when it was claimed.
pub type IdempotencyRecord = (Vec<u8>, Option<(u16, Value)>, DateTime<Utc>);

/// Decides [`TenantControl::idempotency_begin`] from the stored record.
pub fn idempotency_decision(
    stored: Option<IdempotencyRecord>,
    request_hash: &[u8],
    abandoned_before: DateTime<Utc>,
    expired_before: DateTime<Utc>,
) -> (IdempotencyState, bool) {
    // (state, whether the caller must (re)write the record as pending)
    match stored {
        None => (IdempotencyState::Acquired, true),
        Some((_, _, at)) if at < expired_before => (IdempotencyState::Acquired, true),
        Some((hash, _, _)) if hash != request_hash => (IdempotencyState::Mismatch, false),
        Some((_, Some((status, body)), _)) => (IdempotencyState::Completed { status, body }, false),
        Some((_, None, at)) if at < abandoned_before => (IdempotencyState::Acquired, true),
        Some(_) => (IdempotencyState::InProgress, false),
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let ev = NewAuditEvent {
                actor: "key:abc".into(),
                action: "document.delete".into(),
                target: Some(format!("doc-{i}")),
                detail: serde_json::json!({"b": 1, "a": [i]}),
                at: audit_time(Utc::now()),
            };
            let prev = out.last().map(|e| e.hash.clone());
            let seq = i as i64 + 1;
            let hash = audit_hash("acme", seq, &format!("e{i}"), &ev, prev.as_deref());
            out.push(AuditEvent {
                scope: "acme".into(),
                seq,
                event_id: format!("e{i}"),
                at: ev.at,
                actor: ev.actor,
                action: ev.action,
                target: ev.target,
                detail: ev.detail,
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn the_hash_does_not_depend_on_the_order_of_object_keys() {
        let ev = |detail: Value| NewAuditEvent {
            actor: "a".into(),
            action: "x".into(),
            target: None,
            detail,
            at: audit_time(Utc::now()),
        };
        let at = audit_time(Utc::now());
        let (mut a, mut b) = (ev(Value::Null), ev(Value::Null));
        a.at = at;
        b.at = at;
        // Built in two insertion orders (distinct under preserve_order).
        let mut m1 = Map::new();
        m1.insert("role".into(), Value::from("member"));
        m1.insert("needed".into(), Value::from("admin"));
        m1.insert(
            "path".into(),
            serde_json::json!({"z": 1, "a": [1, {"y": 2, "b": 3}]}),
        );
        let mut m2 = Map::new();
        m2.insert(
            "path".into(),
            serde_json::json!({"a": [1, {"b": 3, "y": 2}], "z": 1}),
        );
        m2.insert("needed".into(), Value::from("admin"));
        m2.insert("role".into(), Value::from("member"));
        a.detail = Value::Object(m1);
        b.detail = Value::Object(m2);
        assert_eq!(
            audit_hash("t", 1, "e", &a, None),
            audit_hash("t", 1, "e", &b, None)
        );
        assert_eq!(
            canonical_json(&a.detail),
            r#"{"needed":"admin","path":{"a":[1,{"b":3,"y":2}],"z":1},"role":"member"}"#
        );
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_removal_or_reorder_is_found() {
        let good = chain(5);
        assert_eq!(verify_chain(&good), Ok(5));

        let mut edited = good.clone();
        edited[2].target = Some("something else".into());
        assert_eq!(verify_chain(&edited), Err(3));

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed), Err(3));

        let mut swapped = good.clone();
        swapped.swap(3, 4);
        assert_eq!(verify_chain(&swapped), Err(5));

        let mut rehashed = good.clone();
        rehashed[4].detail = serde_json::json!({"forged": true});
        // Recomputing the edited event's own hash is not enough: it no longer
        // matches what the (unchanged) chain committed to... unless it is the
        // last event; then the edit is only caught against an anchored head.
        let ev = NewAuditEvent {
            actor: rehashed[4].actor.clone(),
            action: rehashed[4].action.clone(),
            target: rehashed[4].target.clone(),
            detail: rehashed[4].detail.clone(),
            at: rehashed[4].at,
        };
        rehashed[4].hash = audit_hash(
            "acme",
            5,
            &rehashed[4].event_id,
            &ev,
            rehashed[4].prev_hash.as_deref(),
        );
        assert_eq!(verify_chain(&rehashed), Ok(5));
        assert_ne!(
            rehashed[4].hash, good[4].hash,
            "the head hash changes, which is what an anchored head detects"
        );
    }
}
