//! `enclave`: the command-line face of the library. Thin: parses flags into
//! typed options, opens a `Memory`, calls one `Tenant` method, prints.

mod bench;
mod bench_abuse;
mod bench_fair;
mod bench_http;
mod bench_pg;
mod bench_victim;
mod demo;
mod files;
mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use enclave::core::{DocumentId, SearchMode, SearchParams, TenantId};
use enclave::{EmbedderConfig, Layout, ListParams, Memory, MemoryConfig, StoreConfig, Tenant};
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

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
    Ingest {
        #[arg(long)]
        tenant: String,
        /// Sub-scope (user, project…) to file the documents under.
        #[arg(long)]
        origin: Option<String>,
        /// Documents processed concurrently.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Search a tenant.
    Search {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: ModeArg,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Only documents with this origin (repeatable).
        #[arg(long)]
        origin: Vec<String>,
        /// Metadata filter as JSON, e.g. '{"year": {"$gte": 2024}}'.
        #[arg(long)]
        filter: Option<String>,
        /// Print the API's JSON shape.
        #[arg(long)]
        json: bool,
        query: String,
    },
    /// List a tenant's documents, newest first.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one document.
    Get {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        chunks: bool,
        id: String,
    },
    /// Delete documents.
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Counts for a tenant.
    Stats {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Stream every document of a tenant as NDJSON (stdout or --output).
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        output: Option<PathBuf>,
    },
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
    Migrate {
        /// The role the server will connect as.
        #[arg(long, default_value = "enclave_app")]
        app_role: String,
        /// Name of an environment variable holding the app role's password
        /// (omit when the server trusts local connections).
        #[arg(long)]
        app_password_env: Option<String>,
    },
    /// Move a tenant between PostgreSQL isolation modes without losing data
    /// (copy, count, switch the directory entry, remove the old copy).
    /// Runs as the owner: `--database-url OWNER_URL` of the main database.
    MoveTenant {
        #[arg(long)]
        tenant: String,
        /// shared | schema | database
        #[arg(long)]
        to: String,
        /// For `--to database`: the tenant database's owner URL (it must
        /// have pgvector; it is migrated here).
        #[arg(long)]
        target_owner_url: Option<String>,
        /// For `--to database`: the URL the server connects to the tenant
        /// database with, as the app role (stored in the tenant directory;
        /// leave the password out and use PGPASSWORD or a passfile).
        #[arg(long)]
        target_app_url: Option<String>,
        /// When the tenant now lives in its own database: that database's
        /// owner URL.
        #[arg(long)]
        source_owner_url: Option<String>,
        #[arg(long, default_value = "enclave_app")]
        app_role: String,
    },
    /// Owner maintenance: build a partial HNSW index for each tenant that
    /// has grown past `--min-chunks` (CONCURRENTLY, no write lock) and drop
    /// the ones no longer needed. Run it periodically.
    Maintain {
        #[arg(long, default_value_t = 20_000)]
        min_chunks: u64,
        #[arg(long, default_value_t = 10_000)]
        drop_below: u64,
    },
    /// Measure embedding, ingestion and search; prints figures.
    Bench(bench::BenchArgs),
    /// Run the HTTP server (API.md); prints `listening on http://ADDR`.
    Serve(serve::ServeArgs),
    /// The server under concurrent load over HTTP (clients across tenants,
    /// search + ingest); prints throughput, latency, errors and cross-tenant
    /// results.
    BenchHttp(bench_http::BenchHttpArgs),
    /// One tenant floods ingestion while another adds a document and
    /// searches: the quiet tenant's latency idle vs flooded (prints figures).
    BenchFairness(bench_fair::BenchFairnessArgs),
    /// An attacker tenant (or anonymous clients) runs each abuse in turn
    /// while another tenant uploads and searches: its latency against idle,
    /// the server's peak memory and the audit rows added (prints figures).
    BenchAbuse(bench_abuse::BenchAbuseArgs),
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

    pub fn layout(&self) -> Layout {
        match self.layout {
            LayoutArg::Shared => Layout::SharedFile,
            LayoutArg::PerTenant => Layout::FilePerTenant,
        }
    }

    pub async fn open(&self) -> Result<Memory> {
        self.open_as(false).await
    }

    /// Opens the store; `served`: for the server, whose control plane owns
    /// the tenant directory, so a write never creates a directory entry
    /// (a tenant without one — purged — is refused).
    pub async fn open_as(&self, served: bool) -> Result<Memory> {
        if let Some(url) = &self.database_url {
            let embedder = Memory::load_embedder(self.embedder_config()).await?;
            let store = enclave_postgres::PgStore::connect_with(
                url,
                embedder.dimensions(),
                enclave_postgres::PgOptions {
                    max_connections: 8,
                    require_directory: served,
                    ..Default::default()
                },
            )
            .await
            .context("connecting to PostgreSQL")?;
            return Ok(Memory::from_parts(
                std::sync::Arc::new(store),
                embedder,
                Default::default(),
                4096,
            ));
        }
        let dir = self.data_dir();
        Memory::open(MemoryConfig::new(
            StoreConfig::embedded(&dir, self.layout()),
            self.embedder_config(),
        ))
        .await
        .with_context(|| format!("opening the store in {}", dir.display()))
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
        Command::BenchHttp(args) => bench_http::run(cli.store, args).await,
        Command::BenchFairness(args) => bench_fair::run(cli.store, args).await,
        Command::BenchAbuse(args) => bench_abuse::run(cli.store, args).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            if !serve::verify_audit(cli.store).await? {
                anyhow::bail!("an audit chain is broken");
            }
            Ok(())
        }
        Command::Ingest {
            tenant,
            origin,
            jobs,
            paths,
        } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let origin = origin
                .map(|o| enclave::core::Origin::parse(&o))
                .transpose()?;
            files::ingest(&t, origin, &paths, jobs.max(1)).await
        }
        Command::Search {
            tenant,
            mode,
            limit,
            origin,
            filter,
            json,
            query,
        } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let mut p = SearchParams::new(query).limit(limit).mode(match mode {
                ModeArg::Vector => SearchMode::Vector,
                ModeArg::Text => SearchMode::Text,
                ModeArg::Hybrid => SearchMode::Hybrid,
            });
            p.origins = origin;
            if let Some(f) = filter {
                p.metadata = serde_json::from_str(&f).context("--filter is not JSON")?;
            }
            let results = t.search(p).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                demo::print_hits(&results);
            }
            Ok(())
        }
        Command::List {
            tenant,
            limit,
            cursor,
            origin,
            json,
        } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let page = t
                .list_documents(ListParams {
                    limit: Some(limit),
                    cursor,
                    origin,
                    ..Default::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                for d in &page.documents {
                    println!(
                        "{}  {:<8} {:>4} chunks  {}",
                        d.document_id, d.doc_type, d.chunk_count, d.name
                    );
                }
                println!("{} of {} documents", page.documents.len(), page.total);
                if let Some(c) = page.next_cursor {
                    println!("next: --cursor {c}");
                }
            }
            Ok(())
        }
        Command::Get { tenant, chunks, id } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let doc = t.get_document(&DocumentId::parse(&id)?, chunks).await?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::Delete { tenant, ids } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let ids = ids
                .iter()
                .map(|i| DocumentId::parse(i))
                .collect::<Result<Vec<_>, _>>()?;
            let n = t.delete_documents(&ids).await?;
            println!("{{\"deleted_count\": {n}}}");
            Ok(())
        }
        Command::Stats { tenant, json } => {
            let memory = cli.store.open().await?;
            let s = tenant_of(&memory, &tenant)?.statistics().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "{} documents, {} chunks, {} bytes, {} tokens",
                    s.document_count, s.chunk_count, s.total_size_bytes, s.total_tokens
                );
                for (ty, n) in &s.by_type {
                    println!("  {ty}: {n}");
                }
            }
            Ok(())
        }
        Command::Export { tenant, output } => {
            let memory = cli.store.open().await?;
            let t = tenant_of(&memory, &tenant)?;
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
                Some(p) => Box::new(
                    tokio::fs::File::create(p)
                        .await
                        .with_context(|| p.display().to_string())?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            // Written a page of chunks at a time (bounded memory).
            let mut stream = std::pin::pin!(t.export_pieces());
            let (mut n, mut first_chunk, mut buf) = (0u64, true, Vec::new());
            while let Some(piece) = stream.try_next().await? {
                n += u64::from(piece == enclave::ExportPiece::End);
                buf.clear();
                piece.write_ndjson(&mut first_chunk, &mut buf)?;
                out.write_all(&buf).await?;
            }
            out.flush().await?;
            if output.is_some() {
                eprintln!("exported {n} documents");
            }
            Ok(())
        }
        Command::Demo { corpus } => demo::run(&cli.store, corpus).await,
        Command::Migrate {
            app_role,
            app_password_env,
        } => {
            let database_url = cli
                .store
                .database_url
                .clone()
                .context("enclave migrate needs --database-url OWNER_URL")?;
            let password = match app_password_env {
                Some(var) => {
                    Some(std::env::var(&var).with_context(|| format!("${var} is not set"))?)
                }
                None => None,
            };
            enclave_postgres::migrate(&database_url, &app_role, password.as_deref()).await?;
            println!("migrated; app role {app_role} ready");
            Ok(())
        }
        Command::MoveTenant {
            tenant,
            to,
            target_owner_url,
            target_app_url,
            source_owner_url,
            app_role,
        } => {
            let owner_url = cli
                .store
                .database_url
                .clone()
                .context("enclave move-tenant needs --database-url OWNER_URL")?;
            let id = TenantId::parse(&tenant)?;
            let target = match to.as_str() {
                "shared" => enclave_postgres::MoveTarget::Shared,
                "schema" => enclave_postgres::MoveTarget::Schema,
                "database" => enclave_postgres::MoveTarget::Database {
                    owner_url: target_owner_url
                        .context("--to database needs --target-owner-url")?,
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
        Command::Maintain {
            min_chunks,
            drop_below,
        } => {
            let owner_url = cli
                .store
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
        Command::Bench(args) => bench::run(&cli.store, args).await,
    }
}
