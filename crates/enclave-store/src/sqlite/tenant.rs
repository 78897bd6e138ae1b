//! One tenant's data in a SQLite file. Every statement states
//! `tenant_id = ?` with this handle's tenant; the tenant's full-text table is
//! found through its row in `tenants`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::query::TextQuery;
use enclave_core::{
    ChunkId, ChunkInfo, Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch,
    ExportedChunk, Message, MessageId, MessageRole, Origin, SessionId, Statistics, TenantId,
};
use parking_lot::RwLock;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension, Row, Transaction};
use serde_json::{Map, Value};

use super::db::{sql_err, Db};
use super::sql::{self, parse_ts, ts};
use super::Inner;
use crate::vector::VectorSet;
use crate::{
    dedupe_key, Candidate, ChunkKey, DocumentPage, DocumentRecord, ExistingDocument, HitRow,
    ListQuery, PutOutcome, StoreError, StoreResult, TenantStore,
};

pub(crate) struct SqliteTenant {
    inner: Arc<Inner>,
    tenant: TenantId,
}

/// A tenant's vectors in memory, refreshed from the file when the tenant's
/// write generations move (appends are loaded incrementally; a delete or
/// replace reloads).
pub(crate) struct VectorCache {
    state: RwLock<CacheState>,
    /// Tick of the last search, for least-recently-used eviction.
    pub(crate) last_used: std::sync::atomic::AtomicU64,
}

struct CacheState {
    set: VectorSet,
    add_gen: i64,
    del_gen: i64,
    max_chunk_no: i64,
    loaded: bool,
}

impl VectorCache {
    pub fn new(dims: usize) -> Self {
        Self {
            state: RwLock::new(CacheState {
                set: VectorSet::new(dims),
                add_gen: 0,
                del_gen: 0,
                max_chunk_no: 0,
                loaded: false,
            }),
            last_used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Memory held, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        let s = self.state.read();
        s.set.data.len() * 4 + s.set.keys.len() * 8
    }

    /// Frees the vectors; the next search reloads them from the file.
    pub(crate) fn unload(&self) {
        let mut s = self.state.write();
        s.set = VectorSet::new(s.set.dims);
        s.max_chunk_no = 0;
        s.loaded = false;
    }

    /// Brings the cache up to the snapshot `tx` sees (never backwards).
    fn refresh(&self, tx: &Transaction<'_>, tenant: &TenantId) -> StoreResult<()> {
        let gens: Option<(i64, i64)> = tx
            .query_row(
                "SELECT add_gen, del_gen FROM tenants WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql_err)?;
        let (add_gen, del_gen) = gens.unwrap_or((0, 0));
        let is_newer = |s: &CacheState| !s.loaded || add_gen + del_gen > s.add_gen + s.del_gen;
        if !is_newer(&self.state.read()) {
            return Ok(());
        }
        let mut s = self.state.write();
        if !is_newer(&s) {
            return Ok(());
        }
        if !s.loaded || del_gen != s.del_gen {
            s.set = VectorSet::new(s.set.dims);
            s.max_chunk_no = 0;
        }
        let dims = s.set.dims;
        let mut stmt = tx
            .prepare_cached(
                "SELECT chunk_no, embedding FROM vectors WHERE tenant_id = ?1 AND chunk_no > ?2 ORDER BY chunk_no",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(params![tenant.as_str(), s.max_chunk_no])
            .map_err(sql_err)?;
        let mut buf = Vec::with_capacity(dims);
        while let Some(r) = rows.next().map_err(sql_err)? {
            let key: i64 = r.get(0).map_err(sql_err)?;
            let blob = r
                .get_ref(1)
                .map_err(sql_err)?
                .as_blob()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            decode_vector(blob, &mut buf)?;
            if buf.len() != dims {
                return Err(StoreError::Internal(format!(
                    "stored vector has {} dimensions",
                    buf.len()
                )));
            }
            s.set.push(key, &buf);
            s.max_chunk_no = key;
        }
        s.add_gen = add_gen;
        s.del_gen = del_gen;
        s.loaded = true;
        Ok(())
    }
}

fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_vector(blob: &[u8], out: &mut Vec<f32>) -> StoreResult<()> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::Internal("corrupt vector blob".into()));
    }
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}

