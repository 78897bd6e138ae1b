//! The tenant-scoped store on PostgreSQL (shared isolation mode).
//!
//! Every unit of work is a transaction that first runs
//! `set_config('app.tenant_id', $tenant, true)`, so row-level security binds
//! it to the handle's tenant; every statement also states `tenant_id = $1`
//! (defence in depth, and what makes the indexes usable).
//!
//! Vector search is exact (`ORDER BY embedding <=> $q`), so recall is 1.0 for
//! every tenant size; choosing index scans for large tenants is the next step.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::filter::{Condition, FilterOp, Scalar};
use enclave_core::query::TextQuery;
use enclave_core::{
    ChunkId, ChunkInfo, Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch,
    ExportedChunk, ExportedDocument, Origin, Statistics, TenantId,
};
use enclave_store::{
    dedupe_key, Candidate, ChunkKey, DocumentPage, DocumentRecord, ExistingDocument, HitRow,
    ListQuery, PutOutcome, Store, StoreError, StoreResult, TenantStore,
};
use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::{check_app_role, PgError};

/// PostgreSQL store, shared mode. Connects as the app role.
pub struct PgStore {
    pool: PgPool,
    dims: usize,
}

impl PgStore {
    /// Connects and refuses a role that row-level security would not bind.
    pub async fn connect(url: &str, dims: usize, max_connections: u32) -> Result<Self, PgError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await?;
        check_app_role(&pool).await?;
        Ok(Self { pool, dims })
    }
}

impl Store for PgStore {
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantStore> {
        Arc::new(PgTenant {
            pool: self.pool.clone(),
            tenant: id.clone(),
            dims: self.dims,
        })
    }
    fn dimensions(&self) -> usize {
        self.dims
    }
}

struct PgTenant {
    pool: PgPool,
    tenant: TenantId,
    dims: usize,
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("another document in this origin already has that name".into())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn vector_literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

fn parse_vector(s: &str) -> StoreResult<Vec<f32>> {
    s.trim_matches(['[', ']'])
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|e| StoreError::Internal(format!("vector: {e}")))
        })
        .collect()
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
    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(self.tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(tx)
    }

    fn t(&self) -> String {
        self.tenant.as_str().to_owned()
    }
}

async fn load_document(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    id: DocumentId,
) -> StoreResult<Option<DocumentInfo>> {
    let row = sqlx::query(&format!(
        "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = $1 AND d.document_id = $2"
    ))
    .bind(tenant)
    .bind(uuid_of(id))
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    row.map(|r| doc_from_row(&r)).transpose()
}

