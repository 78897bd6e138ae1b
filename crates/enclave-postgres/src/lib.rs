//! Enclave on PostgreSQL: the schema (versioned migrations embedded in the
//! binary), the roles around it, and the checks that make row-level security
//! binding.
//!
//! Two roles, never one:
//! - the **owner** runs [`migrate`]; it owns every table;
//! - the **app role** (what the server connects as) owns nothing, is not a
//!   superuser and lacks `BYPASSRLS` — [`check_app_role`] refuses anything
//!   else, because row-level security does not bind such roles.
//!
//! [`PgStore`] is the tenant-scoped store over this schema, in the three
//! isolation modes of [`Placement`]; [`move_tenant`] moves a tenant between
//! them and [`ensure_vector_indexes`] gives large tenants their own HNSW index.

mod alerts;
mod changes;
mod control;
mod jobs;
mod maintain;
mod placement;
pub mod scratch;
mod store;

pub use control::PgControl;
pub use maintain::{ensure_vector_indexes, IndexChange, IndexPolicy};
pub use placement::{
    move_tenant, provision_tenant_database, schema_name, tenant_database_name, vector_index_name,
    MoveReport, MoveTarget, PgPlacer, Placement,
};
pub use store::{PgOptions, PgStore};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

/// The embedded migrations, applied in order by [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Run once per database by a superuser (with `CREATE EXTENSION vector`;
/// [`migrate`] does it when it connects as one).
/// Row-level security lets the planner use only *leakproof* conditions as
/// index conditions; `tsvector @@ tsquery` is not marked so by default, and
/// without it a full-text search reads every row of the tenant instead of
/// the GIN index's matches. The matching function raises no data-dependent
/// errors, so it leaks nothing through a policy.
pub const LEAKPROOF_TEXT_MATCH: &str =
    "ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF";

/// Whether [`LEAKPROOF_TEXT_MATCH`] has been applied (the server warns if not).
pub async fn text_match_is_leakproof(pool: &PgPool) -> Result<bool, PgError> {
    Ok(sqlx::query_scalar(
        "SELECT proleakproof FROM pg_proc WHERE oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure",
    )
    .fetch_one(pool)
    .await?)
}

/// Tables that hold tenant rows (all under FORCE ROW LEVEL SECURITY).
pub const TENANT_TABLES: &[&str] = &[
    "tenants",
    "documents",
    "chunks",
    "text_stats",
    "messages",
    "usage_daily",
    "audit_events",
    "api_keys",
    "idempotency_keys",
    "jobs",
    "job_results",
    "job_queue",
    "budget_alerts",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    /// The app role could bypass row-level security; the server must not run.
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
}

/// Role names we create are plain identifiers (no quoting games).
pub(crate) fn check_role_name(role: &str) -> Result<(), PgError> {
    let ok = !role.is_empty()
        && role.len() <= 63
        && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PgError::Invalid(format!(
            "role name {role:?} must match ^[a-z_][a-z0-9_]{{0,62}}$"
        )))
    }
}

/// Applies the migrations as the owner (`owner_url`), then creates or updates
/// `app_role` as a login role without superuser or `BYPASSRLS`, and grants it
/// exactly the data privileges the server needs — no DDL, no TRUNCATE, and
/// only INSERT/SELECT on the append-only audit log.
pub async fn migrate(
    owner_url: &str,
    app_role: &str,
    app_password: Option<&str>,
) -> Result<(), PgError> {
    check_role_name(app_role)?;
    let opts: PgConnectOptions = owner_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.disable_statement_logging())
        .await?;
    MIGRATOR.run(&pool).await?;

    let (exists, can_login): (bool, bool) = sqlx::query_as(
        "SELECT count(*) > 0, COALESCE(bool_or(rolcanlogin), false) FROM pg_roles WHERE rolname = $1",
    )
    .bind(app_role)
    .fetch_one(&pool)
    .await?;
    // Only a superuser may even mention SUPERUSER/BYPASSRLS on an existing
    // role, so an existing role is altered for login/password and then checked.
    let attrs = if exists {
        "LOGIN"
    } else {
        "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"
    };
    let verb = if exists { "ALTER" } else { "CREATE" };
    // format() quotes the identifier and the password literal server-side.
    let ddl: String = sqlx::query_scalar(
        "SELECT format('%s ROLE %I %s %s', $1::text, $2::text, $3::text, \
         CASE WHEN $4::text IS NULL THEN '' ELSE format('PASSWORD %L', $4::text) END)",
    )
    .bind(verb)
    .bind(app_role)
    .bind(attrs)
    .bind(app_password)
    .fetch_one(&pool)
    .await?;
    // An existing login role needs no ALTER unless its password changes (and
    // the owner of a second database may not be allowed to alter it).
    if !(exists && can_login && app_password.is_none()) {
        pool.execute(ddl.as_str()).await?;
    }
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(app_role)
            .fetch_one(&pool)
            .await?;
    if superuser || bypass {
        return Err(PgError::UnsafeRole(format!(
            "{app_role} already exists as a superuser or with BYPASSRLS; pick another app role"
        )));
    }
    sqlx::raw_sql(&placement::grants_sql("public", app_role))
        .execute(&pool)
        .await?;
    // The control plane lives in the main database only.
    pool.execute(
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON public.api_keys, public.idempotency_keys, \
             public.jobs, public.job_results, public.job_queue, public.budget_alerts TO {app_role}; \
             GRANT EXECUTE ON FUNCTION public.purge_tenant_audit(text) TO {app_role};"
        )
        .as_str(),
    )
    .await?;
    // A superuser migrating also takes the once-per-database step only a
    // superuser may; migrated by an owner, the server warns until it is done.
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await?;
    if superuser && !text_match_is_leakproof(&pool).await? {
        pool.execute(LEAKPROOF_TEXT_MATCH).await?;
    }
    pool.close().await;
    Ok(())
}

/// Refuses to serve through a role that row-level security would not bind:
/// a superuser, a `BYPASSRLS` role, or the owner of any Enclave table.
pub async fn check_app_role(pool: &PgPool) -> Result<(), PgError> {
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if superuser {
        return Err(PgError::UnsafeRole(format!("{role} is a superuser")));
    }
    if bypass {
        return Err(PgError::UnsafeRole(format!("{role} has BYPASSRLS")));
    }
    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = ANY($1) AND pg_has_role(current_user, c.relowner, 'USAGE')",
    )
    .bind(TENANT_TABLES)
    .fetch_all(pool)
    .await?;
    if !owned.is_empty() {
        return Err(PgError::UnsafeRole(format!(
            "{role} owns (or is a member of the owner of) {}",
            owned.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for ok in ["enclave_app", "_x", "app2"] {
            assert!(check_role_name(ok).is_ok());
        }
        for bad in ["", "App", "a-b", "a;drop role x", "x\"y", &"a".repeat(64)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
    }
}
