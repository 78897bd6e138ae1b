//! Retrieval quality on real labelled data, in the test command: a fixed
//! 300-document slice of BEIR SciFact (`../shared/datasets/scifact`, never
//! copied into the repository) with the train queries judged inside it,
//! the real model, every store. The floors sit a few points below the
//! figures measured on this slice (docs/QUALITY.md); the test is
//! deterministic and never timed.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use common::{model_backends, text_doc};
use enclave::core::{Fusion, SearchMode, SearchParams};

const SLICE: usize = 300;

/// nDCG@10 floors per mode: measured on 2026-12-07 (the same on both
/// embedded layouts and PostgreSQL shared and schema modes) vector 0.853,
/// text 0.858, hybrid with the default (convex) fusion 0.893; floors about
/// 0.03 below. Hybrid with RRF must at least match its halves' floor.
const FLOORS: &[(SearchMode, Option<Fusion>, f64)] = &[
    (SearchMode::Vector, None, 0.82),
    (SearchMode::Text, None, 0.83),
    (SearchMode::Hybrid, None, 0.865),
    (SearchMode::Hybrid, Some(Fusion::Rrf), 0.82),
];

struct Slice {
    docs: Vec<(String, String)>,
    queries: Vec<(String, HashMap<String, u32>)>,
}

fn dataset() -> PathBuf {
    let dir = std::env::var_os("ENCLAVE_SCIFACT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/scifact")
        });
    assert!(
        dir.join("corpus.jsonl").exists(),
        "BEIR SciFact is missing from {} (set ENCLAVE_SCIFACT_DIR)",
        dir.display()
    );
    dir
}

/// The judged documents of the train queries in qrels order, then the rest
/// of the corpus in file order, up to 300; the queries whose judged
/// documents are all in the slice.
fn slice() -> Slice {
    let dir = dataset();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let mut judged: Vec<(String, String, u32)> = Vec::new();
    for (i, line) in read("qrels/train.tsv").lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if i == 0 && f[0] == "query-id" || f.len() < 3 {
            continue;
        }
        judged.push((f[0].into(), f[1].into(), f[2].trim().parse().unwrap()));
    }
    let corpus: Vec<(String, String)> = read("corpus.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let title = v["title"].as_str().unwrap_or("").trim().to_owned();
            let text = v["text"].as_str().unwrap_or("").trim().to_owned();
            let content = if title.is_empty() {
                text
            } else {
                format!("{title}\n\n{text}")
            };
            (v["_id"].as_str().unwrap().to_owned(), content)
        })
        .collect();
    let mut chosen: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (_, d, _) in &judged {
        if chosen.len() >= SLICE / 2 {
            break;
        }
        if seen.insert(d.clone()) {
            chosen.push(d.clone());
        }
    }
    for (id, _) in &corpus {
        if chosen.len() >= SLICE {
            break;
        }
        if seen.insert(id.clone()) {
            chosen.push(id.clone());
        }
    }
    let by_id: HashMap<&str, &str> = corpus
        .iter()
        .map(|(i, c)| (i.as_str(), c.as_str()))
        .collect();
    let docs = chosen
        .iter()
        .map(|id| (id.clone(), by_id[id.as_str()].to_owned()))
        .collect();
    let texts: HashMap<String, String> = read("queries.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["_id"].as_str().unwrap().to_owned(),
                v["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut per_query: Vec<(String, HashMap<String, u32>)> = Vec::new();
    for (q, d, g) in judged {
        match per_query.iter_mut().find(|(id, _)| *id == q) {
            Some((_, m)) => {
                m.insert(d, g);
            }
            None => per_query.push((q, HashMap::from([(d, g)]))),
        }
    }
    let queries = per_query
        .into_iter()
        .filter(|(_, m)| m.keys().all(|d| seen.contains(d)))
        .map(|(q, m)| (texts[&q].clone(), m))
        .collect();
    Slice { docs, queries }
}

fn ndcg_at_10(ranked: &[String], judged: &HashMap<String, u32>) -> f64 {
    let gain = |g: u32| 2f64.powi(g as i32) - 1.0;
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| gain(judged.get(d).copied().unwrap_or(0)) / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| gain(*g) / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

#[tokio::test]
async fn scifact_slice_ranks_above_its_measured_floor_on_every_store() {
    let slice = slice();
    assert!(
        slice.queries.len() >= 100,
        "{} queries",
        slice.queries.len()
    );
    for b in model_backends().await {
        let t = b.tenant("scifact").await;
        for chunk in slice.docs.chunks(50) {
            t.add_documents(chunk.iter().map(|(id, c)| text_doc(id, c)).collect())
                .await
                .unwrap();
        }
        for &(mode, fusion, floor) in FLOORS {
            let mut sum = 0.0;
            for (q, judged) in &slice.queries {
                let mut params = SearchParams::new(q).mode(mode).limit(40);
                params.fusion = fusion;
                let found = t.search(params).await.unwrap();
                let mut ranked: Vec<String> = Vec::new();
                for h in found.results {
                    if !ranked.contains(&h.document_name) {
                        ranked.push(h.document_name);
                    }
                }
                sum += ndcg_at_10(&ranked, judged);
            }
            let ndcg = sum / slice.queries.len() as f64;
            let name = format!("{} {fusion:?}", mode.as_str());
            eprintln!("{}: {name} nDCG@10 {ndcg:.4}", b.name);
            assert!(
                ndcg >= floor,
                "{}: {name} nDCG@10 {ndcg:.4} is below its floor {floor}",
                b.name
            );
        }
    }
}
