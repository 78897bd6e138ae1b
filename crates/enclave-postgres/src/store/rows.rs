//! Row mapping and the errors of sqlx, shared by every part of the store.

use enclave_core::{ChunkId, ChunkInfo, DocumentId, DocumentInfo, Origin};
use enclave_store::{StoreError, StoreResult};
use pgvector::Vector;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::Row;

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

pub(super) const DOC_COLS: &str =
    "d.document_id, d.name, d.doc_type, d.origin, d.external_id, d.metadata, \
    d.size_bytes, d.chunk_count, d.token_count, d.document_date, d.created_at, d.updated_at";

pub(super) fn doc_from_row(r: &PgRow) -> StoreResult<DocumentInfo> {
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

pub(super) fn uuid_of(id: DocumentId) -> sqlx::types::Uuid {
    id.as_uuid()
}

pub(super) async fn load_document(
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

pub(super) async fn load_chunks(
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
