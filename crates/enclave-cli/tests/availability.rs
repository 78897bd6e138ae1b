//! Availability isolation (security review 88321be, findings 2–10 and 12):
//! no tenant, and nobody without a credential, can degrade the others —
//! failed credentials cost almost nothing and are refused before any store
//! access, embedding and job queues are bounded and abandoned work is
//! dropped (and what was computed is metered), every write is charged,
//! purges are final and leave no usage behind, destructive actions are
//! audited first, bad input is a 400, hints are checked however they are
//! written, and `/metrics` is the operator's. Against the real binary on
//! both stores (findings 1, 7 and 11 are proven in the chunker, the
//! conformance suite and the SQLite store; 13 in rate_limits.rs).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};
use support::*;

on_both_backends!(
    failed_credentials_from_one_address_are_refused_before_any_store_access_and_audited_as_one_aggregate,
    a_wrong_admin_token_is_refused_per_address_so_guessing_is_as_slow_as_the_bucket,
    purging_a_tenant_after_its_usage_was_flushed_is_verified_empty_and_its_id_starts_without_usage,
    out_of_range_dates_offsets_nul_characters_and_tiny_rates_are_400_never_a_500,
    a_trailing_dot_host_and_duplicate_hint_headers_are_403,
    messages_precomputed_vectors_and_job_payloads_are_charged_and_job_queues_are_bounded,
    metrics_need_the_admin_credential_or_the_operator_address,
    a_tenant_holding_all_its_data_connections_gets_429_and_another_tenant_is_served,
    a_tenant_runs_one_export_at_a_time_and_a_second_is_429_until_the_first_ends,
);

/// The file-per-tenant layout under a 512-descriptor limit: 300 tenants
/// each write and read their own file, and none is refused for want of a
/// descriptor (before, up to 256 files of a writer and 8 readers each:
/// EMFILE, 503 for every tenant).
#[tokio::test]
async fn many_tenant_files_stay_within_the_open_file_limit() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[("ENCLAVE_LAYOUT", "per-tenant"), (OPEN_FILE_LIMIT, "512")],
    )
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(line.split_whitespace().any(|w| w == "512"), "{line}");
    let mut keys = Vec::new();
    for t in 0..300 {
        let key = app.tenant(&format!("t{t:03}")).await;
        app.add(
            &key,
            "note.txt",
            &format!("tenant {t} keeps its own note"),
            json!({}),
        )
        .await;
        keys.push(key);
    }
    // Every tenant reads its own file again, a few at a time.
    for (t, key) in keys.iter().enumerate() {
        let hits = app
            .post(
                "/v1/search",
                key,
                json!({"query": format!("tenant {t}"), "mode": "text"}),
            )
            .await;
        assert_eq!(hits.ok(200)["results"].as_array().unwrap().len(), 1);
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", app.pid()))
        .unwrap()
        .count();
    assert!(fds < 512, "{fds} descriptors open");
}

