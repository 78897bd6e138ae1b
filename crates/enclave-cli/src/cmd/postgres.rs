//! The PostgreSQL owner commands: migrate, move-tenant, maintain.

use anyhow::{Context, Result};
use clap::Args;
use enclave::core::TenantId;

use crate::StoreArgs;

#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// The role the server will connect as.
    #[arg(long, default_value = "enclave_app")]
    pub(crate) app_role: String,
    /// Name of an environment variable holding the app role's password
    /// (omit when the server trusts local connections).
    #[arg(long)]
    pub(crate) app_password_env: Option<String>,
}

#[derive(Args)]
pub(crate) struct MoveTenantArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    /// shared | schema | database
    #[arg(long)]
    pub(crate) to: String,
    /// For `--to database`: the tenant database's owner URL (it must
    /// have pgvector; it is migrated here).
    #[arg(long)]
    pub(crate) target_owner_url: Option<String>,
    /// For `--to database`: the URL the server connects to the tenant
    /// database with, as the app role (stored in the tenant directory;
    /// leave the password out and use PGPASSWORD or a passfile).
    #[arg(long)]
    pub(crate) target_app_url: Option<String>,
    /// When the tenant now lives in its own database: that database's
    /// owner URL.
    #[arg(long)]
    pub(crate) source_owner_url: Option<String>,
    #[arg(long, default_value = "enclave_app")]
    pub(crate) app_role: String,
}

#[derive(Args)]
pub(crate) struct MaintainArgs {
    #[arg(long, default_value_t = enclave_postgres::IndexPolicy::default().min_chunks)]
    pub(crate) min_chunks: u64,
    #[arg(long, default_value_t = enclave_postgres::IndexPolicy::default().drop_below)]
    pub(crate) drop_below: u64,
}

pub(crate) async fn migrate(store: &StoreArgs, args: MigrateArgs) -> Result<()> {
    let MigrateArgs {
        app_role,
        app_password_env,
    } = args;
    let database_url = store
        .database_url
        .clone()
        .context("enclave migrate needs --database-url OWNER_URL")?;
    let password = match app_password_env {
        Some(var) => Some(std::env::var(&var).with_context(|| format!("${var} is not set"))?),
        None => None,
    };
    enclave_postgres::migrate(&database_url, &app_role, password.as_deref()).await?;
    println!("migrated; app role {app_role} ready");
    Ok(())
}

pub(crate) async fn move_tenant(store: &StoreArgs, args: MoveTenantArgs) -> Result<()> {
    let MoveTenantArgs {
        tenant,
        to,
        target_owner_url,
        target_app_url,
        source_owner_url,
        app_role,
    } = args;
    let owner_url = store
        .database_url
        .clone()
        .context("enclave move-tenant needs --database-url OWNER_URL")?;
    let id = TenantId::parse(&tenant)?;
    let target = match to.as_str() {
        "shared" => enclave_postgres::MoveTarget::Shared,
        "schema" => enclave_postgres::MoveTarget::Schema,
        "database" => enclave_postgres::MoveTarget::Database {
            owner_url: target_owner_url.context("--to database needs --target-owner-url")?,
            app_url: target_app_url.context("--to database needs --target-app-url")?,
        },
        other => anyhow::bail!("--to {other:?}: expected shared, schema or database"),
    };
    let report = enclave_postgres::move_tenant(
        &owner_url,
        &id,
        target,
        &app_role,
        source_owner_url.as_deref(),
    )
    .await?;
    if report.rows.is_empty() {
        println!("{tenant} already lives in {}", report.to);
    } else {
        let rows: Vec<String> = report
            .rows
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!(
            "moved {tenant}: {} -> {} ({})",
            report.from,
            report.to,
            rows.join(", ")
        );
    }
    Ok(())
}

pub(crate) async fn maintain(store: &StoreArgs, args: MaintainArgs) -> Result<()> {
    let MaintainArgs {
        min_chunks,
        drop_below,
    } = args;
    let owner_url = store
        .database_url
        .clone()
        .context("enclave maintain needs --database-url OWNER_URL")?;
    let changes = enclave_postgres::ensure_vector_indexes(
        &owner_url,
        &enclave_postgres::IndexPolicy {
            min_chunks,
            drop_below,
            ..Default::default()
        },
    )
    .await?;
    for c in &changes {
        match c {
            enclave_postgres::IndexChange::Built { tenant, chunks } => {
                println!("built vector index for {tenant} ({chunks} chunks)")
            }
            enclave_postgres::IndexChange::Dropped { tenant, chunks } => {
                println!("dropped vector index of {tenant} ({chunks} chunks)")
            }
            enclave_postgres::IndexChange::Skipped { tenant, reason } => {
                println!("skipped {tenant}: {reason}")
            }
        }
    }
    if changes.is_empty() {
        println!("vector indexes up to date");
    }
    Ok(())
}
