//! Fault injection: the store goes away under load and comes back.
//!
//! - PostgreSQL (a cluster of this test's own, so the other tests keep
//!   theirs) is stopped for ten seconds while clients write and search:
//!   every answer is a success or 503 `unavailable` with `Retry-After`,
//!   service returns without restarting Enclave, and every acknowledged
//!   document is there, whole.
//! - The embedded store's disk fills up (its data directory on a small
//!   tmpfs): writes answer 503, reads go on, nothing is corrupted, and
//!   writes succeed again once space returns.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// Every answer the load got: (status, code, Retry-After, acknowledged id
/// and marker).
#[derive(Default)]
struct Seen {
    answers: Vec<(u16, String, Option<String>)>,
    acknowledged: Vec<(String, String)>,
}

/// Sends `body` with `key`: (status, Retry-After, parsed body). The server
/// always answers: a dropped request fails the test.
async fn answer(
    request: reqwest::RequestBuilder,
    key: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let r = request
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("the server answers (it never drops a request)");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// Writers adding small documents and a searcher, until `stop`.
fn load(
    app: &Arc<App>,
    key: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|client| {
            let (app, key, stop, seen) = (app.clone(), key.to_owned(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let marker = format!("zq{client}x{n:05}");
                    let (method, path, body) = if client < 3 {
                        (
                            Method::POST,
                            "/v1/documents",
                            json!({"name": format!("{marker}.txt"),
                                "content": format!("{marker} first paragraph about shipments.\n\n{marker} second paragraph about invoices.")}),
                        )
                    } else {
                        (
                            Method::POST,
                            "/v1/search",
                            json!({"query": "shipments invoices", "limit": 5}),
                        )
                    };
                    let (status, retry, body) =
                        answer(app.client.request(method, app.url(path)), &key, &body).await;
                    {
                        let mut s = seen.lock();
                        s.answers.push((
                            status,
                            body["code"].as_str().unwrap_or("").to_owned(),
                            retry.clone(),
                        ));
                        if status == 201 {
                            let id = body["document_id"].as_str().expect("an id").to_owned();
                            s.acknowledged.push((id, marker));
                        }
                    }
                    if status == 503 {
                        // A client honouring Retry-After, briefly.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect()
}

/// Checks the answers: successes or 503 `unavailable` with Retry-After.
fn only_successes_and_unavailable(answers: &[(u16, String, Option<String>)]) -> usize {
    let mut unavailable = 0;
    for (status, code, retry) in answers {
        match status {
            200 | 201 => {}
            503 => {
                assert_eq!(code, "unavailable", "{answers:?}");
                assert!(
                    retry
                        .as_deref()
                        .and_then(|r| r.parse::<u64>().ok())
                        .is_some_and(|r| r >= 1),
                    "503 without Retry-After"
                );
                unavailable += 1;
            }
            other => panic!("answer {other} {code} during the fault"),
        }
    }
    unavailable
}

/// Every acknowledged document is there with all its chunks, and found.
async fn acknowledged_are_whole(app: &App, key: &str, acknowledged: &[(String, String)]) {
    assert!(!acknowledged.is_empty());
    for (id, marker) in acknowledged {
        let doc = app
            .get(&format!("/v1/documents/{id}?include_chunks=true"), key)
            .await;
        let doc = doc.ok(200);
        let chunks = doc["chunks"].as_array().expect("chunks");
        assert_eq!(chunks.len() as u64, doc["chunk_count"].as_u64().unwrap());
        assert!(chunks[0]["content"]
            .as_str()
            .unwrap()
            .contains(marker.as_str()));
    }
    let stats = app.get("/v1/stats", key).await;
    assert!(stats.ok(200)["document_count"].as_u64().unwrap() >= acknowledged.len() as u64);
}

/// A PostgreSQL cluster of this test's own (`scripts/pg` with its own
/// data directory, port and socket), stopped at drop.
struct OwnCluster {
    env: Vec<(&'static str, String)>,
    data: PathBuf,
}

fn pg_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg")
}

impl OwnCluster {
    fn start() -> (OwnCluster, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Outside any root-only temporary directory: the cluster runs as
        // an unprivileged user.
        let data = PathBuf::from(format!("/tmp/enclave-faults-{}-{port}", std::process::id()));
        let env = vec![
            ("ENCLAVE_PG_DATA", data.display().to_string()),
            ("ENCLAVE_PG_PORT", port.to_string()),
            ("ENCLAVE_PG_SOCKET", format!("{}.sock", data.display())),
        ];
        let cluster = OwnCluster { env, data };
        let url = cluster.run("start");
        assert!(
            url.starts_with("postgres://"),
            "scripts/pg start said {url:?}"
        );
        (cluster, url)
    }

    fn run(&self, what: &str) -> String {
        let out = Command::new(pg_script())
            .arg(what)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/pg {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(pg_script())
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_dir_all(format!("{}.sock", self.data.display()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_for_ten_seconds_under_load_answers_only_503_and_loses_nothing_acknowledged(
) {
    let (cluster, admin_url) = OwnCluster::start();
    let app = Arc::new(spawn_app_on_postgres(&admin_url, &[]).await);
    let key = app.tenant("acme").await;
    let (stop, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Seen::default())),
    );
    let clients = load(&app, &key, &stop, &seen);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = seen.lock().answers.len();
    assert!(before > 0, "the load runs");

    cluster.run("stop");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = seen.lock().answers.len();
    cluster.run("resume");

    // Service returns by itself: writes succeed again within a minute.
    let resumed = Instant::now();
    loop {
        let n = seen.lock().answers.len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = seen.lock();
        if s.answers[n..].iter().filter(|a| a.0 == 201).count() >= 5 {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "service did not return: {:?}",
            &s.answers[n..]
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock());
    let unavailable = only_successes_and_unavailable(&seen.answers);
    assert!(
        unavailable > 0,
        "the outage was seen ({before}..{during} answers)"
    );
    assert!(
        seen.answers[during..].iter().any(|a| a.0 == 200),
        "searches work again"
    );
    acknowledged_are_whole(&app, &key, &seen.acknowledged).await;
    // The same process served throughout.
    let app = Arc::try_unwrap(app).ok().expect("the clients are done");
    let mut app = app;
    assert!(
        app.wait_exit(Duration::ZERO).is_none(),
        "Enclave kept running"
    );
}

/// A tmpfs of `mib` MiB mounted at a new directory, unmounted at drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("enclave-full-")
            .tempdir()
            .unwrap()
            .keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount")
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (the tests run as root here)"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_503_corrupts_nothing_and_writes_resume_when_space_returns() {
    let disk = SmallDisk::mount(24);
    let data = disk.0.join("data");
    let app = spawn_app_with(Backend::Embedded, &[(DATA_DIR, data.to_str().unwrap())]).await;
    let key = app.tenant("acme").await;
    let first = app
        .add(
            &key,
            "first.txt",
            "zqfirst a document written while there is room",
            json!({}),
        )
        .await;

    // Fill the disk but for a little, with a file that can be removed.
    let filler = disk.0.join("filler");
    let free = || {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&disk.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    std::fs::write(&filler, vec![7u8; (free() - (256 << 10)) as usize]).ok();

    // Write until the disk is full: every answer is 201 or 503.
    let paragraph = "zqfull shipments and invoices and a long tail of words. ".repeat(200);
    let mut answers = Vec::new();
    let mut acknowledged = vec![(first, "zqfirst".to_owned())];
    for i in 0..400 {
        let (status, retry, body) = answer(
            app.client.post(app.url("/v1/documents")),
            &key,
            &json!({"name": format!("zqfull{i:04}.txt"), "content": format!("zqfull{i:04} {paragraph}")}),
        )
        .await;
        answers.push((
            status,
            body["code"].as_str().unwrap_or("").to_owned(),
            retry,
        ));
        if status == 201 {
            acknowledged.push((
                body["document_id"].as_str().unwrap().to_owned(),
                format!("zqfull{i:04}"),
            ));
        }
        if answers.iter().filter(|a| a.0 == 503).count() >= 5 {
            break;
        }
    }
    only_successes_and_unavailable(&answers);
    assert!(
        answers.iter().any(|a| a.0 == 503),
        "the disk filled: {answers:?}"
    );
    let full = app
        .send(
            Method::POST,
            "/v1/documents",
            Some(&key),
            Some(json!({"name": "refused.txt", "content": "zqrefused"})),
            &[],
        )
        .await;
    full.problem(503, "unavailable");

    // Reads go on while the disk is full.
    app.post(
        "/v1/search",
        &key,
        json!({"query": "zqfirst", "mode": "text"}),
    )
    .await
    .ok(200);
    acknowledged_are_whole(&app, &key, &acknowledged).await;

    // Space returns: writes succeed again, same process.
    std::fs::remove_file(&filler).unwrap();
    let again = app
        .add(
            &key,
            "again.txt",
            "zqagain written after space returned",
            json!({}),
        )
        .await;
    acknowledged.push((again, "zqagain".to_owned()));
    acknowledged_are_whole(&app, &key, &acknowledged).await;
    let hits = app
        .post(
            "/v1/search",
            &key,
            json!({"query": "zqagain", "mode": "text"}),
        )
        .await;
    assert_eq!(hits.ok(200)["results"].as_array().unwrap().len(), 1);

    // No file is corrupt.
    for entry in walk(&data) {
        if entry.extension().is_some_and(|e| e == "sqlite") {
            let conn = rusqlite::Connection::open_with_flags(
                &entry,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let ok: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok", "{}", entry.display());
        }
    }
    app.verify_audit();
    drop(app);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
