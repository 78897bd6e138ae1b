//! The candidate and hydration queries of a search (fusion is done above
//! every backend).

use enclave_core::{ChunkId, DocumentFilter};
use enclave_store::{Candidate, ChunkKey, HitRow, StoreError, StoreResult};
use pgvector::Vector;
use sqlx::Row;

use super::rows::{db_err, doc_from_row, DOC_COLS};
use super::tx::READ;
use super::vector::VectorStrategy;
use super::PgTenant;

pub(super) async fn vector_candidates(
    store: &PgTenant,
    query: &[f32],
    filter: &DocumentFilter,
    k: usize,
) -> StoreResult<Vec<Candidate>> {
    if query.len() != store.inner.dims {
        return Err(StoreError::Invalid(format!(
            "query vector has {} dimensions; this store holds {}",
            query.len(),
            store.inner.dims
        )));
    }
    let q = Vector::from(query.to_vec());
    let mut tx = store.begin(READ).await?;
    let strategy = store.vector_strategy(&mut tx, filter).await?;
    if strategy == VectorStrategy::Index {
        let found = store.index_scan(&mut tx, &q, filter, k).await?;
        if found.len() >= k {
            tx.commit().await?;
            return Ok(found);
        }
        // The filter let fewer than k chunks through the scan's budget:
        // only the exact scan knows whether more exist.
    }
    let found = store.exact_scan(&mut tx, &q, filter, k).await?;
    tx.commit().await?;
    Ok(found)
}

pub(super) async fn hydrate(store: &PgTenant, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
    let mut tx = store.begin(READ).await?;
    let rows = sqlx::query(&format!(
        "SELECT c.chunk_no, c.chunk_id, c.idx, c.content, p.content AS parent_content, {DOC_COLS} \
         FROM unnest($2::int8[]) AS k(no) \
         JOIN chunks c ON c.tenant_id = $1 AND c.chunk_no = k.no \
         JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
         LEFT JOIN chunks p ON p.tenant_id = c.tenant_id AND p.document_id = c.document_id AND p.kind = 1 AND p.idx = c.parent_idx \
         WHERE c.kind = 0"
    ))
    .bind(store.t())
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
