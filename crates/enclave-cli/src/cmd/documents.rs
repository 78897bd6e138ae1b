//! The document commands: ingest, search, list, get, delete, stats, export.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use enclave::core::{DocumentId, SearchMode, SearchParams};
use enclave::ListParams;
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::{demo, files, tenant_of, ModeArg, StoreArgs};

#[derive(Args)]
pub(crate) struct IngestArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    /// Sub-scope (user, project…) to file the documents under.
    #[arg(long)]
    pub(crate) origin: Option<String>,
    /// Documents processed concurrently.
    #[arg(long, default_value_t = 4)]
    pub(crate) jobs: usize,
    #[arg(required = true)]
    pub(crate) paths: Vec<String>,
}

#[derive(Args)]
pub(crate) struct SearchArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long, value_enum, default_value = "hybrid")]
    pub(crate) mode: ModeArg,
    #[arg(long, default_value_t = 10)]
    pub(crate) limit: u32,
    /// Only documents with this origin (repeatable).
    #[arg(long)]
    pub(crate) origin: Vec<String>,
    /// Metadata filter as JSON, e.g. '{"year": {"$gte": 2024}}'.
    #[arg(long)]
    pub(crate) filter: Option<String>,
    /// Print the API's JSON shape.
    #[arg(long)]
    pub(crate) json: bool,
    pub(crate) query: String,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: u32,
    #[arg(long)]
    pub(crate) cursor: Option<String>,
    #[arg(long)]
    pub(crate) origin: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct GetArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long)]
    pub(crate) chunks: bool,
    pub(crate) id: String,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

#[derive(Args)]
pub(crate) struct StatsArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
}

pub(crate) async fn ingest(store: &StoreArgs, args: IngestArgs) -> Result<()> {
    let IngestArgs {
        tenant,
        origin,
        jobs,
        paths,
    } = args;
    let memory = store.open().await?;
    let t = tenant_of(&memory, &tenant)?;
    let origin = origin
        .map(|o| enclave::core::Origin::parse(&o))
        .transpose()?;
    files::ingest(&t, origin, &paths, jobs.max(1)).await
}

pub(crate) async fn search(store: &StoreArgs, args: SearchArgs) -> Result<()> {
    let SearchArgs {
        tenant,
        mode,
        limit,
        origin,
        filter,
        json,
        query,
    } = args;
    let memory = store.open().await?;
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

pub(crate) async fn list(store: &StoreArgs, args: ListArgs) -> Result<()> {
    let ListArgs {
        tenant,
        limit,
        cursor,
        origin,
        json,
    } = args;
    let memory = store.open().await?;
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

pub(crate) async fn get(store: &StoreArgs, args: GetArgs) -> Result<()> {
    let GetArgs { tenant, chunks, id } = args;
    let memory = store.open().await?;
    let t = tenant_of(&memory, &tenant)?;
    let doc = t.get_document(&DocumentId::parse(&id)?, chunks).await?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

pub(crate) async fn delete(store: &StoreArgs, args: DeleteArgs) -> Result<()> {
    let DeleteArgs { tenant, ids } = args;
    let memory = store.open().await?;
    let t = tenant_of(&memory, &tenant)?;
    let ids = ids
        .iter()
        .map(|i| DocumentId::parse(i))
        .collect::<Result<Vec<_>, _>>()?;
    let n = t.delete_documents(&ids).await?;
    println!("{{\"deleted_count\": {n}}}");
    Ok(())
}

pub(crate) async fn stats(store: &StoreArgs, args: StatsArgs) -> Result<()> {
    let StatsArgs { tenant, json } = args;
    let memory = store.open().await?;
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

pub(crate) async fn export(store: &StoreArgs, args: ExportArgs) -> Result<()> {
    let ExportArgs { tenant, output } = args;
    let memory = store.open().await?;
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
