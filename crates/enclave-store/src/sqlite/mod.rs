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
mod bm25;
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
    /// Language of the text analysis (`enclave_core::analyze::LANGUAGES`);
    /// a file written in another is re-indexed when opened.
    pub text_language: String,
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
            text_language: "english".into(),
        }
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    opts: SqliteOptions,
    analyzer: enclave_core::analyze::Analyzer,
    shared: Option<Arc<Db>>,
    files: Mutex<HashMap<TenantId, Arc<Db>>>,
    vectors: RwLock<HashMap<TenantId, Arc<VectorCache>>>,
    tick: std::sync::atomic::AtomicU64,
}

/// Descriptors one open tenant file may use: its writer and up to
/// [`PER_TENANT_IDLE_READERS`] readers, each a connection with the file,
/// its `-wal` and its `-shm` open.
const DESCRIPTORS_PER_FILE: u64 = 3 * (1 + PER_TENANT_IDLE_READERS as u64);
/// Idle reader connections kept per tenant file (a tenant's store calls
/// run at most `[store] max_concurrent_per_tenant`, 4 by default, at once).
pub(crate) const PER_TENANT_IDLE_READERS: usize = 4;
/// Descriptors left for everything else: client and operator sockets,
/// the control file, the model, logs.
const DESCRIPTORS_RESERVED: u64 = 256;

/// How many tenant files fit in this process' open-file limit beside
/// [`DESCRIPTORS_RESERVED`], at most `wanted` and at least 4: beyond the
/// limit every tenant's next open would fail (EMFILE, 503 for everyone).
fn files_within_descriptor_limit(wanted: usize, soft_limit: u64) -> usize {
    let fit = soft_limit.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_FILE;
    wanted
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(4)
}

impl SqliteStore {
    pub fn open(mut opts: SqliteOptions) -> StoreResult<Self> {
        if opts.layout == Layout::FilePerTenant {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024);
            let fit = files_within_descriptor_limit(opts.max_open_files, soft);
            if fit < opts.max_open_files {
                tracing::warn!(
                    open_file_limit = soft,
                    max_open_files = fit,
                    "the open-file limit holds only this many tenant files at once; raise it (ulimit -n) for more"
                );
                opts.max_open_files = fit;
            }
        }
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", opts.dir.display())))?;
        let analyzer = enclave_core::analyze::Analyzer::new(&opts.text_language)
            .map_err(|e| StoreError::Invalid(e.message))?;
        let shared = match opts.layout {
            Layout::SharedFile => Some(Arc::new(
                Db::open(
                    &opts.dir.join("enclave.sqlite"),
                    opts.dimensions,
                    opts.durability,
                    &analyzer,
                )?
                .with_idle_readers(8),
            )),
            Layout::FilePerTenant => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                opts,
                analyzer,
                shared,
                files: Mutex::new(HashMap::new()),
                vectors: RwLock::new(HashMap::new()),
                tick: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The file holding `tenant` in the file-per-tenant layout:
    /// `t-<SHA-256 of the id, hex>.sqlite`, 73 bytes whatever the id's
    /// length (API.md allows 255-byte ids; a name built from the id itself
    /// passed `NAME_MAX` beyond 121 bytes). The id is kept inside the file
    /// (`meta.tenant_id`) and checked when it is opened.
    pub fn tenant_file(dir: &Path, tenant: &TenantId) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(tenant.as_str().as_bytes());
        dir.join("tenants")
            .join(format!("t-{}.sqlite", hex_string(&digest)))
    }

    /// Whether the tenant has a file (under either name).
    pub(crate) fn tenant_file_exists(dir: &Path, tenant: &TenantId) -> bool {
        Self::tenant_file(dir, tenant).exists() || Self::legacy_tenant_file(dir, tenant).exists()
    }

    /// The name files had before they were named by hash (hex of the id),
    /// renamed to [`Self::tenant_file`] when found.
    fn legacy_tenant_file(dir: &Path, tenant: &TenantId) -> PathBuf {
        dir.join("tenants").join(format!(
            "t-{}.sqlite",
            hex_string(tenant.as_str().as_bytes())
        ))
    }

