//! Writing documents: dedupe lookups and one transaction per batch with
//! every chunk in one `INSERT … SELECT FROM unnest(…)`.

use enclave_core::{ChunkId, DocumentId};
use enclave_store::{
    DocumentRecord, ExistingDocument, PutOutcome, StoreError, StoreResult, TenantStore,
};
use pgvector::Vector;
use serde_json::{Map, Value};
use sqlx::Row;

use super::rows::{db_err, uuid_of};
use super::tx::{READ, WRITE};
use super::PgTenant;

/// Column arrays for one `INSERT … SELECT FROM unnest(…)` of many chunks
/// (sections first within each document).
#[derive(Default)]
pub(super) struct ChunkRows {
    pub(super) ids: Vec<sqlx::types::Uuid>,
    pub(super) docs: Vec<sqlx::types::Uuid>,
    pub(super) kinds: Vec<i16>,
    pub(super) idxs: Vec<i32>,
    pub(super) contents: Vec<String>,
    pub(super) tokens: Vec<i32>,
    pub(super) metas: Vec<Value>,
    pub(super) parents: Vec<Option<i32>>,
    pub(super) vectors: Vec<Option<Vector>>,
    /// `tsvector` literals of the analyzed terms (searchable chunks only).
    pub(super) tsvs: Vec<Option<String>>,
    /// Terms in the chunk: BM25's document length.
    pub(super) tlens: Vec<Option<i32>>,
}

impl ChunkRows {
    pub(super) fn push(
        &mut self,
        doc_id: sqlx::types::Uuid,
        doc: &DocumentRecord,
        analyzer: &enclave_core::analyze::Analyzer,
    ) {
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
            self.tsvs.push(None);
            self.tlens.push(None);
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
            let terms = analyzer.terms(&c.content);
            self.tlens.push(Some(terms.len() as i32));
            self.tsvs.push(Some(tsvector_literal(&terms)));
        }
    }

    pub(super) fn row(
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
    pub(super) fn forget(&mut self, doc: sqlx::types::Uuid) {
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
        retain(&mut self.tsvs, &keep);
        retain(&mut self.tlens, &keep);
    }
}

/// The `tsvector` input form of a chunk's terms, with their 1-based
/// positions: cast with `::tsvector`, it is taken as written — PostgreSQL
/// neither parses nor stems it again, so it holds exactly the analyzer's
/// terms. (A tsvector keeps at most 256 positions per term and positions up
/// to 16,383; past those a term's count or position saturates.)
pub(super) fn tsvector_literal(terms: &[String]) -> String {
    let mut positions: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, t) in terms.iter().enumerate() {
        let p = positions.entry(t.as_str()).or_default();
        if p.len() < 256 {
            p.push((i + 1).min(16_383));
        }
    }
    let mut out = String::with_capacity(terms.len() * 10);
    for (term, ps) in positions {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('\'');
        for ch in term.chars() {
            if ch == '\'' || ch == '\\' {
                out.push(ch);
            }
            out.push(ch);
        }
        out.push_str("':");
        let list: Vec<String> = ps.iter().map(usize::to_string).collect();
        out.push_str(&list.join(","));
    }
    out
}