const DOC_COLS: &str = "d.document_id, d.name, d.doc_type, d.origin, d.external_id, d.metadata, \
    d.size_bytes, d.chunk_count, d.token_count, d.document_date, d.created_at, d.updated_at";

fn internal(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Internal(format!("{what}: {e}"))
}

fn doc_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<StoreResult<DocumentInfo>> {
    let id: String = r.get(at)?;
    let name: String = r.get(at + 1)?;
    let doc_type: String = r.get(at + 2)?;
    let origin: Option<String> = r.get(at + 3)?;
    let external_id: Option<String> = r.get(at + 4)?;
    let metadata: String = r.get(at + 5)?;
    let size: i64 = r.get(at + 6)?;
    let chunks: i64 = r.get(at + 7)?;
    let tokens: i64 = r.get(at + 8)?;
    let doc_date: Option<String> = r.get(at + 9)?;
    let created: String = r.get(at + 10)?;
    let updated: String = r.get(at + 11)?;
    Ok((|| {
        Ok(DocumentInfo {
            document_id: DocumentId::parse(&id)
                .map_err(|e| internal("document_id")(e.to_string()))?,
            name,
            doc_type: doc_type
                .parse()
                .map_err(|e: enclave_core::InvalidInput| internal("doc_type")(e.to_string()))?,
            origin: origin
                .map(|o| Origin::parse(&o))
                .transpose()
                .map_err(|e| internal("origin")(e.to_string()))?,
            external_id,
            metadata: parse_map(&metadata)?,
            size_bytes: size as u64,
            chunk_count: chunks as u64,
            token_count: tokens as u64,
            document_date: doc_date.as_deref().and_then(parse_ts),
            created_at: parse_ts(&created)
                .ok_or_else(|| internal("created_at")(created.clone()))?,
            updated_at: parse_ts(&updated)
                .ok_or_else(|| internal("updated_at")(updated.clone()))?,
        })
    })())
}

fn parse_map(s: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| internal("metadata")(e.to_string()))
}

fn json(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

fn fts_table(tenant_no: i64) -> String {
    format!("fts_{tenant_no}")
}

fn tenant_no(tx: &Transaction<'_>, tenant: &TenantId) -> StoreResult<Option<i64>> {
    tx.query_row(
        "SELECT tenant_no FROM tenants WHERE tenant_id = ?1",
        [tenant.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err)
}

/// The tenant's row and full-text table, created on its first write.
fn ensure_tenant(tx: &Transaction<'_>, tenant: &TenantId, now: DateTime<Utc>) -> StoreResult<i64> {
    if let Some(n) = tenant_no(tx, tenant)? {
        return Ok(n);
    }
    let n: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(tenant_no), 0) + 1 FROM tenants",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    tx.execute(
        "INSERT INTO tenants (tenant_id, tenant_no, created_at) VALUES (?1, ?2, ?3)",
        params![tenant.as_str(), n, ts(now)],
    )
    .map_err(sql_err)?;
    tx.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {} USING fts5(content, content='', contentless_delete=1, \
         tokenize='porter unicode61 remove_diacritics 2')",
        fts_table(n)
    ))
    .map_err(sql_err)?;
    Ok(n)
}

/// Removes a document's chunks, vectors and text index entries.
fn delete_document_rows(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    tno: i64,
    id: &str,
) -> StoreResult<i64> {
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE rowid IN (SELECT chunk_no FROM chunks WHERE tenant_id = ?1 AND document_id = ?2 AND kind = 0)",
            fts_table(tno)
        ),
        params![tenant.as_str(), id],
    )
    .map_err(sql_err)?;
    // Only searchable chunks have vectors: this counts them.
    let leaves = tx
        .execute(
            "DELETE FROM vectors WHERE tenant_id = ?1 AND chunk_no IN \
         (SELECT chunk_no FROM chunks WHERE tenant_id = ?1 AND document_id = ?2)",
            params![tenant.as_str(), id],
        )
        .map_err(sql_err)?;
    tx.execute(
        "DELETE FROM chunks WHERE tenant_id = ?1 AND document_id = ?2",
        params![tenant.as_str(), id],
    )
    .map_err(sql_err)?;
    Ok(leaves as i64)
}