/// A client whose connections come from another loopback address, so the
/// server sees a different client.
fn client_from(ip: &str) -> Client {
    Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn status_of(c: &Client, app: &App, path: &str, cred: &str) -> (u16, Option<u64>, Value) {
    let r = c.get(app.url(path)).bearer_auth(cred).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn random_key() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", rand::random::<u8>() & 15))
            .collect()
    };
    format!("ek_{}_{}", hex(24), hex(64))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Five failures per address; a refusal is held 20 ms (1 s by default).
const STRICT: &str = "[auth_failures]\nper_address_burst = 5\nper_address_per_second = 0.01\nglobal_burst = 100000\naudit_window_secs = 3600\ntarpit_ms = 20\n";

async fn audit(app: &App, scope: Option<&str>) -> Vec<Value> {
    let q = scope.map_or(String::new(), |t| format!("&tenant_id={t}"));
    app.get(&format!("/admin/v1/audit?limit=500{q}"), ADMIN)
        .await
        .ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn failed_credentials_from_one_address_are_refused_before_any_store_access_and_audited_as_one_aggregate(
    backend: Backend,
) {
    let app = spawn_app_with(backend, &[(EXTRA_SETTINGS, STRICT)]).await;
    let acme = app.tenant("acme").await;
    let (viewer, key_id) = app.key(&acme, "viewer").await;
    let platform_before = audit(&app, None).await.len();
    let acme_before = audit(&app, Some("acme")).await.len();

    // 64 random `ek_…` credentials from one address: the first five are
    // looked up and refused (401); every later one is 429 with Retry-After
    // before any lookup.
    let attacker = client_from("127.0.0.2");
    let mut seen = Vec::new();
    for _ in 0..64 {
        let (s, retry, body) = status_of(&attacker, &app, "/v1/stats", &random_key()).await;
        if s == 429 {
            assert_eq!(body["code"], "rate_limited");
            assert!(retry.is_some_and(|r| r >= 1), "Retry-After");
        }
        seen.push(s);
    }
    assert_eq!(&seen[..5], &[401; 5]);
    assert!(seen[5..].iter().all(|s| *s == 429), "{seen:?}");
    // From that address even a valid key is refused now (a guess must not
    // be told apart from a refusal); from another address it works.
    assert_eq!(
        status_of(&attacker, &app, "/v1/stats", &viewer).await.0,
        429
    );
    app.get("/v1/stats", &viewer).await.ok(200);

    // Aimed at a tenant's key id with wrong secrets, from a third address:
    // the tenant's chain gets one aggregate, not one event per request.
    let aimed = client_from("127.0.0.3");
    let forged = format!("ek_{key_id}_{}", "0".repeat(64));
    for _ in 0..20 {
        status_of(&aimed, &app, "/v1/stats", &forged).await;
    }
    // Hint mismatches with a valid key count the same way (fourth address).
    let hinter = client_from("127.0.0.4");
    let mut hint_statuses = Vec::new();
    for _ in 0..10 {
        let r = hinter
            .get(app.url("/v1/stats"))
            .bearer_auth(&viewer)
            .header("x-tenant-id", "globex")
            .send()
            .await
            .unwrap();
        hint_statuses.push(r.status().as_u16());
    }
    assert_eq!(&hint_statuses[..5], &[403; 5]);
    assert!(hint_statuses[5..].iter().all(|s| *s == 429));

    let platform = audit(&app, None).await;
    let new_platform: Vec<&Value> = platform[platform_before..].iter().collect();
    assert_eq!(new_platform.len(), 1, "{new_platform:?}");
    assert_eq!(new_platform[0]["action"], "auth.failed");
    assert_eq!(new_platform[0]["detail"]["cause"], "unknown key");
    assert_eq!(new_platform[0]["detail"]["count"], 5);
    let acme_events = audit(&app, Some("acme")).await;
    let new_acme: Vec<&Value> = acme_events[acme_before..]
        .iter()
        .filter(|e| e["action"] == "auth.failed" || e["action"] == "tenant.mismatch")
        .collect();
    assert_eq!(new_acme.len(), 2, "{new_acme:?}");
    let wrong = new_acme
        .iter()
        .find(|e| e["detail"]["cause"] == "wrong secret")
        .expect("the aimed failures");
    assert_eq!(wrong["detail"]["count"], 5);
    assert_eq!(
        wrong["detail"]["sample_actors"],
        json!([format!("key:{key_id}")])
    );
    let mismatch = new_acme
        .iter()
        .find(|e| e["action"] == "tenant.mismatch")
        .unwrap();
    assert_eq!(mismatch["detail"]["count"], 5);
    assert_eq!(mismatch["detail"]["hint"], "X-Tenant-ID");
    // The refusals were counted, not looked up.
    let m = app.get("/metrics", ADMIN).await.text;
    assert_eq!(metric(&m, "enclave_auth_failures_total"), 15.0, "{m}");
    assert!(metric(&m, "enclave_auth_refused_total") >= 76.0, "{m}");
    // ... and each was held before it was answered (a sequential client
    // is never refused while all the holds are taken).
    assert_eq!(
        metric(&m, "enclave_auth_held_total"),
        metric(&m, "enclave_auth_refused_total"),
        "{m}"
    );
    // The chains still verify.
    app.verify_audit();
}

/// Behind a load balancer every request comes from its address: with the
/// balancer configured as a trusted proxy, each forwarded client has its
/// own failure bucket (one guesser does not lock out everyone behind the
/// balancer), the client cannot pick its address by prepending hops, and
/// from anywhere else `X-Forwarded-For` is ignored. The buckets are the
/// process's, not the store's, so one store shows it.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_failure_bucket() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            (EXTRA_SETTINGS, STRICT),
            ("ENCLAVE_TRUSTED_PROXIES", "127.0.0.5, 10.0.0.0/8"),
        ],
    )
    .await;
    let acme = app.tenant("acme").await;
    let (viewer, _) = app.key(&acme, "viewer").await;
    let proxy = client_from("127.0.0.5");
    let via = |forwarded: &str, cred: &str| {
        let r = proxy
            .get(app.url("/v1/stats"))
            .bearer_auth(cred)
            .header("x-forwarded-for", forwarded);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // The guesser (the proxy appended its address after what it sent).
    let mut seen = Vec::new();
    for i in 0..8 {
        seen.push(via(&format!("198.51.100.{i}, 203.0.113.66"), &random_key()).await);
    }
    assert_eq!(&seen[..5], &[401; 5]);
    assert!(seen[5..].iter().all(|s| *s == 429), "{seen:?}");
    assert_eq!(via("203.0.113.66", &viewer).await, 429);
    // Another user behind the same proxy, one behind a second proxy hop,
    // and the proxy's own address are not charged for the guesser.
    assert_eq!(via("198.51.100.20", &viewer).await, 200);
    assert_eq!(via("198.51.100.21, 10.1.2.3", &viewer).await, 200);
    let direct = proxy.get(app.url("/v1/stats")).bearer_auth(&viewer);
    assert_eq!(direct.send().await.unwrap().status(), 200);
    // Not a proxy: the header changes nothing, every guess is its own.
    let other = client_from("127.0.0.6");
    let mut seen = Vec::new();
    for i in 0..8 {
        let r = other
            .get(app.url("/v1/stats"))
            .bearer_auth(random_key())
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .send()
            .await
            .unwrap();
        seen.push(r.status().as_u16());
    }
    assert_eq!(&seen[..5], &[401; 5]);
    assert!(seen[5..].iter().all(|s| *s == 429), "{seen:?}");
}

