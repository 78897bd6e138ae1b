use super::*;
use enclave_store::control::LimitValue;

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate { per_second, burst }
}

#[tokio::test]
async fn the_local_bucket_admits_the_burst_then_refuses_with_a_retry_time() {
    let l = RateLimiter::new(None, Duration::from_millis(100), LimiterMetrics::new()).unwrap();
    let t = TenantId::parse("acme").unwrap();
    let mut admitted = 0;
    let mut last = None;
    for _ in 0..10 {
        let d = l.check(&t, "key:a", rate(1.0, 5), rate(1.0, 5), 1).await;
        if d.allowed {
            admitted += 1;
        }
        last = Some(d);
    }
    assert_eq!(admitted, 5);
    let d = last.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    assert_eq!(d.limit, 5);
    assert!(d.retry_after_secs >= 1);
    // Another tenant has its own bucket.
    let other = TenantId::parse("globex").unwrap();
    assert!(
        l.check(&other, "key:a", rate(1.0, 5), rate(1.0, 5), 1)
            .await
            .allowed
    );
}

#[test]
fn a_body_costs_one_request_per_started_256_kib_and_an_unknown_length_the_largest() {
    let h = |pairs: &[(&'static str, &str)]| {
        let mut m = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    };
    let max = 10 << 20;
    assert_eq!(request_cost(&h(&[]), max), 1);
    assert_eq!(request_cost(&h(&[("content-length", "0")]), max), 1);
    assert_eq!(request_cost(&h(&[("content-length", "262144")]), max), 1);
    assert_eq!(request_cost(&h(&[("content-length", "262145")]), max), 2);
    assert_eq!(
        request_cost(&h(&[("content-length", &(10u64 << 20).to_string())]), max),
        40
    );
    assert_eq!(
        request_cost(&h(&[("transfer-encoding", "chunked")]), max),
        40
    );
}

#[tokio::test]
async fn a_costly_request_spends_its_cells_and_one_over_the_burst_still_passes_a_full_bucket() {
    let l = RateLimiter::new(None, Duration::from_millis(100), LimiterMetrics::new()).unwrap();
    let t = TenantId::parse("acme").unwrap();
    let r = rate(0.001, 40);
    assert!(l.check(&t, "key:a", r, r, 30).await.allowed);
    // 10 cells left: a request of 11 is refused, ten of 1 pass.
    assert!(!l.check(&t, "key:a", r, r, 11).await.allowed);
    for _ in 0..10 {
        assert!(l.check(&t, "key:a", r, r, 1).await.allowed);
    }
    assert!(!l.check(&t, "key:a", r, r, 1).await.allowed);
    // A cost above the burst is charged as the whole burst.
    let u = TenantId::parse("globex").unwrap();
    assert!(l.check(&u, "key:b", r, r, 1_000).await.allowed);
    assert!(!l.check(&u, "key:b", r, r, 1).await.allowed);
}

#[tokio::test]
async fn a_credential_bucket_tighter_than_the_tenant_s_binds_first() {
    let l = RateLimiter::new(None, Duration::from_millis(100), LimiterMetrics::new()).unwrap();
    let t = TenantId::parse("acme").unwrap();
    let mut a = 0;
    for _ in 0..6 {
        if l.check(&t, "key:a", rate(1.0, 10), rate(1.0, 2), 1)
            .await
            .allowed
        {
            a += 1;
        }
    }
    assert_eq!(a, 2);
    // A second key of the tenant still has the tenant's remaining cells.
    let mut b = 0;
    for _ in 0..10 {
        if l.check(&t, "key:b", rate(1.0, 10), rate(1.0, 20), 1)
            .await
            .allowed
        {
            b += 1;
        }
    }
    // Key a's refused requests did not spend the tenant's cells.
    assert_eq!(b, 8);
}

#[test]
fn tenant_overrides_win_over_the_plan_and_unknown_plans_get_free() {
    let p = Plans::default();
    let mut limits = TenantLimits::default();
    assert_eq!(p.rates("pro", &limits).0, rate(200.0, 400));
    assert_eq!(p.rates("no-such-plan", &limits).0, rate(20.0, 40));
    limits.requests_per_second = Some(Some(LimitValue::new(2.5)));
    limits.burst = Some(Some(LimitValue::new(7.0)));
    let (t, k) = p.rates("pro", &limits);
    assert_eq!(t, rate(2.5, 7));
    assert_eq!(k, t, "a key's bucket defaults to the tenant's");
    assert!(Plans::with(HashMap::from([(
        "x".to_owned(),
        PlanLimits {
            requests_per_second: 0.0,
            burst: 1,
            key_requests_per_second: None,
            key_burst: None
        }
    )]))
    .is_err());
}
