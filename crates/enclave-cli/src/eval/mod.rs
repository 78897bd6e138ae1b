//! `enclave eval`: retrieval quality of a BEIR-format folder, end to end.
//! Ingests the corpus into a scratch tenant — through the library on the
//! store the global flags name (a scratch data directory unless
//! `--data-dir` is given), or through a running server (`--url`, the
//! tenant is the key's) — runs every judged query of the split in each
//! mode and prints nDCG@10, Recall@100, MRR@10 and the latency per mode.
//! A document ranks where its best chunk ranks; the scratch tenant's
//! documents are removed afterwards unless `--keep`.
//!
//! Every query is embedded once before the modes run (timed on its own
//! line), so each mode's latency is its search with the query's vector
//! found in the query cache — the same for every mode, whatever order
//! they run in.

pub(crate) mod beir;
pub(crate) mod metrics;
mod reference;
mod target;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use enclave::core::{Aggregation, Fusion, SearchMode};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::bench::percentile;
use crate::StoreArgs;
use target::Target;

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    dir: PathBuf,
    /// Which judgments to evaluate (qrels/<split>.tsv).
    #[arg(long, default_value = "test")]
    split: String,
    /// Modes to run, in order: `vector`, `text`, `hybrid` (the default
    /// fusion) or a hybrid variant `hybrid:rrf`, `hybrid:convex`,
    /// `hybrid:convex:0.3` (fusion and alpha); any of them with stages
    /// appended: `+prf` (pseudo-relevance feedback, default settings),
    /// `+best_chunk` or `+decayed_sum` (document aggregation), e.g.
    /// `text+prf`, `hybrid+prf+decayed_sum`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vector,text,hybrid:rrf,hybrid"
    )]
    modes: Vec<Variant>,
    /// Evaluate a running server instead of the library (e.g.
    /// http://127.0.0.1:8080); the corpus goes into the tenant of `--api-key`.
    #[arg(long)]
    url: Option<String>,
    /// Member key of the tenant to fill (with `--url`).
    #[arg(long, env = "ENCLAVE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Chunks asked for per search: 100 (the most a search returns) for
    /// Recall@100; 10 times a search as an application showing ten hits
    /// runs it (nDCG@10 and MRR@10 stay exact at 10; Recall@100 then
    /// counts only what the first 10 chunks hold).
    #[arg(long, default_value_t = enclave::core::search::MAX_LIMIT,
          value_parser = clap::value_parser!(u32).range(10..=100))]
    limit: u32,
    /// Evaluate at most this many queries (the first by id).
    #[arg(long)]
    max_queries: Option<usize>,
    /// Documents added concurrently.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Leave the ingested documents in place.
    #[arg(long)]
    keep: bool,
    /// Fill this tenant of the library instead of a random scratch one.
    /// With `--keep` and a kept `--data-dir` (or PostgreSQL), a second run
    /// finds every document unchanged and embeds nothing again, so modes
    /// can be compared without re-ingesting the corpus.
    #[arg(long, conflicts_with = "url")]
    tenant: Option<String>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A reference run to score beside Enclave's modes (repeatable):
    /// `{"name": …, "run": {query id: [document ids]}}`, e.g. from
    /// `scripts/bm25s-run.py`.
    #[arg(long)]
    reference: Vec<PathBuf>,
    /// Also score exact dense retrieval with the model over whole documents
    /// and, with `--reference`, plain RRF of the first reference and it.
    #[arg(long)]
    dense_reference: bool,
}