async fn a_wrong_admin_token_is_refused_per_address_so_guessing_is_as_slow_as_the_bucket(
    backend: Backend,
) {
    let app = spawn_app_with(backend, &[(EXTRA_SETTINGS, STRICT)]).await;
    let guesser = client_from("127.0.0.5");
    let mut seen = Vec::new();
    for i in 0..12 {
        seen.push(
            status_of(
                &guesser,
                &app,
                "/admin/v1/tenants",
                &format!("guess-{i:016}"),
            )
            .await
            .0,
        );
    }
    assert_eq!(&seen[..5], &[401; 5]);
    assert!(seen[5..].iter().all(|s| *s == 429), "{seen:?}");
    // Now the right token from that address is refused too: the answer
    // says nothing about the guess.
    assert_eq!(
        status_of(&guesser, &app, "/admin/v1/tenants", ADMIN)
            .await
            .0,
        429
    );
    app.get("/admin/v1/tenants", ADMIN).await.ok(200);
}

async fn purging_a_tenant_after_its_usage_was_flushed_is_verified_empty_and_its_id_starts_without_usage(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    app.add(
        &acme,
        "a.txt",
        "refunds are paid within five days",
        json!({}),
    )
    .await;
    app.get("/v1/stats", &acme).await.ok(200);
    // Usage reaches the control store (flushed every two seconds, and when
    // read).
    let u = app.get("/v1/usage", &acme).await.ok(200).clone();
    assert!(u["requests"].as_u64().unwrap() >= 2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let receipt = app.delete("/admin/v1/tenants/acme", ADMIN).await;
    assert_eq!(receipt.ok(200)["verified_empty"], true, "{}", receipt.text);
    // The same id, re-created, has no history.
    let fresh = app.tenant("acme").await;
    let u = app.get("/v1/usage", &fresh).await.ok(200).clone();
    assert_eq!(u["documents_added"], 0, "{u}");
    assert_eq!(u["tokens_embedded"], 0, "{u}");
    assert_eq!(u["requests"], 1, "only this request: {u}");
    if backend == Backend::Embedded {
        let db = rusqlite::Connection::open(app.dir.path().join("data/control.sqlite")).unwrap();
        let old: i64 = db
            .query_row(
                "SELECT coalesce(sum(documents_added), 0) FROM usage_daily WHERE tenant_id = 'acme'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }
}

async fn out_of_range_dates_offsets_nul_characters_and_tiny_rates_are_400_never_a_500(
    backend: Backend,
) {
    let w = world(backend).await;
    let app = &w.app;
    for path in [
        "/v1/usage?to=-262143-01-01",
        "/v1/usage?from=-262143-06-01&to=-262143-06-02",
        "/v1/usage?to=0000-06-01",
        "/v1/documents?offset=18446744073709551615",
        "/v1/documents?offset=9223372036854775808",
        "/v1/documents?created_after=-200000-01-01T00:00:00Z",
    ] {
        app.get(path, &w.a).await.problem(400, "invalid_request");
    }
    app.get("/admin/v1/usage?to=-262143-01-01", ADMIN)
        .await
        .problem(400, "invalid_request");
    let nul_bodies = [
        json!({"name": "n.txt", "content": "a\u{0}b"}),
        json!({"name": "n.txt", "content": "ok", "metadata": {"k": "v\u{0}"}}),
        json!({"name": "n.txt", "content": "ok", "metadata": {"k\u{0}": 1}}),
        json!({"name": "n.txt", "content": "ok", "document_date": "-200000-01-01T00:00:00Z"}),
    ];
    for body in nul_bodies {
        let r = app.post("/v1/documents", &w.a, body.clone()).await;
        r.problem(400, "invalid_request");
    }
    app.post(
        "/v1/sessions/s1/messages",
        &w.a,
        json!({"role": "user", "content": "x\u{0}y"}),
    )
    .await
    .problem(400, "invalid_request");
    for body in [
        json!({"query": "refunds", "metadata": {"k": "v\u{0}"}}),
        json!({"query": "refunds", "created_after": "-200000-01-01T00:00:00Z"}),
    ] {
        app.post("/v1/search", &w.a, body)
            .await
            .problem(400, "invalid_request");
    }
    // A query with NUL is just text (API.md §5: any query is safe).
    app.post("/v1/search", &w.a, json!({"query": "\u{0}refunds"}))
        .await
        .ok(200);
    for rps in [1e-30, 1e-7, 0.0] {
        app.patch(
            "/admin/v1/tenants/acme",
            ADMIN,
            json!({"limits": {"requests_per_second": rps}}),
        )
        .await
        .problem(400, "invalid_request");
    }
    app.patch(
        "/admin/v1/tenants/acme",
        ADMIN,
        json!({"limits": {"requests_per_second": 1e-6, "burst": 1000}}),
    )
    .await
    .ok(200);
    // Nothing was stored, and the tenant is served.
    assert_eq!(
        app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        1
    );
}

/// One raw HTTP/1.1 request (headers exactly as given), the status line's
/// code back.
fn raw_status(app: &App, head: &str) -> u16 {
    let addr: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn a_trailing_dot_host_and_duplicate_hint_headers_are_403(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let auth = format!("Authorization: Bearer {}", w.a);
    let get = |headers: &str| format!("GET /v1/stats HTTP/1.1\r\n{headers}\r\n{auth}");
    // The absolute (trailing-dot) form names the other tenant too.
    assert_eq!(
        raw_status(app, &get(&format!("Host: globex.{BASE_DOMAIN}."))),
        403
    );
    assert_eq!(
        raw_status(app, &get(&format!("Host: acme.{BASE_DOMAIN}."))),
        200
    );
    assert_eq!(
        raw_status(app, &get(&format!("Host: GLOBEX.{BASE_DOMAIN}:8080"))),
        403
    );
    // Two X-Tenant-ID headers: refused even when one is right.
    assert_eq!(
        raw_status(
            app,
            &get("Host: localhost\r\nX-Tenant-ID: acme\r\nX-Tenant-ID: globex")
        ),
        403
    );
    assert_eq!(
        raw_status(app, &get("Host: localhost\r\nX-Tenant-ID: acme")),
        200
    );
    // Two Host headers: refused (or rejected by the HTTP layer), never
    // served as the first.
    let two_hosts = raw_status(
        app,
        &get(&format!(
            "Host: acme.{BASE_DOMAIN}\r\nHost: globex.{BASE_DOMAIN}"
        )),
    );
    assert!(two_hosts == 403 || two_hosts == 400, "{two_hosts}");
    let r = app
        .send(
            Method::GET,
            "/v1/stats",
            Some(&w.a),
            None,
            &[("x-tenant-id", "acme"), ("x-tenant-id", "acme")],
        )
        .await;
    r.problem(403, "tenant_mismatch");
}

async fn metrics_need_the_admin_credential_or_the_operator_address(backend: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let operator = format!("127.0.0.1:{port}");
    let w = world(backend).await;
    w.app
        .send(Method::GET, "/metrics", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    for key in [&w.a, &w.a_admin] {
        w.app.get("/metrics", key).await.problem(403, "forbidden");
    }
    assert!(w
        .app
        .get("/metrics", ADMIN)
        .await
        .text
        .contains("enclave_http_requests_total"));
    let app = spawn_app_with(backend, &[("ENCLAVE_METRICS_LISTEN", &operator)]).await;
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        match reqwest::get(format!("http://{operator}/metrics")).await {
            Ok(r) => break r.text().await.unwrap(),
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(text.contains("enclave_auth_failures_total"), "{text}");
    // The operator address serves nothing else.
    let other = reqwest::get(format!("http://{operator}/v1/stats"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    app.get("/v1/stats", ADMIN)
        .await
        .problem(401, "unauthenticated");
}

/// Words of real text, so the real model spends real time on them.
fn prose(words: usize) -> String {
    const W: [&str; 12] = [
        "refunds", "are", "paid", "within", "five", "days", "of", "the", "request", "by",
        "support", "staff.",
    ];
    (0..words)
        .map(|i| W[i % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

async fn metrics_text(app: &App) -> String {
    app.get("/metrics", ADMIN).await.text
}

/// Finding 3: a tenant's embedding queue is bounded (429 `rate_limited`
/// with Retry-After beyond it, nothing queued), and an upload whose caller
/// has gone (the request time limit) stops: its waiting units are dropped,
/// the tokens computed are metered, nothing is stored.
#[tokio::test]
async fn a_full_embedding_queue_is_429_and_an_abandoned_upload_stops_and_is_metered() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            (REAL_MODEL, ""),
            ("ENCLAVE_REQUEST_TIMEOUT_SECS", "2"),
            (
                EXTRA_SETTINGS,
                "[embedding]\nworkers = 1\nper_tenant_concurrency = 1\nmax_queued_tokens = 4000\n",
            ),
        ],
    )
    .await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    // ~60,000 tokens: minutes of embedding on this machine, far past the
    // 2 s time limit. Admitted (the queue is empty), then abandoned.
    let big = json!({"name": "big.txt", "content": prose(60_000)});
    let (app_ref, key) = (&app, acme.clone());
    let upload = async move { app_ref.post("/v1/documents", &key, big).await };
    let probe = async {
        // While it is queued, another upload of the tenant is refused.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let m = metrics_text(&app).await;
            if metric(&m, "enclave_embedding_queue_units") > 10.0 {
                break;
            }
            assert!(Instant::now() < until, "nothing queued: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = app
            .client
            .post(app.url("/v1/documents"))
            .bearer_auth(&acme)
            .json(&json!({"name": "small.txt", "content": prose(50)}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("rate_limited")),
            "{body}"
        );
        assert!(retry.is_some(), "Retry-After");
        // Another tenant is not refused for acme's backlog.
        app.post(
            "/v1/documents",
            &globex,
            json!({"name": "g.txt", "content": prose(50)}),
        )
        .await
        .ok(201);
    };
    let (r, ()) = tokio::join!(upload, probe);
    r.problem(503, "unavailable");
    // The abandoned units leave the queue at once; only units already
    // computing finish.
    let until = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = metrics_text(&app).await;
        let idle = metric(&m, "enclave_embedding_queue_units") == 0.0
            && metric(&m, "enclave_embedding_running_units") == 0.0;
        if idle {
            break m;
        }
        assert!(Instant::now() < until, "work went on: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metric(&m, "enclave_embedding_abandoned_tokens_total") > 40_000.0,
        "{m}"
    );
    // Nothing stored; what was computed is metered.
    let stats = app.get("/v1/stats", &acme).await.ok(200).clone();
    assert_eq!(stats["document_count"], 0);
    let usage = app.get("/v1/usage", &acme).await.ok(200).clone();
    let tokens = usage["tokens_embedded"].as_u64().unwrap();
    assert!(tokens > 0 && tokens < 20_000, "{usage}");
}

/// Finding 9: a destructive action is audited before it takes effect, so
/// when the audit log cannot be written (sabotaged here: the app role loses
/// INSERT on `audit_events`), the action does not happen.
#[tokio::test]
async fn a_destructive_action_whose_audit_cannot_be_written_does_not_happen() {
    use sqlx::postgres::PgPoolOptions;
    let w = world(Backend::Postgres).await;
    let su = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(w.app.main_superuser.clone().unwrap())
        .await
        .unwrap();
    let url = w
        .app
        .store_args
        .iter()
        .skip_while(|a| *a != "--database-url")
        .nth(1)
        .unwrap();
    let role = reqwest::Url::parse(url).unwrap().username().to_owned();
    let grant = |verb: &str| {
        format!(
            "{verb} INSERT ON public.audit_events {} \"{role}\"",
            if verb == "GRANT" { "TO" } else { "FROM" }
        )
    };
    let (member, member_id) = w.app.key(&w.a, "member").await;
    sqlx::query(&grant("REVOKE")).execute(&su).await.unwrap();
    for (method, path) in [
        (Method::DELETE, format!("/v1/documents/{}", w.a_doc)),
        (Method::DELETE, format!("/v1/keys/{member_id}")),
        (Method::DELETE, "/admin/v1/tenants/globex".to_owned()),
    ] {
        let auth = if path.starts_with("/admin") {
            ADMIN
        } else {
            w.a.as_str()
        };
        let r = w.app.send(method, &path, Some(auth), None, &[]).await;
        assert!(
            r.status.is_server_error(),
            "{path}: {} {}",
            r.status,
            r.text
        );
    }
    let r = w
        .app
        .post("/v1/keys", &w.a, json!({"name": "k", "role": "viewer"}))
        .await;
    assert!(r.status.is_server_error(), "{}", r.text);
    sqlx::query(&grant("GRANT")).execute(&su).await.unwrap();
    // Nothing happened: the document, the key and the tenant are there, and
    // no key was made.
    w.app
        .get(&format!("/v1/documents/{}", w.a_doc), &w.a)
        .await
        .ok(200);
    w.app.get("/v1/stats", &member).await.ok(200);
    w.app.get("/v1/stats", &w.b).await.ok(200);
    let keys = w.app.get("/v1/keys", &w.a).await.ok(200).clone();
    assert!(!keys.to_string().contains("\"name\":\"k\""), "{keys}");
}

/// Finding 4: a purge excludes every writer of the tenant in flight — here
/// an upload still embedding, on this replica or (PostgreSQL) on another —
/// so nothing of it lands after the purge, the purged tenant never comes
/// back, and the id re-created starts empty with no usage.
async fn purge_while_an_upload_is_embedding(backend: Backend, via_replica: bool) {
    let app = spawn_app_with(backend, &[(REAL_MODEL, "")]).await;
    let replica = if via_replica {
        Some(spawn_replica(&app, &[(REAL_MODEL, "")]).await)
    } else {
        None
    };
    let writer = replica.as_ref().unwrap_or(&app);
    let key = app.tenant("acme").await;
    // A few seconds of embedding on this machine.
    let doc = json!({"name": "long.txt", "content": prose(12_000)});
    let upload = writer.post("/v1/documents", &key, doc);
    let purge = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        app.delete("/admin/v1/tenants/acme", ADMIN).await
    };
    let (up, receipt) = tokio::join!(upload, purge);
    assert_eq!(receipt.ok(200)["verified_empty"], true, "{}", receipt.text);
    // The upload was refused, not stored.
    up.problem(503, "unavailable");
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.get("/admin/v1/tenants/acme", ADMIN)
        .await
        .problem(404, "not_found");
    let fresh = app.tenant("acme").await;
    let stats = app.get("/v1/stats", &fresh).await.ok(200).clone();
    assert_eq!(stats["document_count"], 0, "{stats}");
    let usage = app.get("/v1/usage", &fresh).await.ok(200).clone();
    assert_eq!(usage["documents_added"], 0, "{usage}");
}

#[tokio::test]
async fn a_purge_during_an_upload_leaves_nothing_behind_on_the_embedded_store() {
    purge_while_an_upload_is_embedding(Backend::Embedded, false).await;
}

#[tokio::test]
async fn a_purge_during_an_upload_on_another_replica_never_brings_the_tenant_back() {
    purge_while_an_upload_is_embedding(Backend::Postgres, true).await;
}

/// The review's suspension lag: another replica's suspend, reactivation
/// and purge apply here as they commit, for API keys and JWTs alike, not
/// when this replica's cached directory entry expires (an hour here, so
/// only the change feed can explain it).
#[tokio::test]
async fn another_replicas_suspend_reactivate_and_purge_apply_here_at_once() {
    let env = [("ENCLAVE_TENANT_CACHE_SECS", "3600")];
    let app = spawn_app_with(Backend::Postgres, &env).await;
    let other = spawn_replica(&app, &env).await;
    let key = app.tenant("acme").await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "u-1", "tenant_id": "acme", "role": "viewer", "exp": exp,
                "iss": "https://issuer.test", "aud": "enclave"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    // The other replica caches acme's entry.
    other.get("/v1/stats", &key).await.ok(200);
    other.get("/v1/stats", &jwt).await.ok(200);
    let until = |cred: &'static str, want: u16| {
        let (other, cred) = (&other, if cred == "key" { &key } else { &jwt });
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = other.get("/v1/stats", cred).await;
                if r.status == want {
                    return r;
                }
                assert!(
                    Instant::now() < deadline,
                    "still {} after 10 s: {}",
                    r.status,
                    r.text
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    app.patch(
        "/admin/v1/tenants/acme",
        ADMIN,
        json!({"status": "suspended"}),
    )
    .await
    .ok(200);
    until("key", 403).await.problem(403, "tenant_suspended");
    until("jwt", 403).await.problem(403, "tenant_suspended");
    app.patch("/admin/v1/tenants/acme", ADMIN, json!({"status": "active"}))
        .await
        .ok(200);
    until("key", 200).await;
    until("jwt", 200).await;
    app.delete("/admin/v1/tenants/acme", ADMIN).await.ok(200);
    until("key", 401).await.problem(401, "unauthenticated");
    until("jwt", 401).await.problem(401, "unauthenticated");
}

/// Finding 6: every write is charged — messages, precomputed vectors and
/// job payloads count against `max_storage_bytes` (and a spent monthly
/// budget refuses messages too), `/v1/stats` and `/v1/usage` show them, and
/// a tenant's unfinished jobs are bounded in number and bytes.
async fn messages_precomputed_vectors_and_job_payloads_are_charged_and_job_queues_are_bounded(
    backend: Backend,
) {
    let app = spawn_app_with(
        backend,
        &[(
            EXTRA_SETTINGS,
            "[prices]\nrequest_usd = 1.0\n[jobs]\nworkers = 0\nmax_queued_per_tenant = 2\n",
        )],
    )
    .await;
    // Messages: 15 KB fits in 20 KB once, not twice.
    let acme = app
        .tenant_with_limits("acme", json!({"max_storage_bytes": 20_000}))
        .await;
    let msg = json!({"role": "user", "content": "m".repeat(15_000)});
    app.post("/v1/sessions/s1/messages", &acme, msg.clone())
        .await
        .ok(201);
    let r = app.post("/v1/sessions/s1/messages", &acme, msg).await;
    r.problem(429, "quota_exceeded");
    assert!(r.text.contains("max_storage_bytes"), "{}", r.text);
    let stats = app.get("/v1/stats", &acme).await.ok(200).clone();
    assert_eq!(stats["message_count"], 1);
    let message_bytes = stats["message_bytes"].as_u64().unwrap();
    assert!((15_000..15_100).contains(&message_bytes), "{stats}");
    assert_eq!(stats["storage_bytes"], message_bytes);
    let usage = app.get("/v1/usage", &acme).await.ok(200).clone();
    assert_eq!(usage["storage_bytes"], message_bytes, "{usage}");

    // Precomputed vectors: 20 one-byte chunks store 20 vectors of 384
    // floats (30 KB), not 20 bytes.
    let globex = app
        .tenant_with_limits("globex", json!({"max_storage_bytes": 20_000}))
        .await;
    let mut v = vec![0.0f32; 384];
    v[0] = 1.0;
    let chunks: Vec<Value> = (0..20)
        .map(|_| json!({"content": "a", "embedding": v}))
        .collect();
    let r = app
        .post(
            "/v1/documents",
            &globex,
            json!({"name": "v", "chunks": chunks[..20]}),
        )
        .await;
    r.problem(429, "quota_exceeded");
    app.post(
        "/v1/documents",
        &globex,
        json!({"name": "v", "chunks": chunks[..5]}),
    )
    .await
    .ok(201);
    let stats = app.get("/v1/stats", &globex).await.ok(200).clone();
    assert_eq!(stats["total_size_bytes"], 5 + 5 * 384 * 4, "{stats}");

    // Job payloads are stored until the job finishes: charged at submission.
    let initech = app
        .tenant_with_limits("initech", json!({"max_storage_bytes": 1_000}))
        .await;
    let docs: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("d{i}"), "content": "x".repeat(400)}))
        .collect();
    app.post("/v1/jobs/documents", &initech, json!({"documents": docs}))
        .await
        .problem(429, "quota_exceeded");
    // A tenant's unfinished jobs are bounded (no worker runs them here).
    let hooli = app.tenant("hooli").await;
    let one = json!({"documents": [{"name": "j", "content": "job text"}]});
    for _ in 0..2 {
        app.post("/v1/jobs/documents", &hooli, one.clone())
            .await
            .ok(202);
    }
    let r = app
        .client
        .post(app.url("/v1/jobs/documents"))
        .bearer_auth(&hooli)
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    let stats = app.get("/v1/stats", &hooli).await.ok(200).clone();
    assert!(stats["pending_job_bytes"].as_u64().unwrap() > 0, "{stats}");
    // Another tenant's queue is its own.
    app.post("/v1/jobs/documents", &acme, one.clone())
        .await
        .ok(202);

    // A spent monthly budget stops messages as it stops documents.
    let umbrella = app
        .tenant_with_limits("umbrella", json!({"monthly_budget_usd": 2.0}))
        .await;
    app.get("/v1/stats", &umbrella).await.ok(200);
    app.get("/v1/stats", &umbrella).await.ok(200);
    app.post(
        "/v1/sessions/s1/messages",
        &umbrella,
        json!({"role": "user", "content": "hello"}),
    )
    .await
    .problem(429, "quota_exceeded");
}

/// Suspected in the review: a limit of `-0.0` (or any number jsonb spells
/// differently) would break the platform audit chain on PostgreSQL; and a
/// 2,000-word quoted phrase might pass `max_stack_depth`. Neither does.
#[tokio::test]
async fn odd_numbers_in_limits_keep_the_audit_chain_and_huge_phrases_are_searched() {
    let w = world(Backend::Postgres).await;
    for limits in [
        json!({"max_documents": -0.0}),
        json!({"max_storage_bytes": 1.50e6, "monthly_budget_usd": 2.50}),
        json!({"burst": 10, "requests_per_second": 100.000}),
    ] {
        w.app
            .patch("/admin/v1/tenants/acme", ADMIN, json!({ "limits": limits }))
            .await
            .ok(200);
    }
    w.app.verify_audit();
    // 2,000 words in one phrase, within the 4,096-character query limit.
    let letters = "bcdefghjklmnpqruvwxyz".as_bytes();
    let words: Vec<String> = (0..2_000)
        .map(|i| (letters[i % letters.len()] as char).to_string())
        .collect();
    let phrase = format!("\"{}\"", words.join(" "));
    for mode in ["text", "hybrid"] {
        w.app
            .post(
                "/v1/search",
                &w.a,
                json!({"query": phrase.clone(), "mode": mode}),
            )
            .await
            .ok(200);
    }
}

/// Suspected in the review: an `admin` key could revoke the `owner`'s keys
/// (only minting was role-bounded). Revoking is bounded the same way now.
#[tokio::test]
async fn a_key_cannot_revoke_a_key_above_its_own_role() {
    let app = spawn_app(Backend::Embedded).await;
    let owner = app.tenant("acme").await;
    let (_, owner2_id) = app.key(&owner, "owner").await;
    let (admin, admin_id) = app.key(&owner, "admin").await;
    let (_, member_id) = app.key(&owner, "member").await;
    app.delete(&format!("/v1/keys/{owner2_id}"), &admin)
        .await
        .problem(403, "forbidden");
    assert_eq!(
        app.delete(&format!("/v1/keys/{member_id}"), &admin)
            .await
            .status,
        204
    );
    assert_eq!(
        app.delete(&format!("/v1/keys/{admin_id}"), &owner)
            .await
            .status,
        204
    );
    assert_eq!(
        app.delete(&format!("/v1/keys/{owner2_id}"), &owner)
            .await
            .status,
        204
    );
}

/// Item 9: one tenant's store calls hold at most its own slots of the data
/// pool. With one slot and no wait (`[store]`), a burst of the tenant's
/// concurrent searches is partly refused with 429 `rate_limited` and
/// `Retry-After: 1` — never 503 or 500 — while another tenant's requests
/// during the burst are all served.
async fn a_tenant_holding_all_its_data_connections_gets_429_and_another_tenant_is_served(
    backend: Backend,
) {
    let app = spawn_app_with(
        backend,
        &[(
            EXTRA_SETTINGS,
            "[store]\nmax_concurrent_per_tenant = 1\nslot_wait_ms = 0\n",
        )],
    )
    .await;
    let limits = json!({"requests_per_second": 10000, "burst": 10000});
    let acme = app.tenant_with_limits("acme", limits.clone()).await;
    let globex = app.tenant_with_limits("globex", limits).await;
    for (key, n) in [(&acme, 20), (&globex, 3)] {
        for i in 0..n {
            app.add(key, &format!("d{i}.txt"), &prose(200), json!({}))
                .await;
        }
    }
    let search = json!({"query": "words of prose", "mode": "hybrid", "limit": 20});
    let storm = futures::future::join_all((0..64).map(|_| {
        let (c, url, key, body) = (
            app.client.clone(),
            app.url("/v1/search"),
            acme.clone(),
            search.clone(),
        );
        async move {
            let r = c
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        }
    }));
    // The other tenant, one request at a time (it never holds more than
    // its one slot itself), all through the burst.
    let other = async {
        let mut served = 0;
        for _ in 0..20 {
            app.post("/v1/search", &globex, search.clone())
                .await
                .ok(200);
            served += 1;
        }
        served
    };
    let (answers, served) = tokio::join!(storm, other);
    assert_eq!(served, 20);
    let mut refused = 0;
    for (status, retry, body) in &answers {
        match status {
            200 => {}
            429 => {
                refused += 1;
                assert_eq!(body["code"], "rate_limited", "{body}");
                assert!(
                    body["detail"]
                        .as_str()
                        .unwrap()
                        .contains("data connections"),
                    "{body}"
                );
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        refused > 0,
        "64 concurrent searches on one slot never collided"
    );
    let m = metrics_text(&app).await;
    assert!(
        metric(&m, "enclave_store_slot_refused_total") >= refused as f64,
        "{m}"
    );
}

/// Abuse (c): a tenant's documents in preparation are bounded by bytes
/// before any chunking. While one large upload of the tenant is being
/// prepared, another is refused at once with 429 `rate_limited` and
/// `Retry-After`; another tenant's upload is served meanwhile; and when the
/// first caller goes away its bytes are returned, so the next upload is
/// admitted.
#[tokio::test]
async fn a_tenants_documents_in_preparation_are_bounded_and_an_abandoned_one_frees_its_share() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            (REAL_MODEL, ""),
            (
                EXTRA_SETTINGS,
                "[embedding]\nmax_preparing_bytes_per_tenant = 100000\n",
            ),
        ],
    )
    .await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    // ~600 KB of prose: seconds of chunking and minutes of embedding.
    let big = json!({"name": "big.txt", "content": prose(100_000)});
    let quick = Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let first = quick
        .post(app.url("/v1/documents"))
        .bearer_auth(&acme)
        .json(&big)
        .send();
    let probe = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = app
            .post(
                "/v1/documents",
                &acme,
                json!({"name": "second.txt", "content": prose(20_000)}),
            )
            .await;
        r.problem(429, "rate_limited");
        assert!(r.text.contains("in preparation"), "{}", r.text);
        app.post(
            "/v1/documents",
            &globex,
            json!({"name": "g.txt", "content": prose(50)}),
        )
        .await
        .ok(201);
    };
    let (gone, ()) = tokio::join!(first, probe);
    assert!(gone.is_err(), "the first upload should have been abandoned");
    // Its share returns when the server drops the request.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app
            .post(
                "/v1/documents",
                &acme,
                json!({"name": "after.txt", "content": prose(50)}),
            )
            .await;
        if r.status.as_u16() == 201 {
            break;
        }
        r.problem(429, "rate_limited");
        assert!(
            Instant::now() < until,
            "the abandoned upload kept its share"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_tenant_runs_one_export_at_a_time_and_a_second_is_429_until_the_first_ends(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    // An export of several MB (vectors as JSON), more than the socket
    // buffers hold, so the first one is still streaming while it is held.
    for d in 0..30 {
        let text: Vec<String> = (0..150)
            .map(|p| format!("document {d} paragraph {p} about shipments, invoices and refunds"))
            .collect();
        app.add(&acme, &format!("d{d}.txt"), &text.join("\n\n"), json!({}))
            .await;
    }
    app.add(&globex, "g.txt", "globex's only document", json!({}))
        .await;
    let audit_before = audit(&app, Some("acme")).await.len();

    // An export whose headers have come and whose body is not read yet.
    let start_export = || async {
        let r = app
            .client
            .get(app.url("/v1/export"))
            .bearer_auth(&acme)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    };
    let first = start_export().await;
    // A second export of acme's, while the first streams: 429 at once.
    let (status, retry, body) = status_of(&app.client, &app, "/v1/export", &acme).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(retry.is_some_and(|r| r >= 1));
    // Another tenant's export is not held up.
    let g = app.get("/v1/export", &globex).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.text.lines().count(), 1);
    // The first, read to its end, is whole; then the next one runs.
    let all = first.text().await.unwrap();
    assert_eq!(all.lines().count(), 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/v1/export", &acme).await;
        if r.status == 200 {
            assert_eq!(r.text.lines().count(), 30);
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            Instant::now() < deadline,
            "the first export's turn was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An export whose client goes away gives its turn back too.
    drop(start_export().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/v1/export", &acme).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an abandoned export kept its turn"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refused one was not audited: one tenant.export per export run.
    let exports = audit(&app, Some("acme")).await[audit_before..]
        .iter()
        .filter(|e| e["action"] == "tenant.export")
        .count();
    assert_eq!(exports, 4);
}
