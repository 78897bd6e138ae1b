//! Isolation modes and moving a tenant between them.
//!
//! - `shared`: the tenant's rows sit in the public tables with everyone
//!   else's, separated by row-level security.
//! - `schema`: the same tables, created by the same migrations in the
//!   tenant's own schema (`t_<hash>`), still under forced RLS.
//! - `database`: the same tables in the tenant's own database; the main
//!   database's directory entry holds its URL (for the app role).
//!
//! [`move_tenant`] copies a tenant's rows to the new place, checks the counts,
//! flips the directory entry and removes the old copy. It holds the tenant's
//! placement lock (a transaction-level advisory lock) exclusively throughout,
//! so the store's writers (which take it shared before reading the entry)
//! wait and then follow the new entry; readers see the entry and the data in
//! one snapshot.

use std::time::Duration;

use enclave_core::TenantId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Row, Transaction};

use crate::{check_role_name, PgError, MIGRATOR};

/// Where a tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Shared,
    /// The tenant's own schema in the main database.
    Schema(String),
    /// The tenant's own database, by the URL the app role connects with.
    Database(String),
}

impl Placement {
    pub fn from_row(isolation: &str, location: Option<String>) -> Result<Self, PgError> {
        match (isolation, location) {
            ("shared", _) => Ok(Self::Shared),
            ("schema", Some(s)) if is_schema_name(&s) => Ok(Self::Schema(s)),
            ("database", Some(url)) if !url.is_empty() => Ok(Self::Database(url)),
            (i, l) => Err(PgError::Invalid(format!(
                "tenant directory entry {i:?} / {l:?} is not a placement"
            ))),
        }
    }

    pub fn isolation(&self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Schema(_) => "schema",
            Self::Database(_) => "database",
        }
    }

    pub fn location(&self) -> Option<&str> {
        match self {
            Self::Shared => None,
            Self::Schema(s) | Self::Database(s) => Some(s),
        }
    }

    /// `search_path` for transactions on this placement's data.
    pub fn search_path(&self) -> String {
        match self {
            Self::Schema(s) => format!("{s}, public"),
            _ => "public".into(),
        }
    }

    /// The schema holding the data within its database.
    fn schema(&self) -> &str {
        match self {
            Self::Schema(s) => s,
            _ => "public",
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared => f.write_str("shared"),
            Self::Schema(s) => write!(f, "schema {s}"),
            // Never print a password that may be in the URL.
            Self::Database(url) => match url.parse::<PgConnectOptions>() {
                Ok(o) => write!(
                    f,
                    "database {}",
                    o.get_database().unwrap_or("(default database)")
                ),
                Err(_) => f.write_str("database (unparsable URL)"),
            },
        }
    }
}

/// A single-quoted SQL literal. Only used for values we validated first
/// (tenant ids, schema names, search paths built from them), so this never
/// sees a quote in practice; it doubles one anyway.
pub fn sql_literal(s: &str) -> String {
    assert!(!s.contains('\0'), "NUL in an SQL literal");
    format!("'{}'", s.replace('\'', "''"))
}

