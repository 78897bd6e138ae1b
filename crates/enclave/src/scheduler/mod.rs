//! Fair scheduling of embedding work across tenants.
//!
//! Embedding is the expensive step of ingestion (tens of milliseconds per
//! chunk on a CPU), so it is where one tenant's bulk upload would starve
//! everybody else. Every document's chunks are cut into *units* of about
//! [`Scheduling::unit_tokens`] tokens and queued **per tenant**; free worker
//! slots take the next unit round-robin across the tenants that have work,
//! and no tenant runs more than [`Scheduling::per_tenant_concurrency`] units
//! at once.
//!
//! Round-robin alone does not protect latency on a machine whose cores are
//! all busy: a unit already computing cannot be paused. So units run in one
//! of two *lanes*:
//! - **foreground** — on the process' ordinary rayon pool, at normal OS
//!   priority: query embeddings (never queued) and the work of tenants that
//!   have embedded little recently;
//! - **background** — on a second rayon pool whose threads run at the lowest
//!   OS priority (`nice 19`): work of a *heavy* tenant, and all work
//!   submitted with [`Priority::Background`] (ingestion jobs). A tenant's
//!   *demand* is its recent embedding (a decaying count of tokens,
//!   half-life [`Scheduling::heavy_half_life`]) plus its backlog; it is heavy
//!   when its demand is over [`Scheduling::heavy_tokens`] and over 1.5× the
//!   mean demand of the tenants active lately (with work queued or
//!   computing, or a unit started within one half-life: a tenant whose
//!   flood ended a while ago no longer counts, so the one tenant still
//!   embedding is not made heavy beside it). Alone, nobody is heavy.
//!
//! Large documents are cut (tokenised) on a third pool, also at `nice 19`
//! ([`Scheduler::cut_pool`]): a heavy tenant's or a job's units never wait
//! in line behind another tenant's cut of a 10 MiB document.
//!
//! The kernel then preempts a flood in favour of a light tenant's upload or
//! search; alone, a heavy tenant still gets every idle core.
//!
//! Queues are bounded before anything is computed: a tenant may have at
//! most [`Scheduling::max_queued_tokens`] tokens and
//! [`Scheduling::max_queued_units`] units waiting (a document larger than
//! that is admitted only into an empty queue), and all tenants together
//! [`Scheduling::max_queued_tokens_total`]; beyond, the call fails at once
//! with [`crate::Error::Busy`] and a retry time, and nothing is queued.
//! Background work (jobs, one document per tenant at a time) waits instead.
//! When a caller goes away (its future is dropped: a timeout, a
//! disconnect), its units still waiting are removed; units already
//! computed are metered to the tenant ([`EmbeddingMeter`]) whether or not
//! the write they were for completes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use enclave_core::TenantId;
use enclave_embed::{EmbedError, Embedder};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// How embedding work is shared between tenants (`[embedding]` of the
/// server's settings; unset fields keep [`Scheduling::default`]).
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scheduling {
    /// Units computing at once in each lane.
    pub workers: usize,
    /// Units of one tenant computing at once (both lanes together).
    pub per_tenant_concurrency: usize,
    /// Tokens per unit (a unit holds at least one text).
    pub unit_tokens: usize,
    /// Least demand (recent tokens plus backlog) at which a tenant using more
    /// than its share runs in the background lane.
    pub heavy_tokens: f64,
    /// Half-life of the recent-tokens count.
    #[serde(rename = "heavy_half_life_secs")]
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub heavy_half_life: Duration,
    /// Tokens one tenant may have waiting (a larger document is admitted
    /// only when nothing else of the tenant waits).
    pub max_queued_tokens: usize,
    /// Units one tenant may have waiting.
    pub max_queued_units: usize,
    /// Tokens all tenants together may have waiting.
    pub max_queued_tokens_total: usize,
    /// Bytes of document content one tenant may have in preparation
    /// (chunking, embedding, writing) at once; a larger document is
    /// admitted only when nothing else of the tenant is. Beyond: 429.
    pub max_preparing_bytes_per_tenant: usize,
    /// The same for all tenants together.
    pub max_preparing_bytes_total: usize,
}

impl Default for Scheduling {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            workers: cores,
            per_tenant_concurrency: cores,
            unit_tokens: 512,
            heavy_tokens: 2048.0,
            heavy_half_life: Duration::from_secs(5),
            // About 15 s of this machine's embedding per tenant (~8k
            // tokens/s on two cores), two minutes in all.
            max_queued_tokens: 131_072,
            max_queued_units: 1_024,
            max_queued_tokens_total: 1_048_576,
            max_preparing_bytes_per_tenant: 16 << 20,
            max_preparing_bytes_total: 64 << 20,
        }
    }
}

