//! `enclave bench text`: full-text and hybrid search on PostgreSQL over
//! one large tenant of real text (docs/BENCHMARKS.md). The tenant is built
//! from a BEIR corpus (`--corpus`, e.g. SciFact): every abstract as it is,
//! then documents of the same lengths made of the corpus's own sentences
//! drawn at random (seeded), until the tenant holds `--chunks` chunks — a
//! real vocabulary with real term frequencies, ten times the corpus.
//! Vectors come from the deterministic hash embedder (the vector half's
//! cost is an HNSW probe either way; the model's own cost is measured by
//! `enclave eval`). Queries are the split's, searched with limit 10.
//!
//! Prints: ingest rate, text and hybrid p50/p99 through the library, and
//! text nDCG@10 on the split's judgments (the original abstracts keep their
//! ids) against an exhaustive BM25 over the same tenant, which scores every
//! chunk holding any query term. Asserts nothing.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use enclave::core::{
    ChunkStrategy, ChunkingOptions, DocumentType, NewDocument, SearchMode, SearchParams, TenantId,
};
use enclave::{Memory, Tenant};
use enclave_embed::HashEmbedder;
use enclave_postgres::scratch::ScratchDatabase;
use enclave_postgres::{PgOptions, PgStore};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;

use super::common::percentile;
use crate::eval::{beir, metrics};

const DIMS: usize = 384;
const TENANT: &str = "big";
/// Words per chunk: with the hash embedder's word counter, chunks of the
/// size the model's 256-token default makes of this English (≈ 1.3 model
/// tokens per word).
const CHUNK_WORDS: u32 = 190;

pub struct TextBenchArgs {
    pub admin_url: String,
    pub corpus: std::path::PathBuf,
    pub split: String,
    pub chunks: usize,
    pub queries: usize,
    pub jobs: usize,
    /// Measure again on the database a previous run built (its id).
    pub reuse: Option<String>,
    /// Queries whose nDCG@10 is compared with the exhaustive ranking.
    pub quality_queries: usize,
    /// Other postings budgets to compare (tuning).
    pub budgets: Vec<u64>,
}

