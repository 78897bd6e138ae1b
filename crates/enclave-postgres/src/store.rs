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
use enclave_core::filter::{Condition, FilterOp, Scalar};
use enclave_core::query::TextQuery;
use enclave_core::{
    ChunkId, ChunkInfo, Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch,
    ExportedChunk, Message, MessageId, MessageRole, Origin, SessionId, Statistics, TenantId,
};
use enclave_store::{
    dedupe_key, Candidate, ChunkKey, DocumentPage, DocumentRecord, ExistingDocument, HitRow,
    ListQuery, PutOutcome, Store, StoreError, StoreResult, TenantStore,
};
use lru::LruCache;
use parking_lot::Mutex;
use pgvector::Vector;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, QueryBuilder, Row, Transaction};

use crate::placement::{placement_lock_key, sql_literal, Placement};
use crate::{check_app_role, PgError};

/// Tuning of a [`PgStore`]. The defaults suit a server with a few cores.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections to the main database.
    pub max_connections: u32,
    /// Connections per tenant database (database isolation mode).
    pub tenant_pool_connections: u32,
    /// Tenant-database pools kept open; the least recently used is closed.
    pub max_tenant_pools: usize,
    /// PostgreSQL text search configuration for new chunks and queries.
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
        // An unknown text search configuration fails here, not per query.
        sqlx::query("SELECT $1::regconfig")
            .bind(&opts.text_search_config)
            .execute(&main)
            .await?;
        let pools = NonZeroUsize::new(opts.max_tenant_pools.max(1)).expect("non-zero");
        Ok(Self {
            inner: Arc::new(Inner {
                main,
                dims,
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

const READ: bool = false;
const WRITE: bool = true;

/// One unit of work for one tenant: a transaction on the main database
/// (holding the directory entry) and, in database mode, one on the tenant's
/// database where the data lives.
struct Tx {
    main: Transaction<'static, Postgres>,
    tenant: Option<Transaction<'static, Postgres>>,
    /// The tenant has its own HNSW index.
    vector_index: bool,
    /// The placement's `tenants` table already holds the tenant's row (in
    /// shared mode that table is the directory just read), so a writer need
    /// not insert it.
    tenant_row: bool,
    /// The directory holds the tenant.
    directory_row: bool,
    /// A purge of the tenant has begun (read under the placement lock).
    purging: bool,
}

impl Tx {
    /// Before a write that adds or changes data: refused while the tenant
    /// is being purged, and (`require_directory`) when it has no directory
    /// entry — a purged tenant stays purged. Deletes need neither.
    fn may_add(&self, require_directory: bool) -> StoreResult<()> {
        if self.purging {
            return Err(StoreError::Unavailable(
                "the tenant is being purged; nothing was written".into(),
            ));
        }
        if require_directory && !self.directory_row {
            return Err(StoreError::Unavailable(
                "the tenant has no directory entry (purged or never created); nothing was written"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Creates the tenant's row in its placement's `tenants` table with its
    /// first write (the row every tenant table's foreign key points at),
    /// unless the directory read showed it is there.
    async fn ensure_tenant_row(&mut self, tenant: &str) -> StoreResult<()> {
        if self.tenant_row {
            return Ok(());
        }
        sqlx::query("INSERT INTO tenants (tenant_id, slug, name) VALUES ($1, 't' || substr(md5($1), 1, 24), $1) ON CONFLICT (tenant_id) DO NOTHING")
            .bind(tenant)
            .execute(self.db())
            .await
            .map_err(db_err)?;
        self.tenant_row = true;
        Ok(())
    }

    /// The connection that holds the tenant's data.
    fn db(&mut self) -> &mut PgConnection {
        match &mut self.tenant {
            Some(t) => t,
            None => &mut self.main,
        }
    }

    async fn commit(self) -> StoreResult<()> {
        if let Some(t) = self.tenant {
            t.commit().await.map_err(db_err)?;
        }
        self.main.commit().await.map_err(db_err)
    }
}

struct PgTenant {
    inner: Arc<Inner>,
    tenant: TenantId,
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        // The server going away or not yet back: connection exceptions
        // (class 08), operator intervention (57P01 admin shutdown, 57P02
        // crash shutdown, 57P03 cannot connect now: starting up or shutting
        // down) and too many connections (53300). The transaction did not
        // commit; the client may retry.
        sqlx::Error::Database(d)
            if d.code().is_some_and(|c| {
                c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
            }) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("another document in this origin already has that name".into())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

const DOC_COLS: &str = "d.document_id, d.name, d.doc_type, d.origin, d.external_id, d.metadata, \
    d.size_bytes, d.chunk_count, d.token_count, d.document_date, d.created_at, d.updated_at";

fn doc_from_row(r: &PgRow) -> StoreResult<DocumentInfo> {
    let internal = |e: String| StoreError::Internal(e);
    let id: sqlx::types::Uuid = r.try_get("document_id").map_err(db_err)?;
    let doc_type: String = r.try_get("doc_type").map_err(db_err)?;
    let origin: Option<String> = r.try_get("origin").map_err(db_err)?;
    let metadata: Value = r.try_get("metadata").map_err(db_err)?;
    Ok(DocumentInfo {
        document_id: DocumentId::parse(&id.hyphenated().to_string())
            .map_err(|e| internal(e.to_string()))?,
        name: r.try_get("name").map_err(db_err)?,
        doc_type: doc_type
            .parse()
            .map_err(|e: enclave_core::InvalidInput| internal(e.to_string()))?,
        origin: origin
            .map(|o| Origin::parse(&o))
            .transpose()
            .map_err(|e| internal(e.to_string()))?,
        external_id: r.try_get("external_id").map_err(db_err)?,
        metadata: match metadata {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        size_bytes: r.try_get::<i64, _>("size_bytes").map_err(db_err)? as u64,
        chunk_count: r.try_get::<i32, _>("chunk_count").map_err(db_err)? as u64,
        token_count: r.try_get::<i64, _>("token_count").map_err(db_err)? as u64,
        document_date: r.try_get("document_date").map_err(db_err)?,
        created_at: r.try_get("created_at").map_err(db_err)?,
        updated_at: r.try_get("updated_at").map_err(db_err)?,
    })
}

fn uuid_of(id: DocumentId) -> sqlx::types::Uuid {
    id.as_uuid()
}

/// Appends ` AND …` for `filter` on documents alias `d`, with typed metadata
/// comparisons matching `MetadataFilter::matches`.
fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &DocumentFilter) {
    if !filter.origins.is_empty() {
        qb.push(" AND d.origin = ANY(")
            .push_bind(
                filter
                    .origins
                    .iter()
                    .map(|o| o.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .push(")");
    }
    if !filter.types.is_empty() {
        qb.push(" AND d.doc_type = ANY(")
            .push_bind(
                filter
                    .types
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .push(")");
    }
    for (col, op, t) in [
        ("created_at", ">=", filter.created_after),
        ("created_at", "<", filter.created_before),
        ("document_date", ">=", filter.document_date_after),
        ("document_date", "<", filter.document_date_before),
    ] {
        if let Some(t) = t {
            qb.push(format!(" AND d.{col} {op} ")).push_bind(t);
        }
    }
    for c in &filter.metadata.conditions {
        qb.push(" AND ");
        push_condition(qb, c);
    }
}

fn push_compare(qb: &mut QueryBuilder<'_, Postgres>, path: &[String], op: &str, s: &Scalar) {
    let path = path.to_vec();
    qb.push("COALESCE(CASE WHEN jsonb_typeof(d.metadata #> ")
        .push_bind(path.clone());
    match s {
        Scalar::String(v) => {
            qb.push(") = 'string' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(") COLLATE \"C\" {op} "))
                .push_bind(v.clone())
                .push(" COLLATE \"C\"");
        }
        Scalar::Number(n) => {
            qb.push(") = 'number' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(")::float8 {op} "))
                .push_bind(*n);
        }
        Scalar::Bool(b) => {
            qb.push(") = 'boolean' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(")::boolean {op} "))
                .push_bind(*b);
        }
    }
    qb.push(" END, false)");
}

fn push_condition(qb: &mut QueryBuilder<'_, Postgres>, c: &Condition) {
    match &c.op {
        FilterOp::Eq(s) => push_compare(qb, &c.path, "=", s),
        FilterOp::Ne(s) => {
            qb.push("NOT ");
            push_compare(qb, &c.path, "=", s);
        }
        FilterOp::Gt(s) => push_compare(qb, &c.path, ">", s),
        FilterOp::Gte(s) => push_compare(qb, &c.path, ">=", s),
        FilterOp::Lt(s) => push_compare(qb, &c.path, "<", s),
        FilterOp::Lte(s) => push_compare(qb, &c.path, "<=", s),
        FilterOp::In(list) => {
            qb.push("(");
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                push_compare(qb, &c.path, "=", s);
            }
            qb.push(")");
        }
        FilterOp::Exists(want) => {
            qb.push("COALESCE(jsonb_typeof(d.metadata #> ")
                .push_bind(c.path.clone());
            qb.push(if *want {
                ") <> 'null', false)"
            } else {
                ") = 'null', true)"
            });
        }
        _ => {
            qb.push("false");
        }
    }
}

/// Renders our text query as a `to_tsquery` expression. Words are
/// alphanumeric, so nothing the caller typed is tsquery syntax.
fn tsquery(q: &TextQuery) -> Option<String> {
    let phrase = |ws: &[String]| format!("({})", ws.join(" <-> "));
    if q.is_empty() {
        return None;
    }
    let mut e = if q.must.is_empty() {
        format!("({})", q.should.join(" | "))
    } else {
        q.must
            .iter()
            .map(|p| phrase(p))
            .collect::<Vec<_>>()
            .join(" & ")
    };
    for n in &q.must_not {
        e.push_str(&format!(" & !{}", phrase(n)));
    }
    Some(e)
}

impl PgTenant {
    /// Opens the tenant's transaction(s): sets the tenant (and, in schema
    /// mode, the search path), and checks the directory entry in the same
    /// transaction — retrying when the cached placement was stale.
    async fn begin(&self, write: bool) -> StoreResult<Tx> {
        let lit = sql_literal(self.tenant.as_str());
        let isolation = if write {
            "BEGIN"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        };
        for _ in 0..4 {
            let guess = self
                .inner
                .placements
                .lock()
                .get(&self.tenant)
                .cloned()
                .unwrap_or(Placement::Shared);
            // Tenant ids and schema names are validated identifiers, so they
            // can be literals: the BEGIN, the settings and (for a writer) the
            // placement lock travel in one simple query with the transaction's
            // start. Writers hold the tenant's placement lock in shared mode
            // (a move takes it exclusively) before they read the entry or
            // touch any table of the placement: a lock-manager entry, not a
            // row lock, so concurrent writers of one tenant do not churn
            // multixacts on the directory row.
            let lock = if write {
                format!(
                    "; SELECT pg_advisory_xact_lock_shared({})",
                    placement_lock_key(&self.tenant)
                )
            } else {
                String::new()
            };
            let begin = format!(
                "{isolation}; SELECT set_config('app.tenant_id', {lit}, true), set_config('search_path', {path}, true){lock}",
                path = sql_literal(&guess.search_path()),
            );
            let mut main = self.inner.main.begin_with(begin).await.map_err(db_err)?;
            // The entry, read in a later statement than the lock (so after it
            // is granted: a writer follows a move that just committed) and,
            // for a reader, in the snapshot its data is read in. A prepared
            // statement: its plan is cached per connection (planning it
            // under RLS was a tenth of the CPU of small writes).
            let rows = sqlx::query(if write {
                "SELECT d.isolation, d.location, false, d.purging FROM public.tenants d WHERE d.tenant_id = $1"
            } else {
                "SELECT d.isolation, d.location, \
                        COALESCE((SELECT t.vector_index FROM tenants t WHERE t.tenant_id = $1), false), \
                        d.purging \
                 FROM public.tenants d WHERE d.tenant_id = $1"
            })
            .bind(self.tenant.as_str())
            .fetch_all(&mut *main)
            .await
            .map_err(db_err)?;
            let directory_row = !rows.is_empty();
            let purging = match rows.first() {
                Some(r) => r.try_get::<bool, _>(3).map_err(db_err)?,
                None => false,
            };
            let (actual, mut vector_index) = match rows.iter().find(|r| r.len() == 4) {
                Some(r) => (
                    Placement::from_row(
                        r.try_get::<String, _>(0).map_err(db_err)?.as_str(),
                        r.try_get(1).map_err(db_err)?,
                    )
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                    r.try_get::<bool, _>(2).map_err(db_err)?,
                ),
                None => (Placement::Shared, false),
            };
            if actual != guess {
                self.inner
                    .placements
                    .lock()
                    .put(self.tenant.clone(), actual);
                continue;
            }
            let tenant = match &actual {
                Placement::Database(url) => {
                    let pool = self.inner.tenant_pool(url).await?;
                    let mut t = pool
                        .begin_with(format!(
                            "{isolation}; SELECT set_config('app.tenant_id', {lit}, true)"
                        ))
                        .await
                        .map_err(db_err)?;
                    vector_index = sqlx::query_scalar(
                        "SELECT COALESCE((SELECT vector_index FROM tenants WHERE tenant_id = $1), false)",
                    )
                    .bind(self.tenant.as_str())
                    .fetch_one(&mut *t)
                    .await
                    .map_err(db_err)?;
                    Some(t)
                }
                _ => None,
            };
            return Ok(Tx {
                tenant_row: directory_row && actual == Placement::Shared,
                directory_row,
                purging,
                main,
                tenant,
                vector_index,
            });
        }
        Err(StoreError::Unavailable(
            "the tenant is being moved; retry".into(),
        ))
    }

    fn t(&self) -> String {
        self.tenant.as_str().to_owned()
    }

    /// How this query searches vectors: exact unless the tenant has its own
    /// HNSW index and the filter (if any) leaves many chunks.
    async fn vector_strategy(
        &self,
        tx: &mut Tx,
        filter: &DocumentFilter,
    ) -> StoreResult<VectorStrategy> {
        if !tx.vector_index {
            return Ok(VectorStrategy::Exact);
        }
        if filter.is_empty() {
            return Ok(VectorStrategy::Index);
        }
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT COALESCE(SUM(d.chunk_count), 0)::int8 FROM documents d WHERE d.tenant_id = ",
        );
        qb.push_bind(self.t());
        push_filter(&mut qb, filter);
        let matching: i64 = qb
            .build()
            .fetch_one(tx.db())
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        Ok(if matching as u64 > self.inner.opts.exact_scan_max_chunks {
            VectorStrategy::Index
        } else {
            VectorStrategy::Exact
        })
    }

    /// Exact nearest neighbours among the tenant's (filtered) chunks.
    /// `cosine_distance()` rather than `<=>`: no index can serve it, so the
    /// planner reads the tenant's rows through its btree and sorts.
    async fn exact_scan(
        &self,
        tx: &mut Tx,
        q: &Vector,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT c.chunk_no, 1 - cosine_distance(c.embedding, ");
        qb.push_bind(q.clone()).push(") AS s FROM chunks c");
        if !filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        qb.push(" WHERE c.tenant_id = ")
            .push_bind(self.t())
            .push(" AND c.kind = 0");
        push_filter(&mut qb, filter);
        // By the output column: each distance is computed once per row.
        // Ties break on the chunk id, which (unlike chunk_no) survives moves.
        qb.push(" ORDER BY s DESC, c.chunk_id LIMIT ")
            .push_bind(k as i64);
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        candidates(&rows)
    }

    /// Approximate nearest neighbours through the tenant's partial HNSW
    /// index (its predicate is `tenant_id = '<tenant>'`, so the tenant is a
    /// literal here), with iterative scans so filters do not starve it, and
    /// the relaxed-order results re-sorted by exact distance.
    async fn index_scan(
        &self,
        tx: &mut Tx,
        q: &Vector,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let ef = (self.inner.opts.hnsw_ef_search as usize)
            .max(2 * k)
            .min(1000);
        let settings = format!(
            "SELECT set_config('hnsw.ef_search', '{ef}', true), \
                    set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        );
        tx.db().execute(settings.as_str()).await.map_err(db_err)?;
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT no, 1 - dist AS s FROM (SELECT c.chunk_no AS no, c.chunk_id AS id, c.embedding <=> ",
        );
        qb.push_bind(q.clone()).push(" AS dist FROM chunks c");
        if !filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        qb.push(format!(
            " WHERE c.tenant_id = {} AND c.kind = 0",
            sql_literal(self.tenant.as_str())
        ));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY c.embedding <=> ")
            .push_bind(q.clone())
            .push(format!(" LIMIT {k}) x ORDER BY dist, id"));
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        candidates(&rows)
    }
}

/// Column arrays for one `INSERT … SELECT FROM unnest(…)` of many chunks
/// (sections first within each document).
#[derive(Default)]
struct ChunkRows {
    ids: Vec<sqlx::types::Uuid>,
    docs: Vec<sqlx::types::Uuid>,
    kinds: Vec<i16>,
    idxs: Vec<i32>,
    contents: Vec<String>,
    tokens: Vec<i32>,
    metas: Vec<Value>,
    parents: Vec<Option<i32>>,
    vectors: Vec<Option<Vector>>,
}

impl ChunkRows {
    fn push(&mut self, doc_id: sqlx::types::Uuid, doc: &DocumentRecord) {
        for s in &doc.sections {
            self.row(
                doc_id,
                ChunkId::new().as_uuid(),
                1,
                s.index,
                &s.content,
                s.token_count,
            );
            self.metas.push(Value::Object(Map::new()));
            self.parents.push(None);
            self.vectors.push(None);
        }
        for c in &doc.chunks {
            self.row(
                doc_id,
                c.chunk_id.as_uuid(),
                0,
                c.index,
                &c.content,
                c.token_count,
            );
            self.metas.push(Value::Object(c.metadata.clone()));
            self.parents.push(c.parent_index.map(|p| p as i32));
            self.vectors.push(Some(Vector::from(c.embedding.clone())));
        }
    }

    fn row(
        &mut self,
        doc: sqlx::types::Uuid,
        id: sqlx::types::Uuid,
        kind: i16,
        idx: u32,
        content: &str,
        tokens: u32,
    ) {
        self.ids.push(id);
        self.docs.push(doc);
        self.kinds.push(kind);
        self.idxs.push(idx as i32);
        self.contents.push(content.to_owned());
        self.tokens.push(tokens as i32);
    }

    /// Drops the rows queued for `doc` (it was replaced later in the batch).
    fn forget(&mut self, doc: sqlx::types::Uuid) {
        let keep: Vec<bool> = self.docs.iter().map(|d| *d != doc).collect();
        fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        retain(&mut self.ids, &keep);
        retain(&mut self.docs, &keep);
        retain(&mut self.kinds, &keep);
        retain(&mut self.idxs, &keep);
        retain(&mut self.contents, &keep);
        retain(&mut self.tokens, &keep);
        retain(&mut self.metas, &keep);
        retain(&mut self.parents, &keep);
        retain(&mut self.vectors, &keep);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VectorStrategy {
    Exact,
    Index,
}

fn candidates(rows: &[PgRow]) -> StoreResult<Vec<Candidate>> {
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                key: r.try_get(0).map_err(db_err)?,
                score: r.try_get(1).map_err(db_err)?,
            })
        })
        .collect()
}

async fn load_document(
    db: &mut PgConnection,
    tenant: &str,
    id: DocumentId,
) -> StoreResult<Option<DocumentInfo>> {
    let row = sqlx::query(&format!(
        "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = $1 AND d.document_id = $2"
    ))
    .bind(tenant)
    .bind(uuid_of(id))
    .fetch_optional(&mut *db)
    .await
    .map_err(db_err)?;
    row.map(|r| doc_from_row(&r)).transpose()
}

async fn load_chunks(
    db: &mut PgConnection,
    tenant: &str,
    id: DocumentId,
    page: enclave_store::ChunkPage,
) -> StoreResult<Vec<(ChunkInfo, Vec<f32>)>> {
    let rows = sqlx::query(if page.vectors {
        "SELECT chunk_id, idx, content, token_count, metadata, parent_idx, embedding FROM chunks \
         WHERE tenant_id = $1 AND document_id = $2 AND kind = 0 AND idx > $3 ORDER BY idx LIMIT $4"
    } else {
        "SELECT chunk_id, idx, content, token_count, metadata, parent_idx, NULL::vector AS embedding FROM chunks \
         WHERE tenant_id = $1 AND document_id = $2 AND kind = 0 AND idx > $3 ORDER BY idx LIMIT $4"
    })
    .bind(tenant)
    .bind(uuid_of(id))
    .bind(page.after_index.map_or(-1, i64::from))
    .bind(i64::from(page.limit))
    .fetch_all(&mut *db)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            let cid: sqlx::types::Uuid = r.try_get("chunk_id").map_err(db_err)?;
            let meta: Value = r.try_get("metadata").map_err(db_err)?;
            let emb: Option<Vector> = r.try_get("embedding").map_err(db_err)?;
            Ok((
                ChunkInfo {
                    chunk_id: ChunkId::parse(&cid.hyphenated().to_string())
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    index: r.try_get::<i32, _>("idx").map_err(db_err)? as u32,
                    content: r.try_get("content").map_err(db_err)?,
                    token_count: r.try_get::<i32, _>("token_count").map_err(db_err)? as u32,
                    metadata: match meta {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    parent_index: r
                        .try_get::<Option<i32>, _>("parent_idx")
                        .map_err(db_err)?
                        .map(|p| p as u32),
                },
                emb.map(|v| v.to_vec()).unwrap_or_default(),
            ))
        })
        .collect()
}

#[async_trait::async_trait]
impl TenantStore for PgTenant {
    async fn find_by_keys(
        &self,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        let mut tx = self.begin(READ).await?;
        let rows = sqlx::query("SELECT dedupe_key, document_id, content_hash, chunk_count, token_count, created_at FROM documents WHERE tenant_id = $1 AND dedupe_key = ANY($2)")
            .bind(self.t())
            .bind(keys)
            .fetch_all(tx.db())
            .await
            .map_err(db_err)?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let id: sqlx::types::Uuid = r.try_get(1).map_err(db_err)?;
                Ok((
                    r.try_get::<String, _>(0).map_err(db_err)?,
                    ExistingDocument {
                        document_id: DocumentId::parse(&id.hyphenated().to_string())
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        content_hash: r.try_get(2).map_err(db_err)?,
                        chunk_count: r.try_get::<i32, _>(3).map_err(db_err)? as u64,
                        token_count: r.try_get::<i64, _>(4).map_err(db_err)? as u64,
                        created_at: r.try_get(5).map_err(db_err)?,
                    },
                ))
            })
            .collect()
    }

    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        let mut out = self.put_documents(vec![doc]).await?;
        out.pop()
            .ok_or_else(|| StoreError::Internal("no result for the document".into()))
    }

    /// The whole batch in one transaction: a directory check, one statement
    /// (two when replacing) per document, and one INSERT for every chunk.
    async fn put_documents(
        &self,
        docs: Vec<DocumentRecord>,
    ) -> StoreResult<Vec<(DocumentId, PutOutcome)>> {
        for doc in &docs {
            if let Some(bad) = doc
                .chunks
                .iter()
                .find(|c| c.embedding.len() != self.inner.dims)
            {
                return Err(StoreError::Invalid(format!(
                    "chunk {} has a {}-dimensional embedding; this store holds {}-dimensional vectors",
                    bad.index,
                    bad.embedding.len(),
                    self.inner.dims
                )));
            }
        }
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.t();
        let mut tx = self.begin(WRITE).await?;
        tx.may_add(self.inner.opts.require_directory)?;
        tx.ensure_tenant_row(&t).await?;
        let mut rows = ChunkRows::default();
        let mut out = Vec::with_capacity(docs.len());
        for doc in &docs {
            let token_count: i64 = doc.chunks.iter().map(|c| c.token_count as i64).sum();
            let metadata = Value::Object(doc.metadata.clone());
            // Insert, or (same dedupe key) take over the existing row; `xmax
            // = 0` tells an insert from an update.
            let (id, inserted): (sqlx::types::Uuid, bool) = sqlx::query_as(
                "INSERT INTO documents AS d (tenant_id, document_id, dedupe_key, name, doc_type, origin, external_id, metadata, content_hash, \
                 size_bytes, chunk_count, token_count, document_date, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
                 ON CONFLICT (tenant_id, dedupe_key) DO UPDATE SET name = EXCLUDED.name, doc_type = EXCLUDED.doc_type, \
                 origin = EXCLUDED.origin, external_id = EXCLUDED.external_id, metadata = EXCLUDED.metadata, \
                 content_hash = EXCLUDED.content_hash, size_bytes = EXCLUDED.size_bytes, chunk_count = EXCLUDED.chunk_count, \
                 token_count = EXCLUDED.token_count, document_date = EXCLUDED.document_date, updated_at = EXCLUDED.updated_at \
                 RETURNING d.document_id, (d.xmax = 0)",
            )
            .bind(&t).bind(uuid_of(doc.document_id)).bind(&doc.dedupe_key).bind(&doc.name).bind(doc.doc_type.as_str())
            .bind(doc.origin.as_ref().map(|o| o.as_str())).bind(&doc.external_id).bind(&metadata).bind(&doc.content_hash)
            .bind(doc.size_bytes as i64).bind(doc.chunks.len() as i32).bind(token_count).bind(doc.document_date).bind(doc.now)
            .fetch_one(tx.db())
            .await
            .map_err(db_err)?;
            if !inserted {
                sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
                    .bind(&t)
                    .bind(id)
                    .execute(tx.db())
                    .await
                    .map_err(db_err)?;
                // A document replaced earlier in this batch loses its rows too.
                rows.forget(id);
            }
            rows.push(id, doc);
            let id = DocumentId::parse(&id.hyphenated().to_string())
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            out.push((
                id,
                if inserted {
                    PutOutcome::Created
                } else {
                    PutOutcome::Replaced
                },
            ));
        }
        sqlx::query(
            "INSERT INTO chunks (tenant_id, chunk_id, document_id, kind, idx, content, token_count, metadata, parent_idx, embedding, ts_config) \
             SELECT $1, u.id, u.doc, u.kind, u.idx, u.content, u.tokens, u.meta, u.parent, u.vec, $11::regconfig \
             FROM unnest($2::uuid[], $3::uuid[], $4::int2[], $5::int4[], $6::text[], $7::int4[], $8::jsonb[], $9::int4[], $10::vector[]) \
                  AS u(id, doc, kind, idx, content, tokens, meta, parent, vec)",
        )
        .bind(&t).bind(&rows.ids).bind(&rows.docs).bind(&rows.kinds).bind(&rows.idxs).bind(&rows.contents).bind(&rows.tokens)
        .bind(&rows.metas).bind(&rows.parents).bind(&rows.vectors).bind(&self.inner.opts.text_search_config)
        .execute(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok(out)
    }

    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        if query.len() != self.inner.dims {
            return Err(StoreError::Invalid(format!(
                "query vector has {} dimensions; this store holds {}",
                query.len(),
                self.inner.dims
            )));
        }
        let q = Vector::from(query.to_vec());
        let mut tx = self.begin(READ).await?;
        let strategy = self.vector_strategy(&mut tx, filter).await?;
        if strategy == VectorStrategy::Index {
            let found = self.index_scan(&mut tx, &q, filter, k).await?;
            if found.len() >= k {
                tx.commit().await?;
                return Ok(found);
            }
            // The filter let fewer than k chunks through the scan's budget:
            // only the exact scan knows whether more exist.
        }
        let found = self.exact_scan(&mut tx, &q, filter, k).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let Some(tsq) = tsquery(query) else {
            return Ok(Vec::new());
        };
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT c.chunk_no, ts_rank_cd(c.tsv, q)::float8 AS s FROM to_tsquery(",
        );
        qb.push_bind(self.inner.opts.text_search_config.clone())
            .push("::regconfig, ")
            .push_bind(tsq)
            .push(") q, chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id WHERE c.tenant_id = ");
        qb.push_bind(self.t())
            .push(" AND c.kind = 0 AND c.tsv @@ q");
        push_filter(&mut qb, filter);
        // Ties break on the chunk id, which (unlike chunk_no) survives moves.
        qb.push(" ORDER BY s DESC, c.chunk_id LIMIT ")
            .push_bind(k as i64);
        let mut tx = self.begin(READ).await?;
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        tx.commit().await?;
        candidates(&rows)
    }

    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        let mut tx = self.begin(READ).await?;
        let rows = sqlx::query(&format!(
            "SELECT c.chunk_no, c.chunk_id, c.idx, c.content, p.content AS parent_content, {DOC_COLS} \
             FROM unnest($2::int8[]) AS k(no) \
             JOIN chunks c ON c.tenant_id = $1 AND c.chunk_no = k.no \
             JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
             LEFT JOIN chunks p ON p.tenant_id = c.tenant_id AND p.document_id = c.document_id AND p.kind = 1 AND p.idx = c.parent_idx \
             WHERE c.kind = 0"
        ))
        .bind(self.t())
        .bind(keys)
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let cid: sqlx::types::Uuid = r.try_get("chunk_id").map_err(db_err)?;
                Ok(HitRow {
                    key: r.try_get("chunk_no").map_err(db_err)?,
                    chunk_id: ChunkId::parse(&cid.hyphenated().to_string())
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    index: r.try_get::<i32, _>("idx").map_err(db_err)? as u32,
                    content: r.try_get("content").map_err(db_err)?,
                    parent_content: r.try_get("parent_content").map_err(db_err)?,
                    document: doc_from_row(r)?,
                })
            })
            .collect()
    }

    async fn list_documents(&self, q: &ListQuery) -> StoreResult<DocumentPage> {
        let mut tx = self.begin(READ).await?;
        let mut count =
            QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM documents d WHERE d.tenant_id = ");
        count.push_bind(self.t());
        push_filter(&mut count, &q.filter);
        let total: i64 = count
            .build()
            .fetch_one(tx.db())
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = "
        ));
        qb.push_bind(self.t());
        push_filter(&mut qb, &q.filter);
        if let Some(after) = q.after {
            qb.push(" AND d.document_id < ").push_bind(uuid_of(after));
        }
        qb.push(" ORDER BY d.document_id DESC LIMIT ")
            .push_bind(q.limit as i64 + 1)
            .push(" OFFSET ")
            .push_bind(q.offset as i64);
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        tx.commit().await?;
        let mut docs = rows
            .iter()
            .map(doc_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let more = docs.len() > q.limit as usize;
        docs.truncate(q.limit as usize);
        let next_after = if more {
            docs.last().map(|d| d.document_id)
        } else {
            None
        };
        Ok(DocumentPage {
            documents: docs,
            total: total as u64,
            next_after,
        })
    }

    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>> {
        let t = self.t();
        let mut tx = self.begin(READ).await?;
        let Some(info) = load_document(tx.db(), &t, id).await? else {
            return Ok(None);
        };
        let chunks = if include_chunks {
            Some(
                load_chunks(
                    tx.db(),
                    &t,
                    id,
                    enclave_store::ChunkPage::ALL_WITHOUT_VECTORS,
                )
                .await?
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            )
        } else {
            None
        };
        tx.commit().await?;
        Ok(Some(Document { info, chunks }))
    }

    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        let t = self.t();
        let mut tx = self.begin(WRITE).await?;
        tx.may_add(self.inner.opts.require_directory)?;
        let Some(current) = load_document(tx.db(), &t, id).await? else {
            return Ok(None);
        };
        let name = patch.name.clone().unwrap_or(current.name.clone());
        let metadata = Value::Object(patch.metadata.clone().unwrap_or(current.metadata.clone()));
        let key = dedupe_key(
            current.external_id.as_deref(),
            current.origin.as_ref(),
            &name,
        );
        sqlx::query("UPDATE documents SET name = $3, metadata = $4, dedupe_key = $5, updated_at = $6 WHERE tenant_id = $1 AND document_id = $2")
            .bind(&t).bind(uuid_of(id)).bind(&name).bind(&metadata).bind(&key).bind(now)
            .execute(tx.db())
            .await
            .map_err(db_err)?;
        let out = load_document(tx.db(), &t, id).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        let ids: Vec<sqlx::types::Uuid> = ids.iter().map(|i| uuid_of(*i)).collect();
        let mut tx = self.begin(WRITE).await?;
        // The document rows first: deleting them waits for (and then sees)
        // any transaction re-indexing them. The chunks go in a second
        // statement, whose fresh snapshot includes chunks such a transaction
        // committed (chunks have no foreign key; migration 0008).
        let gone: Vec<sqlx::types::Uuid> = sqlx::query_scalar(
            "DELETE FROM documents WHERE tenant_id = $1 AND document_id = ANY($2) RETURNING document_id",
        )
        .bind(self.t())
        .bind(&ids)
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        if !gone.is_empty() {
            sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = ANY($2)")
                .bind(self.t())
                .bind(&gone)
                .execute(tx.db())
                .await
                .map_err(db_err)?;
        }
        tx.commit().await?;
        Ok(gone.len() as u64)
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        let mut tx = self.begin(READ).await?;
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(chunk_count), 0)::int8, COALESCE(SUM(size_bytes), 0)::int8, COALESCE(SUM(token_count), 0)::int8 \
             FROM documents WHERE tenant_id = $1",
        )
        .bind(self.t())
        .fetch_one(tx.db())
        .await
        .map_err(db_err)?;
        let by_type: Vec<(String, i64)> = sqlx::query_as(
            "SELECT doc_type, COUNT(*) FROM documents WHERE tenant_id = $1 GROUP BY doc_type",
        )
        .bind(self.t())
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok(Statistics {
            document_count: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
            chunk_count: r.try_get::<i64, _>(1).map_err(db_err)? as u64,
            total_size_bytes: r.try_get::<i64, _>(2).map_err(db_err)? as u64,
            total_tokens: r.try_get::<i64, _>(3).map_err(db_err)? as u64,
            by_type: by_type.into_iter().map(|(t, n)| (t, n as u64)).collect(),
        })
    }

    async fn append_message(&self, m: Message) -> StoreResult<Message> {
        let t = self.t();
        let mut tx = self.begin(WRITE).await?;
        tx.may_add(self.inner.opts.require_directory)?;
        tx.ensure_tenant_row(&t).await?;
        // One writer per session at a time: the next number is read and
        // used in the same transaction.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('session:' || $1 || ':' || $2, 0))",
        )
        .bind(&t)
        .bind(m.session_id.as_str())
        .execute(tx.db())
        .await
        .map_err(db_err)?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO messages (tenant_id, session_id, seq, message_id, role, content, origin, metadata, created_at) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6, $7, $8 FROM messages WHERE tenant_id = $1 AND session_id = $2 \
             RETURNING seq",
        )
        .bind(&t)
        .bind(m.session_id.as_str())
        .bind(m.message_id.as_uuid())
        .bind(m.role.as_str())
        .bind(&m.content)
        .bind(m.origin.as_ref().map(|o| o.as_str()))
        .bind(Value::Object(m.metadata.clone()))
        .bind(m.created_at)
        .fetch_one(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok(Message { seq, ..m })
    }

    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let mut tx = self.begin(READ).await?;
        let rows = sqlx::query(
            "SELECT session_id, seq, message_id, role, content, origin, metadata, created_at FROM messages \
             WHERE tenant_id = $1 AND session_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
        )
        .bind(self.t())
        .bind(session.as_str())
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        let internal = |e: enclave_core::InvalidInput| StoreError::Internal(e.to_string());
        let mut out = rows
            .iter()
            .map(|r| {
                let metadata: Value = r.try_get(6).map_err(db_err)?;
                Ok(Message {
                    session_id: SessionId::parse(r.try_get::<&str, _>(0).map_err(db_err)?)
                        .map_err(internal)?,
                    seq: r.try_get(1).map_err(db_err)?,
                    message_id: MessageId::parse(
                        &r.try_get::<sqlx::types::Uuid, _>(2)
                            .map_err(db_err)?
                            .hyphenated()
                            .to_string(),
                    )
                    .map_err(internal)?,
                    role: r
                        .try_get::<&str, _>(3)
                        .map_err(db_err)?
                        .parse::<MessageRole>()
                        .map_err(internal)?,
                    content: r.try_get(4).map_err(db_err)?,
                    origin: r
                        .try_get::<Option<&str>, _>(5)
                        .map_err(db_err)?
                        .map(Origin::parse)
                        .transpose()
                        .map_err(internal)?,
                    metadata: match metadata {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    created_at: r.try_get(7).map_err(db_err)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64> {
        let mut tx = self.begin(WRITE).await?;
        let n = sqlx::query("DELETE FROM messages WHERE tenant_id = $1 AND session_id = $2")
            .bind(self.t())
            .bind(session.as_str())
            .execute(tx.db())
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn message_count(&self) -> StoreResult<u64> {
        let mut tx = self.begin(READ).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE tenant_id = $1")
            .bind(self.t())
            .fetch_one(tx.db())
            .await
            .map_err(db_err)?;
        tx.commit().await?;
        Ok(n as u64)
    }

    async fn message_usage(&self) -> StoreResult<enclave_store::MessageUsage> {
        let mut tx = self.begin(READ).await?;
        let (count, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(octet_length(content) + octet_length(metadata::text)), 0)::int8 \
             FROM messages WHERE tenant_id = $1",
        )
        .bind(self.t())
        .fetch_one(tx.db())
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok(enclave_store::MessageUsage {
            count: count as u64,
            bytes: bytes as u64,
        })
    }

    async fn delete_all_messages(&self) -> StoreResult<u64> {
        let mut tx = self.begin(WRITE).await?;
        let n = sqlx::query("DELETE FROM messages WHERE tenant_id = $1")
            .bind(self.t())
            .execute(tx.db())
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>> {
        let t = self.t();
        let mut tx = self.begin(READ).await?;
        let after = after.map(uuid_of).unwrap_or_else(sqlx::types::Uuid::nil);
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = $1 AND d.document_id > $2 ORDER BY d.document_id LIMIT $3"
        ))
        .bind(&t)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        let out = rows
            .iter()
            .map(doc_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>> {
        let t = self.t();
        let mut tx = self.begin(READ).await?;
        let page = enclave_store::ChunkPage {
            after_index,
            limit,
            vectors: true,
        };
        let out = load_chunks(tx.db(), &t, id, page)
            .await?
            .into_iter()
            .map(|(chunk, embedding)| ExportedChunk { chunk, embedding })
            .collect();
        tx.commit().await?;
        Ok(out)
    }
}
