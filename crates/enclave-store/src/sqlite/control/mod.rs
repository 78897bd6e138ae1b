//! The embedded control plane: `control.sqlite` in the data directory holds
//! the tenant directory, API keys and the audit log, `tenant_id` (or the
//! audit scope) leading every key.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::{Isolation, Role, Slug, TenantId, TenantStatus};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::control::{
    audit_hash, audit_time, AlertQueue, AuditEvent, BudgetAlert, ClaimedJob, ControlPurge,
    ControlStore, JobQueue, KeyDirectory, KeyRecord, NewAuditEvent, NewTenant, PlatformAudit,
    TenantControl, TenantDirectory, TenantLimits, TenantRecord, TenantUpdate, PLATFORM_SCOPE,
};
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::{opt_row_ts, row_ts, ts};
use crate::{StoreError, StoreResult};

mod tenant;
use tenant::SqliteTenantControl;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id  TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    status     TEXT NOT NULL,
    isolation  TEXT NOT NULL,
    limits     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    search     TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    tenant_id    TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    salt         BLOB NOT NULL,
    secret_hash  BLOB NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT,
    PRIMARY KEY (tenant_id, key_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_by_id ON api_keys (key_id);
CREATE TABLE IF NOT EXISTS audit_events (
    scope     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    event_id  TEXT NOT NULL,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    detail    TEXT NOT NULL,
    prev_hash BLOB,
    hash      BLOB NOT NULL,
    PRIMARY KEY (scope, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER,
    response     TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_daily (
    tenant_id       TEXT NOT NULL,
    day             TEXT NOT NULL,
    requests        INTEGER NOT NULL DEFAULT 0,
    searches        INTEGER NOT NULL DEFAULT 0,
    documents_added INTEGER NOT NULL DEFAULT 0,
    tokens_embedded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;
-- Append-only: the store never updates an event; deleting is the purge's
-- alone (a trigger cannot tell, so the chain check is the guard).
CREATE TRIGGER IF NOT EXISTS audit_events_append_only BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
";

/// The embedded control plane.
#[derive(Clone)]
pub struct SqliteControl {
    conn: Arc<Mutex<Connection>>,
}

fn bad<E: std::error::Error + Send + Sync + 'static>(e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRecord> {
    let limits: String = r.get(6)?;
    Ok(TenantRecord {
        id: TenantId::parse(&r.get::<_, String>(0)?).map_err(bad)?,
        slug: Slug::parse(&r.get::<_, String>(1)?).map_err(bad)?,
        name: r.get(2)?,
        plan: r.get(3)?,
        status: r
            .get::<_, String>(4)?
            .parse::<TenantStatus>()
            .map_err(bad)?,
        isolation: r.get::<_, String>(5)?.parse::<Isolation>().map_err(bad)?,
        limits: TenantLimits::from_json(serde_json::from_str(&limits).map_err(bad)?),
        search: serde_json::from_str(&r.get::<_, String>(9)?).map_err(bad)?,
        created_at: row_ts(&r.get::<_, String>(7)?)?,
        updated_at: row_ts(&r.get::<_, String>(8)?)?,
    })
}

const TENANT_COLS: &str =
    "tenant_id, slug, name, plan, status, isolation, limits, created_at, updated_at, search";

/// Columns added after a file's tables were created: each added when
/// missing, so an older `control.sqlite` opens as it is.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[("tenants", "search", "TEXT NOT NULL DEFAULT '{}'")];

fn add_missing_columns(c: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let has: bool = c
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !has {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}
const KEY_COLS: &str = "key_id, tenant_id, name, role, salt, secret_hash, created_by, created_at, expires_at, revoked_at, last_used_at";
const AUDIT_COLS: &str = "scope, seq, event_id, at, actor, action, target, detail, prev_hash, hash";

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        key_id: r.get(0)?,
        tenant_id: TenantId::parse(&r.get::<_, String>(1)?).map_err(bad)?,
        name: r.get(2)?,
        role: r.get::<_, String>(3)?.parse::<Role>().map_err(bad)?,
        salt: r.get(4)?,
        secret_hash: r.get(5)?,
        created_by: r.get(6)?,
        created_at: row_ts(&r.get::<_, String>(7)?)?,
        expires_at: opt_row_ts(r.get(8)?)?,
        revoked_at: opt_row_ts(r.get(9)?)?,
        last_used_at: opt_row_ts(r.get(10)?)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        scope: r.get(0)?,
        seq: r.get(1)?,
        event_id: r.get(2)?,
        at: row_ts(&r.get::<_, String>(3)?)?,
        actor: r.get(4)?,
        action: r.get(5)?,
        target: r.get(6)?,
        detail: serde_json::from_str(&r.get::<_, String>(7)?).map_err(bad)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

impl SqliteControl {
    /// Opens (creating) `dir/control.sqlite`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        let conn = crate::sqlite::db::open_retrying(|| {
            let conn = Connection::open(dir.join("control.sqlite"))?;
            // The busy handler before the WAL switch (see `Db::connect`).
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
            conn.execute_batch(SCHEMA)?;
            add_missing_columns(&conn)?;
            conn.execute_batch(crate::sqlite::jobs::SCHEMA)?;
            conn.execute_batch(crate::sqlite::alerts::SCHEMA)?;
            Ok(conn)
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    fn append(conn: &mut Connection, scope: String, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM audit_events WHERE scope = ?1 ORDER BY seq DESC LIMIT 1",
                [&scope],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql_err)?;
        let ev = NewAuditEvent {
            at: audit_time(ev.at),
            ..ev
        };
        let seq = last.as_ref().map_or(1, |l| l.0 + 1);
        let prev = last.map(|l| l.1);
        let event_id = uuid::Uuid::now_v7().to_string();
        let hash = audit_hash(&scope, seq, &event_id, &ev, prev.as_deref());
        tx.execute(
            "INSERT INTO audit_events (scope, seq, event_id, at, actor, action, target, detail, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![scope, seq, event_id, ts(ev.at), ev.actor, ev.action, ev.target, ev.detail.to_string(), prev, hash],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        Ok(AuditEvent {
            scope,
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

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

#[async_trait::async_trait]
impl TenantDirectory for SqliteControl {
    async fn create_tenant(&self, t: NewTenant) -> StoreResult<TenantRecord> {
        self.run(move |c| {
            let limits = t.limits.to_json().to_string();
            let search = serde_json::to_string(&t.search).expect("defaults serialize");
            c.execute(
                &format!("INSERT INTO tenants ({TENANT_COLS}) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?7, ?8)"),
                params![t.id.as_str(), t.slug.as_str(), t.name, t.plan, t.isolation.as_str(), limits, ts(t.now), search],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict("a tenant with this id or slug exists".into())
                } else {
                    sql_err(e)
                }
            })?;
            Ok(TenantRecord {
                id: t.id,
                slug: t.slug,
                name: t.name,
                plan: t.plan,
                status: TenantStatus::Active,
                isolation: t.isolation,
                limits: t.limits,
                search: t.search,
                created_at: audit_time(t.now),
                updated_at: audit_time(t.now),
            })
        })
        .await
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRecord>> {
        let id = id.clone();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {TENANT_COLS} FROM tenants WHERE tenant_id = ?1"),
                [id.as_str()],
                tenant_row,
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: u32,
    ) -> StoreResult<Vec<TenantRecord>> {
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        self.run(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE tenant_id > ?1 ORDER BY tenant_id LIMIT ?2"
                ))
                .map_err(sql_err)?;
            let rows = st
                .query_map(params![after, limit], tenant_row)
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(rows)
        })
        .await
    }

    async fn update_tenant(
        &self,
        id: &TenantId,
        u: TenantUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TenantRecord>> {
        let id = id.clone();
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE tenants SET status = COALESCE(?2, status), plan = COALESCE(?3, plan), \
                     limits = COALESCE(?4, limits), search = COALESCE(?6, search), \
                     updated_at = ?5 WHERE tenant_id = ?1",
                    params![
                        id.as_str(),
                        u.status.map(|s| s.as_str()),
                        u.plan,
                        u.limits.map(|l| l.to_json().to_string()),
                        ts(now),
                        u.search
                            .map(|d| serde_json::to_string(&d).expect("defaults serialize")),
                    ],
                )
                .map_err(sql_err)?;
            if n == 0 {
                return Ok(None);
            }
            c.query_row(
                &format!("SELECT {TENANT_COLS} FROM tenants WHERE tenant_id = ?1"),
                [id.as_str()],
                tenant_row,
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn begin_purge(&self, id: &TenantId) -> StoreResult<bool> {
        // One process serves the embedded store: the library's write gate
        // (`Tenant::purge`) excludes its writers; here the tenant is only
        // suspended.
        let id = id.clone();
        self.run(move |c| {
            c.execute(
                "UPDATE tenants SET status = 'suspended' WHERE tenant_id = ?1",
                [id.as_str()],
            )
            .map(|n| n == 1)
            .map_err(sql_err)
        })
        .await
    }

    async fn purge_tenant(&self, id: &TenantId) -> StoreResult<ControlPurge> {
        let id = id.clone();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let keys = tx
                .execute("DELETE FROM api_keys WHERE tenant_id = ?1", [id.as_str()])
                .map_err(sql_err)?;
            let audit = tx
                .execute("DELETE FROM audit_events WHERE scope = ?1", [id.as_str()])
                .map_err(sql_err)?;
            for table in crate::sqlite::jobs::TABLES.iter().chain(&[
                "idempotency_keys",
                "usage_daily",
                "budget_alerts",
            ]) {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant_id = ?1"),
                    [id.as_str()],
                )
                .map_err(sql_err)?;
            }
            tx.execute("DELETE FROM tenants WHERE tenant_id = ?1", [id.as_str()])
                .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(ControlPurge {
                keys_revoked: keys as u64,
                audit_events_deleted: audit as u64,
            })
        })
        .await
    }

    async fn tenant_rows_left(&self, id: &TenantId) -> StoreResult<u64> {
        let id = id.clone();
        self.run(move |c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM tenants WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM api_keys WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM audit_events WHERE scope = ?1) \
                      + (SELECT count(*) FROM idempotency_keys WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM usage_daily WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM jobs WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM job_results WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM job_queue WHERE tenant_id = ?1) \
                      + (SELECT count(*) FROM budget_alerts WHERE tenant_id = ?1)",
                [id.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }
}

#[async_trait::async_trait]
impl KeyDirectory for SqliteControl {
    async fn find_key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        let key_id = key_id.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE key_id = ?1"),
                [key_id],
                key_row,
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let key_id = key_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1",
                params![key_id, ts(at)],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl PlatformAudit for SqliteControl {
    async fn append_platform_audit(&self, ev: NewAuditEvent) -> StoreResult<AuditEvent> {
        self.run(move |c| Self::append(c, PLATFORM_SCOPE.to_owned(), ev))
            .await
    }

    async fn audit_events(
        &self,
        scope: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let scope = scope.to_owned();
        self.run(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {AUDIT_COLS} FROM audit_events WHERE scope = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(sql_err)?;
            let rows = st
                .query_map(params![scope, after_seq, limit], audit_row)
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(rows)
        })
        .await
    }

    async fn audit_scopes(&self) -> StoreResult<Vec<String>> {
        self.run(|c| {
            let mut st = c
                .prepare("SELECT DISTINCT scope FROM audit_events ORDER BY scope")
                .map_err(sql_err)?;
            let rows = st
                .query_map([], |r| r.get(0))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sql_err)?;
            Ok(rows)
        })
        .await
    }
}

#[async_trait::async_trait]
impl JobQueue for SqliteControl {
    async fn claim_job(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> StoreResult<Option<ClaimedJob>> {
        let owner = owner.to_owned();
        self.run(move |c| crate::sqlite::jobs::claim(c, &owner, lease))
            .await
    }

    async fn unfinished_jobs(&self) -> StoreResult<u64> {
        self.run(crate::sqlite::jobs::unfinished).await
    }
}

#[async_trait::async_trait]
impl AlertQueue for SqliteControl {
    async fn due_budget_alerts(
        &self,
        limit: u32,
        retry: std::time::Duration,
    ) -> StoreResult<Vec<BudgetAlert>> {
        self.run(move |c| crate::sqlite::alerts::due(c, limit, retry))
            .await
    }

    async fn budget_alert_delivered(
        &self,
        tenant: &TenantId,
        month: &str,
        threshold_percent: u32,
    ) -> StoreResult<()> {
        let (t, m) = (tenant.clone(), month.to_owned());
        self.run(move |c| crate::sqlite::alerts::delivered(c, &t, &m, threshold_percent))
            .await
    }
}

impl ControlStore for SqliteControl {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantControl> {
        Arc::new(SqliteTenantControl {
            control: self.clone(),
            tenant: id.clone(),
        })
    }
}