fn load_document(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<Option<DocumentInfo>> {
    let sql =
        format!("SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = ?1 AND d.document_id = ?2");
    tx.query_row(&sql, params![tenant.as_str(), id], |r| doc_from_row(r, 0))
        .optional()
        .map_err(sql_err)?
        .transpose()
}

impl SqliteTenant {
    pub fn new(inner: Arc<Inner>, tenant: TenantId) -> Self {
        Self { inner, tenant }
    }

    /// Runs a write on a blocking thread.
    /// Whether the tenant can hold rows (file-per-tenant: its file exists);
    /// deletes for a tenant without a file change nothing and create nothing.
    fn has_data(&self) -> bool {
        self.inner.shared.is_some() || SqliteStore_file_exists(&self.inner, &self.tenant)
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &TenantId) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        let tenant = self.tenant.clone();
        blocking(move || inner.db(&tenant)?.write(|tx| f(tx, &tenant))).await
    }

    /// Runs a read on a blocking thread; a tenant with no file yet reads as empty.
    async fn read<T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &TenantId, &Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        let tenant = self.tenant.clone();
        blocking(move || {
            if inner.shared.is_none()
                && !inner.files.lock().contains_key(&tenant)
                && !super::SqliteStore::tenant_file_exists(&inner.opts.dir, &tenant)
            {
                return Ok(T::default());
            }
            let db: Arc<Db> = inner.db(&tenant)?;
            db.read(|tx| f(tx, &tenant, &inner))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("store task: {e}")))?
}

/// Chunk keys of this tenant's searchable chunks whose document passes `filter`.
fn allowed_chunks(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    filter: &DocumentFilter,
) -> StoreResult<HashSet<i64>> {
    let mut sql = String::from(
        "SELECT c.chunk_no FROM chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
         WHERE c.tenant_id = ? AND c.kind = 0 AND d.tenant_id = ?",
    );
    let mut p = vec![
        SqlValue::Text(tenant.as_str().into()),
        SqlValue::Text(tenant.as_str().into()),
    ];
    sql::document_filter(filter, &mut sql, &mut p);
    let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
    let keys = stmt
        .query_map(params_from_iter(p), |r| r.get::<_, i64>(0))
        .map_err(sql_err)?
        .collect::<Result<HashSet<_>, _>>()
        .map_err(sql_err)?;
    Ok(keys)
}