/// Adds (`sign` 1) or removes (`sign` -1) the searchable chunks of `docs`
/// to or from the tenant's BM25 statistics, in the writing transaction:
/// each term's document frequency, and under the empty term the chunk count
/// (`df`) and their total length (`tokens`). Rows are touched in term
/// order, so two writers of one tenant never deadlock on them.
pub(super) async fn adjust_text_stats(
    db: &mut sqlx::PgConnection,
    tenant: &str,
    docs: &[sqlx::types::Uuid],
    sign: i64,
) -> StoreResult<()> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO text_stats AS s (tenant_id, lexeme, df, tokens) \
         SELECT $1, x.lexeme, $3 * x.df, $3 * x.tokens FROM ( \
             SELECT u.lexeme, count(*) AS df, 0::int8 AS tokens \
             FROM chunks c, unnest(c.tsv) u \
             WHERE c.tenant_id = $1 AND c.document_id = ANY($2) AND c.kind = 0 GROUP BY u.lexeme \
             UNION ALL \
             SELECT '', count(*), COALESCE(sum(c.tlen), 0)::int8 \
             FROM chunks c WHERE c.tenant_id = $1 AND c.document_id = ANY($2) AND c.kind = 0 \
         ) x ORDER BY x.lexeme \
         ON CONFLICT (tenant_id, lexeme) DO UPDATE SET df = s.df + EXCLUDED.df, tokens = s.tokens + EXCLUDED.tokens \
         RETURNING s.lexeme, s.df",
    )
    .bind(tenant)
    .bind(docs)
    .bind(sign)
    .fetch_all(&mut *db)
    .await
    .map_err(db_err)?;
    // A term no chunk holds any more leaves no row (a purged tenant leaves
    // none at all).
    let gone: Vec<String> = rows
        .into_iter()
        .filter(|(_, df)| *df <= 0)
        .map(|(l, _)| l)
        .collect();
    if !gone.is_empty() {
        sqlx::query("DELETE FROM text_stats WHERE tenant_id = $1 AND lexeme = ANY($2) AND df <= 0")
            .bind(tenant)
            .bind(&gone)
            .execute(&mut *db)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

pub(super) async fn find_by_keys(
    store: &PgTenant,
    keys: &[String],
) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let mut tx = store.begin(READ).await?;
    let rows = sqlx::query("SELECT dedupe_key, document_id, content_hash, chunk_count, token_count, created_at FROM documents WHERE tenant_id = $1 AND dedupe_key = ANY($2)")
        .bind(store.t())
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

pub(super) async fn put_document(
    store: &PgTenant,
    doc: DocumentRecord,
) -> StoreResult<(DocumentId, PutOutcome)> {
    let mut out = store.put_documents(vec![doc]).await?;
    out.pop()
        .ok_or_else(|| StoreError::Internal("no result for the document".into()))
}

/// The whole batch in one transaction: a directory check, one statement
/// (two when replacing) per document, and one INSERT for every chunk.
pub(super) async fn put_documents(
    store: &PgTenant,
    docs: Vec<DocumentRecord>,
) -> StoreResult<Vec<(DocumentId, PutOutcome)>> {
    for doc in &docs {
        if let Some(bad) = doc
            .chunks
            .iter()
            .find(|c| c.embedding.len() != store.inner.dims)
        {
            return Err(StoreError::Invalid(format!(
                "chunk {} has a {}-dimensional embedding; this store holds {}-dimensional vectors",
                bad.index,
                bad.embedding.len(),
                store.inner.dims
            )));
        }
    }
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let t = store.t();
    let mut tx = store.begin(WRITE).await?;
    tx.may_add(store.inner.opts.require_directory)?;
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
            adjust_text_stats(tx.db(), &t, &[id], -1).await?;
            sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
                .bind(&t)
                .bind(id)
                .execute(tx.db())
                .await
                .map_err(db_err)?;
            // A document replaced earlier in this batch loses its rows too.
            rows.forget(id);
        }
        rows.push(id, doc, &store.inner.analyzer);
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
        "INSERT INTO chunks (tenant_id, chunk_id, document_id, kind, idx, content, token_count, metadata, parent_idx, embedding, tsv, tlen) \
         SELECT $1, u.id, u.doc, u.kind, u.idx, u.content, u.tokens, u.meta, u.parent, u.vec, u.tsv::tsvector, u.tlen \
         FROM unnest($2::uuid[], $3::uuid[], $4::int2[], $5::int4[], $6::text[], $7::int4[], $8::jsonb[], $9::int4[], $10::vector[], $11::text[], $12::int4[]) \
              AS u(id, doc, kind, idx, content, tokens, meta, parent, vec, tsv, tlen)",
    )
    .bind(&t).bind(&rows.ids).bind(&rows.docs).bind(&rows.kinds).bind(&rows.idxs).bind(&rows.contents).bind(&rows.tokens)
    .bind(&rows.metas).bind(&rows.parents).bind(&rows.vectors).bind(&rows.tsvs).bind(&rows.tlens)
    .execute(tx.db())
    .await
    .map_err(db_err)?;
    let mut written: Vec<sqlx::types::Uuid> = rows.docs.clone();
    written.dedup();
    adjust_text_stats(tx.db(), &t, &written, 1).await?;
    tx.commit().await?;
    Ok(out)
}
