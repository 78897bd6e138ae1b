//! Ingestion jobs (docs/API-EXTENSIONS.md) and fair ingestion against the
//! real binary on both stores: a job accepted with 202 is finished after
//! `kill -9` of the server, every document once; one tenant's flood does
//! not hold back another tenant's upload and search; another tenant's job is
//! a plain 404; usage equals what the job did.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{spawn_app_with, spawn_replica, App, Backend, ADMIN, EXTRA_SETTINGS};

const FAST_LEASES: &str = "[jobs]\nlease_secs = 2\npoll_ms = 50\n";

/// `n` small documents; the one at `too_long_at` passes every check made
/// at submission but is cut into more chunks than a document may have, so
/// only adding it fails it.
fn documents(prefix: &str, n: usize, too_long_at: Option<usize>) -> Vec<Value> {
    (0..n)
        .map(|i| {
            if Some(i) == too_long_at {
                return json!({
                    "name": format!("{prefix}-{i}.md"),
                    "type": "markdown",
                    "content": "w ".repeat(16 * 20_001),
                    "chunking": {"max_tokens": 16, "overlap_tokens": 0}
                });
            }
            let content =
                format!("Note {i} of {prefix}: the {prefix} ledger entry number {i} for review.");
            json!({"name": format!("{prefix}-{i}.md"), "type": "markdown", "content": content})
        })
        .collect()
}

async fn job(app: &App, key: &str, id: &str) -> Value {
    app.get(&format!("/v1/jobs/{id}"), key)
        .await
        .ok(200)
        .clone()
}

/// Polls the job until `done(job)` holds (at most `limit`).
async fn wait_for(
    app: &App,
    key: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + limit;
    loop {
        let j = job(app, key, id).await;
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < until, "job never got there: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn document_names(app: &App, key: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/documents?limit=100&cursor={c}"),
            None => "/v1/documents?limit=100".to_owned(),
        };
        let page = app.get(&path, key).await.ok(200).clone();
        for d in page["documents"].as_array().unwrap() {
            names.push(d["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return names,
        }
    }
}

#[tokio::test]
async fn an_accepted_job_is_finished_after_kill_9_and_no_document_is_added_twice() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let settings = [(EXTRA_SETTINGS, FAST_LEASES)];
        let mut app = spawn_app_with(backend, &settings).await;
        let key = app.tenant("acme").await;
        const N: usize = 1500;
        let r = app
            .post(
                "/v1/jobs/documents",
                &key,
                json!({"documents": documents("acme", N, Some(5))}),
            )
            .await;
        let accepted = r.ok(202).clone();
        assert_eq!(accepted["status"], "queued");
        assert_eq!(accepted["documents_total"], N);
        let id = accepted["job_id"].as_str().unwrap().to_owned();

        // Kill -9 once some progress is recorded, well before the end.
        let seen = wait_for(&app, &key, &id, Duration::from_secs(60), |j| {
            j["documents_done"].as_u64().unwrap() >= 1
        })
        .await;
        let pid = app.pid().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success());
        app.wait_exit(Duration::from_secs(10))
            .expect("the server died");
        let done_at_kill = seen["documents_done"].as_u64().unwrap();
        eprintln!("{backend:?}: killed with {done_at_kill} of {N} documents recorded");
        assert!(
            (done_at_kill as usize) < N,
            "{backend:?}: the job was not interrupted ({done_at_kill} done)"
        );

        // A new process on the same stores finishes it.
        let restarted = spawn_replica(&app, &settings).await;
        let finished = wait_for(&restarted, &key, &id, Duration::from_secs(180), |j| {
            j["status"] == "succeeded"
        })
        .await;
        assert_eq!(finished["documents_done"], N, "{backend:?}: {finished}");
        assert_eq!(finished["documents_failed"], 1);
        let results = finished["results"].as_array().unwrap();
        assert_eq!(results.len(), N);
        let mut ids = HashSet::new();
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["index"], i);
            if i == 5 {
                assert_eq!(r["error"]["code"], "invalid_request", "{r}");
                assert!(r.get("document_id").is_none());
            } else {
                assert!(ids.insert(r["document_id"].as_str().unwrap().to_owned()));
            }
        }
        // Every document once: the stored set is exactly the job's.
        let stats = restarted.get("/v1/stats", &key).await.ok(200).clone();
        assert_eq!(stats["document_count"], N - 1, "{backend:?}: {stats}");
        let names = document_names(&restarted, &key).await;
        let distinct: HashSet<_> = names.iter().collect();
        assert_eq!(names.len(), N - 1);
        assert_eq!(distinct.len(), N - 1);
        // Finished once: the finish time does not move afterwards.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let again = job(&restarted, &key, &id).await;
        assert_eq!(again["finished_at"], finished["finished_at"]);
        assert_eq!(again["status"], "succeeded");
    }
}

