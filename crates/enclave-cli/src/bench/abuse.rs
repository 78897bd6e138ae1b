//! `enclave bench-abuse`: can one tenant, or nobody with a credential at
//! all, degrade another tenant? Starts the real server as a child process
//! (so its resident memory is its own), creates a victim tenant B and an
//! attacker tenant A, and measures B's small upload and search — first with
//! the server otherwise idle, then while each attack runs in turn:
//!
//! - `heading`: A uploads the 114 KB markdown document of the security
//!   review (one 60,000-character heading over 8,000 short paragraphs) in a
//!   loop;
//! - `random-keys`: 64 clients, each from its own loopback address, send
//!   random `ek_…` credentials as fast as they are answered;
//! - `abandoned`: A uploads 10 MiB documents at its plan's full request rate
//!   and abandons each after a moment;
//! - `export`: A's admin runs exports of A's documents in a loop.
//!
//! For each phase it prints B's p50/p99 and their ratio to idle, the
//! server's peak resident memory (VmHWM) and the audit rows the phase
//! added, with what the attacker got back. Asserts nothing: the figures go
//! to docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::common::percentile;
use super::victim::{create_tenant, key, paragraph, rounds};
use crate::StoreArgs;

#[derive(Args, Clone)]
pub struct BenchAbuseArgs {
    /// B's measured rounds (one small upload + one search each) per phase.
    #[arg(long, default_value_t = 60)]
    rounds: usize,
    /// Clients sending random credentials (each from its own address).
    #[arg(long, default_value_t = 64)]
    random_clients: usize,
    /// Size of each abandoned upload, in MiB (just under the 10 MiB
    /// document limit at 10).
    #[arg(long, default_value_t = 10)]
    upload_mib: usize,
    /// How long an abandoned upload's client waits before it goes away.
    #[arg(long, default_value_t = 500)]
    abandon_after_ms: u64,
    /// Concurrent export loops of A.
    #[arg(long, default_value_t = 8)]
    export_clients: usize,
    /// Documents A holds for the export loop.
    #[arg(long, default_value_t = 300)]
    export_documents: usize,
    /// Only these phases (comma-separated: heading, random-keys, abandoned,
    /// export); all when unset.
    #[arg(long)]
    phases: Option<String>,
    /// Writes the server's log here (with `ENCLAVE_LOG`, e.g.
    /// `enclave=debug` for each upload's phase timings); discarded when
    /// unset.
    #[arg(long)]
    server_log: Option<std::path::PathBuf>,
}

const ADMIN: &str = "bench-abuse-admin-token-0123456789";
const PHASES: [&str; 4] = ["heading", "random-keys", "abandoned", "export"];

/// The server under test, a child process of this one.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(store: &StoreArgs, log: Option<&std::path::Path>) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let settings = dir.path().join("settings.toml");
        // B is measured, not limited; A keeps the free plan's limits
        // (20 requests/s, burst 40) and every other default.
        std::fs::write(&settings, "")?;
        let mut cmd = Command::new(std::env::current_exe()?);
        match &store.database_url {
            Some(url) => {
                cmd.arg("--database-url").arg(url);
            }
            None => {
                cmd.arg("--data-dir").arg(dir.path().join("data"));
            }
        }
        if let Some(m) = &store.model_dir {
            cmd.arg("--model-dir").arg(m);
        }
        if store.embedder == crate::EmbedderArg::Hash {
            cmd.args(["--embedder", "hash"]);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&settings)
            .env("ENCLAVE_ADMIN_TOKEN", ADMIN)
            .env_remove("ENCLAVE_METRICS_LISTEN")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            });
        let mut child = cmd.spawn().context("starting enclave serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the server said {line:?}"))?
            .to_owned();
        Ok(Server {
            child,
            base,
            _dir: dir,
        })
    }

    /// (peak, current) resident memory in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every audit event of these scopes (None: the platform's).
