//! `enclave bench`: commands that print figures. Nothing here asserts a
//! timing; docs/BENCHMARKS.md records what these printed on a named machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use enclave::core::{
    DocumentBody, DocumentType, NewDocument, ProvidedChunk, SearchMode, SearchParams, TenantId,
};
use enclave::{EmbedderConfig, Memory, MemoryConfig, StoreConfig};
use enclave_embed::{Embedder, HashEmbedder, MiniLm, MiniLmOptions};
use enclave_store::sqlite::{SqliteOptions, SqliteStore};
use enclave_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::{percentile, WORDS};
use crate::StoreArgs;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Which measurements to run.
    #[arg(value_enum, default_value = "all")]
    what: What,
    /// Sentences embedded by the embedding benchmark.
    #[arg(long, default_value_t = 800)]
    sentences: usize,
    /// Chunks in the generated multi-tenant corpus.
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Tenants in the generated corpus (sizes follow Zipf's law).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Queries per tenant-size bucket.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// `postgres`: chunks of the largest tenant.
    #[arg(long, default_value_t = 100_000)]
    big_tenant: usize,
    /// `postgres`: documents ingested concurrently.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// `postgres`: stop after the ingest figures (no index build, no queries).
    #[arg(long)]
    ingest_only: bool,
    /// `text`: the BEIR folder whose corpus and queries make the tenant.
    #[arg(long, default_value = "../shared/datasets/scifact")]
    corpus: std::path::PathBuf,
    /// `text`: the split whose queries (and judgments) are used.
    #[arg(long, default_value = "train")]
    split: String,
    /// `text`: measure again on the scratch database a previous run built
    /// (the id it printed) instead of building one.
    #[arg(long)]
    reuse: Option<String>,
    /// `text`: queries compared with the exhaustive ranking (it scores
    /// every matching chunk: about a second a query at 100k chunks).
    #[arg(long, default_value_t = 200)]
    quality_queries: usize,
    /// `text`: also compare these postings budgets with the exhaustive
    /// ranking (tuning `PgOptions::text_postings_budget`).
    #[arg(long, value_delimiter = ',')]
    budgets: Vec<u64>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum What {
    All,
    Embed,
    Ingest,
    Search,
    /// PostgreSQL (needs a superuser `--database-url`; not part of `all`).
    Postgres,
    /// PostgreSQL full-text and hybrid search over one tenant of real text
    /// (`--corpus`, `--chunks`; needs a superuser `--database-url`; not
    /// part of `all`).
    Text,
}

pub async fn run(store: &StoreArgs, args: BenchArgs) -> Result<()> {
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(1, |p| p.get()),
        cpu_model()
    );
    if args.what == What::Postgres {
        return super::postgres::run(super::postgres::PgBenchArgs {
            admin_url: store
                .database_url
                .clone()
                .context("enclave bench postgres needs --database-url SUPERUSER_URL")?,
            chunks: args.chunks,
            tenants: args.tenants,
            big: args.big_tenant,
            queries: args.queries,
            jobs: args.jobs,
            ingest_only: args.ingest_only,
        })
        .await;
    }
    if args.what == What::Text {
        return super::text::run(super::text::TextBenchArgs {
            admin_url: store
                .database_url
                .clone()
                .context("enclave bench text needs --database-url SUPERUSER_URL")?,
            corpus: args.corpus.clone(),
            split: args.split.clone(),
            chunks: args.chunks,
            queries: args.queries,
            jobs: args.jobs,
            reuse: args.reuse.clone(),
            quality_queries: args.quality_queries,
            budgets: args.budgets.clone(),
        })
        .await;
    }
    if matches!(args.what, What::All | What::Embed | What::Ingest) {
        let model = Arc::new(
            MiniLm::load(MiniLmOptions::new(store.model_dir()))
                .context("loading the model (run scripts/setup)")?,
        );
        if matches!(args.what, What::All | What::Embed) {
            bench_embed(&model, args.sentences)?;
        }
        if matches!(args.what, What::All | What::Ingest) {
            bench_ingest_model(model.clone()).await?;
        }
    }
    if matches!(args.what, What::All | What::Search | What::Ingest) {
        bench_corpus(&args).await?;
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn sentence(rng: &mut StdRng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench_embed(model: &MiniLm, n: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(42);
    // ~41 words of this vocabulary make ~45 model tokens with [CLS]/[SEP].
    let texts: Vec<String> = (0..n).map(|_| sentence(&mut rng, 41)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = refs
        .iter()
        .map(|t| enclave::core::TokenCounter::count_tokens(&*model.tokens(), t) + 2)
        .sum();
    model.embed_sync(&refs[..32.min(n)])?; // warm-up
    let (t0, c0) = (Instant::now(), cpu_seconds());
    model.embed_sync(&refs)?;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    println!(
        "embed: {n} sentences x {:.1} tokens: {:.1} sentences/s, {:.0} tokens/s, {:.2} cores used",
        tokens as f64 / n as f64,
        n as f64 / wall,
        tokens as f64 / wall,
        cpu / wall
    );
    Ok(())
}

async fn bench_ingest_model(model: Arc<MiniLm>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let memory = Memory::open(MemoryConfig::new(
        StoreConfig::embedded(dir.path(), enclave::Layout::SharedFile),
        EmbedderConfig::Custom(model as Arc<dyn Embedder>),
    ))
    .await?;
    let t = memory.tenant(&TenantId::parse("bench")?);
    let mut rng = StdRng::seed_from_u64(7);
    let docs: Vec<String> = (0..40)
        .map(|_| {
            (0..12)
                .map(|_| sentence(&mut rng, 40) + ".")
                .collect::<Vec<_>>()
                .join("\n\n")
        })
        .collect();
    let t0 = Instant::now();
    let (mut chunks, mut tokens) = (0, 0);
    for (i, d) in docs.into_iter().enumerate() {
        let r = t
            .add_document(NewDocument::text(format!("doc-{i}"), DocumentType::Text, d))
            .await?;
        chunks += r.chunks_created;
        tokens += r.tokens_embedded;
    }
    let s = t0.elapsed().as_secs_f64();
    println!("ingest (model): {chunks} chunks, {tokens} tokens in {s:.2}s = {:.1} chunks/s, {:.0} tokens/s", chunks as f64 / s, tokens as f64 / s);
    Ok(())
}

/// Synthetic text whose word frequencies follow Zipf's law over a 30k-word
/// vocabulary, like natural language, so full-text postings have realistic
/// lengths.
struct ZipfWords {
    cdf: Vec<f64>,
}

impl ZipfWords {
    fn new(vocabulary: usize) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=vocabulary)
            .map(|r| {
                acc += 1.0 / r as f64;
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        Self { cdf }
    }
    fn word(&self, rng: &mut StdRng) -> String {
        let u: f64 = rng.random();
        format!("w{}", self.cdf.partition_point(|c| *c < u))
    }
    fn text(&self, rng: &mut StdRng, n: usize) -> String {
        (0..n).map(|_| self.word(rng)).collect::<Vec<_>>().join(" ")
    }
}

fn unit(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    enclave_embed::l2_normalize(&mut v);
    v
}

/// Generated Zipf multi-tenant corpus: ingest with precomputed vectors, then
/// per tenant-size bucket search latency and recall@10 against exact search.
async fn bench_corpus(args: &BenchArgs) -> Result<()> {
    const DIMS: usize = 384;
    const PER_DOC: usize = 10;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteOptions::new(
        dir.path(),
        enclave::Layout::SharedFile,
        DIMS,
    ))?);
    let memory = Memory::from_parts(
        store.clone(),
        Arc::new(HashEmbedder::new(DIMS)),
        Default::default(),
        0,
    );
    let h: f64 = (1..=args.tenants).map(|r| 1.0 / r as f64).sum();
    let sizes: Vec<usize> = (1..=args.tenants)
        .map(|r| ((args.chunks as f64 / (r as f64 * h)).round() as usize).max(PER_DOC))
        .collect();
    let mut rng = StdRng::seed_from_u64(1);
    let zipf = ZipfWords::new(30_000);
    // Vectors cluster around a few centres per tenant, like real topics do.
    let mut vectors: HashMap<usize, Vec<Vec<f32>>> = HashMap::new();
    let t0 = Instant::now();
    let mut total = 0usize;
    for (ti, &size) in sizes.iter().enumerate() {
        let tenant = memory.tenant(&TenantId::parse(&format!("tenant-{ti:04}"))?);
        let centres: Vec<Vec<f32>> = (0..8).map(|_| unit(&mut rng, DIMS)).collect();
        let mut mine = Vec::with_capacity(size);
        for d in 0..size.div_ceil(PER_DOC) {
            let n = PER_DOC.min(size - d * PER_DOC);
            let chunks: Vec<ProvidedChunk> = (0..n)
                .map(|_| {
                    let c = &centres[rng.random_range(0..centres.len())];
                    let noise = unit(&mut rng, DIMS);
                    let mut v: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.6 * b).collect();
                    enclave_embed::l2_normalize(&mut v);
                    mine.push(v.clone());
                    ProvidedChunk {
                        content: sentence(&mut rng, 30),
                        embedding: v,
                    }
                })
                .collect();
            let mut doc = NewDocument::text(format!("doc-{d}"), DocumentType::Text, "");
            doc.body = DocumentBody::Chunks(chunks);
            tenant.add_document(doc).await?;
            total += n;
        }
        vectors.insert(ti, mine);
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "ingest (precomputed vectors): {total} chunks in {} tenants (largest {}, smallest {}) in {s:.1}s = {:.0} chunks/s",
        args.tenants,
        sizes[0],
        sizes[sizes.len() - 1],
        total as f64 / s
    );
    if args.what == What::Ingest {
        return Ok(());
    }
    let buckets: [(&str, usize, usize); 4] = [
        ("<=100", 0, 100),
        ("101-1k", 101, 1000),
        ("1k-10k", 1001, 10_000),
        (">10k", 10_001, usize::MAX),
    ];
    println!(
        "{:<8} {:>7} {:>8} {:>11} {:>11} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "bucket",
        "tenants",
        "chunks",
        "vec p50 ms",
        "vec p99 ms",
        "recall@10",
        "text p50",
        "text p99",
        "hybrid p50",
        "hybrid p99"
    );
    for (name, lo, hi) in buckets {
        let members: Vec<usize> = (0..sizes.len())
            .filter(|&i| sizes[i] >= lo && sizes[i] <= hi)
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut lat = Vec::new();
        let mut hybrid = Vec::new();
        let mut text = Vec::new();
        let mut recall_sum = 0.0;
        // The first search of a tenant loads its vectors into memory; time
        // the steady state.
        for &ti in &members {
            let id = TenantId::parse(&format!("tenant-{ti:04}"))?;
            store
                .tenant(&id)
                .vector_candidates(&vectors[&ti][0], &Default::default(), 10)
                .await?;
        }
        for q in 0..args.queries {
            let ti = members[q % members.len()];
            let id = TenantId::parse(&format!("tenant-{ti:04}"))?;
            let mine = &vectors[&ti];
            let base = &mine[rng.random_range(0..mine.len())];
            let noise = unit(&mut rng, DIMS);
            let mut query: Vec<f32> = base.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect();
            enclave_embed::l2_normalize(&mut query);
            // Exact answer by a plain loop over the tenant's own vectors.
            let mut exact: Vec<(usize, f32)> = mine
                .iter()
                .enumerate()
                .map(|(i, v)| (i, v.iter().zip(&query).map(|(a, b)| a * b).sum()))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let want: Vec<f32> = exact.iter().take(10).map(|e| e.1).collect();
            let handle = store.tenant(&id);
            let t = Instant::now();
            let got = handle
                .vector_candidates(&query, &Default::default(), 10)
                .await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            // Compare by score: equal vectors may have different keys.
            let threshold = want.last().copied().unwrap_or(f32::MIN) - 1e-5;
            let hits = got
                .iter()
                .filter(|c| c.score as f32 >= threshold)
                .count()
                .min(want.len());
            recall_sum += hits as f64 / want.len() as f64;
            let words = zipf.text(&mut rng, 3);
            let t = Instant::now();
            memory
                .tenant(&id)
                .search(
                    SearchParams::new(words.clone())
                        .mode(SearchMode::Hybrid)
                        .limit(10),
                )
                .await?;
            hybrid.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            memory
                .tenant(&id)
                .search(SearchParams::new(words).mode(SearchMode::Text).limit(10))
                .await?;
            text.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        hybrid.sort_by(f64::total_cmp);
        text.sort_by(f64::total_cmp);
        let chunks: usize = members.iter().map(|&i| sizes[i]).sum::<usize>() / members.len();
        println!(
            "{name:<8} {:>7} {:>8} {:>11.2} {:>11.2} {:>10.4} {:>9.2} {:>9.2} {:>10.2} {:>10.2}",
            members.len(),
            format!("~{chunks}"),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            recall_sum / args.queries as f64,
            percentile(&text, 0.5),
            percentile(&text, 0.99),
            percentile(&hybrid, 0.5),
            percentile(&hybrid, 0.99),
        );
    }
    Ok(())
}
