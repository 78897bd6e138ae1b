//! The full-text ranking both stores compute: Okapi BM25 with FTS5's
//! formula and IDF, over the terms of [`crate::analyze`] and the *tenant's
//! own* statistics — its chunk count, its average chunk length in terms and
//! each term's document frequency among its chunks. SQLite ranks with the
//! store's `enclave_bm25(table, k1, b)` FTS5 function over the tenant's own
//! FTS5 table; PostgreSQL computes the same sum in SQL from the statistics
//! it keeps per tenant.
//!
//! `k1` and `b` were chosen on the SciFact train split (docs/QUALITY.md):
//! chunks are short and of even length, so length normalisation weaker than
//! the textbook 0.75 ranks better (text nDCG@10 +0.006, hybrid +0.003).

/// Term-frequency saturation.
pub const K1: f64 = 1.2;
/// Length normalisation.
pub const B: f64 = 0.4;

/// FTS5's IDF: `ln((N - df + 0.5) / (df + 0.5))`, floored at 1e-6 so a term
/// in more than half of the chunks still counts, barely.
pub fn idf(chunks: u64, df: u64) -> f64 {
    let (n, df) = (chunks as f64, df as f64);
    let idf = ((n - df + 0.5) / (df + 0.5)).ln();
    if idf <= 0.0 {
        1e-6
    } else {
        idf
    }
}

/// One term's share of a chunk's score.
pub fn term_score(idf: f64, tf: f64, len: f64, avg_len: f64) -> f64 {
    term_score_with(K1, B, idf, tf, len, avg_len)
}

/// [`term_score`] with other constants (what FTS5's `bm25()` is with 1.2
/// and 0.75).
pub fn term_score_with(k1: f64, b: f64, idf: f64, tf: f64, len: f64, avg_len: f64) -> f64 {
    if tf <= 0.0 {
        return 0.0;
    }
    idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avg_len.max(f64::MIN_POSITIVE)))
}

/// The most a term can add to any chunk's score (tf → ∞).
pub fn upper_bound(idf: f64) -> f64 {
    idf * (K1 + 1.0)
}

/// The most any chunk could score for a query whose terms have these IDFs:
/// hybrid search divides a chunk's BM25 by it, so the text half of the
/// fused score is the share of the query's weight the chunk holds, in
/// [0, 1), whatever the tenant's size or the query's length. Every
/// distinct positive term of the query counts, one that no chunk holds
/// too (at the highest IDF): the more of a query the tenant's words cannot
/// match at all, the less its text half weighs against the vector half.
pub fn ceiling(idfs: impl IntoIterator<Item = f64>) -> f64 {
    idfs.into_iter().map(upper_bound).sum()
}

/// Tenants of at most this many chunks keep every matching term.
pub const PRUNE_ABOVE_CHUNKS: u64 = 1_000;

/// Which of a query's optional terms to search with, given each one's
/// document frequency among the tenant's `chunks`. A term no chunk holds
/// cannot match and is left out; above [`PRUNE_ABOVE_CHUNKS`], a term in
/// more than half of the chunks
/// weighs 1e-6 and would only make nearly every chunk a candidate, so it is
/// left out too — unless every term that matches is that common: then
/// those are kept, and the query still finds the chunks that hold them
/// (a one-document tenant finds its document).
pub fn informative_terms(dfs: &[u64], chunks: u64) -> Vec<bool> {
    if chunks <= PRUNE_ABOVE_CHUNKS {
        // Scoring every match of a small tenant is cheap: keep its recall.
        return dfs.iter().map(|&df| df > 0).collect();
    }
    let rare: Vec<bool> = dfs.iter().map(|&df| df > 0 && 2 * df <= chunks).collect();
    if rare.iter().any(|&r| r) {
        rare
    } else {
        dfs.iter().map(|&df| df > 0).collect()
    }
}

