//! Listing, reading, changing, deleting, counting and exporting documents.

use chrono::{DateTime, Utc};
use enclave_core::{Document, DocumentId, DocumentInfo, DocumentPatch, ExportedChunk, Statistics};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension};

use super::rows::{delete_document_rows, doc_from_row, json, load_chunks, load_document, DOC_COLS};
use super::{tenant_no, SqliteStore_file_exists, SqliteTenant};
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::{self, ts};
use crate::{dedupe_key, DocumentPage, ListQuery, StoreError, StoreResult};

pub(super) async fn list_documents(
    store: &SqliteTenant,
    q: &ListQuery,
) -> StoreResult<DocumentPage> {
    let q = q.clone();
    store.read(move |tx, tenant, _| {
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

pub(super) async fn get_document(
    store: &SqliteTenant,
    id: DocumentId,
    include_chunks: bool,
) -> StoreResult<Option<Document>> {
    store
        .read(move |tx, tenant, _| {
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

pub(super) async fn update_document(
    store: &SqliteTenant,
    id: DocumentId,
    patch: &DocumentPatch,
    now: DateTime<Utc>,
) -> StoreResult<Option<DocumentInfo>> {
    let patch = patch.clone();
    store.write(move |tx, tenant| {
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

pub(super) async fn delete_documents(store: &SqliteTenant, ids: &[DocumentId]) -> StoreResult<u64> {
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let exists = {
        let inner = store.inner.clone();
        let tenant = store.tenant.clone();
        inner.shared.is_some() || SqliteStore_file_exists(&inner, &tenant)
    };
    if !exists {
        return Ok(0);
    }
    store.write(move |tx, tenant| {
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

pub(super) async fn statistics(store: &SqliteTenant) -> StoreResult<Statistics> {
    store.read(move |tx, tenant, _| {
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

pub(super) async fn export_documents(
    store: &SqliteTenant,
    after: Option<DocumentId>,
    limit: u32,
) -> StoreResult<Vec<DocumentInfo>> {
    store.read(move |tx, tenant, _| {
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

pub(super) async fn export_chunks(
    store: &SqliteTenant,
    id: DocumentId,
    after_index: Option<u32>,
    limit: u32,
) -> StoreResult<Vec<ExportedChunk>> {
    store
        .read(move |tx, tenant, _| {
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
