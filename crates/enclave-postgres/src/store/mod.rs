//! The tenant-scoped store on PostgreSQL, in every isolation mode.
//!
//! Every unit of work is a transaction that first runs
//! `set_config('app.tenant_id', $tenant, true)`, so row-level security binds
//! it to the handle's tenant; every statement also states `tenant_id = …`
//! (defence in depth, and what makes the indexes usable).
//!
//! **Placement.** The tenant's row in the main database's `tenants` table is
//! its directory entry: `shared` (rows in the public tables), `schema` (the
//! same tables, migrated into the tenant's own schema) or `database` (the
//! tenant's own database, reached through a bounded, reused pool). Each
//! transaction reads the entry in the same snapshot as the data it touches
//! (reads run REPEATABLE READ) and writes hold the tenant's placement lock
//! (an advisory lock) shared, so a concurrent [`crate::move_tenant`] — which
//! holds it exclusively — can never
//! leave a reader or writer on the old copy. The last placement seen is cached
//! as a guess; a wrong guess costs one retry.
//!
//! **Vector search** is exact (`cosine_distance`, which no index can serve)
//! unless the tenant has its own partial HNSW index (built by
//! [`crate::ensure_vector_indexes`] once it is large). Indexed tenants are
//! searched through that index with pgvector's iterative scans; a filtered
//! search whose filter leaves few chunks, or an index scan that returns fewer
//! than asked, falls back to the exact scan. Small tenants are therefore
//! always exact (recall 1.0) and never pay for a global index's filtering.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use enclave_core::query::TextQuery;
use enclave_core::{
    Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch, ExportedChunk, Message,
    SessionId, Statistics, TenantId,
};
use enclave_store::{
    Candidate, ChunkKey, Completion, DocumentPage, DocumentRecord, ExistingDocument, HitRow,
    ListQuery, PutOutcome, Store, StoreError, StoreResult, TenantStore,
};
use lru::LruCache;
use parking_lot::Mutex;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::placement::Placement;
use crate::{check_app_role, PgError};

mod bm25;
mod documents;
mod ingest;
mod messages;
mod rows;
mod search;
mod sql;
mod tx;
mod vector;

pub(crate) use rows::db_err;

/// Tuning of a [`PgStore`]. The defaults suit a server with a few cores.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections to the main database.
    pub max_connections: u32,
    /// Connections per tenant database (database isolation mode).
    pub tenant_pool_connections: u32,
    /// Tenant-database pools kept open; the least recently used is closed.
    pub max_tenant_pools: usize,
    /// Language of the text analysis (`enclave_core::analyze::LANGUAGES`)
    /// of new chunks and of queries; the same analysis as the embedded store.
    pub text_search_config: String,
    /// `hnsw.ef_search` floor for indexed tenants (raised to 2 × k).
    pub hnsw_ef_search: u32,
    /// A filtered search on an indexed tenant scans exactly when the filter
    /// leaves at most this many chunks.
    pub exact_scan_max_chunks: u64,
    /// Writes need the tenant's directory entry (the server: its control
    /// plane creates tenants, so a write never re-creates a purged one).
    /// Off, a first write creates the entry (the library on its own).
    pub require_directory: bool,
    /// Full-text candidates ranked over every chunk that matches any query
    /// term — no term pruning, no early stop: the reference the
    /// benchmark measures the default search against. Slow on large
    /// tenants; never for serving.
    pub exhaustive_text: bool,
    /// Postings (chunks holding a searched term, summed over terms) a text
    /// search reads for its candidates at most: a tenth of the tenant's
    /// chunks, at least 1,000, at most this (and at least 4 × the
    /// candidates asked for). The rarest terms find candidates while they
    /// fit; the chunks holding enough of the other terms to rank are found
    /// next, by intersecting their postings, within the same budget.
    pub text_postings_budget: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            tenant_pool_connections: 4,
            max_tenant_pools: 64,
            text_search_config: "english".into(),
            hnsw_ef_search: 400,
            exact_scan_max_chunks: 20_000,
            require_directory: false,
            exhaustive_text: false,
            text_postings_budget: 3_000,
        }
    }
}

/// PostgreSQL store. Connects as the app role.
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    main: PgPool,
    dims: usize,
    opts: PgOptions,
    analyzer: enclave_core::analyze::Analyzer,
    /// Last placement seen per tenant (a guess, verified in every transaction).
    placements: Mutex<LruCache<TenantId, Placement>>,
    /// Pools of tenant databases, by URL.
    pools: tokio::sync::Mutex<LruCache<String, PgPool>>,
}

impl PgStore {
    /// Connects with default options and refuses a role that row-level
    /// security would not bind.
    pub async fn connect(url: &str, dims: usize, max_connections: u32) -> Result<Self, PgError> {
        Self::connect_with(
            url,
            dims,
            PgOptions {
                max_connections,
                ..PgOptions::default()
            },
        )
        .await
    }

