//! `enclave bench-fairness`: does one tenant's ingestion flood degrade
//! another tenant? Starts the server in-process (real HTTP, the configured
//! store and embedder), creates tenants A and B, and measures B's
//! operations — add one document, then search for it — first with the
//! server otherwise idle, then while `--flood-clients` clients of A post
//! large documents as fast as the server takes them. Prints B's latency
//! in both phases, the ratio, and A's throughput; asserts nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use enclave::Scheduling;
use enclave_server::jwt::JwtVerifier;
use enclave_server::Settings;
use serde_json::{json, Value};

use super::victim::{create_tenant, key, paragraph, rounds};

use super::common::percentile;
use crate::StoreArgs;

#[derive(Args, Clone)]
pub struct BenchFairnessArgs {
    /// Concurrent clients of tenant A posting documents.
    #[arg(long, default_value_t = 8)]
    flood_clients: usize,
    /// Paragraphs per flood document (each about 60 tokens).
    #[arg(long, default_value_t = 40)]
    flood_paragraphs: usize,
    /// B's measured rounds (one add + one search each) per phase.
    #[arg(long, default_value_t = 40)]
    rounds: usize,
    /// Seconds the flood runs before B's rounds start (A's rate alone is
    /// measured over all but the first).
    #[arg(long, default_value_t = 4)]
    warmup_seconds: u64,
    /// Override the scheduler's heavy-tenant threshold (tokens); a huge
    /// value keeps every tenant in the foreground lane (round-robin only).
    #[arg(long)]
    heavy_tokens: Option<f64>,
}

pub async fn run(mut store: StoreArgs, args: BenchFairnessArgs) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    if store.database_url.is_none() {
        store.data_dir = Some(scratch.path().to_owned());
    }
    let mut scheduling = Scheduling::default();
    if let Some(h) = args.heavy_tokens {
        scheduling.heavy_tokens = h;
    }
    let admin = "bench-admin-token-0123456789".to_owned();
    let state = crate::backends::open_state(
        &store,
        JwtVerifier::default(),
        Settings {
            admin_token: Some(admin.clone().into()),
            embedding: scheduling,
            ..Settings::default()
        },
    )
    .await?;
    let memory = state.memory().clone();
    let server = super::http::InProcess::start(state).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let run_id = std::process::id();
    let (a, b) = (format!("flood-{run_id}"), format!("quiet-{run_id}"));
    let unlimited = json!({"plan": "enterprise",
        "limits": {"requests_per_second": 100000, "burst": 100000}});
    for t in [&a, &b] {
        create_tenant(&http, &base, &admin, t, unlimited.clone()).await?;
    }
    let a = key(&http, &base, &admin, &a, "member").await?;
    let b = key(&http, &base, &admin, &b, "member").await?;

    // Warm the model and the store, then B alone.
    rounds(&http, &base, &b, "w", 5).await?;
    let (add_idle, search_idle) = rounds(&http, &base, &b, "i", args.rounds).await?;

    // A floods; B repeats its rounds.
    let stop = Arc::new(AtomicBool::new(false));
    let (docs, chunks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood: Vec<_> = (0..args.flood_clients)
        .map(|c| {
            let (http, base, a) = (http.clone(), base.clone(), a.clone());
            let (stop, docs, chunks) = (stop.clone(), docs.clone(), chunks.clone());
            let paragraphs = args.flood_paragraphs;
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let content: Vec<String> = (0..paragraphs)
                        .map(|p| paragraph(c as u64 * 1_000_000 + n, p))
                        .collect();
                    let r = http
                        .post(format!("{base}/v1/documents"))
                        .bearer_auth(&a)
                        .json(
                            &json!({"name": format!("flood-{c}-{n}.md"), "type": "markdown",
                            "content": content.join("\n\n")}),
                        )
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 201, "A's add: {}", r.text().await?);
                    let body: Value = r.json().await?;
                    docs.fetch_add(1, Ordering::Relaxed);
                    chunks.fetch_add(
                        body["chunks_created"].as_u64().unwrap_or(0),
                        Ordering::Relaxed,
                    );
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    // A alone: its rate over the warm-up after its first second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (alone_from, alone_clock) = (chunks.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds.max(2) - 1)).await;
    let alone_rate =
        (chunks.load(Ordering::Relaxed) - alone_from) as f64 / alone_clock.elapsed().as_secs_f64();
    let stats_before = memory.scheduler_stats();
    let (chunks_before, clock) = (chunks.load(Ordering::Relaxed), Instant::now());
    let (add_load, search_load) = rounds(&http, &base, &b, "l", args.rounds).await?;
    let secs = clock.elapsed().as_secs_f64();
    let flood_chunks = chunks.load(Ordering::Relaxed) - chunks_before;
    let stats_after = memory.scheduler_stats();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await??;
    }
    server.stop().await?;

    println!(
        "tenant B, {} rounds per phase; tenant A flooding with {} clients x {}-paragraph documents (heavy_tokens {})",
        args.rounds, args.flood_clients, args.flood_paragraphs, scheduling.heavy_tokens
    );
    for (label, idle, load) in [
        ("B add one document", &add_idle, &add_load),
        ("B search", &search_idle, &search_load),
    ] {
        let (i50, l50) = (percentile(idle, 0.5), percentile(load, 0.5));
        let (i95, l95) = (percentile(idle, 0.95), percentile(load, 0.95));
        println!(
            "  {label:<20} unloaded p50 {:>7.1} ms p95 {:>7.1} ms | flooded p50 {:>7.1} ms p95 {:>7.1} ms | ratio p50 {:.2}x p95 {:.2}x",
            i50 * 1e3,
            i95 * 1e3,
            l50 * 1e3,
            l95 * 1e3,
            l50 / i50,
            l95 / i95
        );
    }
    println!(
        "  A meanwhile: {flood_chunks} chunks in {secs:.1} s = {:.1} chunks/s (alone: {alone_rate:.1} chunks/s; {} documents in all); units run foreground {} background {}",
        flood_chunks as f64 / secs,
        docs.load(Ordering::Relaxed),
        stats_after.units_total[0] - stats_before.units_total[0],
        stats_after.units_total[1] - stats_before.units_total[1],
    );
    Ok(())
}