impl Scheduling {
    /// Refuses values the scheduler cannot work with.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("workers", self.workers),
            ("per_tenant_concurrency", self.per_tenant_concurrency),
            ("unit_tokens", self.unit_tokens),
            ("max_queued_tokens", self.max_queued_tokens),
            ("max_queued_units", self.max_queued_units),
            ("max_queued_tokens_total", self.max_queued_tokens_total),
            (
                "max_preparing_bytes_per_tenant",
                self.max_preparing_bytes_per_tenant,
            ),
            ("max_preparing_bytes_total", self.max_preparing_bytes_total),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.heavy_tokens.is_nan() || self.heavy_tokens < 0.0 {
            return Err("heavy_tokens must be a number >= 0".into());
        }
        let h = self.heavy_half_life.as_secs_f64();
        if !(h > 0.0 && h <= 86_400.0) {
            return Err("heavy_half_life_secs must be in (0, 86400]".into());
        }
        Ok(())
    }
}

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Interactive work: foreground unless the tenant is heavy.
    #[default]
    Normal,
    /// Work nobody waits on (jobs): always the background lane.
    Background,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Foreground = 0,
    Background = 1,
}

/// Figures for metrics (`enclave_embedding_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedulerStats {
    /// Units waiting for a slot.
    pub queued_units: u64,
    /// Tenants with units waiting.
    pub waiting_tenants: u64,
    /// Units computing, `[foreground, background]`.
    pub running: [u64; 2],
    /// Units finished since start, `[foreground, background]`.
    pub units_total: [u64; 2],
    /// Seconds units waited for a slot since start (sum).
    pub wait_seconds_total: f64,
    /// Query embeddings computed since start.
    pub queries_total: u64,
    /// Calls refused because a queue was full, since start.
    pub refused_total: u64,
    /// Tokens removed unembedded because their caller went away.
    pub abandoned_tokens: u64,
}

/// A tenant is heavy when its demand exceeds the fair share by this factor
/// (so tenants using about the same stay in one lane).
const HEAVY_OVER_SHARE: f64 = 1.5;

type Vectors = Result<Vec<Vec<f32>>, EmbedError>;

/// Told of every unit computed for a tenant (the server's usage meter), so
/// tokens are counted when they are spent, even if the write they were for
/// never completes.
pub trait EmbeddingMeter: Send + Sync {
    fn embedded(&self, tenant: &TenantId, tokens: u64);
}

struct Unit {
    texts: Vec<String>,
    tokens: usize,
    priority: Priority,
    enqueued: Instant,
    /// The `embed` call it belongs to (its units are removed together
    /// when the caller goes away).
    call: u64,
    reply: oneshot::Sender<Vectors>,
}

#[derive(Default)]
struct TenantQueue {
    units: VecDeque<Unit>,
    queued_tokens: usize,
    running: usize,
    recent: f64,
    recent_at: Option<Instant>,
}

impl TenantQueue {
    fn decayed(&self, now: Instant, half_life: Duration) -> f64 {
        match self.recent_at {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.recent * 0.5f64.powf(dt / half_life.as_secs_f64().max(1e-3))
            }
            None => 0.0,
        }
    }

    /// Recent tokens plus backlog.
    fn demand(&self, now: Instant, half_life: Duration) -> f64 {
        self.decayed(now, half_life) + self.queued_tokens as f64
    }

    fn idle(&self, now: Instant, half_life: Duration) -> bool {
        self.units.is_empty() && self.running == 0 && self.decayed(now, half_life) < 1.0
    }
}

#[derive(Default)]
struct State {
    tenants: HashMap<TenantId, TenantQueue>,
    /// Tenants with queued units, in service order.
    ring: VecDeque<TenantId>,
    running: [usize; 2],
    stats: SchedulerStats,
    /// Tokens waiting, all tenants.
    queued_tokens: usize,
    next_call: u64,
    /// Tokens per second one unit computes at (moving average), for
    /// retry estimates.
    unit_rate: f64,
}

/// The per-process embedding scheduler (one per [`crate::Memory`]).
pub(crate) struct Scheduler {
    embedder: Arc<dyn Embedder>,
    config: Scheduling,
    state: Mutex<State>,
    background: OnceLock<Option<Arc<rayon::ThreadPool>>>,
    cuts: OnceLock<Option<Arc<rayon::ThreadPool>>>,
    meter: OnceLock<Arc<dyn EmbeddingMeter>>,
    /// Woken when units finish or leave (background callers wait on it).
    freed: tokio::sync::Notify,
}