    pub async fn connect_with(url: &str, dims: usize, opts: PgOptions) -> Result<Self, PgError> {
        let main = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .connect(url)
            .await?;
        check_app_role(&main).await?;
        if !crate::text_match_is_leakproof(&main).await? {
            tracing::warn!(
                "full-text search cannot use its index under row-level security until a superuser runs: {}",
                crate::LEAKPROOF_TEXT_MATCH
            );
        }
        // An unknown language fails here, not per query.
        let analyzer = enclave_core::analyze::Analyzer::new(&opts.text_search_config)
            .map_err(|e| PgError::Invalid(e.message))?;
        let pools = NonZeroUsize::new(opts.max_tenant_pools.max(1)).expect("non-zero");
        Ok(Self {
            inner: Arc::new(Inner {
                main,
                dims,
                analyzer,
                placements: Mutex::new(LruCache::new(
                    NonZeroUsize::new(100_000).expect("non-zero"),
                )),
                pools: tokio::sync::Mutex::new(LruCache::new(pools)),
                opts,
            }),
        })
    }
}

impl Store for PgStore {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantStore> {
        Arc::new(PgTenant {
            inner: self.inner.clone(),
            tenant: id.clone(),
        })
    }
    fn dimensions(&self) -> usize {
        self.inner.dims
    }
    fn analyzer(&self) -> &enclave_core::analyze::Analyzer {
        &self.inner.analyzer
    }
}

impl Inner {
    /// The pool of a tenant database, opened (and its role checked) on first
    /// use; the least recently used pool beyond the bound is closed.
    async fn tenant_pool(&self, url: &str) -> StoreResult<PgPool> {
        let mut pools = self.pools.lock().await;
        if let Some(p) = pools.get(url) {
            return Ok(p.clone());
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.opts.tenant_pool_connections)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .connect(url)
            .await
            .map_err(db_err)?;
        check_app_role(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("tenant database: {e}")))?;
        if let Some((old_url, old)) = pools.push(url.to_owned(), pool.clone()) {
            if old_url != url {
                tokio::spawn(async move { old.close().await });
            }
        }
        Ok(pool)
    }
}

struct PgTenant {
    inner: Arc<Inner>,
    tenant: TenantId,
}

impl PgTenant {
    fn t(&self) -> String {
        self.tenant.as_str().to_owned()
    }
}

#[async_trait::async_trait]
impl TenantStore for PgTenant {
    async fn find_by_keys(
        &self,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
        ingest::find_by_keys(self, keys).await
    }

    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        ingest::put_document(self, doc).await
    }

    /// The whole batch in one transaction: a directory check, one statement
    /// (two when replacing) per document, and one INSERT for every chunk.
    async fn put_documents(
        &self,
        docs: Vec<DocumentRecord>,
    ) -> StoreResult<Vec<(DocumentId, PutOutcome)>> {
        ingest::put_documents(self, docs).await
    }

    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        search::vector_candidates(self, query, filter, k).await
    }

    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        bm25::text_candidates(self, query, filter, k).await
    }

    async fn complete_scores(
        &self,
        vector: &[f32],
        vector_keys: &[ChunkKey],
        text: &TextQuery,
        text_keys: &[ChunkKey],
    ) -> StoreResult<Completion> {
        if vector.len() != self.inner.dims {
            return Err(StoreError::Invalid(format!(
                "query vector has {} dimensions; this store holds {}",
                vector.len(),
                self.inner.dims
            )));
        }
        bm25::complete_scores(self, vector, vector_keys, text, text_keys).await
    }

    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        search::hydrate(self, keys).await
    }

    async fn list_documents(&self, q: &ListQuery) -> StoreResult<DocumentPage> {
        documents::list_documents(self, q).await
    }

    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>> {
        documents::get_document(self, id, include_chunks).await
    }

    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        documents::update_document(self, id, patch, now).await
    }

    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        documents::delete_documents(self, ids).await
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        documents::statistics(self).await
    }

    async fn append_message(&self, m: Message) -> StoreResult<Message> {
        messages::append_message(self, m).await
    }

    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        messages::list_messages(self, session, before_seq, limit).await
    }

    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64> {
        messages::delete_session(self, session).await
    }

    async fn message_count(&self) -> StoreResult<u64> {
        messages::message_count(self).await
    }

    async fn message_usage(&self) -> StoreResult<enclave_store::MessageUsage> {
        messages::message_usage(self).await
    }

    async fn delete_all_messages(&self) -> StoreResult<u64> {
        messages::delete_all_messages(self).await
    }

    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>> {
        documents::export_documents(self, after, limit).await
    }

    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>> {
        documents::export_chunks(self, id, after_index, limit).await
    }
}
