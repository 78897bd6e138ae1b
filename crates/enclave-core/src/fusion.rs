//! Fusion of the vector and text lists, done once here for every backend:
//! backends return ranked candidate lists, the library fuses them — by
//! reciprocal rank (RRF) or by a convex combination of normalised scores.

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
    sort_fused(&mut out);
    out.into_iter().map(|(_, f)| f).collect()
}

/// Convex combination of normalised scores: each list's scores are
/// min–max scaled to [0, 1] over the list (an item missing from a list
/// scores 0 there), then `alpha` × vector + (1 − `alpha`) × text. Unlike
/// RRF it keeps how far apart the scores are: a chunk far ahead in one list
/// stays ahead. Ties break as in [`rrf`].
pub fn convex<T: Clone + Eq + Hash>(
    vector: &[(T, f64)],
    text: &[(T, f64)],
    alpha: f64,
) -> Vec<Fused<T>> {
    fn scaled<T: Clone + Eq + Hash>(list: &[(T, f64)]) -> HashMap<T, (usize, f64)> {
        let max = list
            .iter()
            .map(|(_, s)| *s)
            .fold(f64::NEG_INFINITY, f64::max);
        let min = list.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
        let span = max - min;
        let mut out = HashMap::with_capacity(list.len());
        for (i, (item, s)) in list.iter().enumerate() {
            let v = if span > 0.0 { (s - min) / span } else { 1.0 };
            out.entry(item.clone()).or_insert((i + 1, v));
        }
        out
    }
    let (v, t) = (scaled(vector), scaled(text));
    let mut order: Vec<T> = Vec::with_capacity(vector.len() + text.len());
    let mut seen = std::collections::HashSet::new();
    for (item, _) in vector.iter().chain(text) {
        if seen.insert(item.clone()) {
            order.push(item.clone());
        }
    }
    let mut out: Vec<(usize, Fused<T>)> = order
        .into_iter()
        .enumerate()
        .map(|(pos, item)| {
            let (vr, vs) = v.get(&item).map_or((None, 0.0), |(r, s)| (Some(*r), *s));
            let (tr, ts) = t.get(&item).map_or((None, 0.0), |(r, s)| (Some(*r), *s));
            (
                pos,
                Fused {
                    item,
                    score: alpha * vs + (1.0 - alpha) * ts,
                    vector_rank: vr,
                    text_rank: tr,
                },
            )
        })
        .collect();
    sort_fused(&mut out);
    out.into_iter().map(|(_, f)| f).collect()
}

fn sort_fused<T>(out: &mut [(usize, Fused<T>)]) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convex_fusion_keeps_score_gaps_that_rrf_forgets() {
        // "a" leads the text list by far and is second in vectors; "b"
        // leads vectors by a hair and is missing from text.
        let vector = [("b", 0.81), ("a", 0.80), ("c", 0.30)];
        let text = [("a", 20.0), ("c", 2.0), ("d", 1.0)];
        let fused = convex(&vector, &text, 0.5);
        assert_eq!(fused[0].item, "a");
        assert!((fused[0].score - (0.5 * (0.5 / 0.51) + 0.5)).abs() < 1e-12);
        assert_eq!(fused[0].vector_rank, Some(2));
        assert_eq!(fused[0].text_rank, Some(1));
        assert_eq!(fused.len(), 4);
        // alpha 1 is the vector order, alpha 0 the text order.
        let only_v: Vec<_> = convex(&vector, &text, 1.0)
            .into_iter()
            .map(|f| f.item)
            .collect();
        assert_eq!(&only_v[..3], ["b", "a", "c"]);
        let only_t: Vec<_> = convex(&vector, &text, 0.0)
            .into_iter()
            .map(|f| f.item)
            .collect();
        // (d, the text list's last, and b, missing from it, both scale to
        // 0 there: the tie goes to the one with a vector rank.)
        assert_eq!(only_t, ["a", "c", "b", "d"]);
    }

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
