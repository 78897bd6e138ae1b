//! Opening what the settings name, in one place: the library's data store
//! (embedded SQLite, or PostgreSQL as the app role), the control plane
//! beside it, and the server's shared state over both.

use std::sync::Arc;

use anyhow::{Context, Result};
use enclave::{Memory, MemoryConfig, StoreConfig};
use enclave_server::jwt::JwtVerifier;
use enclave_server::{AppState, Settings};
use enclave_store::control::ControlStore;
use enclave_store::sqlite::SqliteControl;

use crate::StoreArgs;

/// Connections a PostgreSQL pool opens at most, for commands that run
/// without the server's settings.
pub const POOL: u32 = 8;

/// The library on the configured store; `served`: for the server, whose
/// control plane owns the tenant directory, so a write never creates a
/// directory entry (a tenant without one — purged — is refused).
pub async fn open_memory(store: &StoreArgs, served: bool, pool: u32) -> Result<Memory> {
    if let Some(url) = &store.database_url {
        let embedder = Memory::load_embedder(store.embedder_config()).await?;
        let pg = enclave_postgres::PgStore::connect_with(
            url,
            embedder.dimensions(),
            enclave_postgres::PgOptions {
                max_connections: pool,
                require_directory: served,
                text_search_config: store.text_language(),
                ..Default::default()
            },
        )
        .await
        .context("connecting to PostgreSQL")?;
        return Ok(Memory::from_parts(
            Arc::new(pg),
            embedder,
            Default::default(),
            4096,
        ));
    }
    let dir = store.data_dir();
    Memory::open(MemoryConfig::new(
        StoreConfig::embedded(&dir, store.layout()).with_text_language(store.text_language()),
        store.embedder_config(),
    ))
    .await
    .with_context(|| format!("opening the store in {}", dir.display()))
}

/// The control plane beside the data: PostgreSQL's main database (as the
/// app role) or `control.sqlite` in the data directory.
pub async fn open_control(store: &StoreArgs, pool: u32) -> Result<Arc<dyn ControlStore>> {
    if let Some(url) = &store.database_url {
        return Ok(Arc::new(
            enclave_postgres::PgControl::connect(url, pool)
                .await
                .context("connecting the control plane to PostgreSQL")?,
        ));
    }
    let data_dir = store.data_dir();
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || SqliteControl::open(&data_dir)).await??,
    ))
}

/// The library and the control plane on the configured store, as the
/// server's shared state.
pub async fn open_state(
    store: &StoreArgs,
    jwt: JwtVerifier,
    settings: Settings,
) -> Result<AppState> {
    let pool = settings.database_max_connections.get();
    let memory = open_memory(store, true, pool)
        .await?
        .with_scheduling(settings.embedding)
        .with_store_concurrency(settings.store);
    let control = open_control(store, pool).await?;
    Ok(AppState::new(memory, control, jwt, settings))
}