    /// Moves a tenant's file (and its `-wal`/`-shm`) from the legacy name
    /// to the hashed one, once.
    fn adopt_legacy_file(dir: &Path, tenant: &TenantId, path: &Path) -> StoreResult<()> {
        let legacy = Self::legacy_tenant_file(dir, tenant);
        // A legacy name too long for the file system cannot exist.
        if path.exists() || !legacy.exists() {
            return Ok(());
        }
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", legacy.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", path.display()));
                std::fs::rename(&from, &to)
                    .map_err(|e| StoreError::Unavailable(format!("{}: {e}", from.display())))?;
            }
        }
        Ok(())
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        SqliteStore::adopt_legacy_file(&self.opts.dir, tenant, &path)?;
        let db = Arc::new(
            Db::open(
                &path,
                self.opts.dimensions,
                self.opts.durability,
                &self.analyzer,
            )?
            .with_idle_readers(PER_TENANT_IDLE_READERS),
        );
        db.claim_for(tenant)?;
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

    /// Brings the caches within `vector_cache_bytes`, unloading only
    /// tenants that hold more than an equal share of it (the budget over
    /// the tenants with vectors loaded), the largest first. So
    /// a tenant within its share is never unloaded because another tenant
    /// searched: a large tenant's searches cannot slow a small one's, nor
    /// tell it that they happened. Returns whether `keep` (being searched
    /// now, never unloaded here) is over its share and must let its vectors
    /// go after this search.
    pub(crate) fn enforce_vector_budget(&self, keep: &TenantId) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let caches: Vec<(u64, TenantId, Arc<VectorCache>, usize)> = self
            .vectors
            .read()
            .iter()
            .map(|(t, c)| (c.last_used.load(Relaxed), t.clone(), c.clone(), c.bytes()))
            .collect();
        let budget = self.opts.vector_cache_bytes;
        let mut total: usize = caches.iter().map(|c| c.3).sum();
        if total <= budget {
            return false;
        }
        let loaded = caches.iter().filter(|c| c.3 > 0).count().max(1);
        let share = budget / loaded;
        let mut over: Vec<_> = caches.into_iter().filter(|c| c.3 > share).collect();
        // The largest first (it frees the most and is the one crowding
        // the others out), then the least recently searched.
        over.sort_by_key(|c| (std::cmp::Reverse(c.3), c.0));
        let mut unload_keep = false;
        for (_, tenant, cache, bytes) in over {
            if total <= budget {
                break;
            }
            total -= bytes;
            if &tenant == keep {
                unload_keep = true;
            } else {
                cache.unload();
            }
        }
        unload_keep
    }
}

impl Store for SqliteStore {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantStore> {
        Arc::new(SqliteTenant::new(self.inner.clone(), id.clone()))
    }

    fn dimensions(&self) -> usize {
        self.inner.opts.dimensions
    }

    fn analyzer(&self) -> &enclave_core::analyze::Analyzer {
        &self.inner.analyzer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkRecord, DocumentRecord};
    use enclave_core::{ChunkId, DocumentId, DocumentType};

    #[test]
    fn tenant_files_are_capped_by_the_open_file_limit() {
        // 1,024 descriptors: (1024 - 256) / 15 = 51 files, not 256.
        assert_eq!(files_within_descriptor_limit(256, 1024), 51);
        assert_eq!(files_within_descriptor_limit(256, 1 << 20), 256);
        assert_eq!(files_within_descriptor_limit(256, 100), 4);
    }

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

