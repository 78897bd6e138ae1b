//! Scratch databases for tests: each test gets its own database, owned by its
//! own (non-superuser) owner role, with pgvector created by the superuser —
//! the shape a real deployment has. Used by this crate's tests and by the
//! CLI's; `ENCLAVE_TEST_DATABASE_URL` names the superuser (scripts/test sets it).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

use crate::PgError;

/// A fresh, empty database and the roles around it.
pub struct ScratchDatabase {
    /// Superuser connection options for this database.
    pub superuser: PgConnectOptions,
    /// The owner's URL (for `migrate`).
    pub owner_url: String,
    /// A unique suffix for role names that belong to this database.
    pub id: String,
    base: PgConnectOptions,
    database: String,
}

impl ScratchDatabase {
    /// Creates `enclave_t_<id>` owned by `owner_<id>` (LOGIN CREATEROLE) and
    /// installs pgvector in it.
    pub async fn create(admin_url: &str) -> Result<Self, PgError> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "{:x}{:x}{:x}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        let (database, owner) = (format!("enclave_t_{id}"), format!("owner_{id}"));
        admin
            .execute(format!("CREATE ROLE {owner} LOGIN CREATEROLE").as_str())
            .await?;
        admin
            .execute(format!("CREATE DATABASE {database} OWNER {owner}").as_str())
            .await?;
        admin.close().await;
        let base: PgConnectOptions = admin_url.parse()?;
        let superuser = base.clone().database(&database);
        // pgvector is not a trusted extension: a superuser creates it.
        let su = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(superuser.clone())
            .await?;
        su.execute("CREATE EXTENSION vector").await?;
        su.execute(crate::LEAKPROOF_TEXT_MATCH).await?;
        su.close().await;
        let owner_url = base
            .clone()
            .username(&owner)
            .database(&database)
            .to_url_lossy()
            .to_string();
        Ok(Self {
            superuser,
            owner_url,
            id,
            base,
            database,
        })
    }

    /// A scratch database with the migrations applied by its owner and an
    /// app role `app_<id>` created by [`crate::migrate`]; returns the
    /// database and the app role's name.
    pub async fn migrated(admin_url: &str) -> Result<(Self, String), PgError> {
        let db = Self::create(admin_url).await?;
        let app = format!("app_{}", db.id);
        crate::migrate(&db.owner_url, &app, None).await?;
        Ok((db, app))
    }

    /// The database a previous [`Self::migrated`] made with this `id`
    /// (benchmarks measure one again without rebuilding it); returns it
    /// and its app role's name.
    pub fn existing(admin_url: &str, id: &str) -> Result<(Self, String), PgError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(PgError::Invalid(format!(
                "{id:?} is not a scratch database id"
            )));
        }
        let base: PgConnectOptions = admin_url.parse()?;
        let database = format!("enclave_t_{id}");
        let owner_url = base
            .clone()
            .username(&format!("owner_{id}"))
            .database(&database)
            .to_url_lossy()
            .to_string();
        Ok((
            Self {
                superuser: base.clone().database(&database),
                owner_url,
                id: id.to_owned(),
                base,
                database,
            },
            format!("app_{id}"),
        ))
    }

    /// URL for `role` on this database (trust authentication).
    pub fn url_as(&self, role: &str) -> String {
        self.as_role(role).to_url_lossy().to_string()
    }

    /// Connection options for `role` on this database (trust authentication).
    pub fn as_role(&self, role: &str) -> PgConnectOptions {
        self.base.clone().username(role).database(&self.database)
    }
}
