//! What a request without a valid credential may cost: almost nothing.
//!
//! Unknown, malformed, revoked, expired and wrong-secret credentials, wrong
//! admin tokens and tenant-hint mismatches are *failures*. Each client
//! address has a failure bucket (GCRA), and so has the whole process:
//! - a request from an address whose bucket is empty is refused with 429
//!   `rate_limited` **before any store access** (no key lookup, no audit
//!   write, no control-plane connection), whatever its credential — so a
//!   guess can never be told apart from a refusal;
//! - while the global bucket is empty (a flood from many addresses), only
//!   API keys whose id was recently verified here are looked up; any other
//!   credential that needs a lookup is refused the same way.
//!
//! Failures are audited as *aggregates*: counts per (audit chain, action,
//! cause) over a window, written as one event each when the window closes
//! (and before the audit log is read), with a few sample actors. At most
//! [`MAX_ENTRIES`] entries are kept per window; the rest are folded into one
//! platform overflow count. So no request without a valid credential can
//! grow an audit chain by more than a bounded number of rows per window, or
//! hold the control plane's connections.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use enclave_core::TenantId;
use enclave_store::control::{ControlStore, NewAuditEvent};
use lru::LruCache;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::ApiError;

/// `[auth_failures]`: how many failures a client address (and the whole
/// process) may cause.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureLimits {
    /// Failures per second one address earns back.
    pub per_address_per_second: f64,
    /// Failures one address may cause at once.
    pub per_address_burst: u32,
    /// Failures per second the process earns back, all addresses together.
    pub global_per_second: f64,
    /// Failures the process takes at once.
    pub global_burst: u32,
    /// Seconds over which failures are counted into one audit event.
    pub audit_window_secs: u64,
    /// How long a refusal is held before it is answered (at most its
    /// Retry-After): a client that retries as soon as it is answered is
    /// slowed to one try per hold, at the cost of a timer. 0: answer at once.
    pub tarpit_ms: u64,
    /// Refusals held at once; beyond, they are answered at once, so
    /// holding never keeps more than this many requests open.
    pub tarpit_max_held: u32,
}

impl Default for FailureLimits {
    fn default() -> Self {
        Self {
            per_address_per_second: 1.0,
            per_address_burst: 20,
            global_per_second: 50.0,
            global_burst: 500,
            audit_window_secs: 60,
            tarpit_ms: 1_000,
            tarpit_max_held: 1_024,
        }
    }
}

impl FailureLimits {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("per_address_per_second", self.per_address_per_second),
            ("global_per_second", self.global_per_second),
        ] {
            if !(1e-3..=1e6).contains(&v) {
                return Err(format!("[auth_failures] {name} must be in [0.001, 1e6]"));
            }
        }
        for (name, v) in [
            ("per_address_burst", self.per_address_burst),
            ("global_burst", self.global_burst),
        ] {
            if v == 0 {
                return Err(format!("[auth_failures] {name} must be at least 1"));
            }
        }
        if !(1..=3600).contains(&self.audit_window_secs) {
            return Err("[auth_failures] audit_window_secs must be in [1, 3600]".into());
        }
        if self.tarpit_ms > 10_000 {
            return Err("[auth_failures] tarpit_ms must be in [0, 10000]".into());
        }
        if !(1..=100_000).contains(&self.tarpit_max_held) {
            return Err("[auth_failures] tarpit_max_held must be in [1, 100000]".into());
        }
        Ok(())
    }
}

/// Why a credential failed (the `cause` of the aggregated audit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    Malformed,
    UnknownKey,
    WrongSecret,
    RevokedKey,
    ExpiredKey,
    InvalidToken,
    WrongAdminToken,
    /// A valid tenant credential on the admin plane.
    AdminDenied,
    TenantMismatch,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Malformed => "malformed credential",
            Cause::UnknownKey => "unknown key",
            Cause::WrongSecret => "wrong secret",
            Cause::RevokedKey => "revoked key",
            Cause::ExpiredKey => "expired key",
            Cause::InvalidToken => "invalid token",
            Cause::WrongAdminToken => "wrong admin token",
            Cause::AdminDenied => "tenant credential on the admin plane",
            Cause::TenantMismatch => "tenant hint mismatch",
        }
    }

    /// The audit action the aggregate is written under.
    fn action(self) -> &'static str {
        match self {
            Cause::TenantMismatch => "tenant.mismatch",
            Cause::AdminDenied => "admin.denied",
            _ => "auth.failed",
        }
    }
}

