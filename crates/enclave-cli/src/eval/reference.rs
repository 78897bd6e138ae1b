//! Reference runs `enclave eval` prints beside Enclave's own modes: a run
//! file from another system (`--reference`, e.g. `scripts/bm25s-run.py`),
//! exact dense retrieval with the same model over whole documents
//! (`--dense-reference`), and plain RRF of the two.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use enclave::core::fusion::rrf;
use serde::Deserialize;

use super::beir::{CorpusDoc, Query};
use crate::StoreArgs;

/// Documents per query a reference run keeps (as Enclave's searches).
const DEPTH: usize = 100;

/// A ranked list of document ids per query id.
pub struct Run {
    pub name: String,
    pub ranked: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RunFile {
    name: String,
    run: HashMap<String, Vec<String>>,
}

/// Reads a run file: `{"name": …, "run": {query id: [document ids]}}`.
pub fn load(path: &Path) -> Result<Run> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let f: RunFile =
        serde_json::from_str(&text).with_context(|| format!("{}: not a run", path.display()))?;
    Ok(Run {
        name: f.name,
        ranked: f.run,
    })
}

/// Exact dense retrieval: every document embedded whole (the model
/// truncates it to its input size) and every query against all of them.
pub async fn dense(store: &StoreArgs, corpus: &[CorpusDoc], queries: &[Query]) -> Result<Run> {
    let embedder = enclave::Memory::load_embedder(store.embedder_config()).await?;
    let bar = super::progress(corpus.len(), "dense");
    let mut docs: Vec<Vec<f32>> = Vec::with_capacity(corpus.len());
    for batch in corpus.chunks(32) {
        let texts = batch.iter().map(CorpusDoc::content).collect();
        docs.extend(embedder.embed(texts).await?);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let mut ranked = HashMap::with_capacity(queries.len());
    for batch in queries.chunks(32) {
        let vs = embedder
            .embed(batch.iter().map(|q| q.text.clone()).collect())
            .await?;
        for (q, v) in batch.iter().zip(vs) {
            let mut scored: Vec<(f32, usize)> = docs
                .iter()
                .enumerate()
                .map(|(i, d)| (d.iter().zip(&v).map(|(a, b)| a * b).sum(), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ranked.insert(
                q.id.clone(),
                scored
                    .iter()
                    .take(DEPTH)
                    .map(|(_, i)| corpus[*i].id.clone())
                    .collect(),
            );
        }
    }
    Ok(Run {
        name: format!("exact dense ({}, whole documents)", embedder.model_id()),
        ranked,
    })
}

/// Plain RRF (k = 60, equal weights) of two runs.
pub fn fuse(a: &Run, b: &Run) -> Run {
    let empty = Vec::new();
    let ranked = a
        .ranked
        .keys()
        .chain(b.ranked.keys())
        .map(|q| {
            let fused = rrf(
                a.ranked.get(q).unwrap_or(&empty),
                b.ranked.get(q).unwrap_or(&empty),
                None,
            );
            (
                q.clone(),
                fused.into_iter().take(DEPTH).map(|f| f.item).collect(),
            )
        })
        .collect();
    Run {
        name: format!("RRF of {} and {}", a.name, b.name),
        ranked,
    }
}
