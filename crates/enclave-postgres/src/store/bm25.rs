//! Full-text candidates ranked by BM25 over the tenant's own statistics
//! (`text_stats`, kept by every write), with the formula and the term
//! pruning of `enclave_core::bm25` — the ranking FTS5 gives the embedded
//! store.
//!
//! The GIN index finds the chunks that hold a query term; each is scored in
//! SQL from its own term frequencies (the query's terms filtered out of its
//! `tsvector`) and its length, about 3–5 µs a candidate. Rare terms find the
//! candidates (MaxScore's essential terms, within a postings budget,
//! `PgOptions::text_postings_budget`), so a query's common terms add to the
//! scores of the candidates without making every chunk of the tenant one;
//! then the chunks holding enough of the common terms alone to enter the
//! k best are found by intersecting those terms' postings (MaxScore's
//! upper bounds). On a 100k-chunk tenant of real text this ranks within
//! 0.002 nDCG@10 of scoring every matching chunk (docs/BENCHMARKS.md,
//! `enclave bench text`).

use std::collections::HashMap;

use enclave_core::bm25::{self, informative_terms};
use enclave_core::query::TextQuery;
use enclave_core::DocumentFilter;
use enclave_store::{Candidate, ChunkKey, Completion, StoreResult};
use sqlx::{Postgres, QueryBuilder, Row};

use super::rows::db_err;
use super::sql::{lexeme, push_filter, tsquery};
use super::tx::{Tx, READ};
use super::vector::candidates;
use super::PgTenant;

/// A query term with its statistics.
struct Term {
    lexeme: String,
    /// Its IDF, times its weight.
    idf: f64,
}

/// A text query ready to score: the tenant's statistics read, the terms
/// pruned as `enclave_core::bm25::informative_terms` says.
struct Prepared<'a> {
    query: TextQuery,
    scoring: Scoring<'a>,
    dfs: HashMap<String, u64>,
    /// The tenant's searchable chunks.
    chunks: u64,
}

/// Reads the query's statistics and prunes its terms; `None` when it can
/// match nothing (no terms left, or an empty tenant).
async fn prepare<'a>(
    store: &PgTenant,
    tx: &mut Tx,
    query: &TextQuery,
    filter: &'a DocumentFilter,
    k: usize,
) -> StoreResult<Option<Prepared<'a>>> {
    let mut query = store.inner.analyzer.query(query);
    if query.is_empty() {
        return Ok(None);
    }
    let (chunks, avg_len, dfs) = statistics(store, tx, &query).await?;
    if chunks == 0 {
        return Ok(None);
    }
    let df = |t: &str| dfs.get(t).copied().unwrap_or(0);
    // Over every term of the query, before pruning (as on SQLite).
    let mut all: Vec<(&str, f64)> = Vec::new();
    for (t, w) in query.weighted_terms() {
        if !all.iter().any(|(x, _)| *x == t) {
            all.push((t, w));
        }
    }
    let ceiling = bm25::ceiling(all.iter().map(|(t, w)| w * bm25::idf(chunks, df(t))));
    if query.must.is_empty() && store.inner.opts.exhaustive_text {
        query.should.retain(|t| df(t) > 0);
        if query.should.is_empty() {
            return Ok(None);
        }
    } else if query.must.is_empty() {
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
            return Ok(None);
        }
    }
    // Every positive term adds to a chunk's score (a phrase's words each
    // as a term, an expansion term at its weight), once.
    let mut terms: Vec<Term> = Vec::new();
    for (t, w) in query.weighted_terms() {
        if !terms.iter().any(|x| x.lexeme == t) {
            terms.push(Term {
                lexeme: t.to_owned(),
                idf: w * bm25::idf(chunks, df(t)),
            });
        }
    }
    let scoring = Scoring {
        ceiling,
        lexemes: terms.iter().map(|t| t.lexeme.clone()).collect(),
        idfs: terms.iter().map(|t| t.idf).collect(),
        avg_len,
        filter,
        k,
        keys: None,
    };
    Ok(Some(Prepared {
        query,
        scoring,
        dfs,
        chunks,
    }))
}

