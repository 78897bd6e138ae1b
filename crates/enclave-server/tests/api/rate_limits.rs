//! Request rate limits against the server in-process (and, for shared limits, a
//! real `redis-server` on loopback): 429 `rate_limited` with `Retry-After`,
//! `RateLimit-*` headers on every `/v1` response, per-tenant buckets that do
//! not touch each other, two replicas sharing one Redis budget, and Redis
//! dying mid-run without a single 500.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    spawn_app, spawn_app_with, spawn_replica, App, Backend, ADMIN, EXTRA_SETTINGS,
};
use reqwest::StatusCode;
use serde_json::json;

/// A throwaway `redis-server` on a free loopback port (no persistence).
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(&[])
    }

    /// A one-node Redis Cluster owning every slot: a script whose keys are in
    /// two slots fails there with CROSSSLOT.
    fn start_cluster() -> Redis {
        let r = Self::start_with(&["--cluster-enabled", "yes"]);
        let ok = Command::new("redis-cli")
            .args([
                "-p",
                &r.port.to_string(),
                "cluster",
                "addslotsrange",
                "0",
                "16383",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli")
            .success();
        assert!(ok, "cluster addslotsrange failed");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &r.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < until, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn start_with(extra: &[&str]) -> Redis {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup installs it)");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn limit(app: &App, tenant: &str, rps: f64, burst: u32) {
    app.patch(
        &format!("/admin/v1/tenants/{tenant}"),
        ADMIN,
        json!({"limits": {"requests_per_second": rps, "burst": burst}}),
    )
    .await
    .ok(200);
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_limit_a_tenant_gets_429_with_retry_after_and_every_v1_response_has_ratelimit_headers(
) {
    let app = spawn_app(Backend::Embedded).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    // One cell per five seconds: nothing refills during the five requests.
    limit(&app, "acme", 0.2, 3).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = app
            .client
            .get(app.url("/v1/stats"))
            .bearer_auth(&acme)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let (limit, remaining, reset) = (
            header(&r, "ratelimit-limit"),
            header(&r, "ratelimit-remaining"),
            header(&r, "ratelimit-reset"),
        );
        let retry = header(&r, "retry-after");
        let body: serde_json::Value = r.json().await.unwrap();
        seen.push((
            status,
            limit,
            remaining,
            reset.is_some(),
            retry,
            body["code"].clone(),
        ));
    }
    // The burst of 3, counting down, then refusals.
    for (i, s) in seen.iter().take(3).enumerate() {
        assert_eq!(s.0, StatusCode::OK, "{seen:?}");
        assert_eq!(
            (s.1, s.2, s.3),
            (Some(3), Some(2 - i as u64), true),
            "{seen:?}"
        );
        assert_eq!(s.4, None, "no Retry-After on a success");
    }
    for s in &seen[3..] {
        assert_eq!(s.0, StatusCode::TOO_MANY_REQUESTS, "{seen:?}");
        assert_eq!(s.5, "rate_limited");
        assert_eq!((s.1, s.2, s.3), (Some(3), Some(0), true), "{seen:?}");
        assert!(s.4.is_some_and(|r| (1..=5).contains(&r)), "{seen:?}");
    }
    // Another tenant's bucket is its own.
    let r = app.get("/v1/stats", &globex).await;
    r.ok(200);
    // After Retry-After, one more request of acme's gets through.
    let wait = seen[4].4.unwrap();
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 200)).await;
    app.get("/v1/stats", &acme).await.ok(200);
    // The admin plane is not a tenant's and carries no tenant limits.
    let r = app
        .client
        .get(app.url("/admin/v1/tenants"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("ratelimit-limit").is_none());
    // Out-of-range limits are refused at the admin plane.
    for bad in [
        json!({"requests_per_second": 0}),
        json!({"burst": 0}),
        json!({"burst": 1.5}),
    ] {
        app.patch("/admin/v1/tenants/acme", ADMIN, json!({"limits": bad}))
            .await
            .problem(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_own_limit_does_not_spend_the_tenant_s_budget() {
    // One cell per ten seconds: nothing refills while the test runs.
    let app = spawn_app_with(
        Backend::Embedded,
        &[(
            EXTRA_SETTINGS,
            "[plans.tight]\nrequests_per_second = 0.1\nburst = 6\nkey_requests_per_second = 0.1\nkey_burst = 2",
        )],
    )
    .await;
    app.post(
        "/admin/v1/tenants",
        ADMIN,
        json!({"id": "acme", "slug": "acme", "name": "acme", "plan": "tight"}),
    )
    .await
    .ok(201);
    let owner = app.owner_key("acme").await;
    let (noisy, _) = app.key(&owner, "viewer").await;
    let (quiet, _) = app.key(&owner, "viewer").await;
    // The owner spent 2 cells minting keys (key bucket 2 of its own).
    let statuses = |n: usize, key: String| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(app.get("/v1/stats", &key).await.status.as_u16());
            }
            out
        }
    };
    let a = statuses(6, noisy).await;
    assert_eq!(
        a,
        [200, 200, 429, 429, 429, 429],
        "the noisy key's own bucket"
    );
    // The tenant had 6 cells: 2 for the owner, 2 for the noisy key; its
    // four refused requests spent none.
    let b = statuses(3, quiet).await;
    assert_eq!(b, [200, 200, 429], "{b:?}");
}

async fn hammer(apps: &[&App], key: &str, for_: Duration) -> (Vec<u64>, Vec<u16>, Duration) {
    let started = Instant::now();
    let mut admitted = vec![0u64; apps.len()];
    let mut statuses = Vec::new();
    let mut i = 0;
    while started.elapsed() < for_ {
        let which = i % apps.len();
        let r = apps[which]
            .client
            .get(apps[which].url("/v1/stats"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        if s == 200 {
            admitted[which] += 1;
        }
        statuses.push(s);
        i += 1;
    }
    (admitted, statuses, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_admit_one_budget_and_survive_redis_dying() {
    let mut redis = Redis::start();
    let url = redis.url();
    let env = [
        ("ENCLAVE_REDIS_URL", url.as_str()),
        ("ENCLAVE_REDIS_TIMEOUT_MS", "1000"),
    ];
    let a = spawn_app_with(Backend::Postgres, &env).await;
    let b = spawn_replica(&a, &env).await;
    let key = a.tenant("acme").await;
    let (rps, burst) = (5.0, 10u32);
    limit(&a, "acme", rps, burst).await;
    // Both replicas see the new limits (a's cache was invalidated by the
    // PATCH; b's entry is at most the cache TTL old).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (admitted, statuses, took) = hammer(&[&a, &b], &key, Duration::from_secs(3)).await;
    let total: u64 = admitted.iter().sum();
    let bound = burst as f64 + rps * took.as_secs_f64() + 1.0;
    assert!(
        (total as f64) <= bound,
        "two replicas admitted {total} ({admitted:?}) in {took:?}; one budget allows {bound:.1}"
    );
    assert!(
        total >= burst as u64,
        "admitted {total}: less than the burst"
    );
    assert!(admitted.iter().all(|n| *n > 0), "{admitted:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.len() as u64 > total * 3,
        "the test did not push past the limit"
    );

    // Redis dies: no 500s, and each replica keeps limiting on its own.
    redis.kill();
    let (admitted, statuses, took) = hammer(&[&a, &b], &key, Duration::from_secs(3)).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "a status other than 200/429 with Redis down: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 429)
            .collect::<Vec<_>>()
    );
    let local_bound = burst as f64 + rps * took.as_secs_f64() + 1.0;
    for (i, n) in admitted.iter().enumerate() {
        assert!(
            (*n as f64) <= local_bound,
            "replica {i} admitted {n} alone in {took:?} (local bound {local_bound:.1})"
        );
        assert!(*n > 0, "replica {i} admitted nothing with Redis down");
    }
    assert!(statuses.contains(&429), "limits stopped with Redis down");
    let metrics = a
        .client
        .get(a.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("enclave_rate_limit_redis_errors_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{metrics}");
    assert!(
        metrics.contains("enclave_rate_limit_redis_up 0"),
        "{metrics}"
    );
    assert!(metrics
        .contains("enclave_rate_limit_decisions_total{backend=\"local\",outcome=\"limited\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_tenants_buckets_share_a_slot_and_are_decided_in_redis() {
    let redis = Redis::start_cluster();
    let app = spawn_app_with(Backend::Embedded, &[("ENCLAVE_REDIS_URL", &redis.url())]).await;
    let acme = app.tenant("acme").await;
    limit(&app, "acme", 0.2, 3).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/v1/stats", &acme).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let metrics = app.get("/metrics", ADMIN).await.text;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Decided in Redis, not by the local fallback (CROSSSLOT before the
    // keys carried a hash tag).
    assert_eq!(
        value("enclave_rate_limit_redis_errors_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        value("enclave_rate_limit_decisions_total{backend=\"redis\""),
        5.0,
        "{metrics}"
    );
}

/// Three 700 KB bodies (three requests each) and one small request fill a
/// burst of ten; the fourth large body is refused before it is read.
async fn large_bodies_spend_the_rate_by_their_size(app: &App) {
    let acme = app.tenant("acme").await;
    limit(app, "acme", 0.001, 10).await;
    let body = json!({"query": "x", "padding": "p".repeat(700_000)});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = app.post("/v1/search", &acme, body.clone()).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses[3], 429, "{statuses:?}");
    assert!(statuses[..3].iter().all(|s| *s != 429), "{statuses:?}");
    app.get("/v1/stats", &acme).await.ok(200);
    app.get("/v1/stats", &acme)
        .await
        .problem(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_spends_the_tenant_s_rate_by_its_size_locally() {
    let app = spawn_app(Backend::Embedded).await;
    large_bodies_spend_the_rate_by_their_size(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_spends_the_tenant_s_rate_by_its_size_in_redis() {
    let redis = Redis::start();
    let app = spawn_app_with(Backend::Embedded, &[("ENCLAVE_REDIS_URL", &redis.url())]).await;
    large_bodies_spend_the_rate_by_their_size(&app).await;
    let metrics = app.get("/metrics", ADMIN).await.text;
    assert!(
        metrics.contains("enclave_rate_limit_redis_errors_total 0"),
        "{metrics}"
    );
}
