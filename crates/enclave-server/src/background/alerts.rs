//! Budget alerts: when a tenant's spend this month crosses 80 % and 100 %
//! of its `monthly_budget_usd`, a JSON POST to the configured webhook
//! (docs/API-EXTENSIONS.md, "Budget alerts").
//!
//! Once per tenant, month and threshold: the alert is stored in the
//! control plane before it is sent (the primary key refuses a second), so
//! replicas and restarts do not repeat it. At least once: an alert whose
//! delivery fails (no answer, or not 2xx) stays undelivered and is retried
//! with backoff by whichever replica sweeps it first; receivers deduplicate
//! on its `id` (also the `Enclave-Alert-Id` header). With a `secret`, each
//! delivery is signed: `Enclave-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">`.

use chrono::{Datelike, Utc};
use enclave_store::control::BudgetAlert;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::service::quota;
use crate::AppState;

/// The shares of the budget that raise an alert.
pub const THRESHOLDS: [u32; 2] = [80, 100];

/// Checks the tenants with usage since the last check against their
/// budgets; records and sends what they crossed.
pub(crate) async fn check(state: &AppState) {
    let opts = &state.options().alerts;
    if opts.webhook_url.is_none() {
        return;
    }
    for tenant in state.inner.usage.take_dirty() {
        let Ok(Some(record)) = state.tenant_record(&tenant).await else {
            continue;
        };
        let Some(budget) = record.limits.monthly_budget_usd().filter(|b| *b > 0.0) else {
            continue;
        };
        let spent = match quota::month_to_date_usd(state, &tenant).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a budget; rechecked with the next usage");
                continue;
            }
        };
        let now = Utc::now();
        for threshold in THRESHOLDS {
            if spent < budget * f64::from(threshold) / 100.0 {
                continue;
            }
            let alert = BudgetAlert {
                tenant_id: tenant.clone(),
                month: format!("{:04}-{:02}", now.year(), now.month()),
                threshold_percent: threshold,
                budget_usd: budget,
                spent_usd: spent,
                created_at: now,
                attempts: 1,
            };
            match state
                .control()
                .tenant(&tenant)
                .record_budget_alert(&alert, opts.retry)
                .await
            {
                Ok(true) => spawn_delivery(state, alert),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot record a budget alert"),
            }
        }
    }
}

/// Retries undelivered alerts that are due.
pub(crate) async fn sweep(state: &AppState) {
    let opts = &state.options().alerts;
    if opts.webhook_url.is_none() {
        return;
    }
    match state.control().due_budget_alerts(20, opts.retry).await {
        Ok(due) => {
            for alert in due {
                spawn_delivery(state, alert);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read undelivered budget alerts"),
    }
}

/// The JSON an alert is delivered as.
pub fn alert_body(a: &BudgetAlert) -> serde_json::Value {
    json!({
        "id": a.id(),
        "type": "budget.threshold_crossed",
        "tenant_id": a.tenant_id,
        "month": a.month,
        "threshold_percent": a.threshold_percent,
        "budget_usd": a.budget_usd,
        "spent_usd": a.spent_usd,
        "created_at": a.created_at,
        "attempt": a.attempts,
    })
}

/// Delivers off the usage flush loop (a slow webhook must not delay the
/// counters).
fn spawn_delivery(state: &AppState, alert: BudgetAlert) {
    let state = state.clone();
    tokio::spawn(async move { deliver(&state, &alert).await });
}

/// One delivery; marks the alert delivered on a 2xx answer.
async fn deliver(state: &AppState, alert: &BudgetAlert) {
    let opts = &state.options().alerts;
    let Some(url) = &opts.webhook_url else { return };
    let body = alert_body(alert).to_string();
    let mut req = state
        .inner
        .http
        .post(url)
        .timeout(opts.timeout)
        .header("content-type", "application/json")
        .header("enclave-alert-id", alert.id());
    if let Some(secret) = &opts.secret {
        let t = Utc::now().timestamp();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("any key length");
        mac.update(format!("{t}.{body}").as_bytes());
        req = req.header(
            "enclave-signature",
            format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes())),
        );
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => {
            if let Err(e) = state
                .control()
                .budget_alert_delivered(&alert.tenant_id, &alert.month, alert.threshold_percent)
                .await
            {
                // Sent but not marked: it will be sent again (at least once).
                tracing::warn!(error = %e, "a delivered budget alert could not be marked");
            }
            tracing::info!(tenant_id = %alert.tenant_id, alert_id = %alert.id(), "budget alert delivered");
        }
        Ok(r) => {
            tracing::warn!(alert_id = %alert.id(), status = %r.status(), attempt = alert.attempts, "budget alert refused by the webhook; retried later")
        }
        Err(e) => {
            tracing::warn!(alert_id = %alert.id(), error = %e, attempt = alert.attempts, "budget alert not delivered; retried later")
        }
    }
}