async fn audit_rows(http: &reqwest::Client, base: &str, scopes: &[Option<&str>]) -> Result<u64> {
    let mut n = 0;
    for scope in scopes {
        let mut cursor = String::new();
        loop {
            let q = scope.map_or(String::new(), |t| format!("&tenant_id={t}"));
            let r: Value = http
                .get(format!(
                    "{base}/admin/v1/audit?limit=500{q}&cursor={cursor}"
                ))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .json()
                .await?;
            n += r["events"].as_array().map_or(0, |e| e.len() as u64);
            match r["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
    }
    Ok(n)
}

/// The review's document: a 60,000-character heading over 8,000 short
/// paragraphs (114 KB).
fn heading_document() -> String {
    let mut s = format!("# {}\n\n", "H".repeat(60_000));
    for i in 0..8_000 {
        s.push_str(&format!("p{i}\n\n"));
    }
    s
}

/// What the attacker's requests got back, by status (or "gone": abandoned
/// or failed in transport).
#[derive(Default)]
struct Outcomes(Mutex<BTreeMap<String, u64>>);

impl Outcomes {
    fn count(&self, r: &reqwest::Result<reqwest::Response>) {
        let k = match r {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "gone".into(),
        };
        *self.0.lock().entry(k).or_default() += 1;
    }
    fn summary(&self) -> String {
        let m = self.0.lock();
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Attack {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    outcomes: Arc<Outcomes>,
}

impl Attack {
    async fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.outcomes.summary()
    }
}

/// Starts `clients` loops of `one` (each given its client index).
fn attack<F, Fut>(clients: usize, one: F) -> Attack
where
    F: Fn(usize, Arc<Outcomes>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Outcomes::default());
    let one = Arc::new(one);
    let tasks = (0..clients)
        .map(|c| {
            let (stop, outcomes, one) = (stop.clone(), outcomes.clone(), one.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    one(c, outcomes.clone()).await;
                }
            })
        })
        .collect();
    Attack {
        stop,
        tasks,
        outcomes,
    }
}