#[tokio::test]
async fn a_tenant_flooding_ingestion_does_not_hold_back_another_tenants_upload_and_search() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app = spawn_app_with(backend, &[]).await;
        let a = app.tenant("flood").await;
        let b = app.tenant("quiet").await;
        const N: usize = 1500;
        let id = app
            .post(
                "/v1/jobs/documents",
                &a,
                json!({"documents": documents("flood", N, None)}),
            )
            .await
            .ok(202)["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_for(&app, &a, &id, Duration::from_secs(60), |j| {
            j["documents_done"].as_u64().unwrap() >= 1
        })
        .await;
        // A also uploads interactively from several clients meanwhile.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood: Vec<_> = (0..4)
            .map(|c| {
                let (base, a, stop) = (app.base.clone(), a.clone(), stop.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut n = 0;
                    // At least one upload each, however late this task starts.
                    while n == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let r = http
                            .post(format!("{base}/v1/documents"))
                            .bearer_auth(&a)
                            .json(&json!({"name": format!("sync-{c}-{n}.md"), "content": format!("sync upload {c} {n} of the flood")}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201);
                    }
                    n
                })
            })
            .collect();

        // B adds a document and finds it while A's flood is in progress.
        let doc = app
            .add(
                &b,
                "quiet.md",
                "the quiet tenant's zebra migration plan",
                json!({}),
            )
            .await;
        let hits = app
            .post(
                "/v1/search",
                &b,
                json!({"query": "zebra migration", "limit": 5}),
            )
            .await
            .ok(200)
            .clone();
        assert_eq!(hits["results"][0]["document_id"], doc.as_str());
        let during = job(&app, &a, &id).await;
        assert_ne!(
            during["status"], "succeeded",
            "{backend:?}: B was served only after A's job finished"
        );
        assert!(during["documents_done"].as_u64().unwrap() < N as u64);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for f in flood {
            assert!(
                f.await.unwrap() >= 1,
                "A's interactive uploads progressed too"
            );
        }
        // A's job still completes.
        wait_for(&app, &a, &id, Duration::from_secs(180), |j| {
            j["status"] == "succeeded"
        })
        .await;
    }
}

#[tokio::test]
async fn another_tenants_job_is_404_and_usage_equals_what_the_job_did() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app =
            spawn_app_with(backend, &[(EXTRA_SETTINGS, "[metrics]\ntop_tenants = 1\n")]).await;
        let a = app.tenant("alpha").await;
        let b = app.tenant("beta").await;
        // Shapes are checked before anything is stored.
        let bad = app
            .post(
                "/v1/jobs/documents",
                &a,
                json!({"documents": [{"name": "ok.md", "content": "fine"}, {"name": "x", "type": "spreadsheet", "content": "c"}]}),
            )
            .await;
        bad.problem(400, "invalid_request");
        assert!(
            bad.body["detail"]
                .as_str()
                .unwrap()
                .contains("documents[1]"),
            "{}",
            bad.text
        );
        // So is everything that needs no store and no model: blank content
        // is refused at submission, not accepted and failed later.
        let blank = app
            .post(
                "/v1/jobs/documents",
                &a,
                json!({"documents": [{"name": "ok.md", "content": "fine"}, {"name": "e.md", "content": "   "}]}),
            )
            .await;
        blank.problem(400, "invalid_request");
        assert!(
            blank.body["detail"]
                .as_str()
                .unwrap()
                .contains("documents[1].content"),
            "{}",
            blank.text
        );
        app.post("/v1/jobs/documents", &a, json!({"documents": []}))
            .await
            .problem(400, "invalid_request");
        // A document naming another tenant is a tenant mismatch, as at the
        // top of a body; naming its own is fine.
        app.post(
            "/v1/jobs/documents",
            &a,
            json!({"documents": [{"name": "x.md", "content": "c", "tenant_id": "beta"}]}),
        )
        .await
        .problem(403, "tenant_mismatch");
        // A viewer may read a job but not submit one.
        let (viewer, _) = app.key(&a, "viewer").await;
        app.post(
            "/v1/jobs/documents",
            &viewer,
            json!({"documents": documents("v", 1, None)}),
        )
        .await
        .problem(403, "forbidden");

        let r = app
            .send(
                reqwest::Method::POST,
                "/v1/jobs/documents",
                Some(&a),
                Some(json!({"documents": documents("alpha", 20, Some(3))})),
                &[],
            )
            .await;
        let id = r.ok(202)["job_id"].as_str().unwrap().to_owned();
        let done = wait_for(&app, &viewer, &id, Duration::from_secs(60), |j| {
            j["status"] == "succeeded"
        })
        .await;
        assert_eq!(done["documents_failed"], 1);

        // B cannot tell A's job from a missing one.
        let foreign = app.get(&format!("/v1/jobs/{id}"), &b).await;
        foreign.problem(404, "not_found");
        let missing = app
            .get("/v1/jobs/01900000-0000-7000-8000-000000000000", &b)
            .await;
        assert_eq!(foreign.text, missing.text);
        assert!(!foreign.text.contains("alpha"));

        // Usage: 19 documents added, by the job, plus the requests made.
        let usage = app.get("/v1/usage", &a).await.ok(200).clone();
        assert_eq!(usage["documents_added"], 19, "{backend:?}: {usage}");
        let stats = app.get("/v1/stats", &a).await.ok(200).clone();
        assert_eq!(stats["document_count"], 19);
        assert_eq!(app.get("/v1/stats", &b).await.ok(200)["document_count"], 0);

        // The job's queue depth and progress show in the metrics.
        let m = app.get("/metrics", ADMIN).await.text;
        assert!(m.contains("enclave_jobs_unfinished 0"), "{m}");
        assert!(
            m.contains("enclave_job_documents_processed_total 20"),
            "{m}"
        );
        assert!(m.contains("enclave_embedding_queue_units"), "{m}");
        // Opted in to one tenant label: the busiest (alpha), never beta.
        assert!(
            m.contains("enclave_top_tenant_requests_total{tenant_id=\"alpha\"}"),
            "{m}"
        );
        assert!(!m.contains("beta"), "{m}");
    }
}
