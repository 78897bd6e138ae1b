//! Full-text candidates ranked by BM25 over the tenant's own statistics
//! (`text_stats`, kept by every write), with the formula and the term
//! pruning of `enclave_core::bm25` — the ranking FTS5 gives the embedded
//! store.
//!
//! The GIN index finds the chunks that hold a query term; each is scored in
//! SQL from its own term frequencies (the query's terms filtered out of its
//! `tsvector`) and its length. Rare terms find the candidates first
//! (MaxScore): a term is only searched for when the chunks holding just the
//! terms left out could still outscore the k-th candidate found, so a
//! query's common terms add to the scores of the candidates without
//! making every chunk of the tenant one.

use std::collections::HashMap;

use enclave_core::bm25::{self, informative_terms};
use enclave_core::query::TextQuery;
use enclave_core::DocumentFilter;
use enclave_store::{Candidate, StoreResult};
use sqlx::{Postgres, QueryBuilder};

use super::rows::db_err;
use super::sql::{push_filter, tsquery};
use super::tx::{Tx, READ};
use super::vector::candidates;
use super::PgTenant;

/// Postings (chunks holding a searched term, summed over terms) a search
/// reads at most before it settles for the candidates found: beyond this
/// the ranking may miss a chunk that holds only the commonest terms.
const MAX_POSTINGS: u64 = 50_000;

/// A query term with its statistics.
struct Term {
    lexeme: String,
    idf: f64,
}

pub(super) async fn text_candidates(
    store: &PgTenant,
    query: &TextQuery,
    filter: &DocumentFilter,
    k: usize,
) -> StoreResult<Vec<Candidate>> {
    let mut query = store.inner.analyzer.query(query);
    if query.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.begin(READ).await?;
    let (chunks, avg_len, dfs) = statistics(store, &mut tx, &query).await?;
    if chunks == 0 {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let df = |t: &str| dfs.get(t).copied().unwrap_or(0);
    if query.must.is_empty() {
        let keep = informative_terms(
            &query.should.iter().map(|t| df(t)).collect::<Vec<_>>(),
            chunks,
        );
        let mut i = 0;
        query.should.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        if query.should.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
    }
    // Every positive term adds to a chunk's score (a phrase's words each
    // as a term), once.
    let mut terms: Vec<Term> = Vec::new();
    for t in query.positive_terms() {
        if !terms.iter().any(|x| x.lexeme == t) {
            terms.push(Term {
                lexeme: t.to_owned(),
                idf: bm25::idf(chunks, df(t)),
            });
        }
    }
    let scoring = Scoring {
        lexemes: terms.iter().map(|t| t.lexeme.clone()).collect(),
        idfs: terms.iter().map(|t| t.idf).collect(),
        avg_len,
        filter,
        k,
    };
    let found = if !query.must.is_empty() {
        // The phrases decide the candidates; nothing to prune.
        let tsq = tsquery(&query).expect("a phrase");
        scoring.run(store, &mut tx, &tsq).await?
    } else {
        max_score(store, &mut tx, &query, &scoring, &dfs).await?
    };
    tx.commit().await?;
    Ok(found)
}

/// The chunk count, the average length and the document frequency of each
/// of the query's terms, from the tenant's `text_stats` rows.
async fn statistics(
    store: &PgTenant,
    tx: &mut Tx,
    query: &TextQuery,
) -> StoreResult<(u64, f64, HashMap<String, u64>)> {
    let mut lookup: Vec<String> = vec![String::new()];
    lookup.extend(query.positive_terms().map(str::to_owned));
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT lexeme, df, tokens FROM text_stats WHERE tenant_id = $1 AND lexeme = ANY($2)",
    )
    .bind(store.t())
    .bind(&lookup)
    .fetch_all(tx.db())
    .await
    .map_err(db_err)?;
    let mut dfs = HashMap::new();
    let (mut chunks, mut tokens) = (0u64, 0u64);
    for (lexeme, df, t) in rows {
        if lexeme.is_empty() {
            chunks = df.max(0) as u64;
            tokens = t.max(0) as u64;
        } else {
            dfs.insert(lexeme, df.max(0) as u64);
        }
    }
    let avg_len = if chunks == 0 {
        1.0
    } else {
        tokens as f64 / chunks as f64
    };
    Ok((chunks, avg_len, dfs))
}

