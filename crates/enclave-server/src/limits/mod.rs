//! Request rate limits per tenant and per credential (API.md §3, §8
//! `limits`): GCRA buckets, the tenant's from its plan with per-tenant
//! overrides, each credential's (API key, or JWT subject) from the plan.
//!
//! - In-process by default: one `governor` limiter per bucket (an LRU of
//!   them, so idle tenants cost nothing).
//! - With a Redis URL, every replica decides in Redis: one Lua script checks
//!   both buckets and updates them only when both admit, with Redis' clock,
//!   so N replicas share one budget. Keys are `t:{<tenant>}:rl` and
//!   `t:{<tenant>}:rl:c:<hash of the credential>` (DESIGN.md §3): the braces
//!   are a Redis Cluster hash tag, so a tenant's keys share one slot and the
//!   script (which names both) runs on a cluster too.
//! - When Redis does not answer (error, or no reply within `redis_timeout`,
//!   100 ms by default) the
//!   request is decided by the local limiter instead — never a 500 — the
//!   failure is counted (`enclave_rate_limit_redis_errors_total`), logged at
//!   most every ten seconds, and Redis is tried again after a second.
//!   While Redis is away each replica enforces the whole budget by itself,
//!   so N replicas admit up to N times the rate.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_core::TenantId;
use enclave_store::control::TenantLimits;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Governor};
use lru::LruCache;
use parking_lot::Mutex;
use serde::Deserialize;

use sha2::{Digest, Sha256};

/// What usage costs (settings file `[prices]`), in US dollars: per request,
/// per search, and per million tokens embedded by each model (keyed by the
/// model id, e.g. `sentence-transformers/all-MiniLM-L6-v2`). Usage is priced
/// when it is read, with the prices configured then. All zero by default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    #[serde(default)]
    pub request_usd: f64,
    #[serde(default)]
    pub search_usd: f64,
    #[serde(default)]
    pub embedding_usd_per_million_tokens: HashMap<String, f64>,
}

impl Prices {
    pub fn validate(&self) -> Result<(), String> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.request_usd)
            || !ok(self.search_usd)
            || !self
                .embedding_usd_per_million_tokens
                .values()
                .all(|x| ok(*x))
        {
            return Err("prices: every price must be a finite number of at least 0".into());
        }
        Ok(())
    }

    /// The cost of `counts`, its tokens embedded by `model`.
    pub fn cost(&self, counts: &enclave_store::control::UsageCounts, model: &str) -> f64 {
        let per_token = self
            .embedding_usd_per_million_tokens
            .get(model)
            .copied()
            .unwrap_or(0.0)
            / 1e6;
        counts.requests as f64 * self.request_usd
            + counts.searches as f64 * self.search_usd
            + counts.tokens_embedded as f64 * per_token
    }
}

/// Whether `url` is a Redis URL the limiter can use.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("redis_url: {e}"))
}

/// Where a request's decision is left for [`headers`] (one per request).
#[derive(Clone, Default)]
pub(crate) struct Slot(Arc<Mutex<Option<Decision>>>);

impl Slot {
    pub(crate) fn set(&self, d: Decision) {
        *self.0.lock() = Some(d);
    }
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` to
/// every response whose request was rate-checked (all of `/v1`, refused
/// ones included).
pub(crate) async fn headers(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Some(d) = *slot.0.lock() {
        let h = resp.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", d.limit as u64),
            ("ratelimit-remaining", d.remaining as u64),
            ("ratelimit-reset", d.reset_secs),
        ] {
            h.insert(name, axum::http::HeaderValue::from(value));
        }
    }
    resp
}

/// A GCRA bucket: sustained rate and burst capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    fn interval(&self) -> Duration {
        // Validated rates are in [1e-6, 1e6]; anything else (a stored value
        // from before that check) is as slow as a year per request, never a
        // panic.
        Duration::try_from_secs_f64(1.0 / self.per_second)
            .unwrap_or(Duration::from_secs(365 * 86_400))
            .clamp(Duration::from_micros(1), Duration::from_secs(365 * 86_400))
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.interval())
            .expect("a positive rate has a non-zero period")
            .allow_burst(NonZeroU32::new(self.burst.max(1)).expect("non-zero"))
    }
}

/// One plan's request limits (settings file `[plans.<name>]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    pub requests_per_second: f64,
    pub burst: u32,
    /// Each credential's own bucket; the tenant's figures when unset.
    #[serde(default)]
    pub key_requests_per_second: Option<f64>,
    #[serde(default)]
    pub key_burst: Option<u32>,
}