pub(super) async fn text_candidates(
    store: &PgTenant,
    query: &TextQuery,
    filter: &DocumentFilter,
    k: usize,
) -> StoreResult<Vec<Candidate>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.begin(READ).await?;
    let Some(p) = prepare(store, &mut tx, query, filter, k).await? else {
        tx.commit().await?;
        return Ok(Vec::new());
    };
    let found = if !p.query.must.is_empty() || store.inner.opts.exhaustive_text {
        // The phrases decide the candidates; nothing to prune.
        let tsq = tsquery(&p.query).expect("a phrase");
        p.scoring.run(store, &mut tx, &tsq).await?
    } else {
        budgeted(store, &mut tx, &p).await?
    };
    tx.commit().await?;
    Ok(found)
}

/// The cosine of `vector_keys` and the BM25 of `text_keys` (those that
/// match the query), with the query's ceiling, in one transaction.
pub(super) async fn complete_scores(
    store: &PgTenant,
    vector: &[f32],
    vector_keys: &[ChunkKey],
    text: &TextQuery,
    text_keys: &[ChunkKey],
) -> StoreResult<Completion> {
    let mut out = Completion::default();
    let mut tx = store.begin(READ).await?;
    if !vector_keys.is_empty() {
        let rows = sqlx::query(
            "SELECT chunk_no, 1 - cosine_distance(embedding, $3) FROM chunks \
             WHERE tenant_id = $1 AND kind = 0 AND chunk_no = ANY($2)",
        )
        .bind(store.t())
        .bind(vector_keys)
        .bind(pgvector::Vector::from(vector.to_vec()))
        .fetch_all(tx.db())
        .await
        .map_err(db_err)?;
        out.vector = candidates(&rows)?;
    }
    let filter = DocumentFilter::default();
    if let Some(mut p) = prepare(store, &mut tx, text, &filter, text_keys.len()).await? {
        out.text_ceiling = p.scoring.ceiling;
        if !text_keys.is_empty() {
            p.scoring.keys = Some(text_keys);
            let tsq = tsquery(&p.query).expect("a term");
            out.text = p.scoring.run(store, &mut tx, &tsq).await?;
        }
    }
    tx.commit().await?;
    Ok(out)
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

/// The candidates of a query of optional terms, MaxScore's way: the
/// chunks holding the query's rarest terms ("essential" by cost) — as many
/// terms, rarest first, as fit in the tenant store's postings budget (at
/// least the rarest) — each scored over *every* term of the query, so a
/// common term still adds to the score of each candidate that holds it.
/// Then the completion: the chunks holding none of those terms but enough
/// of the left-out ones to reach the k-th score found (by their upper
/// bounds) are scored too, within the budget and [`MAX_SETS`] sets of
/// terms — exact whenever every such set fits. When even the rarest term
/// is too common to read (a query of common words), the chunks that hold
/// its two rarest terms together are the candidates, if they are k.
async fn budgeted(store: &PgTenant, tx: &mut Tx, p: &Prepared<'_>) -> StoreResult<Vec<Candidate>> {
    let (query, scoring) = (&p.query, &p.scoring);
    let df = |t: &str| p.dfs.get(t).copied().unwrap_or(0);
    // Expansion terms find candidates as the query's own words do.
    let mut order: Vec<&String> = query
        .should
        .iter()
        .chain(query.expansion.iter().map(|(t, _)| t).filter(|t| df(t) > 0))
        .collect();
    order.sort_by_key(|t| (df(t), t.as_str()));
    let budget = postings_budget(store.inner.opts.text_postings_budget, p.chunks, scoring.k);
    let mut searched = 1;
    let mut postings = df(order[0]);
    while searched < order.len() && postings + df(order[searched]) <= budget {
        postings += df(order[searched]);
        searched += 1;
    }
    let of = |should: Vec<String>, must: Vec<Vec<String>>| {
        tsquery(&TextQuery {
            should,
            must,
            must_not: query.must_not.clone(),
            expansion: Vec::new(),
        })
        .expect("a term")
    };
    if postings > COMMON_FACTOR * budget && order.len() > 1 {
        let both = of(
            Vec::new(),
            vec![vec![order[0].clone()], vec![order[1].clone()]],
        );
        // `must` phrases of one word each: both terms, in any order.
        let found = scoring.run(store, tx, &both).await?;
        if found.len() >= scoring.k {
            return Ok(found);
        }
    }
    let essential = of(
        order[..searched].iter().map(|t| (*t).clone()).collect(),
        Vec::new(),
    );
    let mut found = scoring.scored(store, tx, &essential).await?;
    best(&mut found, scoring.k);
    if found.len() == scoring.k && searched < order.len() {
        // MaxScore's completion: a chunk holding none of the searched terms
        // scores at most the upper bounds of the left-out terms it holds,
        // so only chunks holding a set of them whose bounds reach the k-th
        // score found can still enter the k best.
        let theta = found[scoring.k - 1].0;
        let left: Vec<(&str, f64, u64)> = order[searched..]
            .iter()
            .map(|t| (t.as_str(), bm25::upper_bound(scoring.idf_of(t)), df(t)))
            .collect();
        let sets = reaching_sets(&left, theta, p.chunks, budget);
        if !sets.is_empty() {
            let tsq = completion_query(&sets, &order[..searched], &query.must_not);
            let more = scoring.scored(store, tx, &tsq).await?;
            found.extend(more);
            best(&mut found, scoring.k);
        }
    }
    Ok(into_candidates(found))
}

/// The sets of `terms` (lexeme, upper bound, document frequency) whose
/// bounds together reach `theta` and would not without any one of them — every way a chunk can reach `theta` from these
/// terms alone. Their chunks (each set's terms together) are estimated as
/// if the terms were independent; sets are kept, the fewest chunks first,
/// while the estimates fit in `budget` (and at most [`MAX_SETS`]), so a
/// query of many common words stays bounded and is exact only when every
/// set fits.
fn reaching_sets<'t>(
    terms: &[(&'t str, f64, u64)],
    theta: f64,
    chunks: u64,
    budget: u64,
) -> Vec<Vec<&'t str>> {
    if theta <= 0.0 {
        // Every chunk could enter: nothing bounded to complete with.
        return Vec::new();
    }
    let mut terms = terms.to_vec();
    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    // What the terms from i on could still add.
    let mut tail = vec![0.0; terms.len() + 1];
    for i in (0..terms.len()).rev() {
        tail[i] = tail[i + 1] + terms[i].1;
    }
    let mut sets: Vec<(f64, Vec<usize>)> = Vec::new();
    let mut stack: Vec<(usize, f64, Vec<usize>)> = vec![(0, 0.0, Vec::new())];
    while let Some((i, sum, set)) = stack.pop() {
        if sum >= theta {
            // Recorded as it first reaches theta with the terms taken in
            // falling bound: dropping its smallest bound (so any) falls short.
            let est = set.iter().fold(chunks as f64, |n, &j| {
                n * terms[j].2 as f64 / chunks.max(1) as f64
            });
            sets.push((est, set));
            if sets.len() > 4 * MAX_SETS {
                break;
            }
            continue;
        }
        if i == terms.len() || sum + tail[i] < theta {
            continue;
        }
        // Without terms[i] first (popped last), then with it.
        stack.push((i + 1, sum, set.clone()));
        let mut with = set;
        with.push(i);
        stack.push((i + 1, sum + terms[i].1, with));
    }
    sets.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut spent = 0.0;
    let mut out = Vec::new();
    for (est, set) in sets {
        if out.len() == MAX_SETS || spent + est > budget as f64 {
            break;
        }
        spent += est;
        out.push(set.iter().map(|&j| terms[j].0).collect());
    }
    out
}

/// At most this many term sets in one completion query: PostgreSQL
/// intersects each set's postings in the GIN index, about 2 ms a set of
/// common terms on a 100k-chunk tenant, and four sets complete the ranking
/// of nearly every query (docs/BENCHMARKS.md).
const MAX_SETS: usize = 4;

/// The chunks holding every term of one of `sets` and none of `searched`
/// (those were scored already), nor a `must_not` phrase.
fn completion_query(sets: &[Vec<&str>], searched: &[&String], must_not: &[Vec<String>]) -> String {
    let any = sets
        .iter()
        .map(|set| {
            format!(
                "({})",
                set.iter()
                    .map(|t| lexeme(t))
                    .collect::<Vec<_>>()
                    .join(" & ")
            )
        })
        .collect::<Vec<_>>()
        .join(" | ");
    let searched = searched
        .iter()
        .map(|t| lexeme(t))
        .collect::<Vec<_>>()
        .join(" | ");
    let mut e = format!("({any}) & !({searched})");
    for n in must_not {
        let phrase = n
            .iter()
            .map(|t| lexeme(t))
            .collect::<Vec<_>>()
            .join(" <-> ");
        e.push_str(&format!(" & !({phrase})"));
    }
    e
}

/// How far past the budget the rarest term alone may go before a search
/// of common words asks for its two rarest terms together instead.
const COMMON_FACTOR: u64 = 4;

/// The postings a search of `k` candidates in a tenant of `chunks` reads:
/// a tenth of the tenant, at least 1,000 and at most `max`, and never
/// fewer than 4 × k. What it costs grows with the postings read (about
/// 3 µs a candidate); what it finds with the share of the tenant read, so
/// a small tenant needs fewer to rank as if it read all
/// (docs/BENCHMARKS.md, "Full-text search on PostgreSQL").
fn postings_budget(max: u64, chunks: u64, k: usize) -> u64 {
    (chunks / 10)
        .clamp(MIN_POSTINGS.min(max), max)
        .max(4 * k as u64)
}

/// The smallest postings budget (a tenant of up to this many chunks is
/// read whole).
const MIN_POSTINGS: u64 = 1_000;

/// What scores a candidate: the terms with their IDFs and the tenant's
/// average length.
struct Scoring<'a> {
    lexemes: Vec<String>,
    idfs: Vec<f64>,
    avg_len: f64,
    /// The most a chunk can score (`enclave_core::bm25::ceiling`).
    ceiling: f64,
    filter: &'a DocumentFilter,
    k: usize,
    /// Score only these chunks (a hybrid search's completion).
    keys: Option<&'a [ChunkKey]>,
}