/// A search mode with its fusion settings and stages, as `--modes` names it.
#[derive(Clone, Debug)]
pub struct Variant {
    name: String,
    pub(crate) mode: SearchMode,
    pub(crate) fusion: Option<Fusion>,
    pub(crate) alpha: Option<f64>,
    pub(crate) prf: bool,
    pub(crate) aggregation: Option<Aggregation>,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut stages = s.split('+');
        let base = stages.next().unwrap_or_default();
        let (mut prf, mut aggregation) = (false, None);
        for stage in stages {
            match stage {
                "prf" => prf = true,
                other => {
                    aggregation = Some(other.parse::<Aggregation>().map_err(|_| {
                        format!(
                        "{s:?}: unknown stage {other:?}; expected prf, best_chunk or decayed_sum"
                    )
                    })?)
                }
            }
        }
        let mut parts = base.split(':');
        let mode: SearchMode = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e: enclave::core::InvalidInput| e.message)?;
        let fusion = parts
            .next()
            .map(|f| f.parse::<Fusion>().map_err(|e| e.message))
            .transpose()?;
        let alpha = parts
            .next()
            .map(|a| a.parse::<f64>().map_err(|e| format!("alpha {a:?}: {e}")))
            .transpose()?;
        if parts.next().is_some() || (fusion.is_some() && mode != SearchMode::Hybrid) {
            return Err(format!(
                "{s:?}: a variant is mode[:fusion[:alpha]], fusion for hybrid only"
            ));
        }
        Ok(Self {
            name: s.to_owned(),
            mode,
            fusion,
            alpha,
            prf,
            aggregation,
        })
    }
}

/// Figures of one mode over every evaluated query.
#[derive(Serialize)]
struct ModeFigures {
    mode: String,
    ndcg_at_10: f64,
    recall_at_100: f64,
    mrr_at_10: f64,
    /// Latency of Enclave's own modes (none for reference runs).
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// nDCG@10 of each query, by query id (in `--json` only), so two runs
    /// can be compared query by query.
    per_query: Vec<(String, f64)>,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    split: String,
    store: String,
    documents: usize,
    chunks: u64,
    queries: usize,
    /// Chunks asked for per search.
    limit: u32,
    ingest_secs: f64,
    /// The first embedding of each query, before the modes ran.
    query_embedding: Latency,
    modes: Vec<ModeFigures>,
}

#[derive(Serialize)]
struct Latency {
    what: String,
    p50_ms: f64,
    p99_ms: f64,
}

