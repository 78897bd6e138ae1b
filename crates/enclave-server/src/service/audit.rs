//! The audit log as the server writes and checks it: every audited action
//! is appended **before** it takes effect (a failed append refuses the
//! action), refusals are recorded best-effort, and [`verify_all`] walks
//! every hash chain (`enclave audit verify`).

use chrono::Utc;
use enclave_core::TenantId;
use enclave_store::control::{verify_chain, ControlStore, NewAuditEvent};
use serde_json::Value;

use crate::{ApiError, ApiResult, AppState};

impl AppState {
    /// Appends to a tenant's audit log (or the platform's when `tenant` is
    /// None). A failure is an error: an action that must be audited does
    /// not proceed unaudited.
    pub async fn audit(
        &self,
        tenant: Option<&TenantId>,
        actor: &str,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> ApiResult<()> {
        let ev = NewAuditEvent {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
            detail,
            at: Utc::now(),
        };
        let r = match tenant {
            Some(t) => self.control().tenant(t).append_audit(ev).await,
            None => self.control().append_platform_audit(ev).await,
        };
        r.map(|_| ()).map_err(ApiError::from)
    }

    /// As [`Self::audit`], for events recorded on the way to refusing a
    /// request: the refusal stands whether or not the write succeeds.
    pub async fn audit_refusal(
        &self,
        tenant: Option<&TenantId>,
        actor: &str,
        action: &str,
        detail: Value,
    ) {
        if let Err(e) = self.audit(tenant, actor, action, None, detail).await {
            self.inner.metrics.audit_failures.inc();
            tracing::warn!(error = %e, action, "could not write an audit event");
        }
    }
}

/// One audit chain's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// A tenant id, or the platform's scope.
    pub scope: String,
    /// The number of events that verify, or the sequence number of the
    /// first that does not.
    pub outcome: Result<u64, i64>,
}

/// Verifies every audit chain, one [`ChainCheck`] per scope.
pub async fn verify_all(control: &dyn ControlStore) -> ApiResult<Vec<ChainCheck>> {
    let mut out = Vec::new();
    for scope in control.audit_scopes().await? {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = control.audit_events(&scope, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            events.extend(page);
        }
        let outcome = verify_chain(&events);
        out.push(ChainCheck { scope, outcome });
    }
    Ok(out)
}
