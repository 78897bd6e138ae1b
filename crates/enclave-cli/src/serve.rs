//! `enclave serve`: layered settings (defaults < `--config` file <
//! `ENCLAVE_*` environment < flags) validated into typed options, then the
//! HTTP server on the embedded store, or on PostgreSQL with `--database-url`
//! (data and control plane, as the app role).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use enclave_server::jwt::{JwtKeys, JwtVerifier};
use enclave_server::{AppState, ServerOptions};
use enclave_store::control::ControlStore;
use enclave_store::sqlite::SqliteControl;
use serde::Deserialize;

use crate::StoreArgs;

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Listen address (port 0 picks one; the chosen address is printed).
    #[arg(long, env = "ENCLAVE_LISTEN")]
    listen: Option<String>,
    /// Base domain for `<slug>.<base domain>` Host hints.
    #[arg(long, env = "ENCLAVE_BASE_DOMAIN")]
    base_domain: Option<String>,
    /// TOML settings file (the same names as the flags, in snake_case).
    #[arg(long, env = "ENCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "ENCLAVE_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Per-request time limit in seconds.
    #[arg(long, env = "ENCLAVE_REQUEST_TIMEOUT_SECS")]
    request_timeout_secs: Option<u64>,
    /// PostgreSQL: the main database's owner URL, used only to place new
    /// tenants created with `isolation` `schema` or `database` (the
    /// server's own role cannot run DDL). Unset: new tenants start shared.
    #[arg(long, env = "ENCLAVE_PLACEMENT_OWNER_URL")]
    placement_owner_url: Option<String>,
    /// PostgreSQL: a role that may create databases and install pgvector
    /// (a superuser) on the main database's server, for `isolation:
    /// "database"` at tenant creation.
    #[arg(long, env = "ENCLAVE_TENANT_DATABASE_ADMIN_URL")]
    tenant_database_admin_url: Option<String>,
    /// Redis URL: rate limits shared by every replica using it (in-process
    /// when unset; when Redis does not answer, decided locally).
    #[arg(long, env = "ENCLAVE_REDIS_URL")]
    redis_url: Option<String>,
    /// Milliseconds a rate-limit check waits for Redis before deciding
    /// locally.
    #[arg(long, env = "ENCLAVE_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: Option<u64>,
    /// Create this tenant (if missing) and print an owner key for it once.
    #[arg(long)]
    bootstrap_tenant: Option<String>,
}

/// The settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    model_dir: Option<PathBuf>,
    database_url: Option<String>,
    base_domain: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_admin_issuer: Option<String>,
    jwt_admin_audience: Option<String>,
    placement_owner_url: Option<String>,
    tenant_database_admin_url: Option<String>,
    redis_url: Option<String>,
    redis_timeout_ms: Option<u64>,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names
    /// the client the failed-credential buckets charge.
    trusted_proxies: Option<Vec<String>>,
    /// `[plans.<name>]`: request limits per plan (added to or replacing the
    /// built-in free, pro and enterprise).
    #[serde(default)]
    plans: std::collections::HashMap<String, enclave_server::limits::PlanLimits>,
    /// `[prices]`: what usage costs (`cost_usd` in `/v1/usage`).
    #[serde(default)]
    prices: enclave_server::limits::Prices,
    /// `[embedding]`: how embedding work is shared between tenants.
    #[serde(default)]
    embedding: EmbeddingSettings,
    /// `[store]`: how many store calls of one tenant run at once.
    #[serde(default)]
    store: StoreSettings,
    /// `[jobs]`: how this replica processes ingestion jobs.
    #[serde(default)]
    jobs: JobSettings,
    /// `[metrics]`: opt-in per-tenant labels.
    #[serde(default)]
    metrics: MetricsSettings,
    /// `[alerts]`: the budget alert webhook.
    #[serde(default)]
    alerts: AlertSettings,
    /// `[auth_failures]`: what failed credentials may cost per client
    /// address and in all.
    #[serde(default)]
    auth_failures: enclave_server::failures::FailureLimits,
}

/// `[alerts]` of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertSettings {
    webhook_url: Option<String>,
    /// Name of the environment variable holding the signing secret (kept
    /// out of the file).
    secret_env: Option<String>,
    timeout_ms: Option<u64>,
    retry_secs: Option<f64>,
}

