//! `enclave bench-http`: the server under concurrent load over real HTTP.
//! Starts `enclave serve`'s state in-process on the configured store (a
//! fresh temporary data directory unless `--database-url` is given), creates
//! tenants through the admin plane, seeds each with documents carrying a
//! tenant-unique marker word, then runs `--clients` concurrent clients (each
//! bound to one tenant) for `--seconds`: searches, and a share of ingests.
//! Every search result must carry its own tenant's marker; any other is
//! counted as a cross-tenant result. Prints figures; asserts nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use enclave_server::jwt::JwtVerifier;
use enclave_server::Settings;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::common::percentile;
use crate::StoreArgs;

#[derive(Args, Clone)]
pub struct BenchHttpArgs {
    #[arg(long, default_value_t = 200)]
    clients: usize,
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Share of operations that add a document (the rest search).
    #[arg(long, default_value_t = 0.1)]
    ingest_share: f64,
    /// Documents per tenant before the clock starts.
    #[arg(long, default_value_t = 20)]
    seed_documents: usize,
    /// Decide rate limits in this Redis (as replicas would) instead of
    /// in-process; the tenants' plan is large enough never to refuse.
    #[arg(long)]
    redis_url: Option<String>,
    /// Embedding units computing at once per lane (the scheduler's
    /// `workers`; default: the core count).
    #[arg(long)]
    embed_workers: Option<usize>,
    /// The scheduler's heavy-tenant threshold in tokens.
    #[arg(long)]
    heavy_tokens: Option<f64>,
}

/// The server on loopback port 0 in this process, stopped by [`InProcess::stop`].
pub(crate) struct InProcess {
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(state: enclave_server::AppState) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(enclave_server::run(listener, state, async {
            let _ = stop_rx.await;
        }));
        Ok(Self { base, stop, server })
    }

    /// Graceful shutdown, as SIGTERM would.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

const TOPICS: &[&str] = &[
    "refund policy for damaged items",
    "quarterly revenue and growth",
    "onboarding checklist for new engineers",
    "incident postmortem of the outage",
    "pricing tiers and discounts",
    "security review of the login flow",
];

fn marker(t: usize) -> String {
    format!("zq{t:04}marker")
}

fn document(t: usize, n: usize, rng: &mut impl Rng) -> Value {
    let topic = TOPICS[rng.random_range(0..TOPICS.len())];
    json!({
        "name": format!("doc-{n}.md"),
        "type": "markdown",
        "content": format!("# {topic}\n\nThis note of {} is about {topic}. Document {n} explains the {topic} in detail for the team.", marker(t)),
    })
}

struct Stats {
    search: Mutex<Vec<f64>>,
    ingest: Mutex<Vec<f64>>,
    errors: AtomicU64,
    cross_tenant: AtomicU64,
    results: AtomicU64,
}

