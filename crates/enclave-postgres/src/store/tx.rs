//! One unit of work for one tenant: [`Tx`] and [`PgTenant::begin`], which
//! reads the placement in the same snapshot as the data.

use enclave_store::{StoreError, StoreResult};
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row, Transaction};

use crate::placement::{placement_lock_key, sql_literal, Placement};

use super::rows::db_err;
use super::PgTenant;

pub(super) const READ: bool = false;
pub(super) const WRITE: bool = true;

/// One unit of work for one tenant: a transaction on the main database
/// (holding the directory entry) and, in database mode, one on the tenant's
/// database where the data lives.
pub(super) struct Tx {
    pub(super) main: Transaction<'static, Postgres>,
    pub(super) tenant: Option<Transaction<'static, Postgres>>,
    /// The tenant has its own HNSW index.
    pub(super) vector_index: bool,
    /// The placement's `tenants` table already holds the tenant's row (in
    /// shared mode that table is the directory just read), so a writer need
    /// not insert it.
    pub(super) tenant_row: bool,
    /// The directory holds the tenant.
    pub(super) directory_row: bool,
    /// A purge of the tenant has begun (read under the placement lock).
    pub(super) purging: bool,
}

impl Tx {
    /// Before a write that adds or changes data: refused while the tenant
    /// is being purged, and (`require_directory`) when it has no directory
    /// entry — a purged tenant stays purged. Deletes need neither.
    pub(super) fn may_add(&self, require_directory: bool) -> StoreResult<()> {
        if self.purging {
            return Err(StoreError::Unavailable(
                "the tenant is being purged; nothing was written".into(),
            ));
        }
        if require_directory && !self.directory_row {
            return Err(StoreError::Unavailable(
                "the tenant has no directory entry (purged or never created); nothing was written"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Creates the tenant's row in its placement's `tenants` table with its
    /// first write (the row every tenant table's foreign key points at),
    /// unless the directory read showed it is there.
    pub(super) async fn ensure_tenant_row(&mut self, tenant: &str) -> StoreResult<()> {
        if self.tenant_row {
            return Ok(());
        }
        sqlx::query("INSERT INTO tenants (tenant_id, slug, name) VALUES ($1, 't' || substr(md5($1), 1, 24), $1) ON CONFLICT (tenant_id) DO NOTHING")
            .bind(tenant)
            .execute(self.db())
            .await
            .map_err(db_err)?;
        self.tenant_row = true;
        Ok(())
    }

    /// The connection that holds the tenant's data.
    pub(super) fn db(&mut self) -> &mut PgConnection {
        match &mut self.tenant {
            Some(t) => t,
            None => &mut self.main,
        }
    }

    pub(super) async fn commit(self) -> StoreResult<()> {
        if let Some(t) = self.tenant {
            t.commit().await.map_err(db_err)?;
        }
        self.main.commit().await.map_err(db_err)
    }
}

impl PgTenant {
    /// Opens the tenant's transaction(s): sets the tenant (and, in schema
    /// mode, the search path), and checks the directory entry in the same
    /// transaction — retrying when the cached placement was stale.
    pub(super) async fn begin(&self, write: bool) -> StoreResult<Tx> {
        let lit = sql_literal(self.tenant.as_str());
        let isolation = if write {
            "BEGIN"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        };
        for _ in 0..4 {
            let guess = self
                .inner
                .placements
                .lock()
                .get(&self.tenant)
                .cloned()
                .unwrap_or(Placement::Shared);
            // Tenant ids and schema names are validated identifiers, so they
            // can be literals: the BEGIN, the settings and (for a writer) the
            // placement lock travel in one simple query with the transaction's
            // start. Writers hold the tenant's placement lock in shared mode
            // (a move takes it exclusively) before they read the entry or
            // touch any table of the placement: a lock-manager entry, not a
            // row lock, so concurrent writers of one tenant do not churn
            // multixacts on the directory row.
            let lock = if write {
                format!(
                    "; SELECT pg_advisory_xact_lock_shared({})",
                    placement_lock_key(&self.tenant)
                )
            } else {
                String::new()
            };
            let begin = format!(
                "{isolation}; SELECT set_config('app.tenant_id', {lit}, true), set_config('search_path', {path}, true){lock}",
                path = sql_literal(&guess.search_path()),
            );
            let mut main = self.inner.main.begin_with(begin).await.map_err(db_err)?;
            // The entry, read in a later statement than the lock (so after it
            // is granted: a writer follows a move that just committed) and,
            // for a reader, in the snapshot its data is read in. A prepared
            // statement: its plan is cached per connection (planning it
            // under RLS was a tenth of the CPU of small writes).
            let rows = sqlx::query(if write {
                "SELECT d.isolation, d.location, false, d.purging FROM public.tenants d WHERE d.tenant_id = $1"
            } else {
                "SELECT d.isolation, d.location, \
                        COALESCE((SELECT t.vector_index FROM tenants t WHERE t.tenant_id = $1), false), \
                        d.purging \
                 FROM public.tenants d WHERE d.tenant_id = $1"
            })
            .bind(self.tenant.as_str())
            .fetch_all(&mut *main)
            .await
            .map_err(db_err)?;
            let directory_row = !rows.is_empty();
            let purging = match rows.first() {
                Some(r) => r.try_get::<bool, _>(3).map_err(db_err)?,
                None => false,
            };
            let (actual, mut vector_index) = match rows.iter().find(|r| r.len() == 4) {
                Some(r) => (
                    Placement::from_row(
                        r.try_get::<String, _>(0).map_err(db_err)?.as_str(),
                        r.try_get(1).map_err(db_err)?,
                    )
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                    r.try_get::<bool, _>(2).map_err(db_err)?,
                ),
                None => (Placement::Shared, false),
            };
            if actual != guess {
                self.inner
                    .placements
                    .lock()
                    .put(self.tenant.clone(), actual);
                continue;
            }
            let tenant = match &actual {
                Placement::Database(url) => {
                    let pool = self.inner.tenant_pool(url).await?;
                    let mut t = pool
                        .begin_with(format!(
                            "{isolation}; SELECT set_config('app.tenant_id', {lit}, true)"
                        ))
                        .await
                        .map_err(db_err)?;
                    vector_index = sqlx::query_scalar(
                        "SELECT COALESCE((SELECT vector_index FROM tenants WHERE tenant_id = $1), false)",
                    )
                    .bind(self.tenant.as_str())
                    .fetch_one(&mut *t)
                    .await
                    .map_err(db_err)?;
                    Some(t)
                }
                _ => None,
            };
            return Ok(Tx {
                tenant_row: directory_row && actual == Placement::Shared,
                directory_row,
                purging,
                main,
                tenant,
                vector_index,
            });
        }
        Err(StoreError::Unavailable(
            "the tenant is being moved; retry".into(),
        ))
    }
}
