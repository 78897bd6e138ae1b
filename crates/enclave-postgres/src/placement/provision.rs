//! Owner-side DDL: pools as the owner, schemas and tenant databases
//! created, migrated and granted to the app role.

use enclave_core::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};

use crate::{check_role_name, PgError, MIGRATOR};

use super::*;

pub(super) async fn owner_pool(url: &str, search_path: Option<&str>) -> Result<PgPool, PgError> {
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
pub(super) async fn tenant_tx(
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
         {schema}.messages, {schema}.usage_daily, {schema}.text_stats TO {app_role}; \
         GRANT SELECT, INSERT ON {schema}.audit_events TO {app_role};"
    )
}

/// Creates (if needed) and migrates `schema` with the same migrations as the
/// public tables, and grants the app role its privileges there.
pub(super) async fn prepare_schema(
    owner_url: &str,
    schema: &str,
    app_role: &str,
) -> Result<(), PgError> {
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