#[async_trait::async_trait]
impl TenantStore for SqliteTenant {
    async fn find_by_keys(
        &self,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
        let keys = keys.to_vec();
        self.read(move |tx, tenant, _| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT document_id, content_hash, chunk_count, token_count, created_at FROM documents \
                     WHERE tenant_id = ?1 AND dedupe_key = ?2",
                )
                .map_err(sql_err)?;
            let mut out = std::collections::HashMap::new();
            for key in keys {
                let row = stmt
                    .query_row(params![tenant.as_str(), key], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?))
                    })
                    .optional()
                    .map_err(sql_err)?;
                if let Some((id, hash, chunks, tokens, created)) = row {
                    out.insert(
                        key,
                        ExistingDocument {
                            document_id: DocumentId::parse(&id).map_err(|e| internal("document_id")(e.to_string()))?,
                            content_hash: hash,
                            chunk_count: chunks as u64,
                            token_count: tokens as u64,
                            created_at: parse_ts(&created).ok_or_else(|| internal("created_at")(created))?,
                        },
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        let dims = self.inner.opts.dimensions;
        if let Some(bad) = doc.chunks.iter().find(|c| c.embedding.len() != dims) {
            return Err(StoreError::Invalid(format!(
                "chunk {} has a {}-dimensional embedding; this store holds {dims}-dimensional vectors",
                bad.index,
                bad.embedding.len()
            )));
        }
        self.write(move |tx, tenant| {
            let tno = ensure_tenant(tx, tenant, doc.now)?;
            let t = tenant.as_str();
            let existing: Option<(String, String)> = tx
                .query_row(
                    "SELECT document_id, created_at FROM documents WHERE tenant_id = ?1 AND dedupe_key = ?2",
                    params![t, doc.dedupe_key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err)?;
            let token_count: u64 = doc.chunks.iter().map(|c| c.token_count as u64).sum();
            let mut removed = 0;
            let outcome;
            let id = match existing {
                Some((id, _created)) => {
                    removed = delete_document_rows(tx, tenant, tno, &id)?;
                    tx.execute(
                        "UPDATE documents SET name = ?3, doc_type = ?4, origin = ?5, external_id = ?6, metadata = ?7, \
                         content_hash = ?8, size_bytes = ?9, chunk_count = ?10, token_count = ?11, document_date = ?12, \
                         updated_at = ?13 WHERE tenant_id = ?1 AND document_id = ?2",
                        params![
                            t, id, doc.name, doc.doc_type.as_str(), doc.origin.as_ref().map(|o| o.as_str()),
                            doc.external_id, json(&doc.metadata), doc.content_hash, doc.size_bytes as i64,
                            doc.chunks.len() as i64, token_count as i64, doc.document_date.map(ts), ts(doc.now)
                        ],
                    )
                    .map_err(sql_err)?;
                    outcome = PutOutcome::Replaced;
                    id
                }
                None => {
                    let id = doc.document_id.to_string();
                    tx.execute(
                        "INSERT INTO documents (tenant_id, document_id, dedupe_key, name, doc_type, origin, external_id, \
                         metadata, content_hash, size_bytes, chunk_count, token_count, document_date, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
                        params![
                            t, id, doc.dedupe_key, doc.name, doc.doc_type.as_str(), doc.origin.as_ref().map(|o| o.as_str()),
                            doc.external_id, json(&doc.metadata), doc.content_hash, doc.size_bytes as i64,
                            doc.chunks.len() as i64, token_count as i64, doc.document_date.map(ts), ts(doc.now)
                        ],
                    )
                    .map_err(sql_err)?;
                    outcome = PutOutcome::Created;
                    id
                }
            };
            let mut next: i64 = tx
                .query_row("SELECT next_chunk_no FROM tenants WHERE tenant_id = ?1", [t], |r| r.get(0))
                .map_err(sql_err)?;
            {
                let mut ins_chunk = tx
                    .prepare_cached(
                        "INSERT INTO chunks (tenant_id, chunk_no, chunk_id, document_id, kind, idx, content, token_count, metadata, parent_idx) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .map_err(sql_err)?;
                let mut ins_vec = tx
                    .prepare_cached("INSERT INTO vectors (tenant_id, chunk_no, embedding) VALUES (?1, ?2, ?3)")
                    .map_err(sql_err)?;
                let mut ins_fts = tx
                    .prepare_cached(&format!("INSERT INTO {} (rowid, content) VALUES (?1, ?2)", fts_table(tno)))
                    .map_err(sql_err)?;
                for s in &doc.sections {
                    ins_chunk
                        .execute(params![t, next, ChunkId::new().to_string(), id, 1, s.index, s.content, s.token_count, "{}", None::<i64>])
                        .map_err(sql_err)?;
                    next += 1;
                }
                for c in &doc.chunks {
                    ins_chunk
                        .execute(params![
                            t, next, c.chunk_id.to_string(), id, 0, c.index, c.content, c.token_count,
                            json(&c.metadata), c.parent_index
                        ])
                        .map_err(sql_err)?;
                    ins_vec.execute(params![t, next, encode_vector(&c.embedding)]).map_err(sql_err)?;
                    ins_fts.execute(params![next, c.content]).map_err(sql_err)?;
                    next += 1;
                }
            }
            let replaced = (outcome == PutOutcome::Replaced) as i64;
            tx.execute(
                "UPDATE tenants SET next_chunk_no = ?2, add_gen = add_gen + 1, del_gen = del_gen + ?3, \
                 chunk_rows = chunk_rows + ?4 WHERE tenant_id = ?1",
                params![t, next, replaced, doc.chunks.len() as i64 - removed],
            )
            .map_err(sql_err)?;
            let id = DocumentId::parse(&id).map_err(|e| internal("document_id")(e.to_string()))?;
            Ok((id, outcome))
        })
        .await
    }

    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        if query.len() != self.inner.opts.dimensions {
            return Err(StoreError::Invalid(format!(
                "query vector has {} dimensions; this store holds {}",
                query.len(),
                self.inner.opts.dimensions
            )));
        }
        let query = query.to_vec();
        let filter = filter.clone();
        self.read(move |tx, tenant, inner| {
            let cache = inner.vector_cache(tenant);
            cache.refresh(tx, tenant)?;
            // Over its share, this tenant's vectors serve this search and
            // are then let go: its size costs its own next search, not
            // another tenant's cache.
            let unload_after = inner.enforce_vector_budget(tenant);
            let allowed = if filter.is_empty() {
                None
            } else {
                Some(allowed_chunks(tx, tenant, &filter)?)
            };
            let hits = {
                let state = cache.state.read();
                match &allowed {
                    None => state.set.top_k(&query, k, None),
                    Some(a) => state.set.top_k(&query, k, Some(&|key| a.contains(&key))),
                }
            };
            if unload_after {
                cache.unload();
            }
            Ok(hits
                .into_iter()
                .map(|(key, s)| Candidate {
                    key,
                    score: s as f64,
                })
                .collect())
        })
        .await
    }

    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = query.clone();
        let filter = filter.clone();
        self.read(move |tx, tenant, _| {
            let Some(tno) = tenant_no(tx, tenant)? else {
                return Ok(Vec::new());
            };
            prune_common_terms(tx, tenant, tno, &mut query)?;
            let Some(fts) = sql::fts_query(&query) else {
                return Ok(Vec::new());
            };
            let table = fts_table(tno);
            let (sql, p) = if filter.is_empty() {
                (
                    format!("SELECT rowid, bm25({table}) FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT ?"),
                    vec![SqlValue::Text(fts), SqlValue::Integer(k as i64)],
                )
            } else {
                let mut sql = format!(
                    "SELECT {table}.rowid, bm25({table}) AS s FROM {table} \
                     JOIN chunks c ON c.tenant_id = ? AND c.chunk_no = {table}.rowid \
                     JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
                     WHERE {table} MATCH ? AND d.tenant_id = ?"
                );
                let t = SqlValue::Text(tenant.as_str().into());
                let mut p = vec![t.clone(), SqlValue::Text(fts), t];
                sql::document_filter(&filter, &mut sql, &mut p);
                sql.push_str(" ORDER BY s LIMIT ?");
                p.push(SqlValue::Integer(k as i64));
                (sql, p)
            };
            let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(params_from_iter(p), |r| Ok(Candidate { key: r.get(0)?, score: -r.get::<_, f64>(1)? }))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            Ok(rows)
        })
        .await
    }

    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        let keys_json = serde_json::to_string(keys).expect("integers serialize");
        self.read(move |tx, tenant, _| {
            let sql = format!(
                "SELECT c.chunk_no, c.chunk_id, c.idx, c.content, p.content, {DOC_COLS} \
                 FROM json_each(?2) AS k \
                 CROSS JOIN chunks c ON c.tenant_id = ?1 AND c.chunk_no = k.value \
                 JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
                 LEFT JOIN chunks p ON p.tenant_id = c.tenant_id AND p.document_id = c.document_id AND p.kind = 1 AND p.idx = c.parent_idx \
                 WHERE c.kind = 0"
            );
            let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(params![tenant.as_str(), keys_json], |r| {
                    let chunk_id: String = r.get(1)?;
                    Ok((r.get::<_, i64>(0)?, chunk_id, r.get::<_, i64>(2)?, r.get::<_, String>(3)?, r.get::<_, Option<String>>(4)?, doc_from_row(r, 5)?))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (key, chunk_id, idx, content, parent, doc) = row.map_err(sql_err)?;
                out.push(HitRow {
                    key,
                    chunk_id: ChunkId::parse(&chunk_id).map_err(|e| internal("chunk_id")(e.to_string()))?,
                    index: idx as u32,
                    content,
                    parent_content: parent,
                    document: doc?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn list_documents(&self, q: &ListQuery) -> StoreResult<DocumentPage> {
        let q = q.clone();
        self.read(move |tx, tenant, _| {
            let mut wh = String::from("d.tenant_id = ?");
            let mut p = vec![SqlValue::Text(tenant.as_str().into())];
            sql::document_filter(&q.filter, &mut wh, &mut p);
            let total: i64 = tx
                .query_row(&format!("SELECT COUNT(*) FROM documents d WHERE {wh}"), params_from_iter(p.clone()), |r| r.get(0))
                .map_err(sql_err)?;
            if let Some(after) = q.after {
                wh.push_str(" AND d.document_id < ?");
                p.push(SqlValue::Text(after.to_string()));
            }
            p.push(SqlValue::Integer(q.limit as i64 + 1));
            p.push(SqlValue::Integer(q.offset as i64));
            let sql = format!("SELECT {DOC_COLS} FROM documents d WHERE {wh} ORDER BY d.document_id DESC LIMIT ? OFFSET ?");
            let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
            let mut docs = stmt
                .query_map(params_from_iter(p), |r| doc_from_row(r, 0))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?
                .into_iter()
                .collect::<StoreResult<Vec<_>>>()?;
            let more = docs.len() > q.limit as usize;
            docs.truncate(q.limit as usize);
            let next_after = if more { docs.last().map(|d| d.document_id) } else { None };
            Ok(DocumentPage { documents: docs, total: total as u64, next_after })
        })
        .await
    }

    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>> {
        self.read(move |tx, tenant, _| {
            let id = id.to_string();
            let Some(info) = load_document(tx, tenant, &id)? else {
                return Ok(None);
            };
            let chunks = if include_chunks {
                Some(
                    load_chunks(tx, tenant, &id, crate::ChunkPage::ALL_WITHOUT_VECTORS)?
                        .into_iter()
                        .map(|(c, _)| c)
                        .collect(),
                )
            } else {
                None
            };
            Ok(Some(Document { info, chunks }))
        })
        .await
    }

    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        let patch = patch.clone();
        self.write(move |tx, tenant| {
            let id = id.to_string();
            let Some(current) = load_document(tx, tenant, &id)? else {
                return Ok(None);
            };
            let name = patch.name.clone().unwrap_or(current.name.clone());
            let metadata = patch.metadata.clone().unwrap_or(current.metadata.clone());
            let key = dedupe_key(current.external_id.as_deref(), current.origin.as_ref(), &name);
            let res = tx.execute(
                "UPDATE documents SET name = ?3, metadata = ?4, dedupe_key = ?5, updated_at = ?6 WHERE tenant_id = ?1 AND document_id = ?2",
                params![tenant.as_str(), id, name, json(&metadata), key, ts(now)],
            );
            match res {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Err(StoreError::Conflict("another document in this origin already has that name".into()));
                }
                Err(e) => return Err(sql_err(e)),
            }
            load_document(tx, tenant, &id)
        })
        .await
    }

    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let exists = {
            let inner = self.inner.clone();
            let tenant = self.tenant.clone();
            inner.shared.is_some() || SqliteStore_file_exists(&inner, &tenant)
        };
        if !exists {
            return Ok(0);
        }
        self.write(move |tx, tenant| {
            let Some(tno) = tenant_no(tx, tenant)? else {
                return Ok(0);
            };
            let mut n = 0;
            let mut removed = 0i64;
            for id in &ids {
                let found: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM documents WHERE tenant_id = ?1 AND document_id = ?2",
                        params![tenant.as_str(), id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_err)?;
                if found.is_none() {
                    continue;
                }
                removed += delete_document_rows(tx, tenant, tno, id)?;
                tx.execute(
                    "DELETE FROM documents WHERE tenant_id = ?1 AND document_id = ?2",
                    params![tenant.as_str(), id],
                )
                .map_err(sql_err)?;
                n += 1;
            }
            if n > 0 {
                tx.execute(
                    "UPDATE tenants SET del_gen = del_gen + 1, chunk_rows = chunk_rows - ?2 WHERE tenant_id = ?1",
                    params![tenant.as_str(), removed],
                )
                .map_err(sql_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        self.read(move |tx, tenant, _| {
            let (docs, chunks, size, tokens): (i64, i64, i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(chunk_count), 0), COALESCE(SUM(size_bytes), 0), COALESCE(SUM(token_count), 0) \
                     FROM documents WHERE tenant_id = ?1",
                    [tenant.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(sql_err)?;
            let mut stmt = tx
                .prepare("SELECT doc_type, COUNT(*) FROM documents WHERE tenant_id = ?1 GROUP BY doc_type")
                .map_err(sql_err)?;
            let by_type = stmt
                .query_map([tenant.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            Ok(Statistics {
                document_count: docs as u64,
                chunk_count: chunks as u64,
                total_size_bytes: size as u64,
                total_tokens: tokens as u64,
                by_type,
            })
        })
        .await
    }

    async fn append_message(&self, m: Message) -> StoreResult<Message> {
        self.write(move |tx, tenant| {
            let seq: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE tenant_id = ?1 AND session_id = ?2",
                    params![tenant.as_str(), m.session_id.as_str()],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO messages (tenant_id, session_id, seq, message_id, role, content, origin, metadata, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    tenant.as_str(),
                    m.session_id.as_str(),
                    seq,
                    m.message_id.to_string(),
                    m.role.as_str(),
                    m.content,
                    m.origin.as_ref().map(|o| o.as_str()),
                    Value::Object(m.metadata.clone()).to_string(),
                    ts(m.created_at)
                ],
            )
            .map_err(sql_err)?;
            Ok(Message { seq, ..m })
        })
        .await
    }

    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let session = session.clone();
        self.read(move |tx, tenant, _| {
            let mut st = tx
                .prepare(
                    "SELECT session_id, seq, message_id, role, content, origin, metadata, created_at FROM messages \
                     WHERE tenant_id = ?1 AND session_id = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
                )
                .map_err(sql_err)?;
            let mut rows = st
                .query_map(
                    params![tenant.as_str(), session.as_str(), before_seq.unwrap_or(i64::MAX), limit],
                    message_row,
                )
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64> {
        let session = session.clone();
        if !self.has_data() {
            return Ok(0);
        }
        self.write(move |tx, tenant| {
            tx.execute(
                "DELETE FROM messages WHERE tenant_id = ?1 AND session_id = ?2",
                params![tenant.as_str(), session.as_str()],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn message_count(&self) -> StoreResult<u64> {
        self.read(move |tx, tenant, _| {
            tx.query_row(
                "SELECT COUNT(*) FROM messages WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn message_usage(&self) -> StoreResult<crate::MessageUsage> {
        self.read(move |tx, tenant, _| {
            tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(CAST(content AS BLOB)) + length(CAST(metadata AS BLOB))), 0) \
                 FROM messages WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| {
                    Ok(crate::MessageUsage {
                        count: r.get::<_, i64>(0)? as u64,
                        bytes: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(sql_err)
        })
        .await
    }

    async fn delete_all_messages(&self) -> StoreResult<u64> {
        if !self.has_data() {
            return Ok(0);
        }
        self.write(move |tx, tenant| {
            tx.execute(
                "DELETE FROM messages WHERE tenant_id = ?1",
                [tenant.as_str()],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>> {
        self.read(move |tx, tenant, _| {
            let after = after.map(|a| a.to_string()).unwrap_or_default();
            let sql = format!(
                "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = ?1 AND d.document_id > ?2 ORDER BY d.document_id LIMIT ?3"
            );
            let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
            let docs = stmt
                .query_map(params![tenant.as_str(), after, limit as i64], |r| doc_from_row(r, 0))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            docs.into_iter().collect()
        })
        .await
    }

    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>> {
        self.read(move |tx, tenant, _| {
            let page = crate::ChunkPage {
                after_index,
                limit,
                vectors: true,
            };
            Ok(load_chunks(tx, tenant, &id.to_string(), page)?
                .into_iter()
                .map(|(chunk, embedding)| ExportedChunk { chunk, embedding })
                .collect())
        })
        .await
    }
}

/// Drops optional words that occur in more than half of the tenant's chunks.
/// BM25 gives such words a non-positive IDF (FTS5 clamps it to 1e-6), so they
/// cannot change a ranking — but they would make every chunk a match that has
/// to be scored. Only the tenant's own statistics are consulted.
fn prune_common_terms(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    tno: i64,
    query: &mut TextQuery,
) -> StoreResult<()> {
    if !query.must.is_empty() || query.should.len() < 2 {
        return Ok(());
    }
    let rows: i64 = tx
        .query_row(
            "SELECT chunk_rows FROM tenants WHERE tenant_id = ?1",
            [tenant.as_str()],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let table = fts_table(tno);
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM {table} WHERE {table} MATCH ?1"
        ))
        .map_err(sql_err)?;
    let mut dfs = Vec::with_capacity(query.should.len());
    for w in &query.should {
        let q = sql::fts_query(&TextQuery {
            should: vec![w.clone()],
            ..Default::default()
        })
        .expect("one word");
        let df: i64 = stmt.query_row([q], |r| r.get(0)).map_err(sql_err)?;
        dfs.push(df);
    }
    if dfs.iter().all(|&df| 2 * df > rows) {
        // Keep the rarest so the query still matches what it can.
        let rarest = dfs
            .iter()
            .enumerate()
            .min_by_key(|(_, df)| **df)
            .map(|(i, _)| i)
            .unwrap_or(0);
        query.should = vec![query.should[rarest].clone()];
        return Ok(());
    }
    let mut i = 0;
    query.should.retain(|_| {
        let keep = 2 * dfs[i] <= rows;
        i += 1;
        keep
    });
    Ok(())
}

#[allow(non_snake_case)]
fn SqliteStore_file_exists(inner: &Inner, tenant: &TenantId) -> bool {
    inner.files.lock().contains_key(tenant)
        || super::SqliteStore::tenant_file_exists(&inner.opts.dir, tenant)
}

/// A document's searchable chunks in order, with their vectors.
fn load_chunks(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    id: &str,
    page: crate::ChunkPage,
) -> StoreResult<Vec<(ChunkInfo, Vec<f32>)>> {
    let mut stmt = tx
        .prepare_cached(if page.vectors {
            "SELECT c.chunk_id, c.idx, c.content, c.token_count, c.metadata, c.parent_idx, v.embedding \
             FROM chunks c LEFT JOIN vectors v ON v.tenant_id = c.tenant_id AND v.chunk_no = c.chunk_no \
             WHERE c.tenant_id = ?1 AND c.document_id = ?2 AND c.kind = 0 AND c.idx > ?3 ORDER BY c.idx LIMIT ?4"
        } else {
            "SELECT c.chunk_id, c.idx, c.content, c.token_count, c.metadata, c.parent_idx, NULL \
             FROM chunks c \
             WHERE c.tenant_id = ?1 AND c.document_id = ?2 AND c.kind = 0 AND c.idx > ?3 ORDER BY c.idx LIMIT ?4"
        })
        .map_err(sql_err)?;
    let after = page.after_index.map_or(-1, i64::from);
    let rows = stmt
        .query_map(
            params![tenant.as_str(), id, after, i64::from(page.limit)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            },
        )
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (cid, idx, content, tokens, meta, parent, blob) = row.map_err(sql_err)?;
        let mut v = Vec::new();
        if let Some(b) = blob {
            decode_vector(&b, &mut v)?;
        }
        out.push((
            ChunkInfo {
                chunk_id: ChunkId::parse(&cid).map_err(|e| internal("chunk_id")(e.to_string()))?,
                index: idx as u32,
                content,
                token_count: tokens as u32,
                metadata: parse_map(&meta)?,
                parent_index: parent.map(|p| p as u32),
            },
            v,
        ));
    }
    Ok(out)
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let conv = |e: enclave_core::InvalidInput| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    let origin: Option<String> = r.get(5)?;
    let metadata: String = r.get(6)?;
    let created: String = r.get(7)?;
    Ok(Message {
        session_id: SessionId::parse(&r.get::<_, String>(0)?).map_err(conv)?,
        seq: r.get(1)?,
        message_id: MessageId::parse(&r.get::<_, String>(2)?).map_err(conv)?,
        role: r
            .get::<_, String>(3)?
            .parse::<MessageRole>()
            .map_err(conv)?,
        content: r.get(4)?,
        origin: origin
            .as_deref()
            .map(Origin::parse)
            .transpose()
            .map_err(conv)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at: parse_ts(&created).unwrap_or_default(),
    })
}
