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

mod alerts;
mod control;
mod db;
mod jobs;
mod sql;
mod tenant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave_core::TenantId;
use parking_lot::{Mutex, RwLock};

pub use control::SqliteControl;
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
    /// Memory for in-memory vector matrices; least recently searched tenants
    /// are unloaded beyond it (and reloaded from disk when searched again).
    pub vector_cache_bytes: usize,
}

impl SqliteOptions {
    pub fn new(dir: impl Into<PathBuf>, layout: Layout, dimensions: usize) -> Self {
        Self {
            dir: dir.into(),
            layout,
            dimensions,
            durability: Durability::default(),
            max_open_files: 256,
            vector_cache_bytes: 1 << 30,
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
    tick: std::sync::atomic::AtomicU64,
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
                tick: std::sync::atomic::AtomicU64::new(0),
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
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.tick.fetch_add(1, Relaxed) + 1;
        // The read guard must end before the write lock is taken.
        let found = self.vectors.read().get(tenant).cloned();
        let cache = match found {
            Some(c) => c,
            None => self
                .vectors
                .write()
                .entry(tenant.clone())
                .or_insert_with(|| Arc::new(VectorCache::new(self.opts.dimensions)))
                .clone(),
        };
        cache.last_used.store(now, Relaxed);
        cache
    }

    /// Unloads the least recently searched tenants' vectors (never `keep`'s)
    /// until the caches fit `vector_cache_bytes`.
    pub(crate) fn enforce_vector_budget(&self, keep: &TenantId) {
        use std::sync::atomic::Ordering::Relaxed;
        let caches: Vec<(u64, TenantId, Arc<VectorCache>)> = self
            .vectors
            .read()
            .iter()
            .map(|(t, c)| (c.last_used.load(Relaxed), t.clone(), c.clone()))
            .collect();
        let mut total: usize = caches.iter().map(|(_, _, c)| c.bytes()).sum();
        if total <= self.opts.vector_cache_bytes {
            return;
        }
        let mut by_age = caches;
        by_age.sort_by_key(|(used, _, _)| *used);
        for (_, tenant, cache) in by_age {
            if total <= self.opts.vector_cache_bytes {
                break;
            }
            if &tenant == keep {
                continue;
            }
            total -= cache.bytes();
            cache.unload();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkRecord, DocumentRecord};
    use enclave_core::{ChunkId, DocumentId, DocumentType};

    fn doc(v: Vec<f32>) -> DocumentRecord {
        DocumentRecord {
            document_id: DocumentId::new(),
            dedupe_key: format!("x:{}", DocumentId::new()),
            name: "d".into(),
            doc_type: DocumentType::Text,
            origin: None,
            external_id: None,
            metadata: Default::default(),
            content_hash: "h".into(),
            size_bytes: 1,
            document_date: None,
            now: chrono::Utc::now(),
            chunks: vec![ChunkRecord {
                chunk_id: ChunkId::new(),
                index: 0,
                content: "c".into(),
                token_count: 1,
                metadata: Default::default(),
                parent_index: None,
                embedding: v,
            }],
            sections: vec![],
        }
    }

    #[tokio::test]
    async fn vector_caches_stay_within_budget_and_reload_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SqliteOptions::new(dir.path(), Layout::SharedFile, 4);
        opts.vector_cache_bytes = 60; // one tenant's two vectors (48 bytes) fit, not two tenants'
        let store = SqliteStore::open(opts).unwrap();
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        for (t, v) in [
            (&a, [1.0, 0.0, 0.0, 0.0]),
            (&a, [0.0, 1.0, 0.0, 0.0]),
            (&b, [0.0, 0.0, 1.0, 0.0]),
            (&b, [0.0, 0.0, 0.0, 1.0]),
        ] {
            store.tenant(t).put_document(doc(v.to_vec())).await.unwrap();
        }
        let q = [1.0, 0.0, 0.0, 0.0];
        for _ in 0..3 {
            let ha = store
                .tenant(&a)
                .vector_candidates(&q, &Default::default(), 10)
                .await
                .unwrap();
            assert_eq!(ha.len(), 2);
            assert!((ha[0].score - 1.0).abs() < 1e-6);
            assert!(store.inner.vectors.read()[&a].bytes() > 0);
            let hb = store
                .tenant(&b)
                .vector_candidates(&q, &Default::default(), 10)
                .await
                .unwrap();
            assert_eq!(hb.len(), 2, "b sees its own two vectors");
            assert_eq!(
                store.inner.vectors.read()[&a].bytes(),
                0,
                "a was evicted to make room for b"
            );
        }
    }
}
