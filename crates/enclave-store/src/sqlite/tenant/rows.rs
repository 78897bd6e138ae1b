//! Row mapping shared by the tenant store's parts.

use enclave_core::{
    ChunkId, ChunkInfo, DocumentId, DocumentInfo, Message, MessageId, MessageRole, Origin,
    SessionId, TenantId,
};
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde_json::{Map, Value};

use super::fts_table;
use super::vectors::decode_vector;
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::parse_ts;
use crate::{StoreError, StoreResult};

pub(super) const DOC_COLS: &str =
    "d.document_id, d.name, d.doc_type, d.origin, d.external_id, d.metadata, \
    d.size_bytes, d.chunk_count, d.token_count, d.document_date, d.created_at, d.updated_at";

pub(super) fn internal(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Internal(format!("{what}: {e}"))
}

pub(super) fn doc_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<StoreResult<DocumentInfo>> {
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

pub(super) fn parse_map(s: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| internal("metadata")(e.to_string()))
}

pub(super) fn json(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

/// Removes a document's chunks, vectors and text index entries.
pub(super) fn delete_document_rows(
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

pub(super) fn load_document(
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

/// A document's searchable chunks in order, with their vectors.
pub(super) fn load_chunks(
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

pub(super) fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
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
