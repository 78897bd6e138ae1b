//! The candidate and hydration queries of a search (fusion is done above
//! every backend).

use std::collections::HashSet;

use enclave_core::query::TextQuery;
use enclave_core::{ChunkId, DocumentFilter, TenantId};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Transaction};

use super::rows::{doc_from_row, internal, DOC_COLS};
use super::{fts_table, tenant_no, SqliteTenant};
use crate::sqlite::db::sql_err;
use crate::sqlite::sql;
use crate::{Candidate, ChunkKey, Completion, HitRow, StoreError, StoreResult};

/// Chunk keys of this tenant's searchable chunks whose document passes `filter`.
pub(super) fn allowed_chunks(
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

/// The tenant's searchable chunk count and the document frequency of each
/// of `terms` in its own FTS5 table.
fn term_statistics(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    tno: i64,
    terms: &[&str],
) -> StoreResult<(u64, Vec<u64>)> {
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
    let mut dfs = Vec::with_capacity(terms.len());
    for w in terms {
        let q = sql::fts_query(&TextQuery {
            should: vec![(*w).to_owned()],
            ..Default::default()
        })
        .expect("one word");
        let df: i64 = stmt.query_row([q], |r| r.get(0)).map_err(sql_err)?;
        dfs.push(df.max(0) as u64);
    }
    Ok((rows.max(0) as u64, dfs))
}

/// Keeps the optional terms `enclave_core::bm25::informative_terms`
/// chooses from the tenant's own statistics (its chunk count and each
/// term's document frequency in its own table), as PostgreSQL does.
pub(super) fn prune_common_terms(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    tno: i64,
    query: &mut TextQuery,
) -> StoreResult<()> {
    if !query.must.is_empty() || query.should.is_empty() {
        return Ok(());
    }
    let terms: Vec<&str> = query.should.iter().map(String::as_str).collect();
    let (rows, dfs) = term_statistics(tx, tenant, tno, &terms)?;
    let keep = enclave_core::bm25::informative_terms(&dfs, rows);
    let mut i = 0;
    query.should.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(())
}

/// The most a chunk could score for `query` (analyzed, before pruning):
/// `enclave_core::bm25::ceiling` over its distinct positive terms.
fn text_ceiling(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    tno: i64,
    query: &TextQuery,
) -> StoreResult<f64> {
    let mut terms: Vec<(&str, f64)> = Vec::new();
    for (t, w) in query.weighted_terms() {
        if !terms.iter().any(|(x, _)| *x == t) {
            terms.push((t, w));
        }
    }
    let words: Vec<&str> = terms.iter().map(|(t, _)| *t).collect();
    let (rows, dfs) = term_statistics(tx, tenant, tno, &words)?;
    Ok(enclave_core::bm25::ceiling(dfs.iter().zip(&terms).map(
        |(df, (_, w))| w * enclave_core::bm25::idf(rows, *df),
    )))
}

pub(super) async fn vector_candidates(
    store: &SqliteTenant,
    query: &[f32],
    filter: &DocumentFilter,
    k: usize,
) -> StoreResult<Vec<Candidate>> {
    if query.len() != store.inner.opts.dimensions {
        return Err(StoreError::Invalid(format!(
            "query vector has {} dimensions; this store holds {}",
            query.len(),
            store.inner.opts.dimensions
        )));
    }
    let query = query.to_vec();
    let filter = filter.clone();
    store
        .read(move |tx, tenant, inner| {
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

pub(super) async fn text_candidates(
    store: &SqliteTenant,
    query: &TextQuery,
    filter: &DocumentFilter,
    k: usize,
) -> StoreResult<Vec<Candidate>> {
    if query.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = store.inner.analyzer.query(query);
    if query.is_empty() {
        return Ok(Vec::new());
    }
    let filter = filter.clone();
    store.read(move |tx, tenant, _| {
        let Some(tno) = tenant_no(tx, tenant)? else {
            return Ok(Vec::new());
        };
        prune_common_terms(tx, tenant, tno, &mut query)?;
        let Some(fts) = sql::fts_query(&query) else {
            return Ok(Vec::new());
        };
        let table = fts_table(tno);
        let score = score_expr(&table, &query);
        let (sql, p) = if filter.is_empty() {
            (
                format!("SELECT rowid, {score} AS s FROM {table} WHERE {table} MATCH ? ORDER BY s, rowid LIMIT ?"),
                vec![SqlValue::Text(fts), SqlValue::Integer(k as i64)],
            )
        } else {
            let mut sql = format!(
                "SELECT {table}.rowid, {score} AS s FROM {table} \
                 JOIN chunks c ON c.tenant_id = ? AND c.chunk_no = {table}.rowid \
                 JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
                 WHERE {table} MATCH ? AND d.tenant_id = ?"
            );
            let t = SqlValue::Text(tenant.as_str().into());
            let mut p = vec![t.clone(), SqlValue::Text(fts), t];
            sql::document_filter(&filter, &mut sql, &mut p);
            sql.push_str(&format!(" ORDER BY s, {table}.rowid LIMIT ?"));
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

/// The BM25 expression for `query` over `table`, with its expansion
/// terms' weights (digits, points and commas of our own making: a
/// literal).
fn score_expr(table: &str, query: &TextQuery) -> String {
    let weights = sql::fts_weights(query).map(|w| format!("'{w}'"));
    crate::sqlite::bm25::score_expr(table, weights.as_deref())
}

pub(super) async fn complete_scores(
    store: &SqliteTenant,
    vector: &[f32],
    vector_keys: &[ChunkKey],
    text: &TextQuery,
    text_keys: &[ChunkKey],
) -> StoreResult<Completion> {
    if vector.len() != store.inner.opts.dimensions {
        return Err(StoreError::Invalid(format!(
            "query vector has {} dimensions; this store holds {}",
            vector.len(),
            store.inner.opts.dimensions
        )));
    }
    let mut query = store.inner.analyzer.query(text);
    let vector = vector.to_vec();
    let vector_keys = vector_keys.to_vec();
    let text_keys = serde_json::to_string(text_keys).expect("integers serialize");
    store
        .read(move |tx, tenant, inner| {
            let mut out = Completion::default();
            if !vector_keys.is_empty() {
                let cache = inner.vector_cache(tenant);
                cache.refresh(tx, tenant)?;
                let unload_after = inner.enforce_vector_budget(tenant);
                out.vector = cache
                    .state
                    .read()
                    .set
                    .scores_of(&vector, &vector_keys)
                    .into_iter()
                    .map(|(key, s)| Candidate {
                        key,
                        score: s as f64,
                    })
                    .collect();
                if unload_after {
                    cache.unload();
                }
            }
            let Some(tno) = tenant_no(tx, tenant)? else {
                return Ok(out);
            };
            out.text_ceiling = text_ceiling(tx, tenant, tno, &query)?;
            prune_common_terms(tx, tenant, tno, &mut query)?;
            let Some(fts) = sql::fts_query(&query) else {
                return Ok(out);
            };
            let table = fts_table(tno);
            if text_keys != "[]" {
                // `+rowid`: the keys filter the matches FTS5 finds (one pass
                // over the query's doclists, the statistics computed once),
                // rather than restart the query once per key.
                let score = score_expr(&table, &query);
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT rowid, {score} FROM {table} WHERE {table} MATCH ?1 \
                         AND +rowid IN (SELECT value FROM json_each(?2))"
                    ))
                    .map_err(sql_err)?;
                out.text = stmt
                    .query_map(params![fts, text_keys], |r| {
                        Ok(Candidate {
                            key: r.get(0)?,
                            score: -r.get::<_, f64>(1)?,
                        })
                    })
                    .map_err(sql_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql_err)?;
            }
            Ok(out)
        })
        .await
}

pub(super) async fn hydrate(store: &SqliteTenant, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
    let keys_json = serde_json::to_string(keys).expect("integers serialize");
    store.read(move |tx, tenant, _| {
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