impl PlanLimits {
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let ok = |r: f64| (1e-6..=1e6).contains(&r);
        if !ok(self.requests_per_second) || self.key_requests_per_second.is_some_and(|r| !ok(r)) {
            return Err(format!(
                "plan {name}: requests_per_second must be between 0.000001 and 1000000"
            ));
        }
        if self.burst == 0 || self.key_burst == Some(0) {
            return Err(format!("plan {name}: burst must be at least 1"));
        }
        Ok(())
    }
}

/// The plans the server knows; a tenant on an unknown plan gets `free`'s.
#[derive(Debug, Clone)]
pub struct Plans(HashMap<String, PlanLimits>);

impl Default for Plans {
    fn default() -> Self {
        let plan = |rps: f64, burst: u32| PlanLimits {
            requests_per_second: rps,
            burst,
            key_requests_per_second: None,
            key_burst: None,
        };
        Self(HashMap::from([
            ("free".to_owned(), plan(20.0, 40)),
            ("pro".to_owned(), plan(200.0, 400)),
            ("enterprise".to_owned(), plan(2000.0, 4000)),
        ]))
    }
}

impl Plans {
    /// The built-in plans with `overrides` added or replacing them.
    pub fn with(overrides: HashMap<String, PlanLimits>) -> Result<Self, String> {
        let mut p = Self::default();
        for (name, limits) in overrides {
            limits.validate(&name)?;
            p.0.insert(name, limits);
        }
        Ok(p)
    }

    /// The tenant's and each credential's bucket for a tenant on `plan` with
    /// these per-tenant `limits` overrides (validated at the admin plane).
    pub fn rates(&self, plan: &str, limits: &TenantLimits) -> (Rate, Rate) {
        let base = self
            .0
            .get(plan)
            .or_else(|| self.0.get("free"))
            .copied()
            .unwrap_or(PlanLimits {
                requests_per_second: 20.0,
                burst: 40,
                key_requests_per_second: None,
                key_burst: None,
            });
        let tenant = Rate {
            per_second: limits
                .requests_per_second()
                .unwrap_or(base.requests_per_second),
            burst: limits
                .burst()
                .map_or(base.burst, |b| b.min(u32::MAX as u64) as u32),
        };
        let key = Rate {
            per_second: base.key_requests_per_second.unwrap_or(tenant.per_second),
            burst: base.key_burst.unwrap_or(tenant.burst),
        };
        (tenant, key)
    }
}

/// What one request was told.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The tenant bucket's capacity.
    pub limit: u32,
    /// Requests left now (the tighter of the two buckets).
    pub remaining: u32,
    /// Seconds until both buckets are full again.
    pub reset_secs: u64,
    /// When refused: seconds until a request would be admitted.
    pub retry_after_secs: u64,
}

type Local = Governor<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Admits or refuses requests; shared by every request of the process.
pub struct RateLimiter {
    local: Mutex<LruCache<String, (Rate, Arc<Local>)>>,
    clock: DefaultClock,
    redis: Option<RedisLimiter>,
    metrics: LimiterMetrics,
}

#[derive(Clone)]
pub(crate) struct LimiterMetrics {
    pub decisions: prometheus::IntCounterVec,
    pub redis_errors: prometheus::IntCounter,
    pub redis_up: prometheus::IntGauge,
}

impl LimiterMetrics {
    pub(crate) fn new() -> Self {
        Self {
            decisions: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "enclave_rate_limit_decisions_total",
                    "rate-limit decisions by outcome and by where they were made",
                ),
                &["outcome", "backend"],
            )
            .expect("valid metric"),
            redis_errors: prometheus::IntCounter::new(
                "enclave_rate_limit_redis_errors_total",
                "rate-limit checks Redis did not answer (decided locally instead)",
            )
            .expect("valid metric"),
            redis_up: prometheus::IntGauge::new(
                "enclave_rate_limit_redis_up",
                "1 while rate limits are shared through Redis, 0 while decided locally",
            )
            .expect("valid metric"),
        }
    }
}

/// GCRA over two buckets in one atomic step. KEYS: tenant bucket,
/// credential bucket. ARGV: per bucket its emission interval and burst in
/// microseconds / cells, then the request's cost in cells (at most each
/// burst). Returns {allowed, remaining, reset µs, retry µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[5])
local function look(key, interval, burst)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * math.min(cost, burst)
  local allow_at = new_tat - interval * burst
  local wait = allow_at - now
  if wait < 0 then wait = 0 end
  return new_tat, wait
