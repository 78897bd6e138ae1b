//! Shared helpers for the library's integration tests: every behaviour test
//! runs against each backend returned by [`backends`] — embedded shared
//! file, embedded file per tenant, and PostgreSQL in shared, schema and
//! database isolation modes — from this one source.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use enclave::core::{DocumentType, NewDocument, TenantId};
use enclave::embed::Embedder;
use enclave::{EmbedderConfig, Layout, Memory, MemoryConfig, StoreConfig, Tenant};
use enclave_postgres::scratch::ScratchDatabase;
use enclave_postgres::{MoveTarget, PgOptions, PgStore};

/// PostgreSQL isolation mode of a backend's tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMode {
    Shared,
    Schema,
    Database,
}

/// A backend under test: its name, the opened library, and what keeps its
/// data alive.
pub struct Backend {
    pub name: &'static str,
    pub memory: Memory,
    pub _dir: Option<tempfile::TempDir>,
    pub pg: Option<PgFixture>,
}

/// A PostgreSQL backend's databases, and the tenants placed so far.
pub struct PgFixture {
    pub mode: PgMode,
    pub admin_url: String,
    pub main: ScratchDatabase,
    pub app_role: String,
    placed: tokio::sync::Mutex<HashSet<String>>,
    pub tenant_databases: tokio::sync::Mutex<Vec<ScratchDatabase>>,
}

impl Backend {
    /// The tenant's handle — in schema and database modes the tenant is
    /// first placed there (as an operator would, with `enclave move-tenant`).
    pub async fn tenant(&self, name: &str) -> Tenant {
        let id = tenant(name);
        if let Some(pg) = &self.pg {
            pg.place(&id).await;
        }
        self.memory.tenant(&id)
    }
}

impl PgFixture {
    /// A fresh database for a tenant in database mode, and the move target.
    pub async fn tenant_database(&self) -> MoveTarget {
        let db = ScratchDatabase::create(&self.admin_url)
            .await
            .expect("tenant database");
        let target = MoveTarget::Database {
            owner_url: db.owner_url.clone(),
            app_url: db.url_as(&self.app_role),
        };
        self.tenant_databases.lock().await.push(db);
        target
    }

    async fn place(&self, id: &TenantId) {
        if self.placed.lock().await.contains(id.as_str()) {
            return;
        }
        let target = match self.mode {
            PgMode::Shared => return,
            PgMode::Schema => MoveTarget::Schema,
            PgMode::Database => self.tenant_database().await,
        };
        enclave_postgres::move_tenant(&self.main.owner_url, id, target, &self.app_role, None)
            .await
            .expect("place tenant");
        self.placed.lock().await.insert(id.as_str().to_owned());
    }
}

pub async fn open(layout: Layout, embedder: EmbedderConfig) -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = Memory::open(MemoryConfig::new(
        StoreConfig::embedded(dir.path(), layout),
        embedder,
    ))
    .await
    .expect("open memory");
    Backend {
        name: match layout {
            Layout::SharedFile => "embedded-shared-file",
            Layout::FilePerTenant => "embedded-file-per-tenant",
        },
        memory,
        _dir: Some(dir),
        pg: None,
    }
}

pub fn admin_url() -> String {
    std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL")
}

/// PostgreSQL: a scratch database migrated by its owner, the library
/// connected as the app role (bound by row-level security); tenants are
/// placed in `mode` when first used through [`Backend::tenant`].
pub async fn open_postgres(embedder: Arc<dyn Embedder>, mode: PgMode) -> Backend {
    open_postgres_with(
        embedder,
        mode,
        PgOptions {
            max_connections: 4,
            tenant_pool_connections: 2,
            ..PgOptions::default()
        },
    )
    .await
}

pub async fn open_postgres_with(
    embedder: Arc<dyn Embedder>,
    mode: PgMode,
    options: PgOptions,
) -> Backend {
    let admin_url = admin_url();
    let (main, app_role) = ScratchDatabase::migrated(&admin_url)
        .await
        .expect("scratch database");
    let store = PgStore::connect_with(&main.url_as(&app_role), embedder.dimensions(), options)
        .await
        .expect("connect as app role");
    Backend {
        name: match mode {
            PgMode::Shared => "postgres-shared",
            PgMode::Schema => "postgres-schema",
            PgMode::Database => "postgres-database",
        },
        memory: Memory::from_parts(Arc::new(store), embedder, Default::default(), 1024),
        _dir: None,
        pg: Some(PgFixture {
            mode,
            admin_url,
            main,
            app_role,
            placed: Default::default(),
            tenant_databases: Default::default(),
        }),
    }
}

/// Every backend, with the fast deterministic embedder.
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for layout in [Layout::SharedFile, Layout::FilePerTenant] {
        out.push(open(layout, EmbedderConfig::Hash { dimensions: 384 }).await);
    }
    for mode in [PgMode::Shared, PgMode::Schema, PgMode::Database] {
        out.push(open_postgres(Arc::new(enclave::embed::HashEmbedder::new(384)), mode).await);
    }
    out
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn text_doc(name: &str, content: &str) -> NewDocument {
    NewDocument::text(name, DocumentType::Text, content)
}

/// The real model's directory, fetched by the setup step.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("ENCLAVE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/model"));
    assert!(
        dir.join("model.safetensors").exists(),
        "the embedding model is missing from {}; run scripts/setup (the README's test command does)",
        dir.display()
    );
    dir
}

/// Backends for retrieval-quality tests, with the real embedding model
/// (loaded once): both embedded layouts and PostgreSQL (shared and schema).
pub async fn model_backends() -> Vec<Backend> {
    let embedder = Memory::load_embedder(EmbedderConfig::Local {
        model_dir: model_dir(),
    })
    .await
    .expect("load the embedding model");
    let mut out = Vec::new();
    for layout in [Layout::SharedFile, Layout::FilePerTenant] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Memory::open_store(
            StoreConfig::embedded(dir.path(), layout),
            embedder.dimensions(),
        )
        .await
        .expect("open store");
        out.push(Backend {
            name: match layout {
                Layout::SharedFile => "embedded-shared-file",
                Layout::FilePerTenant => "embedded-file-per-tenant",
            },
            memory: Memory::from_parts(store, embedder.clone(), Default::default(), 1024),
            _dir: Some(dir),
            pg: None,
        });
    }
    for mode in [PgMode::Shared, PgMode::Schema] {
        out.push(open_postgres(embedder.clone(), mode).await);
    }
    out
}