pub async fn run(store: &StoreArgs, args: EvalArgs) -> Result<()> {
    let mut data = beir::load(&args.dir, &args.split)?;
    if let Some(n) = args.max_queries {
        data.queries.truncate(n);
    }
    if data.queries.is_empty() {
        bail!("no judged queries in split {:?}", args.split);
    }
    let target = match &args.url {
        Some(url) => Target::http(url, args.api_key.as_deref())?,
        None => Target::library(store, args.tenant.as_deref()).await?,
    };
    let started = Instant::now();
    let outcome = match ingest(&target, &data.corpus, args.jobs).await {
        Ok(chunks) => {
            let ingest_secs = started.elapsed().as_secs_f64();
            match warm(&target, &data.queries).await {
                Ok(embedding) => evaluate(&target, &data.queries, &args.modes, args.limit)
                    .await
                    .map(|modes| (chunks, ingest_secs, embedding, modes)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if !args.keep {
        if let Err(e) = target.clean_up().await {
            eprintln!("warning: the scratch documents were not all removed: {e:#}");
        }
    }
    let (chunks, ingest_secs, query_embedding, mut modes) = outcome?;
    let mut runs: Vec<reference::Run> = args
        .reference
        .iter()
        .map(|p| reference::load(p))
        .collect::<Result<_>>()?;
    if args.dense_reference {
        let dense = reference::dense(store, &data.corpus, &data.queries).await?;
        if let Some(first) = runs.first() {
            let fused = reference::fuse(first, &dense);
            runs.push(dense);
            runs.push(fused);
        } else {
            runs.push(dense);
        }
    }
    for run in &runs {
        modes.push(score_run(run, &data.queries));
    }
    let report = Report {
        dataset: args.dir.display().to_string(),
        split: args.split,
        store: target.describe(),
        documents: data.corpus.len(),
        chunks,
        queries: data.queries.len(),
        limit: args.limit,
        ingest_secs,
        query_embedding,
        modes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn ingest(target: &Target, corpus: &[beir::CorpusDoc], jobs: usize) -> Result<u64> {
    use futures::StreamExt;
    let bar = progress(corpus.len(), "ingest");
    let mut created = 0u64;
    let mut added = futures::stream::iter(corpus.iter().map(|d| target.add(&d.id, d.content())))
        .buffer_unordered(jobs.max(1));
    while let Some(r) = added.next().await {
        created += r?;
        bar.inc(1);
        bar.set_message(format!("{created} chunks"));
    }
    bar.finish_and_clear();
    target.chunk_count().await
}

/// Embeds every query once (see the module docs), timing it.
async fn warm(target: &Target, queries: &[beir::Query]) -> Result<Latency> {
    let bar = progress(queries.len(), "embed");
    let mut ms = Vec::with_capacity(queries.len());
    for q in queries {
        ms.push(target.warm(&q.text).await?.as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        what: target.warm_describes().to_owned(),
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
    })
}

async fn evaluate(
    target: &Target,
    queries: &[beir::Query],
    modes: &[Variant],
    limit: u32,
) -> Result<Vec<ModeFigures>> {
    let mut out = Vec::with_capacity(modes.len());
    for mode in modes {
        let bar = progress(queries.len(), &mode.name);
        let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
        let mut took = Vec::with_capacity(queries.len());
        let mut per_query = Vec::with_capacity(queries.len());
        for q in queries {
            let started = Instant::now();
            let ranked = target.search(&q.text, mode, limit).await?;
            took.push(started.elapsed());
            let ranked = metrics::documents_in_order(ranked.iter().map(String::as_str));
            let q_ndcg = metrics::ndcg(&ranked, &q.judged, 10);
            per_query.push((q.id.clone(), q_ndcg));
            ndcg += q_ndcg;
            recall += metrics::recall(&ranked, &q.judged, 100);
            mrr += metrics::mrr(&ranked, &q.judged, 10);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = queries.len() as f64;
        let mut ms: Vec<f64> = took
            .iter()
            .map(Duration::as_secs_f64)
            .map(|s| s * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        out.push(ModeFigures {
            mode: mode.name.clone(),
            ndcg_at_10: ndcg / n,
            recall_at_100: recall / n,
            mrr_at_10: mrr / n,
            p50_ms: Some(percentile(&ms, 0.5)),
            p99_ms: Some(percentile(&ms, 0.99)),
            per_query,
        });
    }
    Ok(out)
}

/// The figures of a reference run over the same queries (a query the run
/// does not answer scores 0).
fn score_run(run: &reference::Run, queries: &[beir::Query]) -> ModeFigures {
    let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
    let mut per_query = Vec::with_capacity(queries.len());
    for q in queries {
        let ranked: &[String] = run.ranked.get(&q.id).map_or(&[], Vec::as_slice);
        let q_ndcg = metrics::ndcg(ranked, &q.judged, 10);
        per_query.push((q.id.clone(), q_ndcg));
        ndcg += q_ndcg;
        recall += metrics::recall(ranked, &q.judged, 100);
        mrr += metrics::mrr(ranked, &q.judged, 10);
    }
    let n = queries.len() as f64;
    ModeFigures {
        mode: format!("reference: {}", run.name),
        ndcg_at_10: ndcg / n,
        recall_at_100: recall / n,
        mrr_at_10: mrr / n,
        p50_ms: None,
        p99_ms: None,
        per_query,
    }
}

pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>7} {bar:40} {pos}/{len} {msg}")
            .expect("static template"),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn print_table(r: &Report) {
    println!(
        "{} ({} split): {} documents, {} chunks ingested in {:.1} s on {}; {} queries, limit {}",
        r.dataset, r.split, r.documents, r.chunks, r.ingest_secs, r.store, r.queries, r.limit
    );
    println!(
        "query embedding, once per query before the modes ({}): p50 {:.1} ms, p99 {:.1} ms",
        r.query_embedding.what, r.query_embedding.p50_ms, r.query_embedding.p99_ms
    );
    println!("| mode | nDCG@10 | Recall@100 | MRR@10 | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let ms = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1}"));
    for m in &r.modes {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {} | {} |",
            m.mode,
            m.ndcg_at_10,
            m.recall_at_100,
            m.mrr_at_10,
            ms(m.p50_ms),
            ms(m.p99_ms)
        );
    }
}
