//! The embedded store: SQLite with a per-tenant full-text index and exact
//! in-memory vector search.
//!
//! Two layouts share one schema and one code path:
//! - [`Layout::SharedFile`]: every tenant in `enclave.sqlite`, `tenant_id`
//!   leading every key;
//! - [`Layout::FilePerTenant`]: `tenants/t-<hex id>.sqlite` per tenant.
//!
//! In both, each tenant has its *own* FTS5 table, so BM25 document counts,
//! lengths and term frequencies never include another tenant's text: scores
//! and rankings are a function of the tenant's own data alone.

mod db;
mod sql;
mod tenant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave_core::TenantId;
use parking_lot::{Mutex, RwLock};

use db::Db;
pub use db::Durability;
use tenant::{SqliteTenant, VectorCache};

use crate::{Store, StoreError, StoreResult, TenantStore};

/// Where tenants live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    SharedFile,
    FilePerTenant,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub dir: PathBuf,
    pub layout: Layout,
    pub dimensions: usize,
    pub durability: Durability,
    /// Most per-tenant files kept open at once (file-per-tenant layout).
    pub max_open_files: usize,
}

impl SqliteOptions {
    pub fn new(dir: impl Into<PathBuf>, layout: Layout, dimensions: usize) -> Self {
        Self {
            dir: dir.into(),
            layout,
            dimensions,
            durability: Durability::default(),
            max_open_files: 256,
        }
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    opts: SqliteOptions,
    shared: Option<Arc<Db>>,
    files: Mutex<HashMap<TenantId, Arc<Db>>>,
    vectors: RwLock<HashMap<TenantId, Arc<VectorCache>>>,
}

impl SqliteStore {
    pub fn open(opts: SqliteOptions) -> StoreResult<Self> {
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", opts.dir.display())))?;
        let shared = match opts.layout {
            Layout::SharedFile => Some(Arc::new(Db::open(
                &opts.dir.join("enclave.sqlite"),
                opts.dimensions,
                opts.durability,
            )?)),
            Layout::FilePerTenant => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                opts,
                shared,
                files: Mutex::new(HashMap::new()),
                vectors: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The file holding `tenant` in the file-per-tenant layout.
    pub fn tenant_file(dir: &Path, tenant: &TenantId) -> PathBuf {
        let hex: String = tenant
            .as_str()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        dir.join("tenants").join(format!("t-{hex}.sqlite"))
    }
}

impl Inner {
    pub(crate) fn db(&self, tenant: &TenantId) -> StoreResult<Arc<Db>> {
        if let Some(db) = &self.shared {
            return Ok(db.clone());
        }
        let mut files = self.files.lock();
        if let Some(db) = files.get(tenant) {
            return Ok(db.clone());
        }
        if files.len() >= self.opts.max_open_files {
            // Close the files nobody is using right now.
            files.retain(|_, db| Arc::strong_count(db) > 1);
        }
        let path = SqliteStore::tenant_file(&self.opts.dir, tenant);
        let db = Arc::new(Db::open(&path, self.opts.dimensions, self.opts.durability)?);
        files.insert(tenant.clone(), db.clone());
        Ok(db)
    }

    pub(crate) fn vector_cache(&self, tenant: &TenantId) -> Arc<VectorCache> {
        if let Some(c) = self.vectors.read().get(tenant) {
            return c.clone();
        }
        self.vectors
            .write()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(VectorCache::new(self.opts.dimensions)))
            .clone()
    }
}

impl Store for SqliteStore {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantStore> {
        Arc::new(SqliteTenant::new(self.inner.clone(), id.clone()))
    }

    fn dimensions(&self) -> usize {
        self.inner.opts.dimensions
    }
}
