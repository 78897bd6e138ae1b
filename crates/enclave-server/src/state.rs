//! What every handler shares: the library, the control plane, settings, and
//! the per-process caches (tenant directory entries, key touches).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use enclave::Memory;
use enclave_core::TenantId;
use enclave_store::control::{ControlStore, TenantRecord};
use lru::LruCache;
use parking_lot::Mutex;

use crate::jwt::JwtVerifier;
use crate::settings::Settings;
use crate::ApiResult;

#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub memory: Memory,
    pub control: Arc<dyn ControlStore>,
    pub jwt: JwtVerifier,
    pub opts: Settings,
    pub metrics: crate::metrics::Metrics,
    pub usage: Arc<crate::usage::UsageMeter>,
    pub placer: Option<Arc<dyn enclave_store::control::TenantPlacer>>,
    pub limiter: crate::limits::RateLimiter,
    /// Failed-credential buckets and their aggregated audit events.
    pub failures: crate::failures::FailureGuard,
    pub jobs: Arc<crate::jobs::JobRunner>,
    /// Outgoing HTTP (budget alert webhooks).
    pub http: reqwest::Client,
    tenants: Mutex<LruCache<TenantId, (Arc<TenantRecord>, Instant)>>,
    touched: Mutex<LruCache<String, Instant>>,
    /// Tenants with an export streaming from this process (one each).
    exports: Arc<Mutex<std::collections::HashSet<TenantId>>>,
}

/// A tenant's one export of this process; ends it when dropped (the stream
/// finished, failed, or its client went away).
pub struct ExportTurn {
    exports: Arc<Mutex<std::collections::HashSet<TenantId>>>,
    tenant: TenantId,
}

impl Drop for ExportTurn {
    fn drop(&mut self) {
        self.exports.lock().remove(&self.tenant);
    }
}

impl AppState {
    pub fn new(
        memory: Memory,
        control: Arc<dyn ControlStore>,
        jwt: JwtVerifier,
        opts: Settings,
    ) -> Self {
        let n = NonZeroUsize::new(10_000).expect("non-zero");
        let metrics = crate::metrics::Metrics::new();
        // The URL was checked with the settings (`Settings::checked`).
        let limiter = crate::limits::RateLimiter::new(
            opts.redis_url
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
            opts.redis_timeout,
            metrics.limiter.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let failures = crate::failures::FailureGuard::new(opts.auth_failures);
        let usage = Arc::new(crate::usage::UsageMeter::default());
        memory.set_embedding_meter(usage.clone());
        Self {
            inner: Arc::new(Inner {
                failures,
                memory,
                control,
                jwt,
                opts,
                metrics,
                limiter,
                usage,
                placer: None,
                jobs: Arc::default(),
                http: reqwest::Client::new(),
                tenants: Mutex::new(LruCache::new(n)),
                touched: Mutex::new(LruCache::new(n)),
                exports: Arc::default(),
            }),
        }
    }

    /// Lets `POST /admin/v1/tenants` place new tenants in `schema` or
    /// `database` isolation (before the state is shared).
    pub fn with_placer(mut self, placer: Arc<dyn enclave_store::control::TenantPlacer>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_placer before the state is shared")
            .placer = Some(placer);
        self
    }

    /// The tenant's turn to export, or None while another export of it
    /// streams from this process: an export reads the whole tenant, and
    /// several at once only multiply that cost for everyone.
    pub fn export_turn(&self, tenant: &TenantId) -> Option<ExportTurn> {
        let mut running = self.inner.exports.lock();
        if !running.insert(tenant.clone()) {
            return None;
        }
        Some(ExportTurn {
            exports: self.inner.exports.clone(),
            tenant: tenant.clone(),
        })
    }

    pub fn memory(&self) -> &Memory {
        &self.inner.memory
    }

    pub fn control(&self) -> &Arc<dyn ControlStore> {
        &self.inner.control
    }

    pub fn options(&self) -> &Settings {
        &self.inner.opts
    }

    /// The tenant's directory entry, cached for `tenant_cache_ttl`.
    pub async fn tenant_record(&self, id: &TenantId) -> ApiResult<Option<Arc<TenantRecord>>> {
        if let Some((rec, at)) = self.inner.tenants.lock().get(id).cloned() {
            if at.elapsed() < self.inner.opts.tenant_cache_ttl {
                return Ok(Some(rec));
            }
        }
        let rec = self.inner.control.get_tenant(id).await?.map(Arc::new);
        let mut cache = self.inner.tenants.lock();
        match &rec {
            Some(r) => {
                cache.put(id.clone(), (r.clone(), Instant::now()));
            }
            None => {
                cache.pop(id);
            }
        }
        Ok(rec)
    }

    /// Forgets a cached entry (after a change made by this process, or
    /// announced by another replica).
    pub fn invalidate_tenant(&self, id: &TenantId) {
        self.inner.tenants.lock().pop(id);
    }

    /// Forgets every cached entry (the change feed restarted, so changes
    /// may have been missed).
    pub fn forget_tenants(&self) {
        self.inner.tenants.lock().clear();
    }

    /// Records a key's use at most once a minute.
    pub async fn touch_key(&self, key_id: &str) {
        {
            let mut t = self.inner.touched.lock();
            if t.get(key_id)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            t.put(key_id.to_owned(), Instant::now());
        }
        if let Err(e) = self.inner.control.touch_key(key_id, Utc::now()).await {
            tracing::warn!(error = %e, "could not record a key's last use");
        }
    }
}
