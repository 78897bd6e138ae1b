//! `enclave bench postgres`: PostgreSQL figures on a generated multi-tenant
//! corpus (precomputed, topic-clustered vectors). Needs a superuser URL
//! (`--database-url`): it creates a scratch database, migrates it as an
//! owner role and ingests and searches as the app role, exactly as the
//! server does. Prints figures; asserts nothing.
//!
//! Measured: ingest chunks/s (`add_documents` batches through the library), catalog
//! objects created by 10k tenants (no DDL per tenant), the per-tenant index
//! build, vector recall@10 and latency for a 20-chunk and a 100k-chunk
//! tenant — Enclave's strategy vs a global HNSW index + `WHERE tenant_id`
//! and vs llmemory's shape (tenant filter on the joined documents table) —
//! hybrid search p50/p99 and the cost of row-level security.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use enclave::core::{
    DocumentBody, DocumentFilter, DocumentType, NewDocument, ProvidedChunk, SearchMode,
    SearchParams, TenantId,
};
use enclave::Memory;
use enclave_embed::HashEmbedder;
use enclave_postgres::scratch::ScratchDatabase;
use enclave_postgres::{PgOptions, PgStore};
use enclave_store::Store;
use futures::StreamExt;
use pgvector::Vector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use super::common::{percentile, WORDS};

const DIMS: usize = 384;
const PER_DOC: usize = 50;
const TOPICS: usize = 64;

pub struct PgBenchArgs {
    pub admin_url: String,
    pub chunks: usize,
    pub tenants: usize,
    pub big: usize,
    pub queries: usize,
    pub jobs: usize,
    pub ingest_only: bool,
}

struct Corpus {
    centers: Vec<Vec<f32>>,
}

impl Corpus {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        Self {
            centers: (0..TOPICS)
                .map(|_| (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect(),
        }
    }

    /// A vector near a random topic (sentence embeddings cluster by topic).
    fn vector(&self, rng: &mut StdRng) -> Vec<f32> {
        let c = &self.centers[rng.random_range(0..TOPICS)];
        c.iter()
            .map(|x| x + rng.random_range(-0.8f32..0.8))
            .collect()
    }