async fn load_chunks(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    id: DocumentId,
) -> StoreResult<Vec<(ChunkInfo, Vec<f32>)>> {
    let rows = sqlx::query(
        "SELECT chunk_id, idx, content, token_count, metadata, parent_idx, embedding::text AS embedding FROM chunks \
         WHERE tenant_id = $1 AND document_id = $2 AND kind = 0 ORDER BY idx",
    )
    .bind(tenant)
    .bind(uuid_of(id))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            let cid: sqlx::types::Uuid = r.try_get("chunk_id").map_err(db_err)?;
            let meta: Value = r.try_get("metadata").map_err(db_err)?;
            let emb: Option<String> = r.try_get("embedding").map_err(db_err)?;
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
                emb.as_deref()
                    .map(parse_vector)
                    .transpose()?
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

#[async_trait::async_trait]
impl TenantStore for PgTenant {
    async fn find_by_key(&self, key: &str) -> StoreResult<Option<ExistingDocument>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT document_id, content_hash, chunk_count, token_count, created_at FROM documents WHERE tenant_id = $1 AND dedupe_key = $2")
            .bind(self.t())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.map(|r| {
            let id: sqlx::types::Uuid = r.try_get(0).map_err(db_err)?;
            Ok(ExistingDocument {
                document_id: DocumentId::parse(&id.hyphenated().to_string())
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                content_hash: r.try_get(1).map_err(db_err)?,
                chunk_count: r.try_get::<i32, _>(2).map_err(db_err)? as u64,
                token_count: r.try_get::<i64, _>(3).map_err(db_err)? as u64,
                created_at: r.try_get(4).map_err(db_err)?,
            })
        })
        .transpose()
    }

    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        if let Some(bad) = doc.chunks.iter().find(|c| c.embedding.len() != self.dims) {
            return Err(StoreError::Invalid(format!(
                "chunk {} has a {}-dimensional embedding; this store holds {}-dimensional vectors",
                bad.index,
                bad.embedding.len(),
                self.dims
            )));
        }
        let t = self.t();
        let mut tx = self.begin().await?;
        // The tenant's directory row, created with its first document.
        sqlx::query("INSERT INTO tenants (tenant_id, slug, name) VALUES ($1, 't' || substr(md5($1), 1, 24), $1) ON CONFLICT (tenant_id) DO NOTHING")
            .bind(&t)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let existing: Option<sqlx::types::Uuid> = sqlx::query_scalar(
            "SELECT document_id FROM documents WHERE tenant_id = $1 AND dedupe_key = $2 FOR UPDATE",
        )
        .bind(&t)
        .bind(&doc.dedupe_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let token_count: i64 = doc.chunks.iter().map(|c| c.token_count as i64).sum();
        let metadata = Value::Object(doc.metadata.clone());
        let (id, outcome) = match existing {
            Some(id) => {
                sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
                    .bind(&t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query(
                    "UPDATE documents SET name = $3, doc_type = $4, origin = $5, external_id = $6, metadata = $7, content_hash = $8, \
                     size_bytes = $9, chunk_count = $10, token_count = $11, document_date = $12, updated_at = $13 \
                     WHERE tenant_id = $1 AND document_id = $2",
                )
                .bind(&t).bind(id).bind(&doc.name).bind(doc.doc_type.as_str()).bind(doc.origin.as_ref().map(|o| o.as_str()))
                .bind(&doc.external_id).bind(&metadata).bind(&doc.content_hash).bind(doc.size_bytes as i64)
                .bind(doc.chunks.len() as i32).bind(token_count).bind(doc.document_date).bind(doc.now)
                .execute(&mut *tx).await.map_err(db_err)?;
                (id, PutOutcome::Replaced)
            }
            None => {
                let id = uuid_of(doc.document_id);
                sqlx::query(
                    "INSERT INTO documents (tenant_id, document_id, dedupe_key, name, doc_type, origin, external_id, metadata, content_hash, \
                     size_bytes, chunk_count, token_count, document_date, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
                )
                .bind(&t).bind(id).bind(&doc.dedupe_key).bind(&doc.name).bind(doc.doc_type.as_str()).bind(doc.origin.as_ref().map(|o| o.as_str()))
                .bind(&doc.external_id).bind(&metadata).bind(&doc.content_hash).bind(doc.size_bytes as i64)
                .bind(doc.chunks.len() as i32).bind(token_count).bind(doc.document_date).bind(doc.now)
                .execute(&mut *tx).await.map_err(db_err)?;
                (id, PutOutcome::Created)
            }
        };
        // All chunks (sections first) in one statement from arrays.
        let mut ids = Vec::new();
        let mut kinds = Vec::new();
        let mut idxs = Vec::new();
        let mut contents = Vec::new();
        let mut tokens = Vec::new();
        let mut metas = Vec::new();
        let mut parents: Vec<Option<i32>> = Vec::new();
        let mut vectors: Vec<Option<String>> = Vec::new();
        for s in &doc.sections {
            ids.push(ChunkId::new().as_uuid());
            kinds.push(1i16);
            idxs.push(s.index as i32);
            contents.push(s.content.clone());
            tokens.push(s.token_count as i32);
            metas.push(Value::Object(Map::new()));
            parents.push(None);
            vectors.push(None);
        }
        for c in &doc.chunks {
            ids.push(c.chunk_id.as_uuid());
            kinds.push(0i16);
            idxs.push(c.index as i32);
            contents.push(c.content.clone());
            tokens.push(c.token_count as i32);
            metas.push(Value::Object(c.metadata.clone()));
            parents.push(c.parent_index.map(|p| p as i32));
            vectors.push(Some(vector_literal(&c.embedding)));
        }
        sqlx::query(
            "INSERT INTO chunks (tenant_id, chunk_id, document_id, kind, idx, content, token_count, metadata, parent_idx, embedding) \
             SELECT $1, u.id, $2, u.kind, u.idx, u.content, u.tokens, u.meta, u.parent, u.vec::vector \
             FROM unnest($3::uuid[], $4::int2[], $5::int4[], $6::text[], $7::int4[], $8::jsonb[], $9::int4[], $10::text[]) \
                  AS u(id, kind, idx, content, tokens, meta, parent, vec)",
        )
        .bind(&t).bind(id).bind(&ids).bind(&kinds).bind(&idxs).bind(&contents).bind(&tokens).bind(&metas).bind(&parents).bind(&vectors)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let id = DocumentId::parse(&id.hyphenated().to_string())
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok((id, outcome))
    }

    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        if query.len() != self.dims {
            return Err(StoreError::Invalid(format!(
                "query vector has {} dimensions; this store holds {}",
                query.len(),
                self.dims
            )));
        }
        let q = vector_literal(query);
        let mut qb = QueryBuilder::<Postgres>::new("SELECT c.chunk_no, 1 - (c.embedding <=> ");
        qb.push_bind(q.clone()).push("::vector) AS s FROM chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id WHERE c.tenant_id = ");
        qb.push_bind(self.t()).push(" AND c.kind = 0");
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY c.embedding <=> ")
            .push_bind(q)
            .push("::vector, c.chunk_no LIMIT ")
            .push_bind(k as i64);
        let mut tx = self.begin().await?;
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    key: r.try_get(0).map_err(db_err)?,
                    score: r.try_get(1).map_err(db_err)?,
                })
            })
            .collect()
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
            "SELECT c.chunk_no, ts_rank_cd(c.tsv, q)::float8 AS s FROM to_tsquery('english', ",
        );
        qb.push_bind(tsq).push(") q, chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id WHERE c.tenant_id = ");
        qb.push_bind(self.t())
            .push(" AND c.kind = 0 AND c.tsv @@ q");
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY s DESC, c.chunk_no LIMIT ")
            .push_bind(k as i64);
        let mut tx = self.begin().await?;
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    key: r.try_get(0).map_err(db_err)?,
                    score: r.try_get(1).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        let mut tx = self.begin().await?;
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
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin().await?;
        let mut count =
            QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM documents d WHERE d.tenant_id = ");
        count.push_bind(self.t());
        push_filter(&mut count, &q.filter);
        let total: i64 = count
            .build()
            .fetch_one(&mut *tx)
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
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
        let mut tx = self.begin().await?;
        let Some(info) = load_document(&mut tx, &t, id).await? else {
            return Ok(None);
        };
        let chunks = if include_chunks {
            Some(
                load_chunks(&mut tx, &t, id)
                    .await?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect(),
            )
        } else {
            None
        };
        tx.commit().await.map_err(db_err)?;
        Ok(Some(Document { info, chunks }))
    }

    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        let t = self.t();
        let mut tx = self.begin().await?;
        let Some(current) = load_document(&mut tx, &t, id).await? else {
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
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let out = load_document(&mut tx, &t, id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        let ids: Vec<sqlx::types::Uuid> = ids.iter().map(|i| uuid_of(*i)).collect();
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND document_id = ANY($2)")
            .bind(self.t())
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(chunk_count), 0)::int8, COALESCE(SUM(size_bytes), 0)::int8, COALESCE(SUM(token_count), 0)::int8 \
             FROM documents WHERE tenant_id = $1",
        )
        .bind(self.t())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let by_type: Vec<(String, i64)> = sqlx::query_as(
            "SELECT doc_type, COUNT(*) FROM documents WHERE tenant_id = $1 GROUP BY doc_type",
        )
        .bind(self.t())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Statistics {
            document_count: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
            chunk_count: r.try_get::<i64, _>(1).map_err(db_err)? as u64,
            total_size_bytes: r.try_get::<i64, _>(2).map_err(db_err)? as u64,
            total_tokens: r.try_get::<i64, _>(3).map_err(db_err)? as u64,
            by_type: by_type.into_iter().map(|(t, n)| (t, n as u64)).collect(),
        })
    }

    async fn export_page(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedDocument>> {
        let t = self.t();
        let mut tx = self.begin().await?;
        let after = after.map(uuid_of).unwrap_or_else(sqlx::types::Uuid::nil);
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM documents d WHERE d.tenant_id = $1 AND d.document_id > $2 ORDER BY d.document_id LIMIT $3"
        ))
        .bind(&t)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let info = doc_from_row(r)?;
            let chunks = load_chunks(&mut tx, &t, info.document_id)
                .await?
                .into_iter()
                .map(|(chunk, embedding)| ExportedChunk { chunk, embedding })
                .collect();
            out.push(ExportedDocument { info, chunks });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }
}