pub async fn run(mut store: StoreArgs, args: BenchHttpArgs) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    if store.database_url.is_none() {
        store.data_dir = Some(scratch.path().to_owned());
    }
    let admin = "bench-admin-token-0123456789".to_owned();
    let state = crate::backends::open_state(
        &store,
        JwtVerifier::default(),
        Settings {
            admin_token: Some(admin.clone().into()),
            redis_url: args.redis_url.clone().map(Into::into),
            embedding: {
                let mut s = enclave::Scheduling::default();
                s.workers = args.embed_workers.unwrap_or(s.workers);
                s.per_tenant_concurrency = s.per_tenant_concurrency.max(s.workers);
                s.heavy_tokens = args.heavy_tokens.unwrap_or(s.heavy_tokens);
                s
            },
            ..Settings::default()
        },
    )
    .await?;
    let memory = state.memory().clone();
    let server = InProcess::start(state).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(60))
        .build()?;

    // Tenants and keys through the admin plane, then seed documents.
    let run_id = std::process::id();
    let mut keys = Vec::new();
    for t in 0..args.tenants {
        let id = format!("bench-{run_id}-{t}");
        let r = http
            .post(format!("{base}/admin/v1/tenants"))
            .bearer_auth(&admin)
            // The largest built-in plan: this measures throughput, not limits.
            .json(&json!({"id": id, "slug": format!("b{run_id}-{t}"), "name": id, "plan": "enterprise"}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "creating a tenant: {}", r.text().await?);
        let r: Value = http
            .post(format!("{base}/admin/v1/tenants/{id}/keys"))
            .bearer_auth(&admin)
            .json(&json!({"name": "bench", "role": "member"}))
            .send()
            .await?
            .json()
            .await?;
        keys.push(r["key"].as_str().context("no key")?.to_owned());
    }
    let started = Instant::now();
    let seeded = futures::future::try_join_all(keys.iter().enumerate().map(|(t, key)| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            for n in 0..args.seed_documents {
                let r = http
                    .post(format!("{base}/v1/documents"))
                    .bearer_auth(key)
                    .json(&document(t, n, &mut rng))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "seeding: {}", r.text().await?);
            }
            Ok::<(), anyhow::Error>(())
        }
    }))
    .await;
    seeded?;
    println!(
        "seeded {} tenants x {} documents in {:.1} s",
        args.tenants,
        args.seed_documents,
        started.elapsed().as_secs_f64()
    );

    let stats = Arc::new(Stats {
        search: Mutex::new(Vec::new()),
        ingest: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        cross_tenant: AtomicU64::new(0),
        results: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients = (0..args.clients).map(|c| {
        let (http, base, stats) = (http.clone(), base.clone(), stats.clone());
        let t = c % args.tenants;
        let key = keys[t].clone();
        let share = args.ingest_share;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + c as u64);
            let mut n = 100_000 * (c + 1);
            while Instant::now() < deadline {
                let op_started = Instant::now();
                if rng.random_bool(share) {
                    n += 1;
                    let r = http
                        .post(format!("{base}/v1/documents"))
                        .bearer_auth(&key)
                        .json(&document(t, n, &mut rng))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => {
                            stats.ingest.lock().push(op_started.elapsed().as_secs_f64())
                        }
                        _ => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else {
                    let q = TOPICS[rng.random_range(0..TOPICS.len())];
                    let r = http
                        .post(format!("{base}/v1/search"))
                        .bearer_auth(&key)
                        .json(&json!({"query": q, "limit": 10}))
                        .send()
                        .await;
                    let body: Option<Value> = match r {
                        Ok(r) if r.status() == 200 => r.json().await.ok(),
                        _ => None,
                    };
                    let Some(body) = body else {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    stats.search.lock().push(op_started.elapsed().as_secs_f64());
                    let own = marker(t);
                    for hit in body["results"].as_array().into_iter().flatten() {
                        stats.results.fetch_add(1, Ordering::Relaxed);
                        if !hit["content"].as_str().unwrap_or("").contains(&own) {
                            stats.cross_tenant.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    });
    let clock = Instant::now();
    futures::future::join_all(clients).await;
    let secs = clock.elapsed().as_secs_f64();

    // Another tenant's id and a missing id must look the same: body and
    // latency. Tenant 1 asks for tenant 0's first document, and for an id no
    // tenant has, alternately.
    let foreign_id = {
        let r: Value = http
            .get(format!("{base}/v1/documents?limit=1"))
            .bearer_auth(&keys[0])
            .send()
            .await?
            .json()
            .await?;
        r["documents"][0]["document_id"]
            .as_str()
            .context("no document")?
            .to_owned()
    };
    let missing_id = "01a2306c-0000-7000-8000-000000000000";
    let (mut foreign, mut missing) = (Vec::new(), Vec::new());
    let mut bodies = std::collections::HashSet::new();
    for i in 0..2000 {
        let (id, lat) = if i % 2 == 0 {
            (foreign_id.as_str(), &mut foreign)
        } else {
            (missing_id, &mut missing)
        };
        let t0 = Instant::now();
        let r = http
            .get(format!("{base}/v1/documents/{id}"))
            .bearer_auth(&keys[1 % keys.len()])
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        lat.push(t0.elapsed().as_secs_f64());
        bodies.insert((status.as_u16(), body));
    }
    server.stop().await?;
    let state_stats = memory.scheduler_stats();
    foreign.sort_by(f64::total_cmp);
    missing.sort_by(f64::total_cmp);

    let mut search = stats.search.lock().clone();
    let mut ingest = stats.ingest.lock().clone();
    search.sort_by(f64::total_cmp);
    ingest.sort_by(f64::total_cmp);
    let ops = search.len() + ingest.len();
    let lanes = state_stats.units_total;
    println!(
        "{} clients over {} tenants for {secs:.1} s ({:.0} % ingest, rate limits {}): {ops} requests = {:.1} req/s",
        args.clients,
        args.tenants,
        args.ingest_share * 100.0,
        if args.redis_url.is_some() {
            "in Redis"
        } else {
            "in-process"
        },
        ops as f64 / secs
    );
    for (label, lat) in [("search", &search), ("ingest", &ingest)] {
        println!(
            "  {label:<7} {:>7} ok  {:>7.1}/s  p50 {:>8.1} ms  p99 {:>8.1} ms",
            lat.len(),
            lat.len() as f64 / secs,
            percentile(lat, 0.5) * 1e3,
            percentile(lat, 0.99) * 1e3
        );
    }
    println!(
        "  embedding units run: foreground {} background {}; query embeddings {}",
        lanes[0], lanes[1], state_stats.queries_total
    );
    println!(
        "  errors {}  search results checked {}  cross-tenant results {}",
        stats.errors.load(Ordering::Relaxed),
        stats.results.load(Ordering::Relaxed),
        stats.cross_tenant.load(Ordering::Relaxed)
    );
    println!(
        "404 profile, 1,000 GETs each: another tenant's id p50 {:.3} ms p99 {:.3} ms; missing id p50 {:.3} ms p99 {:.3} ms; distinct (status, body) pairs: {}",
        percentile(&foreign, 0.5) * 1e3,
        percentile(&foreign, 0.99) * 1e3,
        percentile(&missing, 0.5) * 1e3,
        percentile(&missing, 0.99) * 1e3,
        bodies.len()
    );
    Ok(())
}