pub async fn run(args: TextBenchArgs) -> Result<()> {
    let data = beir::load(&args.corpus, &args.split)?;
    let (db, app_role) = match &args.reuse {
        Some(id) => ScratchDatabase::existing(&args.admin_url, id)?,
        None => ScratchDatabase::migrated(&args.admin_url)
            .await
            .context("creating the scratch database (is --database-url a superuser?)")?,
    };
    println!(
        "database enclave_t_{} (measure it again with --reuse {})",
        db.id, db.id
    );
    let app_url = db.url_as(&app_role);
    let open = |exhaustive_text: bool, budget: Option<u64>| {
        let app_url = app_url.clone();
        async move {
            let defaults = PgOptions::default();
            let store = PgStore::connect_with(
                &app_url,
                DIMS,
                PgOptions {
                    max_connections: 8,
                    exhaustive_text,
                    text_postings_budget: budget.unwrap_or(defaults.text_postings_budget),
                    ..defaults
                },
            )
            .await?;
            Ok::<_, anyhow::Error>(Memory::from_parts(
                Arc::new(store),
                Arc::new(HashEmbedder::new(DIMS)),
                Default::default(),
                4096,
            ))
        }
    };
    let memory = open(false, None).await?;
    let tenant = memory.tenant(&TenantId::parse(TENANT)?);
    let have = tenant.statistics().await?.chunk_count as usize;
    if have < args.chunks {
        fill(&tenant, &data.corpus, args.chunks, args.jobs).await?;
        let su = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.superuser.clone())
            .await?;
        sqlx::query("VACUUM ANALYZE").execute(&su).await?;
        su.close().await;
        let started = Instant::now();
        let changes = enclave_postgres::ensure_vector_indexes(
            &db.owner_url,
            &enclave_postgres::IndexPolicy::default(),
        )
        .await?;
        println!(
            "enclave maintain (per-tenant HNSW): {changes:?} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let stats = tenant.statistics().await?;
    println!(
        "tenant {TENANT}: {} documents, {} chunks, {} tokens of real text",
        stats.document_count, stats.chunk_count, stats.total_tokens
    );
    let queries: Vec<&beir::Query> = data.queries.iter().take(args.queries).collect();
    println!(
        "{} queries of the {} split, limit 10, one at a time:",
        queries.len(),
        args.split
    );
    for mode in [SearchMode::Text, SearchMode::Hybrid] {
        // A first pass warms the caches, the pool's connections (and the
        // hash embedder's queries).
        for q in &queries {
            tenant
                .search(SearchParams::new(&q.text).mode(mode).limit(10))
                .await?;
        }
        let mut ms = Vec::with_capacity(queries.len());
        for q in &queries {
            let started = Instant::now();
            tenant
                .search(SearchParams::new(&q.text).mode(mode).limit(10))
                .await?;
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  {:<6} p50 {:>7.2} ms  p99 {:>7.2} ms",
            mode.as_str(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    let quality: Vec<&beir::Query> = queries.iter().take(args.quality_queries).copied().collect();
    let exhaustive = open(true, None).await?;
    let reference = exhaustive.tenant(&TenantId::parse(TENANT)?);
    let ((theirs, _, _), exact) = text_ndcg(&reference, &quality, None).await?;
    let ((ours, same, _), _) = text_ndcg(&tenant, &quality, Some(&exact)).await?;
    println!(
        "text nDCG@10 over the first {} queries' judgments: {ours:.4}; exhaustive BM25 over every matching chunk: {theirs:.4} (difference {:+.4}); the same top 10 chunks as the exhaustive ranking: {:.1} %",
        quality.len(),
        ours - theirs,
        same * 100.0
    );
    for budget in &args.budgets {
        let other = open(false, Some(*budget)).await?;
        let t = other.tenant(&TenantId::parse(TENANT)?);
        // Its own connections, warmed as the default's were.
        text_ndcg(&t, &quality, None).await?;
        let ((n, same, p50), _) = text_ndcg(&t, &quality, Some(&exact)).await?;
        println!(
            "  with a postings budget of {budget}: {n:.4} ({:+.4}), same top 10 {:.1} %, text p50 {p50:.2} ms",
            n - theirs,
            same * 100.0
        );
    }
    Ok(())
}

/// Each query's first 10 chunks.
type TopTens = Vec<Vec<enclave::core::ChunkId>>;

/// nDCG@10 of text search (limit 10), a document ranked at its best chunk,
/// the share of the first 10 chunks that are also in `exact`'s and the
/// p50 latency; with each query's first 10 chunks.
async fn text_ndcg(
    tenant: &Tenant,
    queries: &[&beir::Query],
    exact: Option<&TopTens>,
) -> Result<((f64, f64, f64), TopTens)> {
    let (mut sum, mut same) = (0.0, 0.0);
    let mut tops = Vec::with_capacity(queries.len());
    let mut ms = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let started = Instant::now();
        let found = tenant
            .search(SearchParams::new(&q.text).mode(SearchMode::Text).limit(10))
            .await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        let ranked =
            metrics::documents_in_order(found.results.iter().map(|h| h.document_name.as_str()));
        sum += metrics::ndcg(&ranked, &q.judged, 10);
        let top: Vec<_> = found.results.iter().map(|h| h.chunk_id).collect();
        if let Some(exact) = exact {
            let want = &exact[i];
            let shared = top.iter().filter(|c| want.contains(c)).count();
            same += shared as f64 / want.len().max(1) as f64;
        }
        tops.push(top);
    }
    let n = queries.len().max(1) as f64;
    ms.sort_by(f64::total_cmp);
    Ok(((sum / n, same / n, percentile(&ms, 0.5)), tops))
}

/// Adds the corpus, then documents of its sentences, until the tenant has
/// `target` chunks.
async fn fill(
    tenant: &Tenant,
    corpus: &[beir::CorpusDoc],
    target: usize,
    jobs: usize,
) -> Result<()> {
    let sentences: Vec<&str> = corpus
        .iter()
        .flat_map(|d| split_sentences(&d.text))
        .collect();
    let chunking = ChunkingOptions {
        strategy: ChunkStrategy::Auto,
        max_tokens: CHUNK_WORDS,
        overlap_tokens: 24,
    };
    let started = Instant::now();
    let mut chunks = tenant.statistics().await?.chunk_count as usize;
    let mut copy = 0usize;
    while chunks < target {
        let docs: Vec<NewDocument> = corpus
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (name, content) = if copy == 0 {
                    (d.id.clone(), d.content())
                } else {
                    let mut rng = StdRng::seed_from_u64(((copy as u64) << 32) | i as u64);
                    let n = split_sentences(&d.text).count().max(1);
                    let title = &corpus[rng.random_range(0..corpus.len())].title;
                    let body: Vec<&str> = (0..n)
                        .map(|_| sentences[rng.random_range(0..sentences.len())])
                        .collect();
                    (
                        format!("syn{copy}-{}", d.id),
                        format!("{title}\n\n{}", body.join(" ")),
                    )
                };
                let mut doc = NewDocument::text(name, DocumentType::Text, content);
                doc.chunking = chunking;
                doc
            })
            .collect();
        let mut added = futures::stream::iter(
            docs.chunks(20)
                .map(|batch| tenant.add_documents(batch.to_vec())),
        )
        .buffer_unordered(jobs.max(1));
        while let Some(r) = added.next().await {
            chunks += r?.iter().map(|a| a.chunks_created as usize).sum::<usize>();
            if chunks >= target {
                break;
            }
        }
        eprintln!("  {chunks} chunks after copy {copy}");
        copy += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {chunks} chunks in {secs:.1} s = {:.0} chunks/s (add_documents, 20 documents per call, {jobs} in flight, hash embedder)",
        chunks as f64 / secs
    );
    Ok(())
}

/// The sentences of a text: split after `.`, `?` or `!` followed by a
/// space and an upper-case letter or a digit.
fn split_sentences(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut out = Vec::new();
    for i in 0..bytes.len().saturating_sub(2) {
        if matches!(bytes[i], b'.' | b'?' | b'!')
            && bytes[i + 1] == b' '
            && (bytes[i + 2].is_ascii_uppercase() || bytes[i + 2].is_ascii_digit())
        {
            out.push(text[start..=i].trim());
            start = i + 2;
        }
    }
    if start < text.len() {
        out.push(text[start..].trim());
    }
    out.into_iter().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_their_ends_only() {
        let got: Vec<&str> =
            split_sentences("Cells grew 2.5 fold. We saw it! 3 mice died. e.g. here").collect();
        assert_eq!(
            got,
            [
                "Cells grew 2.5 fold.",
                "We saw it!",
                "3 mice died. e.g. here"
            ]
        );
    }
}