impl AlertSettings {
    fn options(&self) -> Result<enclave_server::alerts::AlertOptions> {
        let mut o = enclave_server::alerts::AlertOptions::default();
        if let Some(url) = env("ENCLAVE_ALERT_WEBHOOK_URL").or(self.webhook_url.clone()) {
            let parsed = reqwest::Url::parse(&url)
                .with_context(|| format!("[alerts] webhook_url {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("[alerts] webhook_url must be http or https");
            }
            o.webhook_url = Some(url);
        }
        if let Some(var) = &self.secret_env {
            o.secret =
                Some(env(var).with_context(|| format!("[alerts] secret_env: {var} is not set"))?);
        }
        if let Some(ms) = self.timeout_ms {
            if !(1..=60_000).contains(&ms) {
                bail!("[alerts] timeout_ms must be in [1, 60000]");
            }
            o.timeout = Duration::from_millis(ms);
        }
        if let Some(r) = self.retry_secs {
            if !(0.1..=3600.0).contains(&r) {
                bail!("[alerts] retry_secs must be in [0.1, 3600]");
            }
            o.retry = Duration::from_secs_f64(r);
        }
        Ok(o)
    }
}

/// `[metrics]` of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSettings {
    /// Label the counters of the N busiest tenants (0 or unset: none).
    top_tenants: Option<usize>,
    /// An operator-only address serving `/metrics` without a credential
    /// (`ENCLAVE_METRICS_LISTEN`). On the API address `/metrics` needs the
    /// platform admin credential.
    listen: Option<String>,
}

/// `[jobs]` of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSettings {
    /// Jobs processed at once by this replica (0: none here).
    workers: Option<usize>,
    /// Seconds a claim holds without renewal.
    lease_secs: Option<f64>,
    /// Milliseconds between looks for queued jobs when idle.
    poll_ms: Option<u64>,
    /// Unfinished jobs one tenant may have queued.
    max_queued_per_tenant: Option<u64>,
    /// Bytes of stored payload one tenant's unfinished jobs may hold.
    max_queued_bytes_per_tenant: Option<u64>,
}

impl JobSettings {
    fn options(&self) -> Result<enclave_server::jobs::JobOptions> {
        let mut o = enclave_server::jobs::JobOptions::default();
        o.workers = self.workers.unwrap_or(o.workers);
        if let Some(l) = self.lease_secs {
            if !(0.5..=3600.0).contains(&l) {
                bail!("[jobs] lease_secs must be in [0.5, 3600]");
            }
            o.lease = Duration::from_secs_f64(l);
        }
        if let Some(n) = self.max_queued_per_tenant {
            if n == 0 {
                bail!("[jobs] max_queued_per_tenant must be at least 1");
            }
            o.bounds.max_jobs = n;
        }
        if let Some(b) = self.max_queued_bytes_per_tenant {
            if b < 1024 {
                bail!("[jobs] max_queued_bytes_per_tenant must be at least 1024");
            }
            o.bounds.max_bytes = b;
        }
        if let Some(p) = self.poll_ms {
            if !(10..=60_000).contains(&p) {
                bail!("[jobs] poll_ms must be in [10, 60000]");
            }
            o.poll = Duration::from_millis(p);
        }
        Ok(o)
    }
}

/// `[embedding]` of the settings file (docs/ARCHITECTURE.md, "Fair
/// ingestion"); unset fields keep [`enclave::Scheduling::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingSettings {
    workers: Option<usize>,
    per_tenant_concurrency: Option<usize>,
    unit_tokens: Option<usize>,
    heavy_tokens: Option<f64>,
    heavy_half_life_secs: Option<f64>,
    /// Tokens one tenant may have waiting for embedding (beyond: 429).
    max_queued_tokens: Option<usize>,
    /// Units one tenant may have waiting.
    max_queued_units: Option<usize>,
    /// Tokens all tenants together may have waiting.
    max_queued_tokens_total: Option<usize>,
    /// Bytes of document content one tenant may have in preparation.
    max_preparing_bytes_per_tenant: Option<usize>,
    /// The same for all tenants together.
    max_preparing_bytes_total: Option<usize>,
}