    fn text(&self, rng: &mut StdRng, n: usize) -> String {
        (0..n)
            .map(|_| {
                // Zipf-ish word choice.
                let r: f64 = rng.random();
                WORDS[((r * r * r) * WORDS.len() as f64) as usize % WORDS.len()]
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn document(&self, rng: &mut StdRng, name: String, chunks: usize) -> NewDocument {
        let mut doc = NewDocument::text(name, DocumentType::Text, "");
        doc.body = DocumentBody::Chunks(
            (0..chunks)
                .map(|_| ProvidedChunk {
                    content: self.text(rng, 40),
                    embedding: self.vector(rng),
                })
                .collect(),
        );
        doc
    }
}

fn vector_literal(v: &[f32]) -> Vector {
    Vector::from(v.to_vec())
}

/// Tenant sizes: `big`, 20, and the rest Zipf-distributed over the others.
fn tenant_sizes(total: usize, tenants: usize, big: usize) -> Vec<usize> {
    let rest = total.saturating_sub(big + 20);
    let others = tenants.saturating_sub(2).max(1);
    let weights: Vec<f64> = (0..others).map(|i| 1.0 / (i as f64 + 10.0)).collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes = vec![big, 20];
    sizes.extend(
        weights
            .iter()
            .map(|w| ((w / sum) * rest as f64).round().max(1.0) as usize),
    );
    sizes
}

fn tenant_name(i: usize) -> String {
    match i {
        0 => "big".into(),
        1 => "small".into(),
        i => format!("t{i:05}"),
    }
}

async fn catalog_objects(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM pg_class")
        .fetch_one(pool)
        .await?)
}

/// Runs `sql` (binds: tenant, query vector) as the app role in a
/// transaction bound to the tenant, returning chunk numbers and seconds.
async fn timed(pool: &PgPool, tenant: &str, sql: &str, q: &Vector) -> Result<(Vec<i64>, f64)> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(sql)
        .bind(tenant)
        .bind(q)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let ids = rows
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    Ok((ids, started.elapsed().as_secs_f64()))
}

/// Adds `work` (tenant, [(document no, chunks)]) through the library,
/// `jobs` batches in flight; returns the chunks written.
async fn ingest(
    memory: &Memory,
    corpus: &Arc<Corpus>,
    work: Vec<(usize, Vec<(usize, usize)>)>,
    jobs: usize,
    total: usize,
) -> Result<usize> {
    let mut done = 0usize;
    let mut stream = futures::stream::iter(work.into_iter().map(|(t, batch)| {
        let (memory, corpus) = (memory.clone(), corpus.clone());
        async move {
            let docs: Vec<NewDocument> = batch
                .iter()
                .map(|&(d, c)| {
                    let mut rng = StdRng::seed_from_u64((t as u64) << 32 | d as u64);
                    corpus.document(&mut rng, format!("doc-{d}"), c)
                })
                .collect();
            let tenant = TenantId::parse(&tenant_name(t))?;
            memory.tenant(&tenant).add_documents(docs).await?;
            Ok::<usize, anyhow::Error>(batch.iter().map(|b| b.1).sum())
        }
    }))
    .buffer_unordered(jobs);
    let mut last_report = Instant::now();
    while let Some(r) = stream.next().await {
        done += r?;
        if last_report.elapsed().as_secs() >= 10 {
            eprintln!("  ingested {done} of {total} chunks");
            last_report = Instant::now();
        }
    }
    Ok(done)
}

fn recall(got: &[i64], truth: &[i64]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    got.iter().filter(|g| truth.contains(g)).count() as f64 / truth.len() as f64
}

fn ms(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p) * 1e3
}

const EXACT: &str = "SELECT c.chunk_no FROM chunks c WHERE c.tenant_id = $1 AND c.kind = 0 \
     ORDER BY cosine_distance(c.embedding, $2), c.chunk_no LIMIT 10";
const GLOBAL_HNSW: &str = "SELECT c.chunk_no FROM chunks c WHERE c.tenant_id = $1 AND c.kind = 0 \
     ORDER BY c.embedding <=> $2 LIMIT 10";
const LLMEMORY: &str = "SELECT c.chunk_no FROM chunks c JOIN documents d \
     ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id \
     WHERE d.tenant_id = $1 ORDER BY c.embedding <=> $2 LIMIT 10";

pub async fn run(args: PgBenchArgs) -> Result<()> {
    let (db, app_role) = ScratchDatabase::migrated(&args.admin_url)
        .await
        .context("creating the scratch database (is --database-url a superuser?)")?;
    let app_url = db.url_as(&app_role);
    let su = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.superuser.clone())
        .await?;
    let app = PgPoolOptions::new()
        .max_connections(4)
        .connect(&app_url)
        .await?;
    let store = Arc::new(
        PgStore::connect_with(
            &app_url,
            DIMS,
            PgOptions {
                max_connections: (args.jobs as u32 + 2).max(4),
                ..PgOptions::default()
            },
        )
        .await?,
    );
    let memory = Memory::from_parts(
        store.clone(),
        Arc::new(HashEmbedder::new(DIMS)),
        Default::default(),
        0,
    );
    let corpus = Arc::new(Corpus::new());
    let sizes = tenant_sizes(args.chunks, args.tenants, args.big);
    let total: usize = sizes.iter().sum();
    println!(
        "postgres corpus: {total} chunks, {} tenants (largest {}, then 20, then {}..1), {PER_DOC} chunks per document, {DIMS} dims",
        sizes.len(),
        sizes[0],
        sizes.get(2).copied().unwrap_or(0)
    );

