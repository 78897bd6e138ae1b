//! Verified purge (API.md §8 `DELETE /admin/v1/tenants/{id}`): suspend,
//! delete everything, purge the control plane, then check that each store
//! holds nothing of the tenant; the receipt is the platform log's last word.

use enclave_core::TenantId;
use serde_json::{json, Value};

use crate::{ApiError, ApiResult, AppState};

/// Purges `id` as `actor`; the receipt, or 404 for a tenant that is not
/// (or no longer) there.
pub(crate) async fn purge_tenant(state: &AppState, actor: &str, id: &TenantId) -> ApiResult<Value> {
    super::tenants::exists(state, id).await?;
    // The purge is in the platform log before anything is deleted (fail
    // closed); the receipt follows it.
    state
        .audit(
            None,
            actor,
            "tenant.purge.begin",
            Some(id.to_string()),
            json!({}),
        )
        .await?;
    // Suspend, and (PostgreSQL) wait for every writer of the tenant on
    // every replica and mark the entry purging: later writes refuse to add
    // data. Handles made before the purge below can no longer write here.
    if !state.control().begin_purge(id).await? {
        return Err(ApiError::NotFound);
    }
    state.invalidate_tenant(id);
    let tenant = state.memory().tenant(id);
    let purged = tenant.purge().await?;
    let control = {
        // No flush may write this tenant's counts while (or after) they
        // are deleted.
        let _no_flush = state.inner.usage.flushing.lock().await;
        state.inner.usage.forget(id);
        state.inner.usage.tombstone(id);
        state.control().purge_tenant(id).await?
    };
    state.invalidate_tenant(id);
    let after = tenant.statistics().await?;
    let messages_left = tenant.message_count().await?;
    let left = state.control().tenant_rows_left(id).await?;
    let verified_empty =
        after.document_count == 0 && after.chunk_count == 0 && messages_left == 0 && left == 0;
    let receipt = json!({
        "tenant_id": id.as_str(),
        "documents_deleted": purged.documents,
        "chunks_deleted": purged.chunks,
        "messages_deleted": purged.messages,
        "keys_revoked": control.keys_revoked,
        "verified_empty": verified_empty,
    });
    state
        .audit(
            None,
            actor,
            "tenant.purge",
            Some(id.to_string()),
            receipt.clone(),
        )
        .await?;
    if !verified_empty {
        return Err(ApiError::Internal(format!(
            "purge of {id} left data behind: {after:?}, {left} control rows"
        )));
    }
    Ok(receipt)
}