impl Scoring<'_> {
    /// The k best chunks matching `tsq`, by BM25 over every scored term.
    async fn run(&self, store: &PgTenant, tx: &mut Tx, tsq: &str) -> StoreResult<Vec<Candidate>> {
        let mut found = self.scored(store, tx, tsq).await?;
        best(&mut found, self.k);
        Ok(into_candidates(found))
    }

    /// A term's IDF (times its weight); 0 for a term not scored.
    fn idf_of(&self, lexeme: &str) -> f64 {
        self.lexemes
            .iter()
            .position(|l| l == lexeme)
            .map_or(0.0, |i| self.idfs[i])
    }

    /// Every chunk matching `tsq` with its BM25 over every scored term.
    /// PostgreSQL finds the chunks and cuts each one's `tsvector` down to
    /// the query's terms (setweight marks them, ts_filter keeps them);
    /// the sums are done here — a third cheaper per candidate than
    /// unnesting and aggregating in SQL.
    async fn scored(&self, store: &PgTenant, tx: &mut Tx, tsq: &str) -> StoreResult<Vec<Scored>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT c.chunk_no, c.chunk_id, COALESCE(c.tlen, length(c.tsv)), \
             ts_filter(setweight(c.tsv, 'A', ",
        );
        qb.push_bind(self.lexemes.clone())
            .push("), '{a}')::text FROM chunks c");
        if !self.filter.is_empty() {
            qb.push(
                " JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id",
            );
        }
        qb.push(" WHERE c.tenant_id = ")
            .push_bind(store.t())
            .push(" AND c.kind = 0 AND c.tsv @@ ")
            .push_bind(tsq.to_owned())
            .push("::tsquery");
        if let Some(keys) = self.keys {
            qb.push(" AND c.chunk_no = ANY(")
                .push_bind(keys.to_vec())
                .push(")");
        }
        push_filter(&mut qb, self.filter);
        let rows = qb.build().fetch_all(tx.db()).await.map_err(db_err)?;
        let idf: HashMap<&str, f64> = self
            .lexemes
            .iter()
            .map(String::as_str)
            .zip(self.idfs.iter().copied())
            .collect();
        let mut scored: Vec<Scored> = Vec::with_capacity(rows.len());
        for r in &rows {
            let key: ChunkKey = r.try_get(0).map_err(db_err)?;
            let id: sqlx::types::Uuid = r.try_get(1).map_err(db_err)?;
            let len: i32 = r.try_get(2).map_err(db_err)?;
            let terms: String = r.try_get(3).map_err(db_err)?;
            let score = term_frequencies(&terms)
                .map(|(lexeme, tf)| {
                    idf.get(lexeme.as_ref()).map_or(0.0, |idf| {
                        bm25::term_score(*idf, tf as f64, len as f64, self.avg_len)
                    })
                })
                .sum();
            scored.push((score, id, key));
        }
        Ok(scored)
    }
}

