//! `enclave serve`: the settings layered into one typed `Settings`
//! (`enclave_server::settings::load`, over this process's environment),
//! the backends opened (`crate::backends`), then the HTTP server on the embedded store, or on PostgreSQL with `database_url`
//! (data and control plane, as the app role).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use enclave_server::jwt::JwtVerifier;
use enclave_server::AppState;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::StoreArgs;
use enclave_server::Settings;

/// The flags of `enclave serve`: each overrides the setting of its name
/// (docs: README "Configuration"); every setting can also come from the
/// file or an `ENCLAVE_*` variable.
#[derive(Args, Clone, Serialize)]
pub struct ServeArgs {
    /// Listen address (port 0 picks one; the chosen address is printed).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// Base domain for `<slug>.<base domain>` Host hints.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    base_domain: Option<String>,
    /// TOML settings file (the settings' names, in snake_case).
    #[arg(long, env = "ENCLAVE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<usize>,
    /// Per-request time limit in seconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout_secs: Option<u64>,
    /// PostgreSQL: the main database's owner URL, used only to place new
    /// tenants created with `isolation` `schema` or `database` (the
    /// server's own role cannot run DDL). Unset: new tenants start shared.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    placement_owner_url: Option<String>,
    /// PostgreSQL: a role that may create databases and install pgvector
    /// (a superuser) on the main database's server, for `isolation:
    /// "database"` at tenant creation.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_database_admin_url: Option<String>,
    /// Redis URL: rate limits shared by every replica using it (in-process
    /// when unset; when Redis does not answer, decided locally).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    /// Milliseconds a rate-limit check waits for Redis before deciding
    /// locally.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_timeout_ms: Option<u64>,
    /// Create this tenant (if missing) and print an owner key for it once.
    #[arg(long)]
    #[serde(skip)]
    bootstrap_tenant: Option<String>,
}

/// The store flags that are settings too (`--data-dir`, `--model-dir`,
/// `--database-url`).
#[derive(Serialize)]
struct StoreFlags<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_language: Option<&'a String>,
    #[serde(flatten)]
    serve: &'a ServeArgs,
}

pub async fn run(mut store: StoreArgs, args: ServeArgs) -> Result<()> {
    let mut settings = enclave_server::settings::load(
        args.config.as_deref(),
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        StoreFlags {
            data_dir: store.data_dir.as_ref(),
            model_dir: store.model_dir.as_ref(),
            database_url: store.database_url.as_ref(),
            text_language: store.text_language.as_ref(),
            serve: &args,
        },
    )?;
    // The store the other commands open from flags and environment is the
    // one the settings name.
    store.data_dir = settings.data_dir.clone();
    store.model_dir = settings.model_dir.clone();
    store.text_language = Some(settings.text_language.clone());
    store.database_url = settings
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    let jwt = JwtVerifier::from_settings(&settings)?;
    let generated = settings.admin_token.is_none();
    if generated {
        let token = enclave_server::keys::mint().key.replacen("ek_", "adm_", 1);
        settings.admin_token = Some(SecretString::from(token));
    }
    let placer = placer(&store, &settings)?;
    let state = crate::backends::open_state(&store, jwt, settings).await?;
    let state = match placer {
        Some(p) => state.with_placer(p),
        None => state,
    };
    if generated {
        let token = state.options().admin_token.as_ref().expect("set above");
        eprintln!(
            "admin token (shown once; set ENCLAVE_ADMIN_TOKEN to choose it): {}",
            token.expose_secret()
        );
    }
    if let Some(t) = &args.bootstrap_tenant {
        bootstrap(&state, t).await?;
    }
    serve(state).await
}

/// What places new tenants (PostgreSQL with `placement_owner_url`);
/// refuses settings that need what is missing.
fn placer(
    store: &StoreArgs,
    s: &Settings,
) -> Result<Option<Arc<dyn enclave_store::control::TenantPlacer>>> {
    let owner = s.placement_owner_url.as_ref().map(|u| u.expose_secret());
    let database_admin = s
        .tenant_database_admin_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    Ok(match (&store.database_url, owner) {
        (Some(app_url), Some(owner)) => Some(Arc::new(
            enclave_postgres::PgPlacer::new(owner.to_owned(), app_url.clone(), database_admin)
                .context("placement_owner_url / tenant_database_admin_url")?,
        )),
        (None, Some(_)) => bail!("placement_owner_url needs database_url (PostgreSQL)"),
        (_, None) if database_admin.is_some() => {
            bail!("tenant_database_admin_url needs placement_owner_url")
        }
        _ => None,
    })
}

/// Binds the API (and the operator metrics) listener and serves until a
/// shutdown signal.
async fn serve(state: AppState) -> Result<()> {
    let listen = state.options().listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if let Some(addr) = state.options().metrics.listen.clone() {
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
                search: Default::default(),
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

/// `enclave audit verify`: checks every audit chain of the control plane.
pub async fn verify_audit(store: StoreArgs) -> Result<bool> {
    let control = crate::backends::open_control(&store, 8).await?;
    let mut ok = true;
    for enclave_server::ChainCheck { scope, outcome } in
        enclave_server::verify_audit(control.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        match outcome {
            Ok(n) => println!("{scope}: {n} events, chain intact"),
            Err(seq) => {
                ok = false;
                println!("{scope}: chain broken at event {seq}");
            }
        }
    }
    Ok(ok)
}