fn tenant_hash(t: &TenantId) -> String {
    let digest = Sha256::digest(t.as_str().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The advisory-lock key guarding `tenant`'s placement: writers hold it
/// shared, a move exclusively.
pub fn placement_lock_key(tenant: &TenantId) -> i64 {
    let digest = Sha256::digest(format!("enclave.placement:{tenant}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The schema of `tenant` in schema mode: `t_` + 24 hex digits of a hash
/// (tenant ids may hold characters schema names should not).
pub fn schema_name(tenant: &TenantId) -> String {
    format!("t_{}", &tenant_hash(tenant)[..24])
}

/// The tenant's partial HNSW index (see [`crate::ensure_vector_indexes`]).
pub fn vector_index_name(tenant: &TenantId) -> String {
    format!("chunks_hnsw_{}", &tenant_hash(tenant)[..24])
}

fn is_schema_name(s: &str) -> bool {
    s.len() > 2
        && s.len() <= 63
        && s.starts_with("t_")
        && s[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Where [`move_tenant`] puts the tenant.
#[derive(Debug, Clone)]
pub enum MoveTarget {
    Shared,
    Schema,
    /// A database that has pgvector installed (a superuser's job); it is
    /// migrated by its `owner_url`, and the app connects with `app_url`
    /// (stored in the directory; prefer a URL without a password and supply
    /// it through PGPASSWORD or a passfile).
    Database {
        owner_url: String,
        app_url: String,
    },
}

/// What [`move_tenant`] did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub from: Placement,
    pub to: Placement,
    /// Rows copied per table.
    pub rows: Vec<(&'static str, u64)>,
}

/// How long a move waits between switching the directory entry and removing
/// the old copy (reads in flight finish on the old copy).
const MOVE_GRACE: Duration = Duration::from_secs(2);

/// Tables copied by a move, parents first. The audit log and usage counters
/// are the control plane's: they stay in the main database whatever the
/// placement.
const DATA_TABLES: &[&str] = &["documents", "chunks", "messages"];

async fn owner_pool(url: &str, search_path: Option<&str>) -> Result<PgPool, PgError> {
    let mut opts: PgConnectOptions = url.parse()?;
    if let Some(p) = search_path {
        opts = opts.options([("search_path", p)]);
    }
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts.disable_statement_logging())
        .await?)
}

/// A transaction bound to `tenant` (row-level security applies to owners too).
async fn tenant_tx(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The statements granting the app role exactly its data privileges on the
/// Enclave tables of `schema`: no DDL, no TRUNCATE, and the audit log
/// append-only.
pub(crate) fn grants_sql(schema: &str, app_role: &str) -> String {
    format!(
        "GRANT USAGE ON SCHEMA {schema} TO {app_role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.tenants, {schema}.documents, {schema}.chunks, \
         {schema}.messages, {schema}.usage_daily TO {app_role}; \
         GRANT SELECT, INSERT ON {schema}.audit_events TO {app_role};"
    )
}

/// Creates (if needed) and migrates `schema` with the same migrations as the
/// public tables, and grants the app role its privileges there.
async fn prepare_schema(owner_url: &str, schema: &str, app_role: &str) -> Result<(), PgError> {
    let pool = owner_pool(owner_url, Some(&format!("{schema},public"))).await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&pool)
        .await?;
    MIGRATOR.run(&pool).await?;
    sqlx::raw_sql(&grants_sql(schema, app_role))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// Non-generated columns of `schema.table`, as the target of an INSERT.
async fn insertable_columns(
    db: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, PgError> {
    Ok(sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER' \
           AND NOT (is_identity = 'YES' AND identity_generation = 'ALWAYS') \
         ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(db)
    .await?)
}

/// Copies the tenant's rows of one table from `src` to `dst` in batches
/// through a server-side cursor; returns the number of rows.
async fn copy_table(
    src: &mut PgConnection,
    src_schema: &str,
    dst: &mut PgConnection,
    dst_schema: &str,
    table: &str,
    columns: &[String],
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let lit = sql_literal(tenant.as_str());
    sqlx::raw_sql(&format!(
        "DECLARE enclave_move NO SCROLL CURSOR FOR \
         SELECT to_jsonb(t) FROM {src_schema}.{table} t WHERE t.tenant_id = {lit}"
    ))
    .execute(&mut *src)
    .await?;
    let cols = columns.join(", ");
    let insert = format!(
        "INSERT INTO {dst_schema}.{table} ({cols}) \
         SELECT {cols} FROM jsonb_populate_recordset(NULL::{dst_schema}.{table}, $1)"
    );
    let mut copied = 0u64;
    loop {
        let rows = sqlx::raw_sql("FETCH 500 FROM enclave_move")
            .fetch_all(&mut *src)
            .await?;
        if rows.is_empty() {
            break;
        }
        let batch = rows
            .iter()
            .map(|r| r.try_get::<Value, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        copied += batch.len() as u64;
        sqlx::query(&insert)
            .bind(Value::Array(batch))
            .execute(&mut *dst)
            .await?;
    }
    sqlx::raw_sql("CLOSE enclave_move")
        .execute(&mut *src)
        .await?;
    Ok(copied)
}

async fn count_rows(
    db: &mut PgConnection,
    schema: &str,
    table: &str,
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.as_str())
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// Deletes the tenant's data rows (and, unless `keep_tenant_row`, its
/// `tenants` row) from `schema`.
async fn delete_rows(
    db: &mut PgConnection,
    schema: &str,
    tenant: &TenantId,
    keep_tenant_row: bool,
) -> Result<(), PgError> {
    for table in ["chunks", "documents", "messages"] {
        sqlx::query(&format!(
            "DELETE FROM {schema}.{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .execute(&mut *db)
        .await?;
    }
    if !keep_tenant_row {
        sqlx::query(&format!(
            "DELETE FROM {schema}.tenants WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Moves `tenant` to `target` without losing data, as the owner of the main
/// database (`owner_url`). `app_role` receives its privileges on a new
/// schema or database. Moving out of database mode needs that database's
/// owner URL (`source_owner_url`). Safe to run again after an interruption:
/// the target is cleared before the copy, and the directory flips only after
/// the copy is committed and counted.
pub async fn move_tenant(
    owner_url: &str,
    tenant: &TenantId,
    target: MoveTarget,
    app_role: &str,
    source_owner_url: Option<&str>,
) -> Result<MoveReport, PgError> {
    check_role_name(app_role)?;
    let main = owner_pool(owner_url, None).await?;
    let mut mtx = tenant_tx(&main, tenant).await?;
    sqlx::query(
        "INSERT INTO public.tenants (tenant_id, slug, name) VALUES ($1, 't' || substr(md5($1), 1, 24), $1) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .execute(&mut *mtx)
    .await?;
    // Waits for in-flight writers; later writers wait for this move.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(placement_lock_key(tenant))
        .execute(&mut *mtx)
        .await?;
    let (isolation, location): (String, Option<String>) = sqlx::query_as(
        "SELECT isolation, location FROM public.tenants WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *mtx)
    .await?;
    let from = Placement::from_row(&isolation, location)?;
    let to = match &target {
        MoveTarget::Shared => Placement::Shared,
        MoveTarget::Schema => Placement::Schema(schema_name(tenant)),
        MoveTarget::Database { app_url, .. } => Placement::Database(app_url.clone()),
    };
    if from == to {
        mtx.commit().await?;
        main.close().await;
        return Ok(MoveReport {
            from,
            to,
            rows: Vec::new(),
        });
    }

    // The target's tables, by the same migrations.
    let mut dst_pool = None;
    match &target {
        MoveTarget::Shared => {}
        MoveTarget::Schema => prepare_schema(owner_url, to.schema(), app_role).await?,
        MoveTarget::Database { owner_url, .. } => {
            crate::migrate(owner_url, app_role, None).await?;
            dst_pool = Some(owner_pool(owner_url, None).await?);
        }
    }
    let src_pool = match &from {
        Placement::Database(_) => Some(
            owner_pool(
                source_owner_url.ok_or_else(|| {
                    PgError::Invalid(
                        "the tenant lives in its own database: give that database's owner URL"
                            .into(),
                    )
                })?,
                None,
            )
            .await?,
        ),
        _ => None,
    };
    let mut dst_tx = match &dst_pool {
        Some(p) => Some(tenant_tx(p, tenant).await?),
        None => None,
    };
    let mut src_tx = match &src_pool {
        Some(p) => {
            let mut tx = tenant_tx(p, tenant).await?;
            // The source must not change under the copy.
            sqlx::query("SELECT 1 FROM public.tenants WHERE tenant_id = $1 FOR UPDATE")
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            Some(tx)
        }
        None => None,
    };
    let (src_schema, dst_schema) = (from.schema().to_owned(), to.schema().to_owned());

    // Leftovers of an interrupted move are not the tenant's data: clear them.
    {
        let dst = on(&mut dst_tx, &mut mtx);
        delete_rows(dst, &dst_schema, tenant, matches!(to, Placement::Shared)).await?;
    }

    let mut rows = Vec::new();
    let tables = std::iter::once("tenants").chain(DATA_TABLES.iter().copied());
    for table in tables {
        // The main database's tenants row is the directory entry itself.
        if table == "tenants" && matches!(to, Placement::Shared) {
            continue;
        }
        let mut columns = {
            let dst = on(&mut dst_tx, &mut mtx);
            insertable_columns(dst, &dst_schema, table).await?
        };
        if table == "tenants" {
            columns.retain(|c| !matches!(c.as_str(), "isolation" | "location" | "vector_index"));
        }
        let copied = match (&mut src_tx, &mut dst_tx) {
            (Some(s), Some(d)) => {
                copy_table(s, &src_schema, d, &dst_schema, table, &columns, tenant).await?
            }
            (Some(s), None) => {
                copy_table(
                    s,
                    &src_schema,
                    &mut mtx,
                    &dst_schema,
                    table,
                    &columns,
                    tenant,
                )
                .await?
            }
            (None, Some(d)) => {
                copy_table(
                    &mut mtx,
                    &src_schema,
                    d,
                    &dst_schema,
                    table,
                    &columns,
                    tenant,
                )
                .await?
            }
            (None, None) => {
                // Same connection: a cursor and inserts interleave fine.
                let conn: &mut PgConnection = &mut mtx;
                copy_same_connection(conn, &src_schema, &dst_schema, table, &columns, tenant)
                    .await?
            }
        };
        let landed = {
            let dst = on(&mut dst_tx, &mut mtx);
            count_rows(dst, &dst_schema, table, tenant).await?
        };
        if landed != copied {
            return Err(PgError::Invalid(format!(
                "move of {tenant}: {table} copied {copied} rows but the target holds {landed}; nothing was changed"
            )));
        }
        if table != "tenants" {
            rows.push((table, copied));
        }
    }

    if let Some(d) = dst_tx {
        d.commit().await?;
    }
    sqlx::query(
        "UPDATE public.tenants SET isolation = $2, location = $3, vector_index = false, updated_at = now() \
         WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .bind(to.isolation())
    .bind(to.location())
    .execute(&mut *mtx)
    .await?;
    crate::changes::notify(&mut mtx, tenant).await?;
    mtx.commit().await?;

    // The old copy goes in a later transaction, after a grace period: a
    // reader whose snapshot predates the flip still reads the old place.
    // Deleted rows stay visible to such snapshots (MVCC), and a reader
    // already inside the old schema holds a lock that DROP SCHEMA waits for.
    // (A tenant without data has nothing a reader could miss.)
    if rows.iter().any(|(_, n)| *n > 0) {
        tokio::time::sleep(MOVE_GRACE).await;
    }
    let cleanup = async {
        match &from {
            Placement::Shared => {
                let mut tx = tenant_tx(&main, tenant).await?;
                delete_rows(&mut tx, "public", tenant, true).await?;
                tx.commit().await?;
                // A per-tenant index on the shared table now covers no rows.
                sqlx::raw_sql(&format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS public.{}",
                    vector_index_name(tenant)
                ))
                .execute(&main)
                .await?;
            }
            Placement::Schema(s) => {
                sqlx::raw_sql(&format!("DROP SCHEMA {s} CASCADE"))
                    .execute(&main)
                    .await?;
            }
            Placement::Database(_) => {
                if let Some(mut s) = src_tx {
                    delete_rows(&mut s, "public", tenant, false).await?;
                    s.commit().await?;
                }
            }
        }
        Ok::<_, PgError>(())
    };
    if let Err(e) = cleanup.await {
        return Err(PgError::Invalid(format!(
            "{tenant} now lives in {to}, but removing the old copy in {from} failed: {e}; \
             the old copy is unreachable through Enclave; remove it by hand"
        )));
    }
    main.close().await;
    if let Some(p) = src_pool {
        p.close().await;
    }
    if let Some(p) = dst_pool {
        p.close().await;
    }
    Ok(MoveReport { from, to, rows })
}

/// The connection of an end of the move: its own database's transaction, or
/// the main database's.
fn on<'a>(
    own: &'a mut Option<Transaction<'static, Postgres>>,
    main: &'a mut Transaction<'static, Postgres>,
) -> &'a mut PgConnection {
    match own {
        Some(t) => t,
        None => main,
    }
}

/// Copy within one connection (shared ↔ schema in the main database).
async fn copy_same_connection(
    conn: &mut PgConnection,
    src_schema: &str,
    dst_schema: &str,
    table: &str,
    columns: &[String],
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let cols = columns.join(", ");
    let done = sqlx::query(&format!(
        "INSERT INTO {dst_schema}.{table} ({cols}) SELECT {cols} FROM {src_schema}.{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The database [`provision_tenant_database`] creates for `tenant`:
/// `enclave_tenant_` + 24 hex digits of a hash of the id.
pub fn tenant_database_name(tenant: &TenantId) -> String {
    format!("enclave_tenant_{}", &tenant_hash(tenant)[..24])
}

/// Creates `tenant`'s own database on the server of `admin_url` (a role that
/// may create databases and, since pgvector is not a trusted extension,
/// install it: in practice a superuser), owned by the main database's owner
/// (`owner_url`), with pgvector and the leakproof text match in it. Returns
/// the [`MoveTarget`] for [`move_tenant`]: the owner's and the app's URLs
/// (`app_url` is the server's URL for the main database) with the database
/// name replaced. Safe to run again: an existing database of that name is
/// reused.
pub async fn provision_tenant_database(
    admin_url: &str,
    owner_url: &str,
    app_url: &str,
    tenant: &TenantId,
) -> Result<MoveTarget, PgError> {
    let name = tenant_database_name(tenant);
    let owner: PgConnectOptions = owner_url.parse()?;
    let owner_role = owner.get_username().to_owned();
    check_role_name(&owner_role)?;
    let admin: PgConnectOptions = admin_url.parse()?;
    let mut conn = admin.clone().connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE {name} OWNER {owner_role}"))
            .execute(&mut conn)
            .await?;
    }
    drop(conn);
    let mut db = admin.database(&name).connect().await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&mut db)
        .await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS btree_gin")
        .execute(&mut db)
        .await?;
    sqlx::raw_sql(crate::LEAKPROOF_TEXT_MATCH)
        .execute(&mut db)
        .await?;
    drop(db);
    let app: PgConnectOptions = app_url.parse()?;
    Ok(MoveTarget::Database {
        owner_url: owner.database(&name).to_url_lossy().to_string(),
        app_url: app.database(&name).to_url_lossy().to_string(),
    })
}

/// The server's [`enclave_store::control::TenantPlacer`] on PostgreSQL:
/// `POST /admin/v1/tenants` with `isolation` `schema` or `database` places
/// the new tenant through [`move_tenant`] as the main database's owner.
/// `database` mode also needs `database_admin_url` (creates the tenant's
/// database on the same server, see [`provision_tenant_database`]).
pub struct PgPlacer {
    owner_url: String,
    app_url: String,
    app_role: String,
    database_admin_url: Option<String>,
}

impl PgPlacer {
    /// `owner_url`: the main database's owner; `app_url`: the server's own
    /// (app role) URL of the main database.
    pub fn new(
        owner_url: String,
        app_url: String,
        database_admin_url: Option<String>,
    ) -> Result<Self, PgError> {
        let app_role = app_url
            .parse::<PgConnectOptions>()?
            .get_username()
            .to_owned();
        check_role_name(&app_role)?;
        owner_url.parse::<PgConnectOptions>()?;
        if let Some(u) = &database_admin_url {
            u.parse::<PgConnectOptions>()?;
        }
        Ok(Self {
            owner_url,
            app_url,
            app_role,
            database_admin_url,
        })
    }
}

#[async_trait::async_trait]
impl enclave_store::control::TenantPlacer for PgPlacer {
    async fn place(
        &self,
        tenant: &TenantId,
        isolation: enclave_core::Isolation,
    ) -> enclave_store::StoreResult<()> {
        use enclave_core::Isolation;
        use enclave_store::StoreError;
        if !matches!(isolation, Isolation::Schema | Isolation::Database) {
            return match isolation {
                Isolation::Shared => Ok(()),
                other => Err(StoreError::Invalid(format!(
                    "isolation: {:?} is not a PostgreSQL placement",
                    other.as_str()
                ))),
            };
        }
        if isolation == Isolation::Database && self.database_admin_url.is_none() {
            return Err(StoreError::Invalid(
                "isolation: \"database\" needs the server's tenant_database_admin_url setting"
                    .into(),
            ));
        }
        // The move's future is not provably Send (sqlx executors under
        // higher-ranked lifetimes), so it runs on a blocking thread of the
        // runtime, driven by `block_on`, with owned values.
        let (owner, app, role, admin, tenant) = (
            self.owner_url.clone(),
            self.app_url.clone(),
            self.app_role.clone(),
            self.database_admin_url.clone(),
            tenant.clone(),
        );
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let target = match admin {
                    Some(admin) if isolation == Isolation::Database => {
                        provision_tenant_database(&admin, &owner, &app, &tenant)
                            .await
                            .map_err(|e| format!("creating the tenant database: {e}"))?
                    }
                    _ => MoveTarget::Schema,
                };
                move_tenant(&owner, &tenant, target, &role, None)
                    .await
                    .map_err(|e| format!("placing the tenant: {e}"))
                    .map(|_| ())
            })
        })
        .await
        .map_err(|e| StoreError::Internal(format!("placement task: {e}")))?
        .map_err(StoreError::Internal)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_safe_identifiers() {
        let t = TenantId::parse("Acme.Corp-1").unwrap();
        let s = schema_name(&t);
        assert!(is_schema_name(&s), "{s}");
        assert_eq!(s.len(), 26);
        assert_ne!(s, schema_name(&TenantId::parse("acme.corp-1").unwrap()));
        assert!(!is_schema_name("public"));
        assert!(!is_schema_name("t_x; drop"));
    }

    #[test]
    fn placements_round_trip_through_the_directory() {
        for p in [
            Placement::Shared,
            Placement::Schema("t_00ff".into()),
            Placement::Database("postgres://app@db/t1".into()),
        ] {
            let back = Placement::from_row(p.isolation(), p.location().map(str::to_owned)).unwrap();
            assert_eq!(back, p);
        }
        assert!(Placement::from_row("schema", Some("public".into())).is_err());
        assert!(Placement::from_row("database", None).is_err());
        assert_eq!(
            Placement::Database("postgres://app:secret@db/t1".into()).to_string(),
            "database t1"
        );
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(sql_literal("a'b"), "'a''b'");
    }
}