impl EmbeddingSettings {
    fn scheduling(&self) -> Result<enclave::Scheduling> {
        let mut s = enclave::Scheduling::default();
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
            if v == Some(0) {
                bail!("[embedding] {name} must be at least 1");
            }
        }
        s.workers = self.workers.unwrap_or(s.workers);
        s.per_tenant_concurrency = self
            .per_tenant_concurrency
            .unwrap_or(s.per_tenant_concurrency);
        s.unit_tokens = self.unit_tokens.unwrap_or(s.unit_tokens);
        s.max_queued_tokens = self.max_queued_tokens.unwrap_or(s.max_queued_tokens);
        s.max_queued_units = self.max_queued_units.unwrap_or(s.max_queued_units);
        s.max_queued_tokens_total = self
            .max_queued_tokens_total
            .unwrap_or(s.max_queued_tokens_total);
        s.max_preparing_bytes_per_tenant = self
            .max_preparing_bytes_per_tenant
            .unwrap_or(s.max_preparing_bytes_per_tenant);
        s.max_preparing_bytes_total = self
            .max_preparing_bytes_total
            .unwrap_or(s.max_preparing_bytes_total);
        if let Some(h) = self.heavy_tokens {
            if h.is_nan() || h < 0.0 {
                bail!("[embedding] heavy_tokens must be a number >= 0");
            }
            s.heavy_tokens = h;
        }
        if let Some(h) = self.heavy_half_life_secs {
            if !(h > 0.0 && h <= 86_400.0) {
                bail!("[embedding] heavy_half_life_secs must be in (0, 86400]");
            }
            s.heavy_half_life = Duration::from_secs_f64(h);
        }
        Ok(s)
    }
}

/// `[store]` of the settings file (docs/ARCHITECTURE.md, "Noisy
/// neighbours on the data pool"); unset fields keep
/// [`enclave::StoreConcurrency::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSettings {
    /// Store calls of one tenant running at once (each holds at most one
    /// data connection).
    max_concurrent_per_tenant: Option<usize>,
    /// How long a further call waits for a slot before 429.
    slot_wait_ms: Option<u64>,
}