/// A chunk's score, its id and its key.
type Scored = (f64, sqlx::types::Uuid, ChunkKey);

/// Keeps the `k` best, best first; ties break on the chunk id, which
/// (unlike chunk_no) survives moves.
fn best(scored: &mut Vec<Scored>, k: usize) {
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
}

fn into_candidates(scored: Vec<Scored>) -> Vec<Candidate> {
    scored
        .into_iter()
        .map(|(score, _, key)| Candidate { key, score })
        .collect()
}

/// Each lexeme of a `tsvector`'s text form (`'cell':3A,17A 'it''s':5`)
/// with its frequency (how many positions it has; 1 without positions).
fn term_frequencies(text: &str) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, usize)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        let body = rest.strip_prefix('\'')?;
        // The lexeme runs to the first quote not doubled; `\\` escapes too.
        let (mut i, mut escaped, bytes) = (0, false, body.as_bytes());
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => {
                    escaped = true;
                    i += 2;
                }
                b'\'' => break,
                _ => i += 1,
            }
        }
        let raw = body.get(..i)?;
        let lexeme = if escaped {
            std::borrow::Cow::Owned(raw.replace("''", "'").replace("\\\\", "\\"))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        let after = body.get(i + 1..)?;
        let end = after.find(' ').unwrap_or(after.len());
        let positions = &after[..end];
        rest = &after[end..];
        let tf = match positions.strip_prefix(':') {
            Some(p) => p.split(',').count(),
            None => 1,
        };
        Some((lexeme, tf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_tenth_of_the_tenant_within_its_bounds() {
        assert_eq!(postings_budget(4_000, 500, 40), 1_000);
        assert_eq!(postings_budget(4_000, 10_000, 40), 1_000);
        assert_eq!(postings_budget(4_000, 25_000, 40), 2_500);
        assert_eq!(postings_budget(4_000, 1_000_000, 40), 4_000);
        // Enough for the candidates asked for.
        assert_eq!(postings_budget(4_000, 10_000, 400), 1_600);
        assert_eq!(postings_budget(4_000, 1_000_000, 2_000), 8_000);
    }

    #[test]
    fn reaching_sets_are_the_smallest_sets_whose_bounds_reach_theta() {
        let terms = [
            ("a", 5.0, 10),
            ("b", 4.0, 10),
            ("c", 3.0, 10),
            ("d", 1.0, 10),
        ];
        let mut got = reaching_sets(&terms, 8.0, 100, 1_000);
        got.sort();
        // {a, b, c} reaches 8 too, but not only with c: {a, b} does.
        assert_eq!(got, [vec!["a", "b"], vec!["a", "c"], vec!["b", "c", "d"]]);
        // No set reaches theta: nothing to complete.
        assert!(reaching_sets(&terms, 13.5, 100, 1_000).is_empty());
        // A term alone reaching theta is a set of one.
        let got = reaching_sets(&terms, 4.5, 100, 1_000);
        assert!(got.contains(&vec!["a"]), "{got:?}");
        assert!(
            !got.iter().any(|s| s.len() > 1 && s.contains(&"a")),
            "{got:?}"
        );
    }

    #[test]
    fn reaching_sets_keep_the_fewest_chunks_within_the_budget() {
        // Estimated chunks: {a} 500; {b, c} 1,000 × 0.04 × 0.03 = 1.2.
        let terms = [("a", 5.0, 500), ("b", 3.0, 40), ("c", 3.0, 30)];
        assert_eq!(reaching_sets(&terms, 4.0, 1_000, 1_000).len(), 2);
        assert_eq!(reaching_sets(&terms, 4.0, 1_000, 100), [vec!["b", "c"]]);
    }

    #[test]
    fn term_frequencies_count_positions() {
        let got: Vec<(String, usize)> =
            term_frequencies("'cell':3A,17A,20A 'it''s':5A 'a\\\\b':1 'bare'")
                .map(|(l, n)| (l.into_owned(), n))
                .collect();
        assert_eq!(
            got,
            [
                ("cell".to_owned(), 3),
                ("it's".to_owned(), 1),
                ("a\\b".to_owned(), 1),
                ("bare".to_owned(), 1)
            ]
        );
        assert_eq!(term_frequencies("").count(), 0);
    }
}
