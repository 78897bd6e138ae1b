//! The server's own sections of [`super::Settings`]: `[jobs]`, `[metrics]`,
//! `[alerts]`.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use smart_default::SmartDefault;

/// `[jobs]`: how a replica runs ingestion jobs.
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Jobs this replica processes at once (0: this replica runs none).
    #[default(2)]
    pub workers: usize,
    /// How long a claim holds without renewal (a dead holder's jobs wait
    /// this long before another replica takes them).
    #[serde(rename = "lease_secs")]
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    #[default(Duration::from_secs(30))]
    pub lease: Duration,
    /// How often an idle runner looks for queued jobs (new jobs accepted by
    /// this replica wake it at once).
    #[serde(rename = "poll_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    #[default(Duration::from_secs(1))]
    pub poll: Duration,
    /// Unfinished jobs one tenant may have queued (beyond: 429).
    #[default(16)]
    pub max_queued_per_tenant: u64,
    /// Bytes of stored payload one tenant's unfinished jobs may hold.
    #[default(64 * 1024 * 1024)]
    pub max_queued_bytes_per_tenant: u64,
}

impl JobSettings {
    /// What one tenant may have waiting.
    pub fn bounds(&self) -> enclave_store::control::JobBounds {
        enclave_store::control::JobBounds {
            max_jobs: self.max_queued_per_tenant,
            max_bytes: self.max_queued_bytes_per_tenant,
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.5..=3600.0).contains(&self.lease.as_secs_f64()) {
            return Err("[jobs] lease_secs must be in [0.5, 3600]".into());
        }
        if self.max_queued_per_tenant == 0 {
            return Err("[jobs] max_queued_per_tenant must be at least 1".into());
        }
        if self.max_queued_bytes_per_tenant < 1024 {
            return Err("[jobs] max_queued_bytes_per_tenant must be at least 1024".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.poll) {
            return Err("[jobs] poll_ms must be in [10, 60000]".into());
        }
        Ok(())
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Label the counters of the N busiest tenants (0: none; tenant ids stay
    /// out of the metrics unless an operator opts in).
    pub top_tenants: usize,
    /// An operator-only address serving `/metrics` without a credential
    /// (`ENCLAVE_METRICS_LISTEN`). On the API address `/metrics` needs the
    /// platform admin credential.
    pub listen: Option<String>,
}

impl MetricsSettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.top_tenants > 1000 {
            return Err("[metrics] top_tenants must be at most 1000".into());
        }
        Ok(())
    }
}

/// `[alerts]`: where and how budget alerts are sent.
#[serde_with::serde_as]
#[derive(Debug, Clone, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// The webhook (`ENCLAVE_ALERT_WEBHOOK_URL`); unset: no alerts are
    /// recorded or sent.
    pub webhook_url: Option<String>,
    /// Name of the environment variable holding the signing secret (kept
    /// out of the file); the binary reads it into `secret`.
    pub secret_env: Option<String>,
    /// Signs deliveries when set.
    #[serde(skip)]
    pub secret: Option<SecretString>,
    /// How long one delivery may take.
    #[serde(rename = "timeout_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    #[default(Duration::from_secs(5))]
    pub timeout: Duration,
    /// The first retry's delay (doubled per attempt, at most an hour).
    #[serde(rename = "retry_secs")]
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    #[default(Duration::from_secs(30))]
    pub retry: Duration,
}

impl AlertSettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.webhook_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|_| format!("[alerts] webhook_url {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("[alerts] webhook_url must be http or https".into());
            }
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&self.timeout) {
            return Err("[alerts] timeout_ms must be in [1, 60000]".into());
        }
        if !(0.1..=3600.0).contains(&self.retry.as_secs_f64()) {
            return Err("[alerts] retry_secs must be in [0.1, 3600]".into());
        }
        Ok(())
    }
}
