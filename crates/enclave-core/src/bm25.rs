//! The full-text ranking both stores compute: Okapi BM25 exactly as
//! SQLite's FTS5 `bm25()` defines it (k1 = 1.2, b = 0.75, FTS5's IDF), over
//! the terms of [`crate::analyze`] and the *tenant's own* statistics — its
//! chunk count, its average chunk length in terms and each term's document
//! frequency among its chunks. SQLite ranks with `bm25()` itself over the
//! tenant's own FTS5 table; PostgreSQL computes the same sum in SQL from the
//! statistics it keeps per tenant.

/// Term-frequency saturation.
pub const K1: f64 = 1.2;
/// Length normalisation.
pub const B: f64 = 0.75;

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
    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len.max(f64::MIN_POSITIVE)))
}

/// The most a term can add to any chunk's score (tf → ∞).
pub fn upper_bound(idf: f64) -> f64 {
    idf * (K1 + 1.0)
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