    // Ingest: documents of up to PER_DOC chunks, added in batches of up to
    // BATCH documents of one tenant (`add_documents`), `jobs` batches in flight.
    const BATCH: usize = 20;
    let objects_before = catalog_objects(&su).await?;
    let mut work: Vec<(usize, Vec<(usize, usize)>)> = Vec::new(); // tenant, [(doc no, chunks)]
    for (t, &n) in sizes.iter().enumerate() {
        let mut docs = Vec::new();
        let mut left = n;
        while left > 0 {
            let c = left.min(PER_DOC);
            docs.push((docs.len(), c));
            left -= c;
        }
        for batch in docs.chunks(BATCH) {
            work.push((t, batch.to_vec()));
        }
    }
    // First the large tenant alone (a bulk import), then everyone else
    // interleaved, as concurrent customers would be.
    let (bulk, mut mixed): (Vec<_>, Vec<_>) = work.into_iter().partition(|(t, _)| *t == 0);
    let mut shuffle = StdRng::seed_from_u64(3);
    for i in (1..mixed.len()).rev() {
        let j = shuffle.random_range(0..=i);
        mixed.swap(i, j);
    }
    let mut all = (0usize, 0f64);
    for (label, work) in [
        ("bulk import into one tenant", bulk),
        ("all other tenants interleaved", mixed),
    ] {
        let started = Instant::now();
        let done = ingest(&memory, &corpus, work, args.jobs, total).await?;
        let secs = started.elapsed().as_secs_f64();
        all = (all.0 + done, all.1 + secs);
        println!(
            "ingest, {label} (add_documents: ≤ {BATCH} documents of ≤ {PER_DOC} chunks per transaction, one INSERT … unnest each, {} in flight): {done} chunks in {secs:.1} s = {:.0} chunks/s",
            args.jobs,
            done as f64 / secs
        );
    }
    println!(
        "ingest, overall: {} chunks in {:.1} s = {:.0} chunks/s",
        all.0,
        all.1,
        all.0 as f64 / all.1
    );
    let objects_after = catalog_objects(&su).await?;
    println!(
        "catalog objects created while adding {} tenants: {} (shared mode: no DDL per tenant)",
        sizes.len(),
        objects_after - objects_before
    );
    if args.ingest_only {
        return Ok(());
    }
    sqlx::query("VACUUM ANALYZE").execute(&su).await?;

    // Per-tenant index for the large tenant.
    let started = Instant::now();
    let changes = enclave_postgres::ensure_vector_indexes(
        &db.owner_url,
        &enclave_postgres::IndexPolicy::default(),
    )
    .await?;
    println!(
        "enclave maintain (per-tenant HNSW, m={}, ef_construction={}): {:?} in {:.1} s",
        enclave_postgres::IndexPolicy::default().m,
        enclave_postgres::IndexPolicy::default().ef_construction,
        changes,
        started.elapsed().as_secs_f64()
    );

