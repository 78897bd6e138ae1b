//! The tenant change feed: every change to a directory entry (`tenants`)
//! is announced with `pg_notify` in the changing transaction, so each
//! replica hears of it at commit and drops its cached entry.

use enclave_core::TenantId;
use enclave_store::control::TenantChange;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

/// The channel `tenants` changes are announced on (payload: the tenant id).
pub const TENANT_CHANGES: &str = "enclave_tenant_changes";

/// Announces a change to `id`'s directory entry (delivered at commit).
pub(crate) async fn notify(tx: &mut PgConnection, id: &TenantId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(TENANT_CHANGES)
        .bind(id.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// `LISTEN`s on [`TENANT_CHANGES`] on a connection of its own; a lost
/// connection is reopened (every second while the server is away) and
/// reported as [`TenantChange::Restarted`] once listening again.
pub(crate) fn follow(options: PgConnectOptions) -> tokio::sync::mpsc::Receiver<TenantChange> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy_with(options);
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                l.listen(TENANT_CHANGES).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "tenant change feed: reconnecting");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if tx.send(TenantChange::Restarted).await.is_err() {
                return;
            }
            // `Ok(None)`: the connection was lost; start over.
            while let Ok(Some(n)) = listener.try_recv().await {
                let Ok(id) = TenantId::parse(n.payload()) else {
                    continue;
                };
                if tx.send(TenantChange::Changed(id)).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}
