//! `enclave serve`'s settings, layered into one typed
//! [`enclave_server::Settings`]: its defaults < the `--config` TOML file <
//! `ENCLAVE_*` environment variables < flags. A setting is one field of
//! `Settings`; its file key is the field's name, its variable the same in
//! capitals (`ENCLAVE_MAX_BODY_BYTES`; a section's field is
//! `ENCLAVE_<SECTION>__<FIELD>`, e.g. `ENCLAVE_JOBS__WORKERS`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::Serialize;

pub use enclave_server::Settings;

/// Variables read under older names, kept: they name a field of a section.
const RENAMED_VARIABLES: [(&str, &str); 2] = [
    ("metrics_listen", "metrics.listen"),
    ("alert_webhook_url", "alerts.webhook_url"),
];

/// The layers in order; `flags` holds only the flags that were given.
pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Settings> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        refuse_unknown_keys(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let settings: Settings = figment
        .merge(environment())
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    let mut settings = settings.checked().map_err(anyhow::Error::msg)?;
    if let Some(var) = &settings.alerts.secret_env {
        let secret = std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("[alerts] secret_env: {var} is not set"))?;
        settings.alerts.secret = Some(SecretString::from(secret));
    }
    Ok(settings)
}

/// `ENCLAVE_*`: every variable whose name is a setting's (others, such as
/// `ENCLAVE_LOG` or `ENCLAVE_CONFIG`, are not settings and are ignored). A
/// variable set to nothing (`ENCLAVE_JWT_PUBLIC_KEY=`) is unset.
fn environment() -> Env {
    let named = Env::prefixed("ENCLAVE_")
        .filter(|k| !k.as_str().is_empty())
        .map(|k| {
            let k = k.as_str().to_ascii_lowercase();
            match RENAMED_VARIABLES.iter().find(|(old, _)| *old == k) {
                Some((_, new)) => (*new).into(),
                None => k.replace("__", ".").into(),
            }
        });
    let blank: std::collections::HashSet<String> = named
        .iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, _)| k.to_string())
        .collect();
    named.filter(move |k| !blank.contains(k.as_str()))
}

/// A key of the file that names no setting is a mistake (a typo would
/// otherwise leave the default in force).
fn refuse_unknown_keys(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid settings file", path.display()))?;
    let mut unknown = Vec::new();
    let _: Settings = serde_ignored::deserialize(value, |key| unknown.push(key.to_string()))
        .with_context(|| format!("{} is not a valid settings file", path.display()))?;
    if !unknown.is_empty() {
        bail!(
            "{} is not a valid settings file: unknown setting {}",
            path.display(),
            unknown.join(", ")
        );
    }
    Ok(())
}

// figment::Jail fixes the closures' error type (figment::Error, which is large).
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use figment::Jail;
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        max_body_bytes: Option<usize>,
    }

    const NO_FLAGS: Flags = Flags {
        max_body_bytes: None,
    };

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "max_body_bytes = 2000\nrequest_timeout_secs = 9\nlisten = \"0.0.0.0:1\"\n\
                 [jobs]\nworkers = 5\npoll_ms = 20\n",
            )?;
            jail.set_env("ENCLAVE_MAX_BODY_BYTES", "3000");
            jail.set_env("ENCLAVE_REQUEST_TIMEOUT_SECS", "11");
            jail.set_env("ENCLAVE_JOBS__WORKERS", "7");
            jail.set_env("ENCLAVE_DATABASE_MAX_CONNECTIONS", "3");
            let path = jail.directory().join("s.toml");
            let s = load(
                Some(&path),
                Flags {
                    max_body_bytes: Some(4000),
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.max_body_bytes, 4000, "flag over variable");
            assert_eq!(
                s.request_timeout,
                Duration::from_secs(11),
                "variable over file"
            );
            assert_eq!(s.jobs.workers, 7, "a section's variable");
            assert_eq!(s.database_max_connections.get(), 3);
            assert_eq!(s.jobs.poll, Duration::from_millis(20), "file over default");
            assert_eq!(s.listen, "0.0.0.0:1");
            assert_eq!(s.redis_timeout, Duration::from_millis(100), "default");
            Ok(())
        });
    }

    #[test]
    fn variables_under_their_older_names_and_numeric_secrets_still_apply() {
        Jail::expect_with(|jail| {
            jail.set_env("ENCLAVE_METRICS_LISTEN", "127.0.0.1:9");
            jail.set_env("ENCLAVE_ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hook");
            jail.set_env("ENCLAVE_TRUSTED_PROXIES", "127.0.0.5, 10.0.0.0/8");
            jail.set_env("ENCLAVE_JWT_SECRET", "12345678901234567890");
            jail.set_env("ENCLAVE_TEST_SOMETHING_ELSE", "ignored");
            jail.set_env("ENCLAVE_LOG", "debug");
            jail.set_env("ENCLAVE_JWT_PUBLIC_KEY", "");
            let s = load(None, NO_FLAGS).map_err(|e| e.to_string())?;
            assert_eq!(s.metrics.listen.as_deref(), Some("127.0.0.1:9"));
            assert_eq!(
                s.alerts.webhook_url.as_deref(),
                Some("http://127.0.0.1:1/hook")
            );
            assert!(!s.trusted_proxies.is_empty());
            assert!(s.jwt_public_key.is_none(), "set to nothing is unset");
            assert_eq!(
                s.jwt_secret.as_ref().map(|s| s.expose_secret().to_owned()),
                Some("12345678901234567890".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_in_the_file_or_a_bad_value_is_refused_by_name() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[jobs]\nleese_secs = 2\n")?;
            let err = load(Some(&jail.directory().join("typo.toml")), NO_FLAGS).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains("leese_secs"), "{err}");
            jail.create_file("top.toml", "max_bodee_bytes = 2\n")?;
            let err = load(Some(&jail.directory().join("top.toml")), NO_FLAGS).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains("max_bodee_bytes"), "{err}");
            jail.set_env("ENCLAVE_MAX_BODY_BYTES", "lots");
            let err = format!("{:#}", load(None, NO_FLAGS).unwrap_err());
            assert!(
                err.contains("MAX_BODY_BYTES") && err.contains("lots"),
                "{err}"
            );
            jail.set_env("ENCLAVE_MAX_BODY_BYTES", "10");
            let err = format!("{:#}", load(None, NO_FLAGS).unwrap_err());
            assert!(err.contains("at least 1024"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_alert_secret_is_read_from_the_variable_the_file_names() {
        Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[alerts]\nsecret_env = \"HOOK_SECRET\"\n")?;
            let path = jail.directory().join("a.toml");
            let err = format!("{:#}", load(Some(&path), NO_FLAGS).unwrap_err());
            assert!(err.contains("HOOK_SECRET is not set"), "{err}");
            jail.set_env("HOOK_SECRET", "s3cret");
            let s = load(Some(&path), NO_FLAGS).map_err(|e| e.to_string())?;
            assert_eq!(s.alerts.secret.unwrap().expose_secret(), "s3cret");
            Ok(())
        });
    }
}
