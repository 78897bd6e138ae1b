//! Listing, reading, changing, deleting, counting and exporting documents.

use chrono::{DateTime, Utc};
use enclave_core::{Document, DocumentId, DocumentInfo, DocumentPatch, ExportedChunk, Statistics};
use enclave_store::{dedupe_key, DocumentPage, ListQuery, StoreResult};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder, Row};

use super::rows::{db_err, doc_from_row, load_chunks, load_document, uuid_of, DOC_COLS};
use super::sql::push_filter;
use super::tx::{READ, WRITE};
use super::PgTenant;

pub(super) async fn list_documents(store: &PgTenant, q: &ListQuery) -> StoreResult<DocumentPage> {
    let mut tx = store.begin(READ).await?;
    let mut count =
        QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM documents d WHERE d.tenant_id = ");
    count.push_bind(store.t());
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
    qb.push_bind(store.t());
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

pub(super) async fn get_document(
    store: &PgTenant,
    id: DocumentId,
    include_chunks: bool,
) -> StoreResult<Option<Document>> {
    let t = store.t();
    let mut tx = store.begin(READ).await?;
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

pub(super) async fn update_document(
    store: &PgTenant,
    id: DocumentId,
    patch: &DocumentPatch,
    now: DateTime<Utc>,
) -> StoreResult<Option<DocumentInfo>> {
    let t = store.t();
    let mut tx = store.begin(WRITE).await?;
    tx.may_add(store.inner.opts.require_directory)?;
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

pub(super) async fn delete_documents(store: &PgTenant, ids: &[DocumentId]) -> StoreResult<u64> {
    let ids: Vec<sqlx::types::Uuid> = ids.iter().map(|i| uuid_of(*i)).collect();
    let mut tx = store.begin(WRITE).await?;
    // The document rows first: deleting them waits for (and then sees)
    // any transaction re-indexing them. The chunks go in a second
    // statement, whose fresh snapshot includes chunks such a transaction
    // committed (chunks have no foreign key; migration 0008).
    let gone: Vec<sqlx::types::Uuid> = sqlx::query_scalar(
        "DELETE FROM documents WHERE tenant_id = $1 AND document_id = ANY($2) RETURNING document_id",
    )
    .bind(store.t())
    .bind(&ids)
    .fetch_all(tx.db())
    .await
    .map_err(db_err)?;
    if !gone.is_empty() {
        super::ingest::adjust_text_stats(tx.db(), &store.t(), &gone, -1).await?;
        sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = ANY($2)")
            .bind(store.t())
            .bind(&gone)
            .execute(tx.db())
            .await
            .map_err(db_err)?;
    }
    tx.commit().await?;
    Ok(gone.len() as u64)
}

pub(super) async fn statistics(store: &PgTenant) -> StoreResult<Statistics> {
    let mut tx = store.begin(READ).await?;
    let r = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(chunk_count), 0)::int8, COALESCE(SUM(size_bytes), 0)::int8, COALESCE(SUM(token_count), 0)::int8 \
         FROM documents WHERE tenant_id = $1",
    )
    .bind(store.t())
    .fetch_one(tx.db())
    .await
    .map_err(db_err)?;
    let by_type: Vec<(String, i64)> = sqlx::query_as(
        "SELECT doc_type, COUNT(*) FROM documents WHERE tenant_id = $1 GROUP BY doc_type",
    )
    .bind(store.t())
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

pub(super) async fn export_documents(
    store: &PgTenant,
    after: Option<DocumentId>,
    limit: u32,
) -> StoreResult<Vec<DocumentInfo>> {
    let t = store.t();
    let mut tx = store.begin(READ).await?;
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

pub(super) async fn export_chunks(
    store: &PgTenant,
    id: DocumentId,
    after_index: Option<u32>,
    limit: u32,
) -> StoreResult<Vec<ExportedChunk>> {
    let t = store.t();
    let mut tx = store.begin(READ).await?;
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
