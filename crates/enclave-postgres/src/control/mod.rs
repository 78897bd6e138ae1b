//! The control plane on PostgreSQL: the tenant directory (`tenants`), API
//! keys (`api_keys`) and the hash-chained audit log (`audit_events`) in the
//! main database, all under forced row-level security. Platform operations
//! run with `app.scope = 'platform'` (which opens only the directory and the
//! key lookup); everything else with the tenant set, exactly like data.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::{Isolation, Role, Slug, TenantId, TenantStatus};
use enclave_store::control::{
    audit_hash, audit_time, AlertQueue, AuditEvent, BudgetAlert, ClaimedJob, ControlPurge,
    ControlStore, JobQueue, KeyDirectory, KeyRecord, NewAuditEvent, NewTenant, PlatformAudit,
    TenantChange, TenantControl, TenantDirectory, TenantLimits, TenantRecord, TenantUpdate,
    PLATFORM_SCOPE,
};
use enclave_store::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use crate::store::db_err;
use crate::PgError;

mod tenant;
use tenant::PgTenantControl;

/// The PostgreSQL control store (connects as the app role).
#[derive(Clone)]
pub struct PgControl {
    pool: PgPool,
}

const TENANT_COLS: &str =
    "tenant_id, slug, name, plan, status, isolation, limits, created_at, updated_at, search";
const KEY_COLS: &str = "key_id, tenant_id, name, role, salt, secret_hash, created_by, created_at, expires_at, revoked_at, last_used_at";
const AUDIT_COLS: &str =
    "tenant_id, seq, event_id::text, at, actor, action, target, detail, prev_hash, hash";

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn tenant_row(r: &PgRow) -> StoreResult<TenantRecord> {
    let limits: Value = r.try_get(6).map_err(db_err)?;
    Ok(TenantRecord {
        id: TenantId::parse(r.try_get::<&str, _>(0).map_err(db_err)?).map_err(bad)?,
        slug: Slug::parse(r.try_get::<&str, _>(1).map_err(db_err)?).map_err(bad)?,
        name: r.try_get(2).map_err(db_err)?,
        plan: r.try_get(3).map_err(db_err)?,
        status: r
            .try_get::<&str, _>(4)
            .map_err(db_err)?
            .parse::<TenantStatus>()
            .map_err(bad)?,
        isolation: r
            .try_get::<&str, _>(5)
            .map_err(db_err)?
            .parse::<Isolation>()
            .map_err(bad)?,
        limits: TenantLimits::from_json(limits),
        search: serde_json::from_value(r.try_get::<Value, _>(9).map_err(db_err)?).map_err(bad)?,
        created_at: r.try_get(7).map_err(db_err)?,
        updated_at: r.try_get(8).map_err(db_err)?,
    })
}

fn key_row(r: &PgRow) -> StoreResult<KeyRecord> {
    Ok(KeyRecord {
        key_id: r.try_get(0).map_err(db_err)?,
        tenant_id: TenantId::parse(r.try_get::<&str, _>(1).map_err(db_err)?).map_err(bad)?,
        name: r.try_get(2).map_err(db_err)?,
        role: r
            .try_get::<&str, _>(3)
            .map_err(db_err)?
            .parse::<Role>()
            .map_err(bad)?,
        salt: r.try_get(4).map_err(db_err)?,
        secret_hash: r.try_get(5).map_err(db_err)?,
        created_by: r.try_get(6).map_err(db_err)?,
        created_at: r.try_get(7).map_err(db_err)?,
        expires_at: r.try_get(8).map_err(db_err)?,
        revoked_at: r.try_get(9).map_err(db_err)?,
        last_used_at: r.try_get(10).map_err(db_err)?,
    })
}

fn audit_row(r: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        scope: r.try_get(0).map_err(db_err)?,
        seq: r.try_get(1).map_err(db_err)?,
        event_id: r.try_get(2).map_err(db_err)?,
        at: r.try_get(3).map_err(db_err)?,
        actor: r.try_get(4).map_err(db_err)?,
        action: r.try_get(5).map_err(db_err)?,
        target: r.try_get(6).map_err(db_err)?,
        detail: r.try_get(7).map_err(db_err)?,
        prev_hash: r.try_get(8).map_err(db_err)?,
        hash: r.try_get(9).map_err(db_err)?,
    })
}

/// Which setting a control transaction runs under.
enum Scope<'a> {
    Platform,
    Tenant(&'a str),
}