impl StoreSettings {
    fn concurrency(&self) -> Result<enclave::StoreConcurrency> {
        let mut c = enclave::StoreConcurrency::default();
        if let Some(n) = self.max_concurrent_per_tenant {
            if n == 0 {
                bail!("[store] max_concurrent_per_tenant must be at least 1");
            }
            c.per_tenant = n;
        }
        if let Some(ms) = self.slot_wait_ms {
            if ms > 60_000 {
                bail!("[store] slot_wait_ms must be at most 60000");
            }
            c.wait = Duration::from_millis(ms);
        }
        Ok(c)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One plane's keys from `ENCLAVE_JWT{prefix}_*` (`prefix` is `""` for
/// tenant users, `"_ADMIN"` for platform admins).
fn jwt_keys(prefix: &str, issuer: Option<String>, audience: Option<String>) -> Result<JwtKeys> {
    let var = |what: &str| format!("ENCLAVE_JWT{prefix}_{what}");
    let mut keys = JwtKeys::new(
        env(&var("ISSUER")).or(issuer),
        env(&var("AUDIENCE")).or(audience),
    );
    if let Some(secret) = env(&var("SECRET")) {
        keys.add_hs256(secret.as_bytes())
            .with_context(|| var("SECRET"))?;
    }
    if let Some(path) = env(&var("PUBLIC_KEY")) {
        let pem = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        keys.add_public_pem(&pem)
            .with_context(|| var("PUBLIC_KEY"))?;
    }
    if let Some(path) = env(&var("JWKS")) {
        let json = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        keys.add_jwks(&json).with_context(|| var("JWKS"))?;
    }
    Ok(keys)
}

fn jwt_verifier(file: &FileSettings) -> Result<JwtVerifier> {
    let tenant = jwt_keys("", file.jwt_issuer.clone(), file.jwt_audience.clone())?;
    let admin = jwt_keys(
        "_ADMIN",
        file.jwt_admin_issuer.clone(),
        file.jwt_admin_audience.clone(),
    )?;
    Ok(JwtVerifier::new(tenant, admin)?)
}

pub async fn run(mut store: StoreArgs, args: ServeArgs) -> Result<()> {
    let file: FileSettings = match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a valid settings file", p.display()))?,
        None => FileSettings::default(),
    };
    // Flags and environment (clap) win over the file.
    store.data_dir = store.data_dir.or(file.data_dir.clone());
    store.model_dir = store.model_dir.or(file.model_dir.clone());
    store.database_url = store.database_url.or(file.database_url.clone());
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let opts = server_options(&args, &file)?;
    let jwt = jwt_verifier(&file)?;
    let (admin_token, generated) = admin_token()?;
    let state = open_state(
        &store,
        jwt,
        ServerOptions {
            admin_token: admin_token.clone(),
            ..opts
        },
        file.embedding.scheduling()?,
        file.store.concurrency()?,
    )
    .await?;
    let state = with_placer(state, &store, &args, &file)?;
    if generated {
        eprintln!("admin token (shown once; set ENCLAVE_ADMIN_TOKEN to choose it): {admin_token}");
    }
    if let Some(t) = &args.bootstrap_tenant {
        bootstrap(&state, t).await?;
    }
    serve(&listen, &file, state).await
}

/// The server's options from flags and environment over the file, checked.
fn server_options(args: &ServeArgs, file: &FileSettings) -> Result<ServerOptions> {
    let opts = ServerOptions {
        admin_token: String::new(),
        base_domain: args.base_domain.clone().or(file.base_domain.clone()),
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(16 * 1024 * 1024),
        request_timeout: Duration::from_secs(
            args.request_timeout_secs
                .or(file.request_timeout_secs)
                .unwrap_or(60),
        ),
        redis_url: args.redis_url.clone().or(file.redis_url.clone()),
        redis_timeout: Duration::from_millis(
            args.redis_timeout_ms
                .or(file.redis_timeout_ms)
                .unwrap_or(100)
                .clamp(1, 10_000),
        ),
        plans: enclave_server::limits::Plans::with(file.plans.clone())
            .map_err(anyhow::Error::msg)?,
        prices: {
            file.prices.validate().map_err(anyhow::Error::msg)?;
            file.prices.clone()
        },
        jobs: file.jobs.options()?,
        alerts: file.alerts.options()?,
        metrics_top_tenants: match file.metrics.top_tenants {
            Some(n) if n > 1000 => bail!("[metrics] top_tenants must be at most 1000"),
            n => n.unwrap_or(0),
        },
        auth_failures: {
            file.auth_failures.validate().map_err(anyhow::Error::msg)?;
            file.auth_failures
        },
        tenant_cache_ttl: match env("ENCLAVE_TENANT_CACHE_SECS") {
            Some(v) => Duration::from_secs(
                v.parse::<u64>()
                    .ok()
                    .filter(|s| *s <= 86_400)
                    .context("ENCLAVE_TENANT_CACHE_SECS must be 0 to 86400 seconds")?,
            ),
            None => Duration::from_secs(5),
        },
        trusted_proxies: {
            let list = match env("ENCLAVE_TRUSTED_PROXIES") {
                Some(v) => v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
                    .collect(),
                None => file.trusted_proxies.clone().unwrap_or_default(),
            };
            enclave_server::client::TrustedProxies::parse(&list)
                .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?
        },
    };
    if let Some(url) = &opts.redis_url {
        enclave_server::limits::check_redis_url(url).map_err(anyhow::Error::msg)?;
    }
    if opts.max_body_bytes < 1024 {
        bail!("max_body_bytes must be at least 1024");
    }
    if let Some(d) = &opts.base_domain {
        if d.is_empty() || d.starts_with('.') || d.contains('/') {
            bail!("base_domain {d:?} is not a domain name");
        }
    }
    Ok(opts)
}

/// `ENCLAVE_ADMIN_TOKEN`, or a fresh one (and whether it was generated).
fn admin_token() -> Result<(String, bool)> {
    Ok(match env("ENCLAVE_ADMIN_TOKEN") {
        Some(t) if t.len() >= 16 => (t, false),
        Some(_) => bail!("ENCLAVE_ADMIN_TOKEN must be at least 16 characters"),
        None => (
            enclave_server::keys::mint().key.replacen("ek_", "adm_", 1),
            true,
        ),
    })
}

/// Lets the server place new tenants (PostgreSQL with
/// `placement_owner_url`); refuses settings that need what is missing.
fn with_placer(
    state: AppState,
    store: &StoreArgs,
    args: &ServeArgs,
    file: &FileSettings,
) -> Result<AppState> {
    let placement_owner = args
        .placement_owner_url
        .clone()
        .or(file.placement_owner_url.clone());
    let database_admin = args
        .tenant_database_admin_url
        .clone()
        .or(file.tenant_database_admin_url.clone());
    Ok(match (&store.database_url, placement_owner) {
        (Some(app_url), Some(owner)) => state.with_placer(Arc::new(
            enclave_postgres::PgPlacer::new(owner, app_url.clone(), database_admin)
                .context("placement_owner_url / tenant_database_admin_url")?,
        )),
        (None, Some(_)) => bail!("placement_owner_url needs database_url (PostgreSQL)"),
        (_, None) if database_admin.is_some() => {
            bail!("tenant_database_admin_url needs placement_owner_url")
        }
        _ => state,
    })
}

/// Binds the API (and the operator metrics) listener and serves until a
/// shutdown signal.
async fn serve(listen: &str, file: &FileSettings, state: AppState) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if let Some(addr) = env("ENCLAVE_METRICS_LISTEN").or(file.metrics.listen.clone()) {
        let operator = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        eprintln!(
            "operator metrics on http://{}/metrics",
            operator.local_addr()?
        );
        tokio::spawn(enclave_server::serve_operator(operator, state.clone()));
    }
    println!("listening on http://{}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    enclave_server::run(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// Creates the tenant if it is missing and then prints an owner key for it
/// (once: a later start with the same tenant mints nothing).
async fn bootstrap(state: &AppState, id: &str) -> Result<()> {
    use enclave_core::{Isolation, Role, Slug, TenantId};
    use enclave_store::control::NewTenant;
    let tenant = TenantId::parse(id)?;
    if state.control().get_tenant(&tenant).await?.is_some() {
        eprintln!(
            "tenant {id} exists; its keys were shown when they were made \
             (mint another with POST /admin/v1/tenants/{id}/keys)"
        );
        return Ok(());
    }
    {
        let slug: String = id
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63)
            .collect();
        state
            .control()
            .create_tenant(NewTenant {
                id: tenant.clone(),
                slug: Slug::parse(slug.trim_matches('-'))?,
                name: id.to_owned(),
                plan: "free".into(),
                isolation: Isolation::Shared,
                limits: Default::default(),
                now: chrono::Utc::now(),
            })
            .await?;
    }
    let created = enclave_server::mint_key(
        state.control().tenant(&tenant).as_ref(),
        &tenant,
        enclave_server::NewKeyBody {
            name: "bootstrap".into(),
            role: Role::Owner,
            expires_at: None,
        },
        "platform",
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    state
        .audit(
            Some(&tenant),
            "platform",
            "key.create",
            Some(created.key_id.clone()),
            serde_json::json!({"role": "owner", "bootstrap": true}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("tenant {id}: owner key (shown once): {}", created.key);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The library and the control plane on the configured store, as the
/// server's shared state.
pub async fn open_state(
    store: &StoreArgs,
    jwt: JwtVerifier,
    opts: ServerOptions,
    scheduling: enclave::Scheduling,
    concurrency: enclave::StoreConcurrency,
) -> Result<AppState> {
    let memory = store
        .open_as(true)
        .await?
        .with_scheduling(scheduling)
        .with_store_concurrency(concurrency);
    let control = open_control(store).await?;
    Ok(AppState::new(memory, control, jwt, opts))
}

/// The control plane beside the data: PostgreSQL's main database (as the
/// app role) or `control.sqlite` in the data directory.
async fn open_control(store: &StoreArgs) -> Result<Arc<dyn ControlStore>> {
    if let Some(url) = &store.database_url {
        return Ok(Arc::new(
            enclave_postgres::PgControl::connect(url, 8)
                .await
                .context("connecting the control plane to PostgreSQL")?,
        ));
    }
    let data_dir = store.data_dir();
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || SqliteControl::open(&data_dir)).await??,
    ))
}

/// `enclave audit verify`: checks every audit chain of the control plane.
pub async fn verify_audit(store: StoreArgs) -> Result<bool> {
    let control = open_control(&store).await?;
    let mut ok = true;
    for (scope, r) in enclave_server::verify_audit(control.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        match r {
            Ok(n) => println!("{scope}: {n} events, chain intact"),
            Err(seq) => {
                ok = false;
                println!("{scope}: chain broken at event {seq}");
            }
        }
    }
    Ok(ok)
}