pub async fn run(store: StoreArgs, args: BenchAbuseArgs) -> Result<()> {
    let server = Server::start(&store, args.server_log.as_deref())?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let run = std::process::id();
    let (a, b) = (format!("attacker-{run}"), format!("victim-{run}"));
    create_tenant(&http, &base, ADMIN, &a, json!({})).await?;
    create_tenant(
        &http,
        &base,
        ADMIN,
        &b,
        json!({"limits": {"requests_per_second": 100000, "burst": 100000}}),
    )
    .await?;
    let (a_member, a_admin, b_key) = (
        key(&http, &base, ADMIN, &a, "member").await?,
        key(&http, &base, ADMIN, &a, "admin").await?,
        key(&http, &base, ADMIN, &b, "member").await?,
    );
    let scopes = [None, Some(a.as_str()), Some(b.as_str())];
    let wanted: Vec<&str> = match &args.phases {
        Some(p) => p.split(',').map(str::trim).collect(),
        None => PHASES.to_vec(),
    };
    if let Some(bad) = wanted.iter().find(|p| !PHASES.contains(p)) {
        anyhow::bail!("unknown phase {bad:?}; the phases are {PHASES:?}");
    }

    // Warm the model and both tenants, then B alone.
    rounds(&http, &base, &b_key, "warm", 5).await?;
    let (add_idle, search_idle) = rounds(&http, &base, &b_key, "idle", args.rounds).await?;
    let (idle_peak, _) = server.rss_mib();
    println!(
        "victim B: {} rounds per phase (one small upload + one search); attacker A on the free plan's limits",
        args.rounds
    );
    println!(
        "  {:<12} upload p50 {:>7.1} ms p99 {:>7.1} ms | search p50 {:>7.1} ms p99 {:>7.1} ms | peak RSS {idle_peak:.0} MiB",
        "idle",
        percentile(&add_idle, 0.5) * 1e3,
        percentile(&add_idle, 0.99) * 1e3,
        percentile(&search_idle, 0.5) * 1e3,
        percentile(&search_idle, 0.99) * 1e3,
    );

    for phase in wanted {
        let before = audit_rows(&http, &base, &scopes).await?;
        let attack = match phase {
            "heading" => {
                let doc = Arc::new(heading_document());
                let (http, base, key) = (http.clone(), base.clone(), a_member.clone());
                attack(2, move |c, out| {
                    let (http, base, key, doc) =
                        (http.clone(), base.clone(), key.clone(), doc.clone());
                    async move {
                        let r = http
                            .post(format!("{base}/v1/documents"))
                            .bearer_auth(&key)
                            .json(
                                &json!({"name": format!("heading-{c}.md"), "type": "markdown",
                                "content": doc.as_str()}),
                            )
                            .send()
                            .await;
                        out.count(&r);
                        settle(r).await;
                    }
                })
            }
            "random-keys" => {
                let base = base.clone();
                attack(args.random_clients, move |c, out| {
                    let base = base.clone();
                    async move {
                        // Each client from its own loopback address.
                        let ip: IpAddr = format!("127.0.{}.{}", 1 + c / 250, 2 + c % 250)
                            .parse()
                            .expect("an address");
                        let http = reqwest::Client::builder()
                            .local_address(ip)
                            .timeout(Duration::from_secs(30))
                            .build()
                            .expect("a client");
                        for _ in 0..50 {
                            let r = http
                                .get(format!("{base}/v1/documents"))
                                .bearer_auth(random_key())
                                .send()
                                .await;
                            out.count(&r);
                            settle(r).await;
                        }
                    }
                })
            }
            "abandoned" => {
                let content = {
                    let mut s = String::with_capacity(args.upload_mib << 20);
                    let mut i = 0;
                    while s.len() < (args.upload_mib << 20) - 8192 {
                        s.push_str(&paragraph(1, i));
                        s.push_str("\n\n");
                        i += 1;
                    }
                    s
                };
                let body = Arc::new(serde_json::to_vec(
                    &json!({"name": "big.txt", "content": content}),
                )?);
                let (base, key) = (base.clone(), a_member.clone());
                let abandon = Duration::from_millis(args.abandon_after_ms);
                let http = reqwest::Client::builder().timeout(abandon).build()?;
                // Paced at the plan's 20 requests/s across the clients.
                attack(4, move |_, out| {
                    let (http, base, key, body) =
                        (http.clone(), base.clone(), key.clone(), body.clone());
                    async move {
                        let t0 = Instant::now();
                        let r = http
                            .post(format!("{base}/v1/documents"))
                            .bearer_auth(&key)
                            .header("content-type", "application/json")
                            .body(body.as_ref().clone())
                            .send()
                            .await;
                        out.count(&r);
                        drop(r);
                        tokio::time::sleep(Duration::from_millis(200).saturating_sub(t0.elapsed()))
                            .await;
                    }
                })
            }
            "export" => {
                for i in 0..args.export_documents {
                    let text: Vec<String> = (0..20).map(|p| paragraph(2 + i as u64, p)).collect();
                    let r = http
                        .post(format!("{base}/v1/documents"))
                        .bearer_auth(&a_member)
                        .json(&json!({"name": format!("e{i}.txt"), "content": text.join(". ")}))
                        .send()
                        .await?;
                    if r.status() == 429 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let (http, base, key) = (http.clone(), base.clone(), a_admin.clone());
                attack(args.export_clients, move |_, out| {
                    let (http, base, key) = (http.clone(), base.clone(), key.clone());
                    async move {
                        let r = http
                            .get(format!("{base}/v1/export"))
                            .bearer_auth(&key)
                            .send()
                            .await;
                        out.count(&r);
                        settle(r).await;
                    }
                })
            }
            _ => unreachable!("checked above"),
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (add, search) = rounds(&http, &base, &b_key, phase, args.rounds).await?;
        let outcomes = attack.stop().await;
        let (peak, now) = server.rss_mib();
        let after = audit_rows(&http, &base, &scopes).await?;
        println!(
            "  {phase:<12} upload p50 {:>7.1} ms p99 {:>7.1} ms | search p50 {:>7.1} ms p99 {:>7.1} ms | x idle: upload {:.2}/{:.2} search {:.2}/{:.2} | peak RSS {peak:.0} MiB (now {now:.0}) | audit +{} rows | A got {outcomes}",
            percentile(&add, 0.5) * 1e3,
            percentile(&add, 0.99) * 1e3,
            percentile(&search, 0.5) * 1e3,
            percentile(&search, 0.99) * 1e3,
            percentile(&add, 0.5) / percentile(&add_idle, 0.5),
            percentile(&add, 0.99) / percentile(&add_idle, 0.99),
            percentile(&search, 0.5) / percentile(&search_idle, 0.5),
            percentile(&search, 0.99) / percentile(&search_idle, 0.99),
            after.saturating_sub(before),
        );
        // Let the server settle (abandoned work leaves, buffers return).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Reads a response to its end (so the connection is reused).
async fn settle(r: reqwest::Result<reqwest::Response>) {
    if let Ok(r) = r {
        let _ = r.bytes().await;
    }
}

fn random_key() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", rand::random::<u8>() & 15))
            .collect()
    };
    format!("ek_{}_{}", hex(24), hex(64))
}