    // Queries near the data's topics.
    let mut rng = StdRng::seed_from_u64(11);
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| corpus.vector(&mut rng)).collect();
    // The 100k-chunk tenant, the 20-chunk one, and the largest of the rest.
    let probe: Vec<String> = (0..3).map(tenant_name).collect();
    let mut truth: Vec<Vec<Vec<i64>>> = vec![Vec::new(); 3];
    let mut exact_lat: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for (t, name) in probe.iter().enumerate() {
        for q in &queries {
            let (ids, s) = timed(&app, name, EXACT, &vector_literal(q)).await?;
            truth[t].push(ids);
            exact_lat[t].push(s);
        }
    }
    let report = |label: &str, tenant: usize, lat: &mut Vec<f64>, got: &[Vec<i64>]| {
        lat.sort_by(f64::total_cmp);
        let r: f64 = got
            .iter()
            .zip(&truth[tenant])
            .map(|(g, t)| recall(g, t))
            .sum::<f64>()
            / got.len().max(1) as f64;
        println!(
            "  {:<44} {:>7} chunks  recall@10 {r:.4}  p50 {:>7.2} ms  p99 {:>7.2} ms",
            label,
            sizes[tenant],
            ms(lat, 0.5),
            ms(lat, 0.99)
        );
    };
    println!(
        "vector search, top 10, {} queries per tenant:",
        args.queries
    );
    for t in 0..3 {
        let mut lat = exact_lat[t].clone();
        report(
            "exact scan (cosine_distance, tenant btree)",
            t,
            &mut lat,
            &truth[t],
        );
    }
    let enclave_run = |label: &'static str, store: Arc<PgStore>| {
        let queries = &queries;
        let report = &report;
        let probe = &probe;
        async move {
            for (t, name) in probe.iter().enumerate() {
                let ts = store.tenant(&TenantId::parse(name)?);
                let (mut lat, mut got) = (Vec::new(), Vec::new());
                for q in queries {
                    let started = Instant::now();
                    let c = ts
                        .vector_candidates(q, &DocumentFilter::default(), 10)
                        .await?;
                    lat.push(started.elapsed().as_secs_f64());
                    got.push(c.iter().map(|c| c.key).collect::<Vec<_>>());
                }
                report(label, t, &mut lat, &got);
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    enclave_run(
        "enclave (per-tenant HNSW if large, else exact)",
        store.clone(),
    )
    .await?;
    // The same with twice the default candidate list (ef_search), to show
    // what recall the default leaves on the table.
    let ef = PgOptions::default().hnsw_ef_search * 2;
    let wide = Arc::new(
        PgStore::connect_with(
            &app_url,
            DIMS,
            PgOptions {
                max_connections: 2,
                hnsw_ef_search: ef,
                ..PgOptions::default()
            },
        )
        .await?,
    );
    enclave_run("enclave, hnsw.ef_search doubled", wide).await?;

    // A global HNSW index, as a single-tenant setup would have.
    let started = Instant::now();
    sqlx::raw_sql(
        "SET maintenance_work_mem = '4GB'; \
         CREATE INDEX chunks_global_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)",
    )
    .execute(&su)
    .await?;
    sqlx::query("ANALYZE chunks").execute(&su).await?;
    println!(
        "global HNSW index over all {total} chunks built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (label, sql) in [
        ("global HNSW + WHERE tenant_id", GLOBAL_HNSW),
        ("llmemory shape (tenant on joined documents)", LLMEMORY),
    ] {
        for (t, name) in probe.iter().enumerate() {
            let (mut lat, mut got) = (Vec::new(), Vec::new());
            for q in &queries {
                let (ids, s) = timed(&app, name, sql, &vector_literal(q)).await?;
                lat.push(s);
                got.push(ids);
            }
            report(label, t, &mut lat, &got);
        }
    }
    enclave_run("enclave, with the global index present", store.clone()).await?;
    sqlx::query("DROP INDEX chunks_global_hnsw")
        .execute(&su)
        .await?;

    // Hybrid search through the library (query vectors from the hash embedder).
    let mid = tenant_name(2);
    println!("hybrid search through the library, limit 10:");
    for name in ["big", mid.as_str(), "small"] {
        let t = memory.tenant(&TenantId::parse(name)?);
        let mut lat = Vec::new();
        for i in 0..args.queries {
            let q = corpus.text(&mut StdRng::seed_from_u64(i as u64), 3);
            let started = Instant::now();
            t.search(SearchParams::new(q).mode(SearchMode::Hybrid).limit(10))
                .await?;
            lat.push(started.elapsed().as_secs_f64());
        }
        lat.sort_by(f64::total_cmp);
        let n = sizes[match name {
            "big" => 0,
            "small" => 1,
            _ => 2,
        }];
        println!(
            "  {name:<8} {n:>7} chunks  p50 {:>7.2} ms  p99 {:>7.2} ms",
            ms(&lat, 0.5),
            ms(&lat, 0.99)
        );
    }

    // Row-level security: the same statements as the app role (RLS on) and
    // as the superuser (RLS bypassed), alternating.
    let text_sql =
        "SELECT c.chunk_no FROM to_tsquery('english', 'revenue | customers') q, chunks c \
         WHERE c.tenant_id = $1 AND c.kind = 0 AND c.tsv @@ q AND $2::vector IS NOT NULL \
         ORDER BY ts_rank_cd(c.tsv, q) DESC, c.chunk_no LIMIT 10";
    println!("row-level security cost (same statement, app role vs superuser):");
    for (label, sql, tenant) in [
        ("exact vector, mid tenant", EXACT, mid.as_str()),
        ("full text, mid tenant", text_sql, mid.as_str()),
        ("full text, large tenant", text_sql, "big"),
    ] {
        let (mut with_rls, mut without) = (Vec::new(), Vec::new());
        // Ranking every match of a large tenant is slow; fewer rounds there.
        let rounds = if tenant == "big" {
            40
        } else {
            args.queries.min(200)
        };
        for q in queries.iter().take(rounds) {
            let v = vector_literal(q);
            with_rls.push(timed(&app, tenant, sql, &v).await?.1);
            without.push(timed(&su, tenant, sql, &v).await?.1);
        }
        with_rls.sort_by(f64::total_cmp);
        without.sort_by(f64::total_cmp);
        let (a, b) = (ms(&with_rls, 0.5), ms(&without, 0.5));
        println!(
            "  {label:<26} RLS p50 {a:.3} ms, superuser p50 {b:.3} ms: {:+.1} %",
            (a / b - 1.0) * 100.0
        );
    }
    su.close().await;
    app.close().await;
    Ok(())
}
