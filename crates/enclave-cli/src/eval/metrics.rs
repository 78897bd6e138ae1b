//! Ranking metrics over document ids, as BEIR (pytrec_eval) computes them:
//! nDCG@k with graded gains and log2 discounts, Recall@k, MRR@k.

use std::collections::{HashMap, HashSet};

/// Relevance judgments of one query: document id → grade (> 0 is relevant).
pub type Judged = HashMap<String, u32>;

/// nDCG@k of `ranked` (best first, no duplicates) against `judged`.
pub fn ndcg(ranked: &[String], judged: &Judged, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| gain(judged.get(d).copied().unwrap_or(0)) / discount(i))
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| gain(g) / discount(i))
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Share of the relevant documents found in the first `k`.
pub fn recall(ranked: &[String], judged: &Judged, k: usize) -> f64 {
    let relevant: HashSet<&String> = judged
        .iter()
        .filter(|(_, &g)| g > 0)
        .map(|(d, _)| d)
        .collect();
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.contains(d))
        .count();
    found as f64 / relevant.len() as f64
}

/// Reciprocal rank of the first relevant document within the first `k`.
pub fn mrr(ranked: &[String], judged: &Judged, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| judged.get(d).is_some_and(|&g| g > 0))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// trec_eval's linear gain (BEIR's default).
fn gain(grade: u32) -> f64 {
    f64::from(grade)
}

fn discount(rank0: usize) -> f64 {
    ((rank0 + 2) as f64).log2()
}

/// Document ids in the order of their best chunk, each once.
pub fn documents_in_order<'a>(chunk_documents: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    chunk_documents
        .into_iter()
        .filter(|d| seen.insert(*d))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> Judged {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }
    fn ids(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ndcg_is_one_for_the_ideal_order_and_discounts_later_hits() {
        let j = judged(&[("a", 1), ("b", 1)]);
        assert!((ndcg(&ids(&["a", "b", "x"]), &j, 10) - 1.0).abs() < 1e-12);
        // One relevant at rank 2 of two relevant: (1/log2 3) / (1 + 1/log2 3).
        let want = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg(&ids(&["x", "a"]), &j, 10) - want).abs() < 1e-12);
        assert_eq!(ndcg(&ids(&["x", "y"]), &j, 10), 0.0);
        // Past the cut-off nothing counts.
        assert_eq!(ndcg(&ids(&["x", "a"]), &j, 1), 0.0);
    }

    #[test]
    fn graded_judgments_weigh_linearly() {
        let j = judged(&[("a", 2), ("b", 1)]);
        let worse = ndcg(&ids(&["b", "a"]), &j, 10);
        let best = ndcg(&ids(&["a", "b"]), &j, 10);
        assert!((best - 1.0).abs() < 1e-12);
        let want = (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((worse - want).abs() < 1e-12);
    }

    #[test]
    fn recall_and_mrr_count_relevant_documents_only() {
        let j = judged(&[("a", 1), ("b", 1), ("z", 0)]);
        assert_eq!(recall(&ids(&["z", "a", "q"]), &j, 100), 0.5);
        assert_eq!(recall(&ids(&["z", "a", "b"]), &j, 2), 0.5);
        assert_eq!(mrr(&ids(&["z", "q", "b"]), &j, 10), 1.0 / 3.0);
        assert_eq!(mrr(&ids(&["z", "q", "b"]), &j, 2), 0.0);
    }

    #[test]
    fn a_document_ranks_at_its_best_chunk() {
        let order = documents_in_order(["d2", "d1", "d2", "d3", "d1"]);
        assert_eq!(order, ids(&["d2", "d1", "d3"]));
    }
}
