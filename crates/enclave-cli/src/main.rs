//! `enclave`: the command-line face of the library. Thin: parses flags into
//! typed options, opens a `Memory`, calls one `Tenant` method, prints.

mod backends;
mod bench;
mod cmd;
mod demo;
mod eval;
mod files;
mod serve;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use enclave::core::TenantId;
use enclave::{EmbedderConfig, Layout, Memory, Tenant};

#[derive(Parser)]
#[command(
    name = "enclave",
    version,
    about = "Multi-tenant memory and hybrid search for LLM applications"
)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Data directory of the embedded store.
    #[arg(long, global = true, env = "ENCLAVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory holding all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json).
    #[arg(long, global = true, env = "ENCLAVE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// PostgreSQL URL of the app role (switches from the embedded store to
    /// PostgreSQL; the role must be bound by row-level security).
    #[arg(long, global = true, env = "ENCLAVE_DATABASE_URL")]
    database_url: Option<String>,
    /// Language of full-text analysis: english (default), simple, or a
    /// Snowball language (german, french, spanish, …).
    #[arg(long, global = true, env = "ENCLAVE_TEXT_LANGUAGE")]
    text_language: Option<String>,
    /// Embedded layout: one shared file, or one file per tenant.
    #[arg(
        long,
        global = true,
        env = "ENCLAVE_LAYOUT",
        value_enum,
        default_value = "shared"
    )]
    layout: LayoutArg,
    /// Embedder: the local model, or the deterministic hashing embedder (tests only).
    #[arg(
        long,
        global = true,
        env = "ENCLAVE_EMBEDDER",
        value_enum,
        default_value = "local",
        hide = true
    )]
    embedder: EmbedderArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    Shared,
    PerTenant,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum EmbedderArg {
    Local,
    Hash,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Vector,
    Text,
    Hybrid,
}