/// Entries (chain × action × cause × detail) kept per window; the rest are
/// one overflow count.
pub const MAX_ENTRIES: usize = 1_000;
/// Sample actors kept per entry.
const SAMPLES: usize = 5;
/// Addresses whose buckets are kept (least recently failing dropped first).
const ADDRESSES: usize = 100_000;
/// Key ids remembered as recently verified.
const KNOWN_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    scope: Option<TenantId>,
    cause: Cause,
    /// e.g. which hint disagreed.
    detail: Option<&'static str>,
}

struct Entry {
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    actors: BTreeSet<String>,
}

#[derive(Default)]
struct Window {
    entries: HashMap<EntryKey, Entry>,
    overflow: u64,
}

/// A GCRA bucket that can be *looked at* without spending (the admission
/// check happens before the outcome is known; only failures spend).
/// governor's limiters spend on every check, so this one is kept here.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Theoretical arrival time of the next failure.
    tat: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    interval: Duration,
    /// How far ahead of now the TAT may run: interval × (burst − 1).
    tolerance: Duration,
}

impl Rate {
    fn new(per_second: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / per_second.clamp(1e-3, 1e6));
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
        }
    }
}

impl Gcra {
    fn new(now: Instant) -> Self {
        Self { tat: now }
    }

    /// `Err(wait)` when a failure now would be over the rate.
    fn check(&self, now: Instant, rate: Rate) -> Result<(), Duration> {
        let tat = self.tat.max(now);
        let allow_at = tat.checked_sub(rate.tolerance).unwrap_or(now);
        if allow_at > now {
            Err(allow_at - now)
        } else {
            Ok(())
        }
    }

    /// Records one failure (whether or not it was over the rate).
    fn spend(&mut self, now: Instant, rate: Rate) {
        self.tat = self.tat.max(now) + rate.interval;
        // Never bank more than one interval past the tolerance: a refused
        // flood does not push the address' recovery out forever.
        let cap = now + rate.tolerance + rate.interval;
        if self.tat > cap {
            self.tat = cap;
        }
    }
}

/// The per-process failure buckets and the audit aggregates.
pub struct FailureGuard {
    limits: FailureLimits,
    address_rate: Rate,
    global_rate: Rate,
    global: Mutex<Gcra>,
    addresses: Mutex<LruCache<IpAddr, Gcra>>,
    known_keys: Mutex<LruCache<String, ()>>,
    window: Mutex<Window>,
    /// Requests refused before any store access, since start (metrics).
    pub refused_total: AtomicU64,
    /// Failures counted, since start (metrics).
    pub failures_total: AtomicU64,
    /// Aggregated audit events written, since start (metrics).
    pub audit_events_total: AtomicU64,
    /// Refusals being held (see [`FailureLimits::tarpit_ms`]).
    held: std::sync::Arc<tokio::sync::Semaphore>,
    /// Refusals that were held, since start (metrics).
    pub held_total: AtomicU64,
}

