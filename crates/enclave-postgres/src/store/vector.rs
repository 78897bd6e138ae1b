//! How a vector query is served: exact scan, or the tenant's own HNSW
//! index with iterative scans.

use enclave_core::DocumentFilter;
use enclave_store::{Candidate, StoreResult};
use pgvector::Vector;
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, QueryBuilder, Row};

use crate::placement::sql_literal;

use super::rows::db_err;
use super::sql::push_filter;
use super::tx::Tx;
use super::PgTenant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VectorStrategy {
    Exact,
    Index,
}

pub(super) fn candidates(rows: &[PgRow]) -> StoreResult<Vec<Candidate>> {
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                key: r.try_get(0).map_err(db_err)?,
                score: r.try_get(1).map_err(db_err)?,
            })
        })
        .collect()
}

impl PgTenant {
    /// How this query searches vectors: exact unless the tenant has its own
    /// HNSW index and the filter (if any) leaves many chunks.
    pub(super) async fn vector_strategy(
        &self,
        tx: &mut Tx,
        filter: &DocumentFilter,
    ) -> StoreResult<VectorStrategy> {
        if !tx.vector_index {
            return Ok(VectorStrategy::Exact);
        }
        if filter.is_empty() {
            return Ok(VectorStrategy::Index);
        }
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT COALESCE(SUM(d.chunk_count), 0)::int8 FROM documents d WHERE d.tenant_id = ",
        );
        qb.push_bind(self.t());
        push_filter(&mut qb, filter);
        let matching: i64 = qb
            .build()
            .fetch_one(tx.db())
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        Ok(if matching as u64 > self.inner.opts.exact_scan_max_chunks {
            VectorStrategy::Index
        } else {
            VectorStrategy::Exact
        })
    }

    /// Exact nearest neighbours among the tenant's (filtered) chunks.
    /// `cosine_distance()` rather than `<=>`: no index can serve it, so the
    /// planner reads the tenant's rows through its btree and sorts.
    pub(super) async fn exact_scan(
        &self,
        tx: &mut Tx,
        q: &Vector,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT c.chunk_no, 1 - cosine_distance(c.embedding, ");
        qb.push_bind(q.clone()).push(") AS s FROM chunks c");
        if !filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        qb.push(" WHERE c.tenant_id = ")
            .push_bind(self.t())
            .push(" AND c.kind = 0");
        push_filter(&mut qb, filter);
        // By the output column: each distance is computed once per row.
        // Ties break on the chunk id, which (unlike chunk_no) survives moves.
        qb.push(" ORDER BY s DESC, c.chunk_id LIMIT ")
            .push_bind(k as i64);
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        candidates(&rows)
    }

    /// Approximate nearest neighbours through the tenant's partial HNSW
    /// index (its predicate is `tenant_id = '<tenant>'`, so the tenant is a
    /// literal here), with iterative scans so filters do not starve it, and
    /// the relaxed-order results re-sorted by exact distance.
    pub(super) async fn index_scan(
        &self,
        tx: &mut Tx,
        q: &Vector,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let ef = (self.inner.opts.hnsw_ef_search as usize)
            .max(2 * k)
            .min(1000);
        let settings = format!(
            "SELECT set_config('hnsw.ef_search', '{ef}', true), \
                    set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        );
        tx.db().execute(settings.as_str()).await.map_err(db_err)?;
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT no, 1 - dist AS s FROM (SELECT c.chunk_no AS no, c.chunk_id AS id, c.embedding <=> ",
        );
        qb.push_bind(q.clone()).push(" AS dist FROM chunks c");
        if !filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        qb.push(format!(
            " WHERE c.tenant_id = {} AND c.kind = 0",
            sql_literal(self.tenant.as_str())
        ));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY c.embedding <=> ")
            .push_bind(q.clone())
            .push(format!(" LIMIT {k}) x ORDER BY dist, id"));
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        candidates(&rows)
    }
}