/// Removes a call's waiting units when its future is dropped before they
/// were taken (the caller went away); nothing of it is computed.
struct CallGuard<'s> {
    scheduler: &'s Scheduler,
    tenant: TenantId,
    call: u64,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = self.scheduler.state.lock();
        let mut removed = 0;
        if let Some(q) = s.tenants.get_mut(&self.tenant) {
            let before = q.queued_tokens;
            q.units.retain(|u| u.call != self.call);
            q.queued_tokens = q.units.iter().map(|u| u.tokens).sum();
            removed = before - q.queued_tokens;
            if q.units.is_empty() {
                s.ring.retain(|t| t != &self.tenant);
            }
        }
        s.queued_tokens -= removed;
        s.stats.abandoned_tokens += removed as u64;
        drop(s);
        self.scheduler.freed.notify_waiters();
    }
}

impl Scheduler {
    /// How this scheduler shares the embedder.
    pub fn scheduling(&self) -> Scheduling {
        self.config
    }

    pub fn new(embedder: Arc<dyn Embedder>, config: Scheduling) -> Arc<Self> {
        Arc::new(Self {
            embedder,
            config: Scheduling {
                workers: config.workers.max(1),
                per_tenant_concurrency: config.per_tenant_concurrency.max(1),
                unit_tokens: config.unit_tokens.max(1),
                max_queued_units: config.max_queued_units.max(1),
                ..config
            },
            state: Mutex::new(State {
                unit_rate: 2_000.0,
                ..State::default()
            }),
            background: OnceLock::new(),
            cuts: OnceLock::new(),
            meter: OnceLock::new(),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Where computed tokens are reported (set once).
    pub fn set_meter(&self, meter: Arc<dyn EmbeddingMeter>) {
        let _ = self.meter.set(meter);
    }

    /// Whether `tokens` in `units` more of `tenant`'s may wait now; when not,
    /// seconds after which they likely may.
    fn admits(&self, s: &State, tenant: &TenantId, tokens: usize, units: usize) -> Result<(), u64> {
        let cfg = &self.config;
        let (mine, my_units) = s
            .tenants
            .get(tenant)
            .map_or((0, 0), |q| (q.queued_tokens, q.units.len()));
        let own_ok = my_units == 0
            || (mine + tokens <= cfg.max_queued_tokens && my_units + units <= cfg.max_queued_units);
        let total_ok =
            s.queued_tokens == 0 || s.queued_tokens + tokens <= cfg.max_queued_tokens_total;
        if own_ok && total_ok {
            return Ok(());
        }
        // Until about this much of what waits has been computed.
        let waiting = if own_ok { s.queued_tokens } else { mine };
        let lanes = cfg.workers.min(cfg.per_tenant_concurrency).max(1) as f64;
        let secs = waiting as f64 / (s.unit_rate.max(1.0) * lanes);
        Err(secs.ceil().clamp(1.0, 60.0) as u64)
    }

    pub fn stats(&self) -> SchedulerStats {
        let s = self.state.lock();
        SchedulerStats {
            queued_units: s.tenants.values().map(|q| q.units.len() as u64).sum(),
            waiting_tenants: s.ring.len() as u64,
            running: [s.running[0] as u64, s.running[1] as u64],
            ..s.stats
        }
    }

    /// Embeds one query now, in the foreground lane (a query is one short
    /// text that someone is waiting on; it is never queued behind ingestion).
    pub async fn embed_query(&self, text: String) -> Vectors {
        let out = run(self.embedder.clone(), None, vec![text]).await;
        self.state.lock().stats.queries_total += 1;
        out
    }

    /// Embeds a document's chunk texts (`tokens[i]` counts `texts[i]`) through
    /// the tenant's queue. Results are in input order. Refused at once with
    /// [`crate::Error::Busy`] when the queues are full (normal priority), or
    /// waits for room (background).
    pub async fn embed(
        self: &Arc<Self>,
        tenant: &TenantId,
        mut texts: Vec<String>,
        tokens: &[u32],
        priority: Priority,
    ) -> crate::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let total: usize = tokens.iter().map(|&t| t as usize).sum();
        let units = self.count_units(tokens);
        let mut receivers = Vec::new();
        let mut guard = CallGuard {
            scheduler: self,
            tenant: tenant.clone(),
            call: 0,
            done: false,
        };
        loop {
            let freed = self.freed.notified();
            if self.try_enqueue(
                tenant,
                &mut texts,
                tokens,
                total,
                units,
                priority,
                &mut guard,
                &mut receivers,
            )? {
                break;
            }
            // Background work waits for room instead of failing.
            freed.await;
        }
        self.pump();
        let mut out = Vec::with_capacity(tokens.len());
        for rx in receivers {
            let vectors = rx
                .await
                .map_err(|_| EmbedError::Compute("the embedding scheduler stopped".into()))??;
            out.extend(vectors);
        }
        guard.done = true;
        Ok(out)
    }

    /// Queues the call's units when the queues admit them (`Ok(true)`);
    /// refuses a normal-priority call that does not fit, and tells a
    /// background one to wait (`Ok(false)`).
    #[allow(clippy::too_many_arguments)]
    fn try_enqueue(
        &self,
        tenant: &TenantId,
        texts: &mut Vec<String>,
        tokens: &[u32],
        total: usize,
        units: usize,
        priority: Priority,
        guard: &mut CallGuard<'_>,
        receivers: &mut Vec<oneshot::Receiver<Vectors>>,
    ) -> crate::Result<bool> {
        let now = Instant::now();
        let mut s = self.state.lock();
        match self.admits(&s, tenant, total, units) {
            Ok(()) => {}
            Err(retry_after_secs) if priority == Priority::Normal => {
                s.stats.refused_total += 1;
                guard.done = true;
                return Err(crate::Error::Busy {
                    what: "the tenant's embedding queue",
                    retry_after_secs,
                });
            }
            Err(_) => return Ok(false),
        }
        s.next_call += 1;
        let call = s.next_call;
        guard.call = call;
        s.queued_tokens += total;
        let q = s.tenants.entry(tenant.clone()).or_default();
        let was_waiting = !q.units.is_empty();
        let mut unit = Vec::new();
        let mut unit_tokens = 0;
        let mut texts = std::mem::take(texts)
            .into_iter()
            .zip(tokens.iter().map(|&t| t as usize));
        loop {
            let next = texts.next();
            let full = next
                .as_ref()
                .is_some_and(|(_, t)| unit_tokens + t > self.config.unit_tokens);
            if (next.is_none() || full) && !unit.is_empty() {
                let (tx, rx) = oneshot::channel();
                q.queued_tokens += unit_tokens;
                q.units.push_back(Unit {
                    texts: std::mem::take(&mut unit),
                    tokens: unit_tokens,
                    priority,
                    enqueued: now,
                    call,
                    reply: tx,
                });
                receivers.push(rx);
                unit_tokens = 0;
            }
            let Some((text, t)) = next else { break };
            unit.push(text);
            unit_tokens += t;
        }
        if !was_waiting {
            s.ring.push_back(tenant.clone());
        }
        Ok(true)
    }

    /// How many units `tokens` are packed into.
    fn count_units(&self, tokens: &[u32]) -> usize {
        let (mut units, mut cur) = (0, 0usize);
        for &t in tokens {
            let t = t as usize;
            if cur > 0 && cur + t > self.config.unit_tokens {
                units += 1;
                cur = 0;
            }
            cur += t;
        }
        units + usize::from(cur > 0)
    }

    /// Starts units while slots are free: the first tenant in ring order
    /// that is under its concurrency cap and whose lane has a free slot.
    fn pump(self: &Arc<Self>) {
        loop {
            let now = Instant::now();
            let cfg = self.config;
            let mut s = self.state.lock();
            // The fair share: the mean demand (recent tokens plus backlog)
            // of the tenants active lately — with work, or a unit started
            // within one half-life. (A decayed count alone would keep a
            // flood that ended a minute ago in the mean, halving the share
            // of the one tenant still embedding and making it heavy.)
            let (mut total, mut active) = (0.0, 0usize);
            for q in s.tenants.values() {
                let lately = q
                    .recent_at
                    .is_some_and(|at| now.saturating_duration_since(at) < cfg.heavy_half_life);
                if q.running > 0 || !q.units.is_empty() || lately {
                    total += q.demand(now, cfg.heavy_half_life);
                    active += 1;
                }
            }
            let share = total / active.max(1) as f64;
            let mut picked = None;
            for i in 0..s.ring.len() {
                let q = &s.tenants[&s.ring[i]];
                if q.running >= cfg.per_tenant_concurrency {
                    continue;
                }
                let Some(front) = q.units.front() else {
                    continue;
                };
                let demand = q.demand(now, cfg.heavy_half_life);
                let heavy = demand > cfg.heavy_tokens && demand > HEAVY_OVER_SHARE * share;
                let lane = if front.priority == Priority::Background || heavy {
                    Lane::Background
                } else {
                    Lane::Foreground
                };
                if s.running[lane as usize] < cfg.workers {
                    picked = Some((i, lane));
                    break;
                }
            }
            let Some((i, lane)) = picked else {
                if s.tenants.len() > 1024 {
                    s.tenants.retain(|_, q| !q.idle(now, cfg.heavy_half_life));
                }
                return;
            };
            let tenant = s.ring.remove(i).expect("index in range");
            let q = s.tenants.get_mut(&tenant).expect("queued tenant");
            let unit = q.units.pop_front().expect("a queued unit");
            q.queued_tokens -= unit.tokens;
            let abandoned = unit.reply.is_closed();
            if abandoned {
                // Its caller has gone: not computed.
                let more = !q.units.is_empty();
                s.queued_tokens -= unit.tokens;
                s.stats.abandoned_tokens += unit.tokens as u64;
                if more {
                    s.ring.push_back(tenant);
                }
                continue;
            }
            q.running += 1;
            q.recent = q.decayed(now, cfg.heavy_half_life) + unit.tokens as f64;
            q.recent_at = Some(now);
            if !q.units.is_empty() {
                s.ring.push_back(tenant.clone());
            }
            s.running[lane as usize] += 1;
            s.queued_tokens -= unit.tokens;
            s.stats.wait_seconds_total += now.duration_since(unit.enqueued).as_secs_f64();
            drop(s);

            let pool = match lane {
                Lane::Foreground => None,
                Lane::Background => self.background_pool(),
            };
            let this = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let out = run(this.embedder.clone(), pool, unit.texts).await;
                if out.is_ok() {
                    if let Some(m) = this.meter.get() {
                        m.embedded(&tenant, unit.tokens as u64);
                    }
                }
                let _ = unit.reply.send(out);
                {
                    let mut s = this.state.lock();
                    let secs = started.elapsed().as_secs_f64().max(1e-6);
                    s.unit_rate = 0.8 * s.unit_rate + 0.2 * (unit.tokens as f64 / secs);
                    s.running[lane as usize] -= 1;
                    s.stats.units_total[lane as usize] += 1;
                    let now = Instant::now();
                    let idle = s.tenants.get_mut(&tenant).is_some_and(|q| {
                        q.running -= 1;
                        q.idle(now, this.config.heavy_half_life)
                    });
                    if idle {
                        s.tenants.remove(&tenant);
                    }
                }
                this.freed.notify_waiters();
                this.pump();
            });
        }
    }

