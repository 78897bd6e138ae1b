use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;

use super::load;

#[derive(Serialize)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<usize>,
}

const NO_FLAGS: Flags = Flags {
    max_body_bytes: None,
};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "s.toml",
        "max_body_bytes = 2000\nrequest_timeout_secs = 9\nlisten = \"0.0.0.0:1\"\n\
         [jobs]\nworkers = 5\npoll_ms = 20\n",
    );
    let env = vars(&[
        ("ENCLAVE_MAX_BODY_BYTES", "3000"),
        ("ENCLAVE_REQUEST_TIMEOUT_SECS", "11"),
        ("ENCLAVE_JOBS__WORKERS", "7"),
        ("ENCLAVE_JOBS__LEASE_SECS", "4"),
        ("ENCLAVE_DATABASE_MAX_CONNECTIONS", "3"),
    ]);
    let s = load(
        Some(&path),
        env,
        Flags {
            max_body_bytes: Some(4000),
        },
    )
    .unwrap();
    assert_eq!(s.max_body_bytes, 4000, "flag over variable");
    assert_eq!(
        s.request_timeout,
        Duration::from_secs(11),
        "variable over file"
    );
    assert_eq!(s.jobs.workers, 7, "a section's variable");
    assert_eq!(s.jobs.lease, Duration::from_secs(4), "two of one section");
    assert_eq!(s.database_max_connections.get(), 3);
    assert_eq!(s.jobs.poll, Duration::from_millis(20), "file over default");
    assert_eq!(s.listen, "0.0.0.0:1");
    assert_eq!(s.redis_timeout, Duration::from_millis(100), "default");
}

#[test]
fn variables_under_their_older_names_and_numeric_secrets_still_apply() {
    let env = vars(&[
        ("ENCLAVE_METRICS_LISTEN", "127.0.0.1:9"),
        ("ENCLAVE_ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hook"),
        ("ENCLAVE_TRUSTED_PROXIES", "127.0.0.5, 10.0.0.0/8"),
        ("ENCLAVE_JWT_SECRET", "12345678901234567890"),
        ("ENCLAVE_TEST_SOMETHING_ELSE", "ignored"),
        ("ENCLAVE_LOG", "debug"),
        ("ENCLAVE_JWT_PUBLIC_KEY", ""),
        ("ENCLAVE_", "not a setting"),
        ("OTHER_MAX_BODY_BYTES", "not ours"),
    ]);
    let s = load(None, env, NO_FLAGS).unwrap();
    assert_eq!(s.metrics.listen.as_deref(), Some("127.0.0.1:9"));
    assert_eq!(
        s.alerts.webhook_url.as_deref(),
        Some("http://127.0.0.1:1/hook")
    );
    assert!(!s.trusted_proxies.is_empty());
    assert!(s.jwt_public_key.is_none(), "set to nothing is unset");
    assert_eq!(s.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(
        s.jwt_secret.as_ref().map(|s| s.expose_secret().to_owned()),
        Some("12345678901234567890".to_owned())
    );
}

#[test]
fn an_unknown_key_in_the_file_or_a_bad_value_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let typo = file(&dir, "typo.toml", "[jobs]\nleese_secs = 2\n");
    let err = format!("{:#}", load(Some(&typo), vars(&[]), NO_FLAGS).unwrap_err());
    assert!(err.contains("leese_secs"), "{err}");
    let top = file(&dir, "top.toml", "max_bodee_bytes = 2\n");
    let err = format!("{:#}", load(Some(&top), vars(&[]), NO_FLAGS).unwrap_err());
    assert!(err.contains("max_bodee_bytes"), "{err}");
    let env = vars(&[("ENCLAVE_MAX_BODY_BYTES", "lots")]);
    let err = format!("{:#}", load(None, env, NO_FLAGS).unwrap_err());
    assert!(
        err.contains("MAX_BODY_BYTES") && err.contains("lots"),
        "{err}"
    );
    let env = vars(&[("ENCLAVE_JOBS__WORKERS", "many")]);
    let err = format!("{:#}", load(None, env, NO_FLAGS).unwrap_err());
    assert!(err.contains("JOBS__WORKERS"), "{err}");
    let env = vars(&[("ENCLAVE_MAX_BODY_BYTES", "10")]);
    let err = format!("{:#}", load(None, env, NO_FLAGS).unwrap_err());
    assert!(err.contains("at least 1024"), "{err}");
}

#[test]
fn the_alert_secret_is_read_from_the_variable_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "a.toml", "[alerts]\nsecret_env = \"HOOK_SECRET\"\n");
    let err = format!("{:#}", load(Some(&path), vars(&[]), NO_FLAGS).unwrap_err());
    assert!(err.contains("HOOK_SECRET is not set"), "{err}");
    let s = load(Some(&path), vars(&[("HOOK_SECRET", "s3cret")]), NO_FLAGS).unwrap();
    assert_eq!(s.alerts.secret.unwrap().expose_secret(), "s3cret");
}
