//! Isolation properties: whatever any tenant does, no other tenant's data is
//! ever returned, counted, exported or deleted — in every backend — and
//! full-text scores depend on the tenant's own data alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{backends, text_doc, Backend};
use enclave::core::{DocumentId, SearchMode, SearchParams};
use enclave::ListParams;
use futures::TryStreamExt;
use proptest::prelude::*;

const TENANTS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];
const WORDS: [&str; 8] = [
    "apple", "river", "engine", "quartz", "violet", "harbor", "signal", "meadow",
];

#[derive(Debug, Clone)]
enum Op {
    Add {
        tenant: usize,
        words: Vec<usize>,
    },
    Delete {
        tenant: usize,
        victim: usize,
    },
    /// A tenant tries to delete a document that belongs to another tenant.
    DeleteForeign {
        tenant: usize,
        victim: usize,
    },
    Search {
        tenant: usize,
        word: usize,
        mode: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..TENANTS.len(), prop::collection::vec(0..WORDS.len(), 1..5)).prop_map(|(tenant, words)| Op::Add { tenant, words }),
        1 => (0..TENANTS.len(), any::<usize>()).prop_map(|(tenant, victim)| Op::Delete { tenant, victim }),
        1 => (0..TENANTS.len(), any::<usize>()).prop_map(|(tenant, victim)| Op::DeleteForeign { tenant, victim }),
        2 => (0..TENANTS.len(), 0..WORDS.len(), 0u8..3).prop_map(|(tenant, word, mode)| Op::Search { tenant, word, mode }),
    ]
}

/// The oracle: which documents each tenant owns.
type Model = BTreeMap<usize, BTreeMap<DocumentId, String>>;