/// Searches with the rarest optional terms first and adds the next ones
/// only while the chunks holding nothing but the terms left out could
/// still rank among the first k.
async fn max_score(
    store: &PgTenant,
    tx: &mut Tx,
    query: &TextQuery,
    scoring: &Scoring<'_>,
    dfs: &HashMap<String, u64>,
) -> StoreResult<Vec<Candidate>> {
    let df = |t: &str| dfs.get(t).copied().unwrap_or(0);
    let mut order: Vec<&String> = query.should.iter().collect();
    order.sort_by_key(|t| (df(t), t.as_str()));
    let idf = |t: &str| {
        scoring
            .lexemes
            .iter()
            .position(|l| l == t)
            .map_or(0.0, |i| scoring.idfs[i])
    };
    let bound_of = |rest: &[&String]| rest.iter().map(|t| bm25::upper_bound(idf(t))).sum::<f64>();
    // Enough rare terms to fill k candidates, to begin with.
    let mut searched = 1;
    let mut postings = df(order[0]);
    while searched < order.len() && postings < scoring.k as u64 {
        postings += df(order[searched]);
        searched += 1;
    }
    loop {
        let essential = TextQuery {
            should: order[..searched].iter().map(|t| (*t).clone()).collect(),
            must: Vec::new(),
            must_not: query.must_not.clone(),
        };
        let tsq = tsquery(&essential).expect("a term");
        let found = scoring.run(store, tx, &tsq).await?;
        if searched == order.len() {
            return Ok(found);
        }
        let threshold = if found.len() >= scoring.k {
            found[scoring.k - 1].score
        } else {
            0.0
        };
        if bound_of(&order[searched..]) <= threshold || postings >= MAX_POSTINGS {
            return Ok(found);
        }
        // Take terms until those left out could not reach the threshold.
        while searched < order.len()
            && (bound_of(&order[searched..]) > threshold || searched == 0)
            && postings < MAX_POSTINGS
        {
            postings += df(order[searched]);
            searched += 1;
        }
    }
}

/// What scores a candidate: the terms with their IDFs and the tenant's
/// average length.
struct Scoring<'a> {
    lexemes: Vec<String>,
    idfs: Vec<f64>,
    avg_len: f64,
    filter: &'a DocumentFilter,
    k: usize,
}

impl Scoring<'_> {
    /// The k best chunks matching `tsq`, by BM25 over every scored term.
    async fn run(&self, store: &PgTenant, tx: &mut Tx, tsq: &str) -> StoreResult<Vec<Candidate>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT c.chunk_no, sum(q.idf * u.tf * ");
        qb.push_bind(bm25::K1 + 1.0)
            .push(" / (u.tf + ")
            .push_bind(bm25::K1)
            .push(" * (1 - ")
            .push_bind(bm25::B)
            .push(" + ")
            .push_bind(bm25::B)
            .push(" * COALESCE(c.tlen, length(c.tsv))::float8 / ")
            .push_bind(self.avg_len)
            .push(")))::float8 AS s FROM chunks c");
        if !self.filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        // The chunk's vector cut down to the query's terms (setweight marks
        // them, ts_filter keeps them), one row per term with its frequency.
        qb.push(
            " CROSS JOIN LATERAL (SELECT f.lexeme, cardinality(f.positions)::float8 AS tf \
             FROM unnest(ts_filter(setweight(c.tsv, 'A', ",
        )
        .push_bind(self.lexemes.clone())
        .push("), '{a}')) f) u JOIN unnest(")
        .push_bind(self.lexemes.clone())
        .push("::text[], ")
        .push_bind(self.idfs.clone())
        .push("::float8[]) AS q(lexeme, idf) ON q.lexeme = u.lexeme WHERE c.tenant_id = ")
        .push_bind(store.t())
        .push(" AND c.kind = 0 AND c.tsv @@ ")
        .push_bind(tsq.to_owned())
        .push("::tsquery");
        push_filter(&mut qb, self.filter);
        // Ties break on the chunk id, which (unlike chunk_no) survives moves.
        qb.push(" GROUP BY c.chunk_no, c.chunk_id ORDER BY s DESC, c.chunk_id LIMIT ")
            .push_bind(self.k as i64);
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        candidates(&rows)
    }
}