impl PgControl {
    /// Connects as the app role, refusing one that RLS would not bind.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, PgError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await?;
        crate::check_app_role(&pool).await?;
        Ok(Self { pool })
    }

    async fn begin(&self, scope: Scope<'_>) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        match scope {
            Scope::Platform => sqlx::query("SELECT set_config('app.scope', 'platform', true)"),
            Scope::Tenant(t) => {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(t.to_owned())
            }
        }
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        Ok(tx)
    }

    async fn append(&self, scope: &str, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        let mut tx = self.begin(Scope::Tenant(scope)).await?;
        // One writer per chain at a time: the next sequence number and the
        // previous hash must be read and written together.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('audit:' || $1, 0))")
            .bind(scope)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash FROM public.audit_events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(scope)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let ev = NewAuditEvent {
            at: audit_time(ev.at),
            ..ev
        };
        let seq = last.as_ref().map_or(1, |l| l.0 + 1);
        let prev = last.map(|l| l.1);
        let event_id = uuid_v7();
        let hash = audit_hash(scope, seq, &event_id, &ev, prev.as_deref());
        sqlx::query(
            "INSERT INTO public.audit_events (tenant_id, seq, event_id, at, actor, action, target, detail, prev_hash, hash) \
             VALUES ($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(scope)
        .bind(seq)
        .bind(&event_id)
        .bind(ev.at)
        .bind(&ev.actor)
        .bind(&ev.action)
        .bind(&ev.target)
        .bind(&ev.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(AuditEvent {
            scope: scope.to_owned(),
            seq,
            event_id,
            at: ev.at,
            actor: ev.actor,
            action: ev.action,
            target: ev.target,
            detail: ev.detail,
            prev_hash: prev,
            hash,
        })
    }
}

fn uuid_v7() -> String {
    enclave_core::ChunkId::new().to_string()
}

async fn one_tenant(db: &mut PgConnection, id: &str) -> StoreResult<Option<TenantRecord>> {
    sqlx::query(&format!(
        "SELECT {TENANT_COLS} FROM public.tenants WHERE tenant_id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(db_err)?
    .as_ref()
    .map(tenant_row)
    .transpose()
}

#[async_trait::async_trait]
impl TenantDirectory for PgControl {
    async fn create_tenant(&self, t: NewTenant) -> StoreResult<TenantRecord> {
        let mut tx = self.begin(Scope::Platform).await?;
        let r = sqlx::query(&format!(
            "INSERT INTO public.tenants (tenant_id, slug, name, plan, status, isolation, limits, created_at, updated_at, search) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $7, $8) RETURNING {TENANT_COLS}"
        ))
        .bind(t.id.as_str())
        .bind(t.slug.as_str())
        .bind(&t.name)
        .bind(&t.plan)
        .bind(t.isolation.as_str())
        .bind(t.limits.to_json())
        .bind(t.now)
        .bind(serde_json::to_value(t.search).map_err(bad)?)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict("a tenant with this id or slug exists".into())
            }
            _ => db_err(e),
        })?;
        let rec = tenant_row(&r)?;
        tx.commit().await.map_err(db_err)?;
        Ok(rec)
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRecord>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let r = one_tenant(&mut tx, id.as_str()).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(r)
    }

    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<TenantRecord>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLS} FROM public.tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2"
        ))
        .bind(after.map_or("", |a| a.as_str()))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(tenant_row).collect()
    }

    async fn update_tenant(
        &self,
        id: &TenantId,
        u: TenantUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TenantRecord>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let r = sqlx::query(&format!(
            "UPDATE public.tenants SET status = COALESCE($2, status), plan = COALESCE($3, plan), \
             limits = COALESCE($4, limits), search = COALESCE($6, search), updated_at = $5 \
             WHERE tenant_id = $1 RETURNING {TENANT_COLS}"
        ))
        .bind(id.as_str())
        .bind(u.status.map(|s| s.as_str()))
        .bind(u.plan)
        .bind(u.limits.map(|l| l.to_json()))
        .bind(now)
        .bind(
            u.search
                .map(serde_json::to_value)
                .transpose()
                .map_err(bad)?,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let rec = r.as_ref().map(tenant_row).transpose()?;
        if rec.is_some() {
            notify_tenant_change(&mut tx, id).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rec)
    }

    async fn begin_purge(&self, id: &TenantId) -> StoreResult<bool> {
        let mut tx = self.begin(Scope::Platform).await?;
        // Writers hold this lock shared (transaction-scoped) from before
        // they read the directory until they commit: taking it exclusively
        // waits for each of them, on every replica; those after us read
        // `purging`.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::placement::placement_lock_key(id))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let n = sqlx::query(
            "UPDATE public.tenants SET status = 'suspended', purging = true, updated_at = now()              WHERE tenant_id = $1",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if n == 1 {
            notify_tenant_change(&mut tx, id).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn purge_tenant(&self, id: &TenantId) -> StoreResult<ControlPurge> {
        let mut tx = self.begin(Scope::Tenant(id.as_str())).await?;
        let t = id.as_str();
        // Tenant-owned rows of the main database that reference the
        // directory entry (documents are removed through the data store).
        for table in [
            "messages",
            "usage_daily",
            "idempotency_keys",
            "job_queue",
            "job_results",
            "jobs",
            "budget_alerts",
        ] {
            sqlx::query(&format!("DELETE FROM public.{table} WHERE tenant_id = $1"))
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let keys = sqlx::query("DELETE FROM public.api_keys WHERE tenant_id = $1")
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        let audit: i64 = sqlx::query_scalar("SELECT public.purge_tenant_audit($1)")
            .bind(t)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM public.tenants WHERE tenant_id = $1")
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        notify_tenant_change(&mut tx, id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(ControlPurge {
            keys_revoked: keys,
            audit_events_deleted: audit as u64,
        })
    }

    async fn tenant_rows_left(&self, id: &TenantId) -> StoreResult<u64> {
        let mut tx = self.begin(Scope::Tenant(id.as_str())).await?;
        let mut n = 0i64;
        for table in crate::TENANT_TABLES {
            n += sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM public.{table} WHERE tenant_id = $1"
            ))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n as u64)
    }

    /// `LISTEN`s on [`crate::changes::TENANT_CHANGES`] on a connection of its own (not one
    /// of the pool's); every change to `tenants` notifies it in the
    /// changing transaction, so the notice arrives at commit. A lost
    /// connection is reopened (every second while the server is away) and
    /// reported as [`TenantChange::Restarted`] once listening again.
    fn tenant_changes(&self) -> Option<tokio::sync::mpsc::Receiver<TenantChange>> {
        Some(crate::changes::follow(
            (*self.pool.connect_options()).clone(),
        ))
    }
}

#[async_trait::async_trait]
impl KeyDirectory for PgControl {
    async fn find_key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let r = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM public.api_keys WHERE key_id = $1"
        ))
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        r.as_ref().map(key_row).transpose()
    }

    async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        // The key's tenant first (platform scope reads), then the write in
        // the tenant's own scope.
        let Some(key) = self.find_key(key_id).await? else {
            return Ok(());
        };
        let mut tx = self.begin(Scope::Tenant(key.tenant_id.as_str())).await?;
        sqlx::query(
            "UPDATE public.api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND key_id = $2",
        )
        .bind(key.tenant_id.as_str())
        .bind(key_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }
}