#[derive(Subcommand)]
enum Command {
    /// Add files to a tenant (markdown, text, HTML, code; globs allowed).
    Ingest(cmd::documents::IngestArgs),
    /// Search a tenant.
    Search(cmd::documents::SearchArgs),
    /// List a tenant's documents, newest first.
    List(cmd::documents::ListArgs),
    /// Show one document.
    Get(cmd::documents::GetArgs),
    /// Delete documents.
    Delete(cmd::documents::DeleteArgs),
    /// Counts for a tenant.
    Stats(cmd::documents::StatsArgs),
    /// Stream every document of a tenant as NDJSON (stdout or --output).
    Export(cmd::documents::ExportArgs),
    /// Ingest the bundled sample corpus into two tenants and show that each
    /// tenant's hybrid search sees only its own documents.
    Demo {
        /// Directory holding one sub-directory of documents per tenant.
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
    /// Apply the PostgreSQL migrations as the owner and create/grant the app
    /// role the server connects as (no superuser, no BYPASSRLS, DML only).
    /// Give the owner's URL with `--database-url` (not the server's runtime URL).
    Migrate(cmd::postgres::MigrateArgs),
    /// Move a tenant between PostgreSQL isolation modes without losing data
    /// (copy, count, switch the directory entry, remove the old copy).
    /// Runs as the owner: `--database-url OWNER_URL` of the main database.
    MoveTenant(cmd::postgres::MoveTenantArgs),
    /// Owner maintenance: build a partial HNSW index for each tenant that
    /// has grown past `--min-chunks` (CONCURRENTLY, no write lock) and drop
    /// the ones no longer needed. Run it periodically.
    Maintain(cmd::postgres::MaintainArgs),
    /// Measure embedding, ingestion and search; prints figures.
    Bench(bench::corpus::BenchArgs),
    /// Retrieval quality of a BEIR folder (corpus, queries, qrels): ingests
    /// into a scratch tenant, prints nDCG@10, Recall@100, MRR@10 and
    /// latency per search mode (library on either store, or `--url`).
    Eval(eval::EvalArgs),
    /// Run the HTTP server (API.md); prints `listening on http://ADDR`.
    Serve(serve::ServeArgs),
    /// The server under concurrent load over HTTP (clients across tenants,
    /// search + ingest); prints throughput, latency, errors and cross-tenant
    /// results.
    BenchHttp(bench::http::BenchHttpArgs),
    /// One tenant floods ingestion while another adds a document and
    /// searches: the quiet tenant's latency idle vs flooded (prints figures).
    BenchFairness(bench::fair::BenchFairnessArgs),
    /// An attacker tenant (or anonymous clients) runs each abuse in turn
    /// while another tenant uploads and searches: its latency against idle,
    /// the server's peak memory and the audit rows added (prints figures).
    BenchAbuse(bench::abuse::BenchAbuseArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every audit chain; exits non-zero if any was tampered with.
    Verify,
}

impl StoreArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            directories::ProjectDirs::from("dev", "enclave", "enclave")
                .map(|d| d.data_dir().to_owned())
                .unwrap_or_else(|| PathBuf::from("enclave-data"))
        })
    }

    pub fn model_dir(&self) -> PathBuf {
        if let Some(d) = &self.model_dir {
            return d.clone();
        }
        let local = PathBuf::from(".cache/model");
        if local.join("model.safetensors").exists() {
            return local;
        }
        directories::ProjectDirs::from("dev", "enclave", "enclave")
            .map(|d| d.cache_dir().join("model"))
            .unwrap_or(local)
    }

    pub fn embedder_config(&self) -> EmbedderConfig {
        match self.embedder {
            EmbedderArg::Local => EmbedderConfig::Local {
                model_dir: self.model_dir(),
            },
            EmbedderArg::Hash => EmbedderConfig::Hash { dimensions: 384 },
        }
    }

    pub fn text_language(&self) -> String {
        self.text_language
            .clone()
            .unwrap_or_else(|| "english".to_owned())
    }

    pub fn layout(&self) -> Layout {
        match self.layout {
            LayoutArg::Shared => Layout::SharedFile,
            LayoutArg::PerTenant => Layout::FilePerTenant,
        }
    }

    pub async fn open(&self) -> Result<Memory> {
        backends::open_memory(self, false, backends::POOL).await
    }
}

fn tenant_of(memory: &Memory, id: &str) -> Result<Tenant> {
    Ok(memory.tenant(&TenantId::parse(id)?))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENCLAVE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The soft open-file limit up to the hard one (often 1,024 of 500,000+):
    // the file-per-tenant layout keeps a few descriptors per open tenant
    // file and fits its cache to what is allowed here.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(cli.store, args).await,
        Command::BenchHttp(args) => bench::http::run(cli.store, args).await,
        Command::BenchFairness(args) => bench::fair::run(cli.store, args).await,
        Command::BenchAbuse(args) => bench::abuse::run(cli.store, args).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            if !serve::verify_audit(cli.store).await? {
                anyhow::bail!("an audit chain is broken");
            }
            Ok(())
        }
        Command::Ingest(args) => cmd::documents::ingest(&cli.store, args).await,
        Command::Search(args) => cmd::documents::search(&cli.store, args).await,
        Command::List(args) => cmd::documents::list(&cli.store, args).await,
        Command::Get(args) => cmd::documents::get(&cli.store, args).await,
        Command::Delete(args) => cmd::documents::delete(&cli.store, args).await,
        Command::Stats(args) => cmd::documents::stats(&cli.store, args).await,
        Command::Export(args) => cmd::documents::export(&cli.store, args).await,
        Command::Demo { corpus } => demo::run(&cli.store, corpus).await,
        Command::Migrate(args) => cmd::postgres::migrate(&cli.store, args).await,
        Command::MoveTenant(args) => cmd::postgres::move_tenant(&cli.store, args).await,
        Command::Maintain(args) => cmd::postgres::maintain(&cli.store, args).await,
        Command::Bench(args) => bench::corpus::run(&cli.store, args).await,
        Command::Eval(args) => eval::run(&cli.store, args).await,
    }
}
