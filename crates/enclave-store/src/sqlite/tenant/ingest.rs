//! Writing documents: dedupe lookups and one write transaction per batch.

use enclave_core::{ChunkId, DocumentId};
use rusqlite::{params, OptionalExtension};

use super::rows::{delete_document_rows, internal, json};
use super::vectors::encode_vector;
use super::{ensure_tenant, fts_table, SqliteTenant};
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::{parse_ts, ts};
use crate::{DocumentRecord, ExistingDocument, PutOutcome, StoreError, StoreResult};

pub(super) async fn find_by_keys(
    store: &SqliteTenant,
    keys: &[String],
) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
    let keys = keys.to_vec();
    store.read(move |tx, tenant, _| {
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

pub(super) async fn put_document(
    store: &SqliteTenant,
    doc: DocumentRecord,
) -> StoreResult<(DocumentId, PutOutcome)> {
    let dims = store.inner.opts.dimensions;
    if let Some(bad) = doc.chunks.iter().find(|c| c.embedding.len() != dims) {
        return Err(StoreError::Invalid(format!(
            "chunk {} has a {}-dimensional embedding; this store holds {dims}-dimensional vectors",
            bad.index,
            bad.embedding.len()
        )));
    }
    let inner = store.inner.clone();
    store.write(move |tx, tenant| {
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
                ins_fts
                    .execute(params![next, inner.analyzer.terms(&c.content).join(" ")])
                    .map_err(sql_err)?;
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
