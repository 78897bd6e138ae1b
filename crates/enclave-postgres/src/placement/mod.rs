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

use enclave_core::TenantId;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;

use crate::{check_role_name, PgError};

mod moves;
mod provision;

pub use moves::move_tenant;
pub(crate) use provision::grants_sql;
pub use provision::{provision_tenant_database, tenant_database_name};

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
