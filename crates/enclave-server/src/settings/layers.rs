//! The layers of [`Settings`], in order: its defaults < a TOML file <
//! `ENCLAVE_*` variables < flags. A setting's file key is its field's name,
//! its variable the same in capitals (`ENCLAVE_MAX_BODY_BYTES`; a
//! section's field is `ENCLAVE_<SECTION>__<FIELD>`, e.g.
//! `ENCLAVE_JOBS__WORKERS`). The variables are given, not read here: the
//! binary passes its process environment, an in-process test its own.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::SecretString;
use serde::Serialize;

use super::Settings;

/// The prefix of every setting's variable.
const PREFIX: &str = "ENCLAVE_";

/// Variables read under older names, kept: they name a field of a section.
const RENAMED_VARIABLES: [(&str, &str); 2] = [
    ("metrics_listen", "metrics.listen"),
    ("alert_webhook_url", "alerts.webhook_url"),
];

/// The settings from `file`, the `ENCLAVE_*` entries of `vars` (an
/// environment: other entries are read only where a setting names them,
/// as `[alerts] secret_env` does) and `flags` (only the flags given).
pub fn load(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
    flags: impl Serialize,
) -> Result<Settings> {
    let vars: HashMap<String, String> = vars.into_iter().collect();
    let mut figment = Figment::new();
    if let Some(path) = file {
        refuse_unknown_keys(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let settings: Settings = figment
        .merge(Variables::new(&vars))
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    let mut settings = settings.checked().map_err(anyhow::Error::msg)?;
    if let Some(var) = &settings.alerts.secret_env {
        let secret = vars
            .get(var)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("[alerts] secret_env: {var} is not set"))?;
        settings.alerts.secret = Some(SecretString::from(secret.clone()));
    }
    Ok(settings)
}

/// The `ENCLAVE_*` variables as a figment provider, keyed by setting
/// (values parsed as figment's own `Env` parses them). Variables whose name
/// is no setting, such as `ENCLAVE_LOG`, are ignored by the extraction; a
/// variable set to nothing (`ENCLAVE_JWT_PUBLIC_KEY=`) is unset.
struct Variables(Vec<(String, String)>);

impl Variables {
    fn new(vars: &HashMap<String, String>) -> Self {
        let mut named: Vec<(String, String)> = vars
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(PREFIX)?.to_ascii_lowercase();
                if key.is_empty() || v.trim().is_empty() {
                    return None;
                }
                let key = match RENAMED_VARIABLES.iter().find(|(old, _)| *old == key) {
                    Some((_, new)) => (*new).to_owned(),
                    None => key.replace("__", "."),
                };
                Some((key, v.clone()))
            })
            .collect();
        named.sort();
        Variables(named)
    }
}

impl Provider for Variables {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, k: &[&str]| {
                let keys: Vec<_> = k.iter().map(|k| k.to_ascii_uppercase()).collect();
                keys.join("__")
            },
        )
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut dict = Dict::new();
        for (key, value) in &self.0 {
            let value: figment::value::Value = value.parse().expect("parsing is infallible");
            if let Some(nested) = figment::util::nest(key, value).into_dict() {
                for (k, v) in nested {
                    merge_into(&mut dict, k, v);
                }
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Inserts `value` at `key`, merging dictionaries (two variables of one
/// section).
fn merge_into(dict: &mut Dict, key: String, value: figment::value::Value) {
    use figment::value::Value;
    match (dict.remove(&key), value) {
        (Some(Value::Dict(_, mut old)), Value::Dict(_, new)) => {
            for (k, v) in new {
                merge_into(&mut old, k, v);
            }
            dict.insert(key, Value::from(old));
        }
        (_, value) => {
            dict.insert(key, value);
        }
    }
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

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