    /// The background lane's pool: threads at the lowest OS priority. `None`
    /// (work runs on the ordinary pool) where the pool cannot be built.
    pub(crate) fn background_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.background
            .get_or_init(|| low_priority_pool("enclave-bg"))
            .clone()
    }

    /// Where large documents are cut: threads at the lowest OS priority,
    /// apart from the background lane's, so queued units never wait for a
    /// cut to finish (they share the cores with it instead). `None` where
    /// the pool cannot be built.
    pub(crate) fn cut_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.cuts
            .get_or_init(|| low_priority_pool("enclave-cut"))
            .clone()
    }
}

/// Runs `texts` through the embedder: on a blocking thread inside `pool` (or
/// the ordinary rayon pool) when the embedder computes locally, else through
/// its async `embed`.
async fn run(
    embedder: Arc<dyn Embedder>,
    pool: Option<Arc<rayon::ThreadPool>>,
    texts: Vec<String>,
) -> Vectors {
    let e = embedder.clone();
    let (texts, out) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let out = match &pool {
            Some(p) => p.install(|| e.embed_blocking(&refs)),
            None => e.embed_blocking(&refs),
        };
        (texts, out)
    })
    .await
    .map_err(|e| EmbedError::Compute(e.to_string()))?;
    match out {
        Some(r) => r,
        None => embedder.embed(texts).await,
    }
}

/// A pool of one thread per core at the lowest OS priority.
fn low_priority_pool(name: &'static str) -> Option<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(|_| lower_thread_priority())
        .build()
        .map(Arc::new)
        .map_err(|e| tracing::warn!(error = %e, pool = name, "no low-priority pool"))
        .ok()
}

/// `nice 19` for the calling thread (Linux: the nice value is per thread).
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions; `0` names the
    // calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests;