/// Expansion terms for pseudo-relevance feedback (RM1, the relevance
/// model of Lavrenko and Croft): each term of the feedback chunks scores
/// Σ over chunks of (its frequency in the chunk ÷ the chunk's length) ×
/// (the chunk's score ÷ the feedback's total score). The `n` best terms
/// that are not already in the query, occur in at least two feedback
/// chunks (when there are two) and are not numbers come back best first,
/// each weighted `weight` × its score ÷ the best one's.
pub fn feedback_terms(
    feedback: &[(Vec<String>, f64)],
    query_terms: &[&str],
    n: usize,
    weight: f64,
) -> Vec<(String, f64)> {
    use std::collections::HashMap;
    let total: f64 = feedback.iter().map(|(_, s)| s.max(0.0)).sum();
    if total <= 0.0 || n == 0 {
        return Vec::new();
    }
    let mut model: HashMap<&str, (f64, usize)> = HashMap::new();
    for (terms, score) in feedback {
        if terms.is_empty() {
            continue;
        }
        let mut tf: HashMap<&str, usize> = HashMap::new();
        for t in terms {
            *tf.entry(t.as_str()).or_default() += 1;
        }
        let len = terms.len() as f64;
        for (t, f) in tf {
            let e = model.entry(t).or_default();
            e.0 += (f as f64 / len) * (score.max(0.0) / total);
            e.1 += 1;
        }
    }
    let need = if feedback.len() >= 2 { 2 } else { 1 };
    let mut ranked: Vec<(&str, f64)> = model
        .into_iter()
        .filter(|(t, (_, chunks))| {
            *chunks >= need && !query_terms.contains(t) && !t.chars().all(|c| c.is_ascii_digit())
        })
        .map(|(t, (p, _))| (t, p))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(n);
    let best = ranked.first().map_or(1.0, |r| r.1);
    ranked
        .into_iter()
        .map(|(t, p)| (t.to_owned(), weight * p / best))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rare_term_weighs_more_than_a_common_one() {
        assert!(idf(1000, 3) > idf(1000, 300));
        assert_eq!(idf(10, 9), 1e-6);
        assert!(
            term_score(idf(1000, 3), 1.0, 10.0, 10.0) > term_score(idf(1000, 300), 3.0, 10.0, 10.0)
        );
    }

    #[test]
    fn feedback_terms_are_the_words_the_feedback_shares() {
        let t = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let feedback = [
            (t("refund card paid refund days"), 2.0),
            (t("refund card bank 5"), 1.0),
            (t("shipping days warehouse"), 1.0),
        ];
        let got = feedback_terms(&feedback, &["refund"], 3, 0.5);
        // "days": 1/5 × 2/4 + 1/3 × 1/4; "card": 1/5 × 2/4 + 1/4 × 1/4;
        // "refund" is the query's own, "5" a number, the rest in one chunk.
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], ("days".to_owned(), 0.5));
        assert_eq!(got[1].0, "card");
        let expected = 0.5 * (0.1 + 0.0625) / (0.1 + 1.0 / 12.0);
        assert!((got[1].1 - expected).abs() < 1e-12, "{got:?}");
        assert!(feedback_terms(&[], &[], 3, 0.5).is_empty());
    }

    #[test]
    fn pruning_never_leaves_only_terms_that_match_nothing() {
        // "how long do refunds take" on a one-chunk tenant: only "refund"
        // occurs, in every chunk.
        assert_eq!(informative_terms(&[0, 1, 0], 1), [false, true, false]);
        assert_eq!(
            informative_terms(&[3, 9000, 0], 10_000),
            [true, false, false]
        );
        assert_eq!(informative_terms(&[0, 0], 10), [false, false]);
        assert_eq!(informative_terms(&[6000, 7000], 10_000), [true, true]);
        // A small tenant keeps its common terms.
        assert_eq!(informative_terms(&[3, 900, 0], 1000), [true, true, false]);
    }
}