end
local ti, tb = tonumber(ARGV[1]), tonumber(ARGV[2])
local ki, kb = tonumber(ARGV[3]), tonumber(ARGV[4])
local tn, tw = look(KEYS[1], ti, tb)
local kn, kw = look(KEYS[2], ki, kb)
if tw > 0 or kw > 0 then
  local tat1 = tonumber(redis.call('GET', KEYS[1]) or now)
  local tat2 = tonumber(redis.call('GET', KEYS[2]) or now)
  local reset = math.max(tat1 - now, tat2 - now, 0)
  return {0, 0, math.ceil(reset), math.ceil(math.max(tw, kw))}
end
redis.call('SET', KEYS[1], tn, 'PX', math.ceil((tn - now) / 1000) + 1)
redis.call('SET', KEYS[2], kn, 'PX', math.ceil((kn - now) / 1000) + 1)
local tr = math.floor((now + ti * tb - tn) / ti)
local kr = math.floor((now + ki * kb - kn) / ki)
return {1, math.min(tr, kr), math.ceil(math.max(tn - now, kn - now)), 0}
"#;

struct RedisLimiter {
    client: redis::Client,
    script: redis::Script,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// Redis is not tried again before this instant after a failure.
    retry_at: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
    timeout: Duration,
}

const REDIS_RETRY: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// A limiter; with `redis_url`, decisions are shared through Redis.
    pub(crate) fn new(
        redis_url: Option<&str>,
        timeout: Duration,
        metrics: LimiterMetrics,
    ) -> Result<Self, String> {
        let redis = match redis_url {
            None => None,
            Some(url) => Some(RedisLimiter {
                client: redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?,
                script: redis::Script::new(GCRA),
                conn: tokio::sync::Mutex::new(None),
                retry_at: Mutex::new(None),
                last_warning: Mutex::new(None),
                timeout,
            }),
        };
        Ok(Self {
            local: Mutex::new(LruCache::new(NonZeroUsize::new(100_000).expect("non-zero"))),
            clock: DefaultClock::default(),
            redis,
            metrics,
        })
    }

    /// Admits or refuses one request of `credential` in `tenant` that
    /// costs `cost` requests of both buckets (see [`request_cost`]; at
    /// most a bucket's burst, so any request can pass a full bucket).
    pub async fn check(
        &self,
        tenant: &TenantId,
        credential: &str,
        tenant_rate: Rate,
        key_rate: Rate,
        cost: u32,
    ) -> Decision {
        let (tenant_key, cred_key) = bucket_keys(tenant, credential);
        let cost = cost.max(1);
        let (decision, backend) = match &self.redis {
            Some(r) => match r
                .check(
                    &tenant_key,
                    &cred_key,
                    tenant_rate,
                    key_rate,
                    cost,
                    &self.metrics,
                )
                .await
            {
                Some(d) => (d, "redis"),
                None => (
                    self.check_local(&tenant_key, &cred_key, tenant_rate, key_rate, cost),
                    "local",
                ),
            },
            None => (
                self.check_local(&tenant_key, &cred_key, tenant_rate, key_rate, cost),
                "local",
            ),
        };
        self.metrics
            .decisions
            .with_label_values(&[
                if decision.allowed {
                    "allowed"
                } else {
                    "limited"
                },
                backend,
            ])
            .inc();
        decision
    }

    fn bucket(&self, key: &str, rate: Rate) -> Arc<Local> {
        let mut local = self.local.lock();
        if let Some((r, l)) = local.get(key) {
            if *r == rate {
                return l.clone();
            }
        }
        // New, or its limits changed: a fresh (full) bucket.
        let l = Arc::new(
            Governor::direct(rate.quota()).with_middleware::<StateInformationMiddleware>(),
        );
        local.put(key.to_owned(), (rate, l.clone()));
        l
    }

    /// The credential's bucket first, then the tenant's: a credential over
    /// its own limit does not spend the tenant's budget (a request the
    /// tenant's bucket refuses has spent a cell of the credential's).
    fn check_local(
        &self,
        tenant_key: &str,
        cred_key: &str,
        t: Rate,
        k: Rate,
        cost: u32,
    ) -> Decision {
        let now = self.clock.now();
        let refused = |wait: Duration, rate: Rate| Decision {
            allowed: false,
            limit: t.burst,
            remaining: 0,
            reset_secs: (rate.interval().as_secs_f64() * rate.burst as f64).ceil() as u64,
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        };
        let cells =
            |rate: Rate| NonZeroU32::new(cost.min(rate.burst.max(1))).expect("at least one cell");
        let ks = match self.bucket(cred_key, k).check_n(cells(k)) {
            Ok(Ok(s)) => s,
            Ok(Err(n)) => return refused(n.wait_time_from(now), k),
            Err(_) => return refused(k.interval(), k),
        };
        let ts = match self.bucket(tenant_key, t).check_n(cells(t)) {
            Ok(Ok(s)) => s,
            Ok(Err(n)) => return refused(n.wait_time_from(now), t),
            Err(_) => return refused(t.interval(), t),
        };
        let (tr, kr) = (ts.remaining_burst_capacity(), ks.remaining_burst_capacity());
        let refill = |rate: Rate, left: u32| {
            rate.interval().as_secs_f64() * (rate.burst.saturating_sub(left)) as f64
        };
        Decision {
            allowed: true,
            limit: t.burst,
            remaining: tr.min(kr),
            reset_secs: refill(t, tr).max(refill(k, kr)).ceil() as u64,
            retry_after_secs: 0,
        }
    }
}

