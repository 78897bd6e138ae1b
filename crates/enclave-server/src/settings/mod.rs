//! Everything a server can be told, in one typed [`Settings`]: each field
//! is one setting (its doc, its default, its file key and therefore its
//! `ENCLAVE_*` variable); [`Settings::check`] refuses values out of range.
//! [`load`] layers defaults < settings file < `ENCLAVE_*` variables < flags
//! into it (`enclave serve` with its environment, the in-process HTTP tests
//! with theirs); the server reads nothing else.
//!
//! Secrets (the admin token, JWT secrets, database and Redis URLs, the
//! alert signing secret) are [`SecretString`]s: `Debug` prints
//! `[REDACTED]`, and the value is exposed only where it is used.

mod de;
mod layers;
mod sections;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use smart_default::SmartDefault;

pub use layers::load;
pub use sections::{AlertSettings, JobSettings, MetricsSettings};

use crate::client::TrustedProxies;
use crate::failures::FailureLimits;
use crate::limits::{Plans, Prices};

/// The server's settings. Nested sections are TOML tables (`[jobs]`) and
/// `ENCLAVE_<SECTION>__<FIELD>` variables.
#[serde_with::serde_as]
#[derive(Debug, Clone, Deserialize, SmartDefault)]
#[serde(default)]
pub struct Settings {
    /// API listen address (port 0 picks one; the chosen address is printed).
    #[default(String::from("127.0.0.1:8080"))]
    pub listen: String,
    /// Data directory of the embedded store.
    pub data_dir: Option<PathBuf>,
    /// Directory holding all-MiniLM-L6-v2.
    pub model_dir: Option<PathBuf>,
    /// Language of full-text analysis (stop words, stemming) on either
    /// store: `english`, `simple` or a Snowball language (docs/ARCHITECTURE.md,
    /// "One text semantics on both stores").
    #[default(String::from("english"))]
    pub text_language: String,
    /// PostgreSQL URL of the app role (data and control plane); unset: the
    /// embedded store.
    #[serde(deserialize_with = "de::secret")]
    pub database_url: Option<SecretString>,
    /// PostgreSQL: connections each of this server's pools (data, control)
    /// opens at most.
    #[default(NonZeroU32::new(8).expect("not zero"))]
    pub database_max_connections: NonZeroU32,
    /// `<slug>.<base_domain>` Host hints are cross-checked when set.
    pub base_domain: Option<String>,
    /// Largest request body, in bytes.
    #[default(16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Per-request time limit.
    #[serde(rename = "request_timeout_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    #[default(Duration::from_secs(60))]
    pub request_timeout: Duration,
    /// How long a tenant's directory entry is trusted before it is re-read
    /// (bounds how long another replica's suspend/purge takes to apply here
    /// when the change feed is down).
    #[serde(rename = "tenant_cache_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    #[default(Duration::from_secs(5))]
    pub tenant_cache_ttl: Duration,
    /// Shared rate limits through Redis; in-process when unset.
    #[serde(deserialize_with = "de::secret")]
    pub redis_url: Option<SecretString>,
    /// How long a rate-limit check waits for Redis before deciding locally
    /// (clamped to 1 ms – 10 s).
    #[serde(rename = "redis_timeout_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    #[default(Duration::from_millis(100))]
    pub redis_timeout: Duration,
    /// Proxies (addresses or CIDR networks; a list, or one comma-separated
    /// string) whose `X-Forwarded-For` names the client the failed-credential
    /// buckets charge.
    pub trusted_proxies: TrustedProxies,
    /// The platform admin token (at least 16 characters); unset: the binary
    /// generates one and prints it once.
    #[serde(deserialize_with = "de::secret")]
    pub admin_token: Option<SecretString>,
    /// Tenant-user JWTs: `iss` and `aud` required when set, and the keys
    /// (HS256 secret, PEM public key file, JWKS file).
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    #[serde(deserialize_with = "de::secret")]
    pub jwt_secret: Option<SecretString>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_jwks: Option<PathBuf>,
    /// Platform-admin JWTs: a separate plane with its own keys.
    pub jwt_admin_issuer: Option<String>,
    pub jwt_admin_audience: Option<String>,
    #[serde(deserialize_with = "de::secret")]
    pub jwt_admin_secret: Option<SecretString>,
    pub jwt_admin_public_key: Option<PathBuf>,
    pub jwt_admin_jwks: Option<PathBuf>,
    /// PostgreSQL: the main database's owner URL, used only to place new
    /// tenants created with `isolation` `schema` or `database`. Unset: new
    /// tenants start shared.
    #[serde(deserialize_with = "de::secret")]
    pub placement_owner_url: Option<SecretString>,
    /// PostgreSQL: a role that may create databases and install pgvector,
    /// for `isolation: "database"` at tenant creation.
    #[serde(deserialize_with = "de::secret")]
    pub tenant_database_admin_url: Option<SecretString>,
    /// `[plans.<name>]`: request limits per plan (added to or replacing the
    /// built-in free, pro and enterprise; tenants' `limits` override them).
    #[serde(deserialize_with = "de::plans")]
    pub plans: Plans,
    /// `[prices]`: what usage costs (`cost_usd` in `/v1/usage`).
    pub prices: Prices,
    /// `[embedding]`: how embedding work is shared between tenants.
    pub embedding: enclave::Scheduling,
    /// `[store]`: how many store calls of one tenant run at once.
    pub store: enclave::StoreConcurrency,
    /// `[jobs]`: how this replica processes ingestion jobs.
    pub jobs: JobSettings,
    /// `[metrics]`: the operator address and opt-in per-tenant labels.
    pub metrics: MetricsSettings,
    /// `[alerts]`: the budget alert webhook.
    pub alerts: AlertSettings,
    /// `[auth_failures]`: what failed credentials may cost per client
    /// address and in all.
    pub auth_failures: FailureLimits,
}

impl Settings {
    /// The settings as the server runs with them (a Redis wait outside
    /// 1 ms to 10 s is clamped to it), or what it cannot run with, naming
    /// the setting.
    pub fn checked(mut self) -> Result<Self, String> {
        self.redis_timeout = self
            .redis_timeout
            .clamp(Duration::from_millis(1), Duration::from_secs(10));
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes must be at least 1024".into());
        }
        if self.tenant_cache_ttl > Duration::from_secs(86_400) {
            return Err("tenant_cache_secs must be 0 to 86400 seconds".into());
        }
        if let Some(d) = &self.base_domain {
            if d.is_empty() || d.starts_with('.') || d.contains('/') {
                return Err(format!("base_domain {d:?} is not a domain name"));
            }
        }
        if let Some(url) = &self.redis_url {
            crate::limits::check_redis_url(secrecy::ExposeSecret::expose_secret(url))?;
        }
        if let Some(t) = &self.admin_token {
            if secrecy::ExposeSecret::expose_secret(t).chars().count() < 16 {
                return Err("admin_token must be at least 16 characters".into());
            }
        }
        self.prices.validate()?;
        self.auth_failures.validate()?;
        self.embedding
            .check()
            .map_err(|e| format!("[embedding] {e}"))?;
        self.store.check().map_err(|e| format!("[store] {e}"))?;
        self.jobs.check()?;
        self.metrics.check()?;
        self.alerts.check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
