//! Reciprocal rank fusion, done once here for every backend: backends return
//! ranked candidate lists, the library fuses them.

use std::collections::HashMap;
use std::hash::Hash;

/// The `k` of RRF (Cormack et al.): 60, as in llmemory and most engines.
pub const RRF_K: f64 = 60.0;

/// One fused result: the item, its fused score and its 1-based rank in each
/// input list it appeared in.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<T> {
    pub item: T,
    pub score: f64,
    pub vector_rank: Option<usize>,
    pub text_rank: Option<usize>,
}

/// Fuses two ranked lists (best first). `alpha` weights the vector list
/// (`alpha`) against the text list (`1 - alpha`); `None` gives both weight 1,
/// which is plain RRF. Ties break by vector rank, then text rank, then first
/// appearance, so the order is deterministic.
pub fn rrf<T: Clone + Eq + Hash>(vector: &[T], text: &[T], alpha: Option<f64>) -> Vec<Fused<T>> {
    let (wv, wt) = match alpha {
        Some(a) => (a, 1.0 - a),
        None => (1.0, 1.0),
    };
    let mut order: Vec<T> = Vec::new();
    let mut by_item: HashMap<T, (Option<usize>, Option<usize>)> = HashMap::new();
    for (i, item) in vector.iter().enumerate() {
        let e = by_item.entry(item.clone()).or_insert_with(|| {
            order.push(item.clone());
            (None, None)
        });
        e.0.get_or_insert(i + 1);
    }
    for (i, item) in text.iter().enumerate() {
        let e = by_item.entry(item.clone()).or_insert_with(|| {
            order.push(item.clone());
            (None, None)
        });
        e.1.get_or_insert(i + 1);
    }
    let mut out: Vec<(usize, Fused<T>)> = order
        .into_iter()
        .enumerate()
        .map(|(pos, item)| {
            let (v, t) = by_item[&item];
            let score = v.map_or(0.0, |r| wv / (RRF_K + r as f64))
                + t.map_or(0.0, |r| wt / (RRF_K + r as f64));
            (
                pos,
                Fused {
                    item,
                    score,
                    vector_rank: v,
                    text_rank: t,
                },
            )
        })
        .collect();
    out.sort_by(|(pa, a), (pb, b)| {
        b.score
            .total_cmp(&a.score)
            .then(
                a.vector_rank
                    .unwrap_or(usize::MAX)
                    .cmp(&b.vector_rank.unwrap_or(usize::MAX)),
            )
            .then(
                a.text_rank
                    .unwrap_or(usize::MAX)
                    .cmp(&b.text_rank.unwrap_or(usize::MAX)),
            )
            .then(pa.cmp(pb))
    });
    out.into_iter().map(|(_, f)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_in_both_lists_beats_items_in_one() {
        let fused = rrf(&["a", "b", "c"], &["c", "d"], None);
        assert_eq!(fused[0].item, "c");
        assert_eq!(fused[0].vector_rank, Some(3));
        assert_eq!(fused[0].text_rank, Some(1));
        let expected = 1.0 / 63.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected).abs() < 1e-12);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn alpha_shifts_weight_between_lists() {
        let vec_heavy = rrf(&["v"], &["t"], Some(0.9));
        assert_eq!(vec_heavy[0].item, "v");
        let text_heavy = rrf(&["v"], &["t"], Some(0.1));
        assert_eq!(text_heavy[0].item, "t");
        // Equal weights tie; the vector list wins the tie deterministically.
        let tie = rrf(&["v"], &["t"], None);
        assert_eq!(tie[0].item, "v");
    }

    #[test]
    fn duplicates_in_a_list_keep_their_best_rank() {
        let fused = rrf(&["a", "a", "b"], &[], None);
        assert_eq!(fused.len(), 2);
        assert_eq!(fused[0].vector_rank, Some(1));
    }
}