impl RedisLimiter {
    /// The decision Redis made, or `None` (decide locally) when it did not
    /// answer in time.
    async fn check(
        &self,
        tenant_key: &str,
        cred_key: &str,
        t: Rate,
        k: Rate,
        cost: u32,
        metrics: &LimiterMetrics,
    ) -> Option<Decision> {
        if self.retry_at.lock().is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let us = |r: Rate| (r.interval().as_micros() as u64).max(1);
        let attempt = async {
            let mut guard = self.conn.lock().await;
            if guard.is_none() {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                *guard = Some(
                    redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg)
                        .await?,
                );
            }
            let mut conn = guard.as_ref().expect("connected").clone();
            drop(guard);
            self.script
                .key(tenant_key)
                .key(cred_key)
                .arg(us(t))
                .arg(t.burst)
                .arg(us(k))
                .arg(k.burst)
                .arg(cost)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
        };
        let result = match tokio::time::timeout(self.timeout * 2, attempt).await {
            Ok(Ok(v)) if v.len() == 4 => Ok(v),
            Ok(Ok(v)) => Err(format!("unexpected reply {v:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no reply in time".to_owned()),
        };
        match result {
            Ok(v) => {
                metrics.redis_up.set(1);
                *self.retry_at.lock() = None;
                let secs = |micros: i64| (micros.max(0) as f64 / 1e6).ceil() as u64;
                Some(Decision {
                    allowed: v[0] == 1,
                    limit: t.burst,
                    remaining: v[1].clamp(0, u32::MAX as i64) as u32,
                    reset_secs: secs(v[2]),
                    retry_after_secs: if v[0] == 1 { 0 } else { secs(v[3]).max(1) },
                })
            }
            Err(e) => {
                metrics.redis_errors.inc();
                metrics.redis_up.set(0);
                *self.retry_at.lock() = Some(Instant::now() + REDIS_RETRY);
                let mut last = self.last_warning.lock();
                if last.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::warn!(error = %e, "Redis did not answer a rate-limit check; deciding locally");
                }
                None
            }
        }
    }
}

/// Request bodies are charged by size: one request per started
/// [`BODY_BYTES_PER_REQUEST`] beyond the first, so a plan's rate bounds
/// the bytes a tenant can make the server parse and hash, not only its
/// requests (ten 10 MiB uploads a second would keep two cores parsing).
pub const BODY_BYTES_PER_REQUEST: u64 = 256 << 10;

/// What a request costs in requests, from its `Content-Length` (before
/// the body is read). A body of unknown length (chunked) is charged as the
/// largest one allowed, `max_body_bytes`.
pub fn request_cost(headers: &axum::http::HeaderMap, max_body_bytes: usize) -> u32 {
    let chunked = headers
        .get(axum::http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let bytes = match headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        Some(n) => n,
        None if chunked => max_body_bytes as u64,
        None => 0,
    };
    let extra = bytes.saturating_sub(1) / BODY_BYTES_PER_REQUEST;
    u32::try_from(1 + extra).unwrap_or(u32::MAX)
}

/// The Redis (and local) keys of a tenant's bucket and of one credential's
/// bucket in it. `{tenant}` is a hash tag: both keys hash to one cluster
/// slot (tenant ids hold no braces).
fn bucket_keys(tenant: &TenantId, credential: &str) -> (String, String) {
    let digest = Sha256::digest(credential.as_bytes());
    (
        format!("t:{{{tenant}}}:rl"),
        format!("t:{{{tenant}}}:rl:c:{}", hex::encode(&digest[..12])),
    )
}

#[cfg(test)]
mod tests;
