//! Budget alerts (docs/API-EXTENSIONS.md) against the real binary on both
//! stores and a real HTTP receiver: crossing 80 % and 100 % of a tenant's
//! `monthly_budget_usd` sends one signed alert each; a refused delivery is
//! retried (at least once, same id); a restarted server does not send them
//! again.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use support::{spawn_app_with, spawn_replica, App, Backend, ADMIN, EXTRA_SETTINGS};

const SECRET: &str = "alert-signing-secret";

/// Every delivery the receiver saw: headers, body, and what it answered.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<(HeaderMap, Value, u16)>>,
}

async fn receiver() -> (String, Arc<Receiver>) {
    let rx = Arc::new(Receiver::default());
    let state = rx.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let value: Value = serde_json::from_str(&body).unwrap();
                let mut seen = state.seen.lock();
                // The first delivery of every alert is refused.
                let first = !seen.iter().any(|(_, v, _)| v["id"] == value["id"]);
                let status = if first { 503 } else { 200 };
                // The signature covers "<t>.<body>".
                let sig = headers["enclave-signature"].to_str().unwrap().to_owned();
                let (t, v1) = sig.split_once(',').unwrap();
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(format!("{}.{body}", t.trim_start_matches("t=")).as_bytes());
                assert_eq!(
                    v1.trim_start_matches("v1="),
                    hex::encode(mac.finalize().into_bytes())
                );
                seen.push((headers, value, status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn delivered(rx: &Receiver) -> Vec<Value> {
    rx.seen
        .lock()
        .iter()
        .filter(|(_, _, s)| *s == 200)
        .map(|(_, v, _)| v.clone())
        .collect()
}

async fn spend(app: &App, key: &str, requests: usize) {
    for _ in 0..requests {
        app.get("/v1/stats", key).await.ok(200);
    }
}

async fn wait_delivered(rx: &Receiver, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let d = delivered(rx);
        if d.len() >= n {
            return d;
        }
        assert!(Instant::now() < until, "only {} alerts delivered", d.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn crossing_80_and_100_percent_of_a_budget_sends_one_signed_alert_each_even_across_restarts()
{
    for backend in [Backend::Embedded, Backend::Postgres] {
        let (url, rx) = receiver().await;
        let settings = format!(
            "[prices]\nrequest_usd = 0.01\n[alerts]\nwebhook_url = \"{url}\"\nsecret_env = \"ENCLAVE_TEST_ALERT_SECRET\"\nretry_secs = 0.3\n"
        );
        let env = [
            (EXTRA_SETTINGS, settings.as_str()),
            ("ENCLAVE_TEST_ALERT_SECRET", SECRET),
        ];
        let mut app = spawn_app_with(backend, &env).await;
        let key = app.tenant("acme").await;
        let quiet = app.tenant("quiet").await;
        app.patch(
            "/admin/v1/tenants/acme",
            ADMIN,
            json!({"limits": {"monthly_budget_usd": 0.5}}),
        )
        .await
        .ok(200);

        // 70 % spent (35 requests at 0.01): nothing yet.
        spend(&app, &key, 35).await;
        spend(&app, &quiet, 60).await; // no budget: never an alert
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            rx.seen.lock().is_empty(),
            "{backend:?}: an alert below 80 %"
        );

        // Past 80 %: one alert, refused once, then delivered again (same id).
        spend(&app, &key, 10).await;
        let first = wait_delivered(&rx, 1).await;
        assert_eq!(first[0]["threshold_percent"], 80, "{backend:?}: {first:?}");
        assert_eq!(first[0]["tenant_id"], "acme");
        assert_eq!(first[0]["type"], "budget.threshold_crossed");
        assert_eq!(first[0]["budget_usd"], 0.5);
        assert!(first[0]["spent_usd"].as_f64().unwrap() >= 0.4);
        let id80 = first[0]["id"].as_str().unwrap().to_owned();
        assert!(
            id80.starts_with("budget:acme:") && id80.ends_with(":80"),
            "{id80}"
        );
        {
            let seen = rx.seen.lock();
            let tries: Vec<_> = seen
                .iter()
                .filter(|(_, v, _)| v["id"] == id80.as_str())
                .collect();
            assert_eq!(tries.len(), 2, "refused once, then delivered");
            assert_eq!(tries[0].2, 503);
            assert_eq!(tries[1].0["enclave-alert-id"].to_str().unwrap(), id80);
        }

        // Past 100 %.
        spend(&app, &key, 10).await;
        let both = wait_delivered(&rx, 2).await;
        assert_eq!(both[1]["threshold_percent"], 100, "{both:?}");

        // A restarted server on the same stores sends neither again.
        let pid = app.pid().to_string();
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        app.wait_exit(Duration::from_secs(10))
            .expect("the server died");
        let restarted = spawn_replica(&app, &env).await;
        spend(&restarted, &key, 10).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            delivered(&rx).len(),
            2,
            "{backend:?}: an alert was repeated"
        );
        assert_eq!(rx.seen.lock().len(), 4);
    }
}