/// The address a bucket is kept for: IPv6 clients by their /64 (one host
/// usually holds a whole /64), IPv4 (and IPv4-mapped) by the address.
fn bucket_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl FailureGuard {
    pub fn new(limits: FailureLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            address_rate: Rate::new(limits.per_address_per_second, limits.per_address_burst),
            global_rate: Rate::new(limits.global_per_second, limits.global_burst),
            global: Mutex::new(Gcra::new(now)),
            addresses: Mutex::new(LruCache::new(
                NonZeroUsize::new(ADDRESSES).expect("non-zero"),
            )),
            known_keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(KNOWN_KEYS).expect("non-zero"),
            )),
            window: Mutex::new(Window::default()),
            refused_total: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            audit_events_total: AtomicU64::new(0),
            held: std::sync::Arc::new(tokio::sync::Semaphore::new(limits.tarpit_max_held as usize)),
            held_total: AtomicU64::new(0),
        }
    }

    fn refuse(&self, wait: Duration) -> ApiError {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Before a credential is checked: refuses when `addr` has no failures
    /// left, or when the process has none left and the credential is not an
    /// API key recently verified here (`key_id`). Spends nothing.
    pub fn admit(&self, addr: Option<SocketAddr>, key_id: Option<&str>) -> Result<(), ApiError> {
        let now = Instant::now();
        if let Some(addr) = addr {
            let ip = bucket_address(addr.ip());
            if let Some(b) = self.addresses.lock().peek(&ip) {
                if let Err(wait) = b.check(now, self.address_rate) {
                    return Err(self.refuse(wait));
                }
            }
        }
        if let Err(wait) = self.global.lock().check(now, self.global_rate) {
            let known = key_id.is_some_and(|k| self.known_keys.lock().get(k).is_some());
            if !known {
                return Err(self.refuse(wait));
            }
        }
        Ok(())
    }

    /// [`Self::admit`], with a refusal held for up to `tarpit_ms` (never
    /// past its Retry-After) while fewer than `tarpit_max_held` are: a
    /// flood of bad credentials that retries on every answer then costs a
    /// timer per try instead of a core. Spends nothing either.
    pub async fn admit_or_hold(
        &self,
        addr: Option<SocketAddr>,
        key_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let Err(refusal) = self.admit(addr, key_id) else {
            return Ok(());
        };
        let hold = match &refusal {
            ApiError::RateLimited(secs) => {
                Duration::from_millis(self.limits.tarpit_ms).min(Duration::from_secs(*secs))
            }
            _ => Duration::ZERO,
        };
        if !hold.is_zero() {
            if let Ok(_permit) = self.held.clone().try_acquire_owned() {
                self.held_total.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
            }
        }
        Err(refusal)
    }

    /// Refusals being held now (metrics).
    pub fn held_now(&self) -> usize {
        self.limits.tarpit_max_held as usize - self.held.available_permits()
    }

    /// A key that verified: it stays admitted while the process is flooded.
    pub fn verified_key(&self, key_id: &str) {
        let mut k = self.known_keys.lock();
        if k.get(key_id).is_none() {
            k.put(key_id.to_owned(), ());
        }
    }

    /// Counts one failure of `addr` and aggregates it into the audit window
    /// of `scope` (a tenant's chain, or the platform's when None).
    pub fn failed(
        &self,
        addr: Option<SocketAddr>,
        scope: Option<&TenantId>,
        cause: Cause,
        detail: Option<&'static str>,
        actor: &str,
    ) {
        let now = Instant::now();
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        if let Some(addr) = addr {
            let ip = bucket_address(addr.ip());
            let mut a = self.addresses.lock();
            if a.get(&ip).is_none() {
                a.put(ip, Gcra::new(now));
            }
            if let Some(b) = a.get_mut(&ip) {
                b.spend(now, self.address_rate);
            }
        }
        self.global.lock().spend(now, self.global_rate);
        let at = Utc::now();
        let mut w = self.window.lock();
        let key = EntryKey {
            scope: scope.cloned(),
            cause,
            detail,
        };
        if !w.entries.contains_key(&key) && w.entries.len() >= MAX_ENTRIES {
            w.overflow += 1;
            return;
        }
        let e = w.entries.entry(key).or_insert_with(|| Entry {
            count: 0,
            first: at,
            last: at,
            actors: BTreeSet::new(),
        });
        e.count += 1;
        e.last = at;
        if e.actors.len() < SAMPLES {
            e.actors.insert(actor.to_owned());
        }
    }

    /// Writes the window's aggregates as audit events (one per entry, plus
    /// one overflow count) and starts a new window. Entries whose write
    /// fails are dropped with a warning: a failing control plane must not
    /// make refusals pile up in memory.
    pub async fn flush(&self, control: &dyn ControlStore) {
        let window = std::mem::take(&mut *self.window.lock());
        let mut entries: Vec<(EntryKey, Entry)> = window.entries.into_iter().collect();
        entries.sort_by_key(|(_, e)| e.first);
        for (key, e) in entries {
            let mut detail = json!({
                "cause": key.cause.as_str(),
                "count": e.count,
                "first_at": e.first,
                "last_at": e.last,
                "sample_actors": e.actors.into_iter().collect::<Vec<_>>(),
            });
            if let Some(h) = key.detail {
                detail["hint"] = h.into();
            }
            let ev = NewAuditEvent {
                actor: "aggregate".into(),
                action: key.cause.action().into(),
                target: None,
                detail,
                at: e.last,
            };
            let r = match &key.scope {
                Some(t) => control.tenant(t).append_audit(ev).await,
                None => control.append_platform_audit(ev).await,
            };
            match r {
                Ok(_) => {
                    self.audit_events_total.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "could not write an aggregated audit event"),
            }
        }
        if window.overflow > 0 {
            let ev = NewAuditEvent {
                actor: "aggregate".into(),
                action: "auth.failed".into(),
                target: None,
                detail: json!({"cause": "overflow", "count": window.overflow}),
                at: Utc::now(),
            };
            if let Err(e) = control.append_platform_audit(ev).await {
                tracing::warn!(error = %e, "could not write an aggregated audit event");
            }
        }
    }

    /// How often [`Self::flush`] runs.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.limits.audit_window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address_burst: u32, global_burst: u32) -> FailureLimits {
        FailureLimits {
            per_address_per_second: 0.001,
            per_address_burst,
            global_per_second: 0.001,
            global_burst,
            audit_window_secs: 60,
            tarpit_ms: 0,
            tarpit_max_held: 1,
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_refused_once_its_failures_are_spent_and_others_are_not() {
        let g = FailureGuard::new(limits(3, 1000));
        let a = addr("10.0.0.1:1000");
        for _ in 0..3 {
            g.admit(a, None).unwrap();
            g.failed(a, None, Cause::UnknownKey, None, "anonymous");
        }
        let ApiError::RateLimited(secs) = g.admit(a, None).unwrap_err() else {
            panic!("not 429")
        };
        assert!(secs >= 1);
        // Another port of the same host is the same address; another host
        // is not.
        assert!(g.admit(addr("10.0.0.1:2000"), None).is_err());
        g.admit(addr("10.0.0.2:1000"), None).unwrap();
        // IPv6: one bucket per /64.
        let v6 = addr("[2001:db8:1:2::1]:1");
        for _ in 0..3 {
            g.failed(v6, None, Cause::Malformed, None, "anonymous");
        }
        assert!(g.admit(addr("[2001:db8:1:2::ffff]:9"), None).is_err());
        g.admit(addr("[2001:db8:1:3::1]:9"), None).unwrap();
    }

    #[tokio::test]
    async fn a_refusal_is_held_up_to_the_tarpit_while_few_are_held_then_answered_at_once() {
        let g = std::sync::Arc::new(FailureGuard::new(FailureLimits {
            tarpit_ms: 1_000,
            tarpit_max_held: 2,
            ..limits(1, 1000)
        }));
        let a = addr("10.0.0.1:1000");
        g.failed(a, None, Cause::UnknownKey, None, "anonymous");
        let t0 = std::time::Instant::now();
        let held: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.admit_or_hold(a, None).await })
            })
            .collect();
        while g.held_now() < 2 {
            tokio::task::yield_now().await;
        }
        // A third refusal finds every hold taken: answered while the two
        // are still held.
        assert!(matches!(
            g.admit_or_hold(a, None).await,
            Err(ApiError::RateLimited(_))
        ));
        assert_eq!(g.held_now(), 2);
        for h in held {
            assert!(matches!(h.await.unwrap(), Err(ApiError::RateLimited(_))));
        }
        assert!(t0.elapsed() >= Duration::from_secs(1));
        assert_eq!(g.held_now(), 0);
        assert_eq!(g.held_total.load(Ordering::Relaxed), 2);
        // An admitted request is never held.
        g.admit_or_hold(addr("10.0.0.2:1"), None).await.unwrap();
        assert_eq!(g.held_total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_global_flood_admits_only_recently_verified_keys() {
        let g = FailureGuard::new(limits(1000, 5));
        g.verified_key("good");
        for i in 0..5 {
            let a = addr(&format!("10.0.1.{i}:1"));
            g.failed(a, None, Cause::UnknownKey, None, "anonymous");
        }
        let fresh = addr("10.9.9.9:1");
        assert!(g.admit(fresh, None).is_err());
        assert!(g.admit(fresh, Some("unknown")).is_err());
        g.admit(fresh, Some("good")).unwrap();
    }

    #[test]
    fn failures_aggregate_into_a_bounded_number_of_entries() {
        let g = FailureGuard::new(limits(u32::MAX, u32::MAX));
        for i in 0..10_000u32 {
            let t = TenantId::parse(&format!("t{}", i % 2000)).unwrap();
            g.failed(
                None,
                Some(&t),
                Cause::WrongSecret,
                None,
                &format!("key:{i}"),
            );
            g.failed(None, None, Cause::UnknownKey, None, "anonymous");
        }
        let w = g.window.lock();
        assert_eq!(w.entries.len(), MAX_ENTRIES);
        let platform = &w.entries[&EntryKey {
            scope: None,
            cause: Cause::UnknownKey,
            detail: None,
        }];
        assert_eq!(platform.count, 10_000);
        assert!(w.entries.values().all(|e| e.actors.len() <= SAMPLES));
        let counted: u64 = w.entries.values().map(|e| e.count).sum::<u64>() + w.overflow;
        assert_eq!(counted, 20_000);
    }
}