    /// The review's vector-cache timing channel: a large tenant's searches
    /// used to unload a small tenant's vectors (its next search slower, and
    /// a sign that someone else searched). Now only caches over an equal
    /// share are unloaded, a tenant larger than the budget included.
    #[tokio::test]
    async fn a_larger_tenants_searches_never_unload_a_tenant_within_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SqliteOptions::new(dir.path(), Layout::SharedFile, 4);
        opts.vector_cache_bytes = 100; // 24 bytes a vector
        let store = SqliteStore::open(opts).unwrap();
        let small = TenantId::parse("small").unwrap();
        let big = TenantId::parse("big").unwrap();
        let mid = TenantId::parse("mid").unwrap();
        store
            .tenant(&small)
            .put_document(doc(vec![1.0, 0.0, 0.0, 0.0]))
            .await
            .unwrap();
        for i in 0..5 {
            let v = vec![0.0, 1.0, i as f32, 0.0];
            store.tenant(&big).put_document(doc(v)).await.unwrap();
        }
        for i in 0..2 {
            let v = vec![0.0, 0.0, 1.0, i as f32];
            store.tenant(&mid).put_document(doc(v)).await.unwrap();
        }
        let q = [1.0, 1.0, 1.0, 1.0];
        let bytes = |t: &TenantId| store.inner.vectors.read()[t].bytes();
        let search = |t: &TenantId| {
            let t = store.tenant(t);
            async move {
                t.vector_candidates(&q, &Default::default(), 10)
                    .await
                    .unwrap()
            }
        };
        for _ in 0..3 {
            assert_eq!(search(&small).await.len(), 1);
            assert_eq!(bytes(&small), 24);
            // 120 bytes: over the whole budget, so over any share.
            assert_eq!(search(&big).await.len(), 5, "big sees all its vectors");
            assert_eq!(bytes(&small), 24, "small kept its vectors");
            assert_eq!(bytes(&big), 0, "big let its own go");
            // Small and mid fit together: both stay, whoever searches.
            assert_eq!(search(&mid).await.len(), 2);
            assert_eq!((bytes(&small), bytes(&mid)), (24, 48));
            assert_eq!(search(&big).await.len(), 5);
            assert_eq!((bytes(&small), bytes(&mid), bytes(&big)), (24, 48, 0));
        }
    }

    #[tokio::test]
    async fn per_tenant_files_are_named_by_hash_for_any_id_length_and_legacy_names_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || SqliteOptions::new(dir.path(), Layout::FilePerTenant, 4);
        // The longest id API.md allows: its hex name would pass NAME_MAX.
        let long = TenantId::parse(&"a".repeat(255)).unwrap();
        let short = TenantId::parse("acme").unwrap();
        {
            let store = SqliteStore::open(opts()).unwrap();
            for t in [&long, &short] {
                store
                    .tenant(t)
                    .put_document(doc(vec![1.0, 0.0, 0.0, 0.0]))
                    .await
                    .unwrap();
                assert_eq!(
                    store.tenant(t).statistics().await.unwrap().document_count,
                    1
                );
            }
        }
        let path = SqliteStore::tenant_file(dir.path(), &long);
        assert_eq!(path.file_name().unwrap().len(), "t-.sqlite".len() + 64);
        assert!(path.exists());
        // A file written under the old (hex of the id) name is picked up.
        let hashed = SqliteStore::tenant_file(dir.path(), &short);
        let legacy = SqliteStore::legacy_tenant_file(dir.path(), &short);
        std::fs::rename(&hashed, &legacy).unwrap();
        let store = SqliteStore::open(opts()).unwrap();
        assert_eq!(
            store
                .tenant(&short)
                .statistics()
                .await
                .unwrap()
                .document_count,
            1
        );
        assert!(hashed.exists() && !legacy.exists());
        // A file copied under another tenant's name is refused, not read.
        let other = TenantId::parse("globex").unwrap();
        drop(store);
        std::fs::copy(&hashed, SqliteStore::tenant_file(dir.path(), &other)).unwrap();
        let store = SqliteStore::open(opts()).unwrap();
        let err = store
            .tenant(&other)
            .put_document(doc(vec![0.0, 1.0, 0.0, 0.0]))
            .await;
        assert!(matches!(err, Err(StoreError::Internal(_))), "{err:?}");
    }
}
