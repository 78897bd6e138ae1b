//! Per-tenant vector indexes: the owner's maintenance job.
//!
//! A global HNSW index filtered by tenant loses results for small tenants
//! (the graph walk finds other tenants' neighbours and the filter drops
//! them), and a planner that sees a selective tenant filter skips the index
//! altogether, so large tenants pay an exact scan. Enclave instead gives each
//! *large* tenant its own partial index,
//! `… USING hnsw (embedding vector_cosine_ops) WHERE tenant_id = '<t>' AND kind = 0`,
//! built `CONCURRENTLY` (no write lock on the shared table), and records it
//! in the tenant's `tenants.vector_index` flag, which the store reads in
//! every search transaction. Small tenants keep exact scans.
//!
//! Run it periodically (`enclave maintain`), as the owner of the database.

use enclave_core::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::placement::{sql_literal, vector_index_name, Placement};
use crate::PgError;

/// When [`ensure_vector_indexes`] builds and drops per-tenant indexes.
#[derive(Debug, Clone)]
pub struct IndexPolicy {
    /// Build an index once a tenant has this many searchable chunks…
    pub min_chunks: u64,
    /// …and drop it when the tenant shrinks below this many.
    pub drop_below: u64,
    /// HNSW build parameters.
    pub m: u32,
    pub ef_construction: u32,
    /// `maintenance_work_mem` for the build (the graph should fit).
    pub maintenance_work_mem: String,
}

impl Default for IndexPolicy {
    fn default() -> Self {
        Self {
            // Above ~5k chunks the exact scan (≈ 1.2 µs a chunk) costs more
            // than an HNSW probe (≈ 1–4 ms; docs/BENCHMARKS.md).
            min_chunks: 5_000,
            drop_below: 2_500,
            m: 16,
            ef_construction: 128,
            maintenance_work_mem: "1GB".into(),
        }
    }
}

/// One action of [`ensure_vector_indexes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    Built {
        tenant: String,
        chunks: u64,
    },
    Dropped {
        tenant: String,
        chunks: u64,
    },
    /// Tenants in database mode are maintained by running against their
    /// own database.
    Skipped {
        tenant: String,
        reason: String,
    },
}

/// Builds the missing per-tenant HNSW indexes and drops the ones no longer
/// needed, for every tenant whose data is in this database (shared mode and
/// schema mode). Connects as the owner (`owner_url`).
pub async fn ensure_vector_indexes(
    owner_url: &str,
    policy: &IndexPolicy,
) -> Result<Vec<IndexChange>, PgError> {
    let opts: PgConnectOptions = owner_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.disable_statement_logging())
        .await?;
    sqlx::query("SELECT set_config('maintenance_work_mem', $1, false)")
        .bind(&policy.maintenance_work_mem)
        .execute(&pool)
        .await?;
    let tenants = list_tenants(&pool).await?;
    let mut changes = Vec::new();
    for (tenant, placement) in tenants {
        let schema = match &placement {
            Placement::Shared => "public".to_owned(),
            Placement::Schema(s) => s.clone(),
            Placement::Database(_) => {
                // In the main database the entry only points elsewhere; in the
                // tenant's own database its row says `shared`.
                changes.push(IndexChange::Skipped {
                    tenant: tenant.to_string(),
                    reason: "database mode: run against the tenant's database".into(),
                });
                continue;
            }
        };
        if let Some(c) = maintain_tenant(&pool, &tenant, &schema, policy).await? {
            changes.push(c);
        }
    }
    pool.close().await;
    Ok(changes)
}

async fn list_tenants(pool: &PgPool) -> Result<Vec<(TenantId, Placement)>, PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT tenant_id, isolation, location FROM public.tenants ORDER BY tenant_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(t, i, l)| {
            Ok((
                TenantId::parse(&t).map_err(|e| PgError::Invalid(e.to_string()))?,
                Placement::from_row(&i, l)?,
            ))
        })
        .collect()
}

async fn maintain_tenant(
    pool: &PgPool,
    tenant: &TenantId,
    schema: &str,
    policy: &IndexPolicy,
) -> Result<Option<IndexChange>, PgError> {
    let name = vector_index_name(tenant);
    let lit = sql_literal(tenant.as_str());
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let chunks: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.chunks WHERE tenant_id = $1 AND kind = 0"
    ))
    .bind(tenant.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let flagged: bool = sqlx::query_scalar(&format!(
        "SELECT COALESCE((SELECT vector_index FROM {schema}.tenants WHERE tenant_id = $1), false)"
    ))
    .bind(tenant.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(&name)
    .fetch_optional(pool)
    .await?;
    let chunks = chunks as u64;
    if chunks >= policy.min_chunks {
        if valid == Some(true) {
            if !flagged {
                set_flag(pool, tenant, schema, true).await?;
            }
            return Ok(None);
        }
        if valid == Some(false) {
            // A build that was interrupted leaves an invalid index behind.
            sqlx::raw_sql(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}"
            ))
            .execute(pool)
            .await?;
        }
        sqlx::raw_sql(&format!(
            "CREATE INDEX CONCURRENTLY {name} ON {schema}.chunks USING hnsw (embedding vector_cosine_ops) \
             WITH (m = {}, ef_construction = {}) WHERE tenant_id = {lit} AND kind = 0",
            policy.m, policy.ef_construction
        ))
        .execute(pool)
        .await?;
        set_flag(pool, tenant, schema, true).await?;
        return Ok(Some(IndexChange::Built {
            tenant: tenant.to_string(),
            chunks,
        }));
    }
    if chunks < policy.drop_below && valid.is_some() {
        // Searches stop using it first, then it goes.
        set_flag(pool, tenant, schema, false).await?;
        sqlx::raw_sql(&format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}"
        ))
        .execute(pool)
        .await?;
        return Ok(Some(IndexChange::Dropped {
            tenant: tenant.to_string(),
            chunks,
        }));
    }
    if flagged && valid != Some(true) {
        set_flag(pool, tenant, schema, false).await?;
    }
    Ok(None)
}

async fn set_flag(pool: &PgPool, tenant: &TenantId, schema: &str, on: bool) -> Result<(), PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "UPDATE {schema}.tenants SET vector_index = $2 WHERE tenant_id = $1"
    ))
    .bind(tenant.as_str())
    .bind(on)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