async fn check_tenant(b: &Backend, model: &Model, t: usize) {
    let handle = b.tenant(TENANTS[t]).await;
    let mine: BTreeMap<DocumentId, String> = model.get(&t).cloned().unwrap_or_default();
    let stats = handle.statistics().await.unwrap();
    assert_eq!(
        stats.document_count as usize,
        mine.len(),
        "count of {}",
        TENANTS[t]
    );
    let listed = handle
        .list_documents(ListParams {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed_ids: BTreeSet<DocumentId> = listed.documents.iter().map(|d| d.document_id).collect();
    assert_eq!(
        listed_ids,
        mine.keys().copied().collect(),
        "listing of {}",
        TENANTS[t]
    );
    assert_eq!(listed.total as usize, mine.len());
    let exported: Vec<_> = handle.export().try_collect().await.unwrap();
    let exported_ids: BTreeSet<DocumentId> = exported.iter().map(|d| d.info.document_id).collect();
    assert_eq!(
        exported_ids,
        mine.keys().copied().collect(),
        "export of {}",
        TENANTS[t]
    );
}

async fn run(ops: Vec<Op>) {
    for b in backends().await {
        let mut model: Model = BTreeMap::new();
        let mut n = 0;
        for op in &ops {
            match op {
                Op::Add { tenant: t, words } => {
                    n += 1;
                    let content: Vec<&str> = words.iter().map(|w| WORDS[*w]).collect();
                    let name = format!("doc-{n}");
                    let added = b
                        .tenant(TENANTS[*t])
                        .await
                        .add_document(text_doc(&name, &content.join(" ")))
                        .await
                        .unwrap();
                    model
                        .entry(*t)
                        .or_default()
                        .insert(added.document_id, content.join(" "));
                }
                Op::Delete { tenant: t, victim } => {
                    let Some(id) = model
                        .get(t)
                        .and_then(|m| m.keys().nth(victim % m.len().max(1)).copied())
                    else {
                        continue;
                    };
                    let n = b
                        .tenant(TENANTS[*t])
                        .await
                        .delete_documents(&[id])
                        .await
                        .unwrap();
                    assert_eq!(n, 1);
                    model.get_mut(t).unwrap().remove(&id);
                }
                Op::DeleteForeign { tenant: t, victim } => {
                    let foreign: Vec<DocumentId> = model
                        .iter()
                        .filter(|(o, _)| *o != t)
                        .flat_map(|(_, m)| m.keys().copied())
                        .collect();
                    if foreign.is_empty() {
                        continue;
                    }
                    let id = foreign[victim % foreign.len()];
                    let n = b
                        .tenant(TENANTS[*t])
                        .await
                        .delete_documents(&[id])
                        .await
                        .unwrap();
                    assert_eq!(
                        n, 0,
                        "{}: a tenant deleted another tenant's document",
                        b.name
                    );
                }
                Op::Search {
                    tenant: t,
                    word,
                    mode,
                } => {
                    let mode =
                        [SearchMode::Text, SearchMode::Vector, SearchMode::Hybrid][*mode as usize];
                    let hits = b
                        .tenant(TENANTS[*t])
                        .await
                        .search(SearchParams::new(WORDS[*word]).mode(mode).limit(100))
                        .await
                        .unwrap();
                    let mine = model.get(t).cloned().unwrap_or_default();
                    for h in &hits.results {
                        assert!(
                            mine.contains_key(&h.document_id),
                            "{}: {mode:?} search of {} returned a foreign chunk",
                            b.name,
                            TENANTS[*t]
                        );
                    }
                    if mode == SearchMode::Text {
                        let want = mine
                            .values()
                            .filter(|c| c.split(' ').any(|w| w == WORDS[*word]))
                            .count();
                        assert_eq!(
                            hits.results.len(),
                            want,
                            "{}: text search finds exactly the tenant's matches",
                            b.name
                        );
                    }
                }
            }
        }
        for t in 0..TENANTS.len() {
            check_tenant(&b, &model, t).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_operations_never_cross_tenants(ops in prop::collection::vec(op(), 10..60)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run(ops));
    }
}

#[tokio::test]
async fn text_and_hybrid_scores_do_not_depend_on_other_tenants() {
    for b in backends().await {
        let a = b.tenant("tenant-a").await;
        for (i, text) in [
            "the quarterly revenue report for the northern region",
            "revenue fell in the southern region this quarter",
            "a note about the office coffee machine",
            "quarterly planning meeting agenda and revenue targets",
        ]
        .iter()
        .enumerate()
        {
            a.add_document(text_doc(&format!("a{i}"), text))
                .await
                .unwrap();
        }
        let snapshot =
            |r: enclave::core::SearchResults| -> Vec<(String, u64, Option<u64>, Option<u64>)> {
                r.results
                    .into_iter()
                    .map(|h| {
                        (
                            h.content,
                            h.score.to_bits(),
                            h.text_score.map(f64::to_bits),
                            h.vector_score.map(f64::to_bits),
                        )
                    })
                    .collect()
            };
        let query = "quarterly revenue region";
        let text_before = snapshot(
            a.search(SearchParams::new(query).mode(SearchMode::Text))
                .await
                .unwrap(),
        );
        let hybrid_before = snapshot(
            a.search(SearchParams::new(query).mode(SearchMode::Hybrid))
                .await
                .unwrap(),
        );
        assert!(text_before.len() >= 3);

        // Tenant B floods the store with the query's terms.
        let bt = b.tenant("tenant-b").await;
        for i in 0..200 {
            let text = match i % 3 {
                0 => "quarterly quarterly revenue revenue revenue",
                1 => "region region quarterly",
                _ => "revenue everywhere in every region every quarter",
            };
            bt.add_document(text_doc(&format!("b{i}"), &format!("{text} {i}")))
                .await
                .unwrap();
        }
        let text_after = snapshot(
            a.search(SearchParams::new(query).mode(SearchMode::Text))
                .await
                .unwrap(),
        );
        let hybrid_after = snapshot(
            a.search(SearchParams::new(query).mode(SearchMode::Hybrid))
                .await
                .unwrap(),
        );
        assert_eq!(text_before, text_after, "{}: text scores changed", b.name);
        assert_eq!(
            hybrid_before, hybrid_after,
            "{}: hybrid scores changed",
            b.name
        );
    }
}
