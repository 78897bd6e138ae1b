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

/// How convex fusion puts a candidate's two scores on one scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// The most any chunk could score in BM25 for the query
    /// ([`crate::bm25::ceiling`]): text scores are divided by it.
    pub text_ceiling: f64,
    /// The cosine at or below which the embedding model says nothing
    /// (`Embedder::similarity_floor`): cosines map to
    /// `(cos − floor) / (1 − floor)`, at least 0.
    pub similarity_floor: f64,
}

impl Scales {
    /// The vector half of a score, in [0, 1].
    pub fn vector(&self, cosine: f64) -> f64 {
        let floor = self.similarity_floor.clamp(0.0, 0.99);
        ((cosine - floor) / (1.0 - floor)).clamp(0.0, 1.0)
    }
    /// The text half of a score, in [0, 1].
    pub fn text(&self, bm25: f64) -> f64 {
        if self.text_ceiling > 0.0 {
            (bm25 / self.text_ceiling).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Convex combination of the two scores every candidate has (a hybrid
/// search completes each list's scores for the other list's candidates,
/// `TenantStore::complete_scores`): `alpha` × the cosine above the model's
/// floor + (1 − `alpha`) × BM25 ÷ the query's ceiling ([`Scales`]) — the
/// text half is the share of the query's weight the chunk holds. Both
/// halves are in [0, 1] whatever the tenant's size, the query's length or
/// how deep the lists go: unlike min–max scaling over the lists, a chunk's
/// fused score does not depend on which other chunks were fetched, and
/// unlike RRF it keeps how far apart the scores are. A candidate missing
/// from `cosine` or `bm25` scores 0 there. Ties break as in [`rrf`].
pub fn convex<T: Clone + Eq + Hash>(
    vector: &[T],
    text: &[T],
    cosine: &HashMap<T, f64>,
    bm25: &HashMap<T, f64>,
    scales: Scales,
    alpha: f64,
) -> Vec<Fused<T>> {
    let ranks = |list: &[T]| {
        let mut out: HashMap<T, usize> = HashMap::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            out.entry(item.clone()).or_insert(i + 1);
        }
        out
    };
    let (vr, tr) = (ranks(vector), ranks(text));
    let mut order: Vec<T> = Vec::with_capacity(vector.len() + text.len());
    let mut seen = std::collections::HashSet::new();
    for item in vector.iter().chain(text) {
        if seen.insert(item.clone()) {
            order.push(item.clone());
        }
    }
    let mut out: Vec<(usize, Fused<T>)> = order
        .into_iter()
        .enumerate()
        .map(|(pos, item)| {
            let v = cosine.get(&item).map_or(0.0, |c| scales.vector(*c));
            let t = bm25.get(&item).map_or(0.0, |b| scales.text(*b));
            (
                pos,
                Fused {
                    vector_rank: vr.get(&item).copied(),
                    text_rank: tr.get(&item).copied(),
                    item,
                    score: alpha * v + (1.0 - alpha) * t,
                },
            )
        })
        .collect();
    sort_fused(&mut out);
    out.into_iter().map(|(_, f)| f).collect()
}

/// Ranks documents instead of chunks ([`crate::search::Aggregation`]):
/// `ranked` is the chunks best first, each with its document and score;
/// each document comes out once, represented by its best chunk, scored by
/// that chunk alone (`decay` = None) or by the decayed sum
/// s₁ + decay·s₂ + decay²·s₃ + … of its chunks' scores, best first. Ties
/// keep the order of the documents' best chunks.
pub fn aggregate<T: Clone, D: Eq + Hash + Clone>(
    ranked: &[(T, D, f64)],
    decay: Option<f64>,
) -> Vec<(T, D, f64)> {
    let mut docs: Vec<(T, D, f64, f64)> = Vec::new(); // best chunk, doc, score, next weight
    let mut at: HashMap<D, usize> = HashMap::new();
    for (item, doc, score) in ranked {
        match at.get(doc) {
            None => {
                at.insert(doc.clone(), docs.len());
                docs.push((item.clone(), doc.clone(), *score, decay.unwrap_or(0.0)));
            }
            Some(&i) => {
                if let Some(d) = decay {
                    let e = &mut docs[i];
                    e.2 += e.3 * score;
                    e.3 *= d;
                }
            }
        }
    }
    let mut out: Vec<(usize, (T, D, f64))> = docs
        .into_iter()
        .enumerate()
        .map(|(i, (t, d, s, _))| (i, (t, d, s)))
        .collect();
    out.sort_by(|(pa, a), (pb, b)| b.2.total_cmp(&a.2).then(pa.cmp(pb)));
    out.into_iter().map(|(_, x)| x).collect()
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
        // "a" holds most of the query's text weight and is second in
        // vectors; "b" leads vectors by a hair and holds no query term.
        let vector = ["b", "a", "c"];
        let text = ["a", "c", "d"];
        let cosine: HashMap<_, _> = [("b", 0.81), ("a", 0.80), ("c", 0.30), ("d", -0.2)].into();
        let bm25: HashMap<_, _> = [("a", 8.0), ("c", 2.0), ("d", 1.0)].into();
        let scales = Scales {
            text_ceiling: 10.0,
            similarity_floor: 0.0,
        };
        let fused = convex(&vector, &text, &cosine, &bm25, scales, 0.5);
        assert_eq!(fused[0].item, "a");
        assert!((fused[0].score - (0.5 * 0.80 + 0.5 * 0.8)).abs() < 1e-12);
        assert_eq!(fused[0].vector_rank, Some(2));
        assert_eq!(fused[0].text_rank, Some(1));
        assert_eq!(fused.len(), 4);
        // A negative cosine counts as 0, not against the chunk.
        let d = fused.iter().find(|f| f.item == "d").unwrap();
        assert!((d.score - 0.5 * 0.1).abs() < 1e-12);
        // Above a floor of 0.3, "c" has no vector evidence left and "a"
        // keeps (0.8 − 0.3) / 0.7 of it.
        let floored = Scales {
            similarity_floor: 0.3,
            ..scales
        };
        let fused = convex(&vector, &text, &cosine, &bm25, floored, 0.5);
        let c = fused.iter().find(|f| f.item == "c").unwrap();
        assert!((c.score - 0.5 * 0.2).abs() < 1e-12);
        assert!((fused[0].score - (0.5 * 0.5 / 0.7 + 0.5 * 0.8)).abs() < 1e-12);
        // RRF ranks "b" (first in one list) and "a" (first in the other)
        // by position alone.
        assert_eq!(rrf(&vector, &text, None)[0].item, "a");
        // alpha 1 is the cosine order, alpha 0 the text order.
        let only_v: Vec<_> = convex(&vector, &text, &cosine, &bm25, scales, 1.0)
            .into_iter()
            .map(|f| f.item)
            .collect();
        assert_eq!(only_v, ["b", "a", "c", "d"]);
        let only_t: Vec<_> = convex(&vector, &text, &cosine, &bm25, scales, 0.0)
            .into_iter()
            .map(|f| f.item)
            .collect();
        // (b holds no term: 0, last but for its vector rank.)
        assert_eq!(only_t, ["a", "c", "d", "b"]);
    }

    #[test]
    fn a_convex_score_does_not_depend_on_the_other_candidates() {
        let cosine: HashMap<_, _> = [("a", 0.6), ("b", 0.4), ("c", 0.2)].into();
        let bm25: HashMap<_, _> = [("a", 3.0), ("b", 6.0), ("c", 9.0)].into();
        let scales = Scales {
            text_ceiling: 12.0,
            similarity_floor: 0.0,
        };
        let all = convex(
            &["a", "b", "c"],
            &["c", "b", "a"],
            &cosine,
            &bm25,
            scales,
            0.6,
        );
        let two = convex(&["a", "b"], &["b", "a"], &cosine, &bm25, scales, 0.6);
        for f in &two {
            let same = all.iter().find(|g| g.item == f.item).unwrap();
            assert_eq!(f.score, same.score);
        }
        // No text weight anywhere (no query term occurs): cosine alone.
        let scales = Scales {
            text_ceiling: 0.0,
            ..scales
        };
        let none = convex(&["a", "b"], &[], &cosine, &HashMap::new(), scales, 0.6);
        assert_eq!(none[0].item, "a");
        assert!((none[0].score - 0.36).abs() < 1e-12);
    }

    #[test]
    fn documents_rank_by_their_best_chunk_or_by_a_decayed_sum() {
        // Document x has the best chunk; y has three good ones.
        let ranked = [
            ("x1", "x", 0.9),
            ("y1", "y", 0.8),
            ("y2", "y", 0.7),
            ("x2", "x", 0.1),
            ("y3", "y", 0.6),
        ];
        let best = aggregate(&ranked, None);
        assert_eq!(
            best.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
            [("x1", 0.9), ("y1", 0.8)]
        );
        let summed = aggregate(&ranked, Some(0.5));
        assert_eq!(summed[0].0, "y1", "the best chunk represents y");
        assert!((summed[0].2 - (0.8 + 0.5 * 0.7 + 0.25 * 0.6)).abs() < 1e-12);
        assert!((summed[1].2 - (0.9 + 0.5 * 0.1)).abs() < 1e-12);
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
