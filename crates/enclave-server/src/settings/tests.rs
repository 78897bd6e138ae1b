use super::*;

fn from_toml(text: &str) -> Result<Settings, String> {
    toml::from_str::<Settings>(text)
        .map_err(|e| e.to_string())?
        .checked()
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = Settings::default().checked().unwrap();
    assert_eq!(s.listen, "127.0.0.1:8080");
    assert_eq!(s.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(s.database_max_connections.get(), 8);
    assert_eq!(s.request_timeout, Duration::from_secs(60));
    assert_eq!(s.tenant_cache_ttl, Duration::from_secs(5));
    assert_eq!(s.redis_timeout, Duration::from_millis(100));
    assert_eq!(s.jobs.workers, 2);
    assert_eq!(s.jobs.lease, Duration::from_secs(30));
    assert_eq!(s.jobs.bounds().max_jobs, 16);
    assert_eq!(s.alerts.retry, Duration::from_secs(30));
    assert_eq!(s.store, enclave::StoreConcurrency::default());
    assert_eq!(s.embedding, enclave::Scheduling::default());
    assert!(s.admin_token.is_none() && s.trusted_proxies.is_empty());
}

#[test]
fn file_names_units_and_sections_reach_their_fields() {
    let s = from_toml(
        "request_timeout_secs = 7\nredis_timeout_ms = 250\ntenant_cache_secs = 0\n\
         trusted_proxies = \"10.0.0.0/8, 127.0.0.5\"\n\
         [jobs]\nlease_secs = 2.5\npoll_ms = 50\n[store]\nslot_wait_ms = 0\n\
         [embedding]\nheavy_half_life_secs = 0.5\n[alerts]\ntimeout_ms = 900\n",
    )
    .unwrap();
    assert_eq!(s.request_timeout, Duration::from_secs(7));
    assert_eq!(s.redis_timeout, Duration::from_millis(250));
    assert_eq!(s.tenant_cache_ttl, Duration::ZERO);
    assert!(!s.trusted_proxies.is_empty());
    assert_eq!(s.jobs.lease, Duration::from_millis(2500));
    assert_eq!(s.jobs.poll, Duration::from_millis(50));
    assert_eq!(s.store.wait, Duration::ZERO);
    assert_eq!(s.embedding.heavy_half_life, Duration::from_millis(500));
    assert_eq!(s.alerts.timeout, Duration::from_millis(900));
}

#[test]
fn out_of_range_values_are_refused_by_name() {
    for (text, says) in [
        ("max_body_bytes = 10", "max_body_bytes"),
        ("database_max_connections = 0", "database_max_connections"),
        ("tenant_cache_secs = 90000", "tenant_cache_secs"),
        ("admin_token = \"short\"", "admin_token"),
        ("[jobs]\nlease_secs = 0.1", "[jobs] lease_secs"),
        ("[jobs]\nmax_queued_per_tenant = 0", "max_queued_per_tenant"),
        ("[embedding]\nworkers = 0", "[embedding] workers"),
        ("[store]\nmax_concurrent_per_tenant = 0", "[store]"),
        ("[metrics]\ntop_tenants = 5000", "top_tenants"),
        ("[alerts]\nwebhook_url = \"ftp://x\"", "webhook_url"),
        ("base_domain = \".x\"", "base_domain"),
    ] {
        let err = from_toml(text).unwrap_err();
        assert!(err.contains(says), "{text:?}: {err}");
    }
}

#[test]
fn a_redis_wait_outside_its_range_is_clamped() {
    let s = from_toml("redis_timeout_ms = 0").unwrap();
    assert_eq!(s.redis_timeout, Duration::from_millis(1));
    let s = from_toml("redis_timeout_ms = 99999").unwrap();
    assert_eq!(s.redis_timeout, Duration::from_secs(10));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = from_toml(
        "admin_token = \"adm_0123456789abcdef\"\njwt_secret = 123456789\n\
         database_url = \"postgres://app:hunter2@db/enclave\"",
    )
    .unwrap();
    let shown = format!("{s:?}");
    for secret in ["0123456789abcdef", "123456789", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(s.jwt_secret.as_ref().unwrap()),
        "123456789",
        "a numeric secret is still its text"
    );
}