#[async_trait::async_trait]
impl PlatformAudit for PgControl {
    async fn append_platform_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        self.append(PLATFORM_SCOPE, ev).await
    }

    async fn audit_events(
        &self,
        scope: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let mut tx = self.begin(Scope::Tenant(scope)).await?;
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM public.audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(scope)
        .bind(after_seq)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter().map(audit_row).collect()
    }

    async fn audit_scopes(&self) -> StoreResult<Vec<String>> {
        // Every tenant in the directory (each scope is read under its own
        // tenant setting), and the platform's own log.
        let mut scopes = vec![PLATFORM_SCOPE.to_owned()];
        let mut after: Option<TenantId> = None;
        loop {
            let page = self.list_tenants(after.as_ref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            scopes.extend(page.into_iter().map(|t| t.id.to_string()));
        }
        Ok(scopes)
    }
}

#[async_trait::async_trait]
impl JobQueue for PgControl {
    async fn claim_job(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> StoreResult<Option<ClaimedJob>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let got = crate::jobs::claim(&mut tx, owner, lease).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(got)
    }

    async fn unfinished_jobs(&self) -> StoreResult<u64> {
        let mut tx = self.begin(Scope::Platform).await?;
        let n = crate::jobs::unfinished(&mut tx).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }
}

#[async_trait::async_trait]
impl AlertQueue for PgControl {
    async fn due_budget_alerts(
        &self,
        limit: u32,
        retry: std::time::Duration,
    ) -> StoreResult<Vec<BudgetAlert>> {
        let mut tx = self.begin(Scope::Platform).await?;
        let due = crate::alerts::due_alerts(&mut tx, limit, retry).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(due)
    }

    async fn budget_alert_delivered(
        &self,
        tenant: &TenantId,
        month: &str,
        threshold_percent: u32,
    ) -> StoreResult<()> {
        let t = tenant.as_str();
        let mut tx = self.begin(Scope::Tenant(t)).await?;
        crate::alerts::alert_delivered(&mut tx, t, month, threshold_percent).await?;
        tx.commit().await.map_err(db_err)
    }
}

impl ControlStore for PgControl {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantControl> {
        Arc::new(PgTenantControl {
            control: self.clone(),
            tenant: id.clone(),
        })
    }
}

/// Announces a change to `id`'s directory entry (delivered at commit).
async fn notify_tenant_change(tx: &mut PgConnection, id: &TenantId) -> StoreResult<()> {
    crate::changes::notify(tx, id).await.map_err(db_err)
}
