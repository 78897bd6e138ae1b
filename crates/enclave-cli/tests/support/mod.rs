//! `spawn_app()`: the real `enclave serve` binary on port 0 over a fresh
//! data directory (hash embedder: these tests prove HTTP and isolation
//! behaviour, not retrieval quality), with typed request helpers.

#![allow(dead_code, unused_macros)]

/// Runs each named `async fn(Backend)` as a test on both stores.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Embedded).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-at-least-32-bytes-long";
/// The admin plane's own HS256 key and issuer (`platform_admin` tokens).
pub const ADMIN_JWT_SECRET: &str = "test-admin-jwt-secret-of-at-least-32-bytes";
pub const ADMIN_JWT_ISSUER: &str = "https://admin.issuer.test";
pub const BASE_DOMAIN: &str = "enclave.test";

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// A scratch database of `ENCLAVE_TEST_DATABASE_URL`'s server, migrated
    /// by its owner; the server connects as the app role.
    Postgres,
}

pub struct App {
    pub base: String,
    /// The store flags the server was started with (for other commands).
    pub store_args: Vec<String>,
    pub client: Client,
    child: Child,
    pub dir: tempfile::TempDir,
    pub rsa_private_pem: Vec<u8>,
    pub rsa_public_pem: Vec<u8>,
    /// PostgreSQL: superuser options for the server's main database.
    pub main_superuser: Option<sqlx::postgres::PgConnectOptions>,
}

/// `env` values [`spawn_app_with`] replaces on PostgreSQL: the main
/// database's owner URL and the test server's superuser URL.
pub const OWNER_URL: &str = "<owner url>";
/// An `env` name whose value [`spawn_app_with`] appends to the server's
/// settings file instead of setting it (e.g. `[plans.tight]` tables).
pub const EXTRA_SETTINGS: &str = "<extra settings>";
pub const SUPERUSER_URL: &str = "<superuser url>";
/// An `env` name that makes [`spawn_app_with`] run the real embedding
/// model (`ENCLAVE_MODEL_DIR`) instead of the hash embedder, for tests
/// whose embedding must take real time.
pub const REAL_MODEL: &str = "<real model>";
/// An `env` name whose value [`spawn_app_with`] uses as the embedded
/// store's data directory (instead of one in the app's temporary folder).
pub const DATA_DIR: &str = "<data dir>";
/// An `env` name whose value [`spawn_app_with`] sets as the server's
/// open-file limit (soft and hard), through util-linux `prlimit`.
pub const OPEN_FILE_LIMIT: &str = "<open file limit>";

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RSA key pair from the machine's openssl (the public half configures
/// the server's RS256 verification).
fn rsa_pair(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, PathBuf) {
    let key = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed for the JWT tests")
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout failed");
    (
        std::fs::read(&key).unwrap(),
        std::fs::read(&public).unwrap(),
        public,
    )
}

/// Another server process on `app`'s stores (a replica behind the same
/// load balancer), with its own extra environment.
pub async fn spawn_replica(app: &App, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let public_path = dir.path().join("rsa.pub.pem");
    std::fs::write(&public_path, &app.rsa_public_pem).unwrap();
    let mut replica = start_with_store(
        app.store_args.clone(),
        app.main_superuser.clone(),
        Vec::new(),
        dir,
        app.rsa_private_pem.clone(),
        app.rsa_public_pem.clone(),
        public_path,
        env,
    )
    .await;
    replica.main_superuser = app.main_superuser.clone();
    replica
}

pub async fn spawn_app(backend: Backend) -> App {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let (private, public, public_path) = rsa_pair(dir.path());
    start(backend, dir, private, public, public_path, env).await
}

/// A server using the RSA pair already in `keys` (rsa.pem, rsa.pub.pem).
pub async fn spawn_app_with_keys(
    backend: Backend,
    keys: &std::path::Path,
    env: &[(&str, &str)],
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let public_path = keys.join("rsa.pub.pem");
    let private = std::fs::read(keys.join("rsa.pem")).unwrap();
    let public = std::fs::read(&public_path).unwrap();
    start(backend, dir, private, public, public_path, env).await
}

/// A server on a scratch database of the PostgreSQL server whose
/// superuser URL is `admin_url` (a test's own cluster).
pub async fn spawn_app_on_postgres(admin_url: &str, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let (private, public, public_path) = rsa_pair(dir.path());
    start_on(Some(admin_url), dir, private, public, public_path, env).await
}

async fn start(
    backend: Backend,
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
    public_path: PathBuf,
    env: &[(&str, &str)],
) -> App {
    let admin_url = (backend == Backend::Postgres).then(|| {
        std::env::var("ENCLAVE_TEST_DATABASE_URL").expect(
            "ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL",
        )
    });
    start_on(admin_url.as_deref(), dir, private, public, public_path, env).await
}

async fn start_on(
    admin_url: Option<&str>,
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
    public_path: PathBuf,
    env: &[(&str, &str)],
) -> App {
    let real = env.iter().any(|(k, _)| *k == REAL_MODEL);
    let data_dir = env
        .iter()
        .find(|(k, _)| *k == DATA_DIR)
        .map_or_else(|| dir.path().join("data"), |(_, v)| PathBuf::from(v));
    let mut store_args = vec![
        "--embedder".to_owned(),
        if real { "local" } else { "hash" }.to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
    ];
    let mut main_superuser = None;
    let mut substitutes: Vec<(&str, String)> = Vec::new();
    if let Some(admin_url) = admin_url {
        let (db, app_role) = enclave_postgres::scratch::ScratchDatabase::migrated(admin_url)
            .await
            .expect("scratch database");
        store_args.push("--database-url".to_owned());
        store_args.push(db.url_as(&app_role));
        main_superuser = Some(db.superuser.clone());
        substitutes.push((OWNER_URL, db.owner_url.clone()));
        substitutes.push((SUPERUSER_URL, admin_url.to_owned()));
    }
    start_with_store(
        store_args,
        main_superuser,
        substitutes,
        dir,
        private,
        public,
        public_path,
        env,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn start_with_store(
    store_args: Vec<String>,
    main_superuser: Option<sqlx::postgres::PgConnectOptions>,
    substitutes: Vec<(&str, String)>,
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
    public_path: PathBuf,
    env: &[(&str, &str)],
) -> App {
    // Tests are not about rate limits unless they set a tenant's own
    // `limits`: the free plan is made generous enough never to bind.
    let settings = dir.path().join("settings.toml");
    let mut toml = "[plans.free]\nrequests_per_second = 10000\nburst = 20000\n".to_owned();
    // Nor about failed-credential limits (many tests send bad credentials
    // from one address), unless they set `[auth_failures]` themselves.
    if !env
        .iter()
        .any(|(k, v)| *k == EXTRA_SETTINGS && v.contains("[auth_failures]"))
    {
        toml.push_str("[auth_failures]\nper_address_burst = 1000000\nglobal_burst = 1000000\n");
    }
    for (k, v) in env {
        if *k == EXTRA_SETTINGS {
            toml.push_str(v);
            toml.push('\n');
        }
    }
    std::fs::write(&settings, toml).unwrap();
    let mut cmd = match env.iter().find(|(k, _)| *k == OPEN_FILE_LIMIT) {
        Some((_, n)) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_enclave"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_enclave")),
    };
    cmd.args(&store_args)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--base-domain",
            BASE_DOMAIN,
        ])
        .arg("--config")
        .arg(&settings)
        .env("ENCLAVE_ADMIN_TOKEN", ADMIN)
        .env("ENCLAVE_JWT_SECRET", JWT_SECRET)
        .env("ENCLAVE_JWT_PUBLIC_KEY", &public_path)
        .env("ENCLAVE_JWT_ISSUER", "https://issuer.test")
        .env("ENCLAVE_JWT_AUDIENCE", "enclave")
        .env("ENCLAVE_JWT_ADMIN_SECRET", ADMIN_JWT_SECRET)
        .env("ENCLAVE_JWT_ADMIN_ISSUER", ADMIN_JWT_ISSUER)
        .env("ENCLAVE_MAX_BODY_BYTES", "1048576")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env
        .iter()
        .filter(|(k, _)| ![EXTRA_SETTINGS, REAL_MODEL, DATA_DIR, OPEN_FILE_LIMIT].contains(k))
    {
        match substitutes.iter().find(|(name, _)| name == v) {
            Some((_, real)) => cmd.env(k, real),
            None => cmd.env(k, v),
        };
    }
    let mut child = cmd.spawn().expect("start enclave serve");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    App {
        base: addr,
        store_args,
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        child,
        dir,
        rsa_private_pem: private,
        rsa_public_pem: public,
        main_superuser,
    }
}

/// A response: status and parsed body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub content_type: String,
}

impl Resp {
    /// Asserts an API.md §3 problem: status, code, problem+json.
    pub fn problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "content type {}",
            self.content_type
        );
        self
    }
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        &self.body
    }
}

/// One row of a route × credential → expected problem table
/// ([`App::expect_refusals`]).
pub struct Refusal<'a> {
    pub method: Method,
    pub path: String,
    pub auth: &'a str,
    pub body: Option<Value>,
    pub status: u16,
    pub code: &'static str,
}

impl<'a> Refusal<'a> {
    pub fn new(
        method: Method,
        path: impl Into<String>,
        auth: &'a str,
        status: u16,
        code: &'static str,
    ) -> Self {
        Refusal {
            method,
            path: path.into(),
            auth,
            body: None,
            status,
            code,
        }
    }
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

impl App {
    /// Sends every row's request and checks it is refused with the row's
    /// status and problem code (a failure names the row); the answers, in
    /// row order, for further checks.
    pub async fn expect_refusals(&self, rows: &[Refusal<'_>]) -> Vec<Resp> {
        let mut answers = Vec::with_capacity(rows.len());
        for r in rows {
            let got = self
                .send(r.method.clone(), &r.path, Some(r.auth), r.body.clone(), &[])
                .await;
            assert!(
                got.status.as_u16() == r.status
                    && got.body["code"] == r.code
                    && got.body["status"] == r.status,
                "{} {}: expected {} {}, got {}: {}",
                r.method,
                r.path,
                r.status,
                r.code,
                got.status,
                got.text
            );
            answers.push(got);
        }
        answers
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(a) = auth {
            rb = rb.header("authorization", format!("Bearer {a}"));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            content_type,
        }
    }

    pub async fn get(&self, path: &str, auth: &str) -> Resp {
        self.send(Method::GET, path, Some(auth), None, &[]).await
    }
    pub async fn post(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(auth), Some(body), &[])
            .await
    }
    pub async fn patch(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(auth), Some(body), &[])
            .await
    }
    pub async fn delete(&self, path: &str, auth: &str) -> Resp {
        self.send(Method::DELETE, path, Some(auth), None, &[]).await
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the server to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Creates a tenant on the admin plane and returns an owner key for it.
    pub async fn tenant(&self, id: &str) -> String {
        self.post(
            "/admin/v1/tenants",
            ADMIN,
            json!({"id": id, "slug": id.to_ascii_lowercase(), "name": id}),
        )
        .await
        .ok(201);
        self.owner_key(id).await
    }

    /// Runs `enclave audit verify` on the server's stores; asserts every
    /// chain verifies and returns the report.
    pub fn verify_audit(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args(&self.store_args)
            .args(["audit", "verify"])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{report}");
        assert!(!report.contains("broken"), "{report}");
        report
    }

    /// Creates a tenant with these `limits` and returns an owner key.
    pub async fn tenant_with_limits(&self, id: &str, limits: Value) -> String {
        let key = self.tenant(id).await;
        self.patch(
            &format!("/admin/v1/tenants/{id}"),
            ADMIN,
            json!({ "limits": limits }),
        )
        .await
        .ok(200);
        key
    }

    /// A new owner key of tenant `id`, minted on the admin plane.
    pub async fn owner_key(&self, id: &str) -> String {
        self.post(
            &format!("/admin/v1/tenants/{id}/keys"),
            ADMIN,
            json!({"name": "owner", "role": "owner"}),
        )
        .await
        .ok(201)["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A key of `role` made with `owner_key`.
    pub async fn key(&self, owner_key: &str, role: &str) -> (String, String) {
        let b = self
            .post("/v1/keys", owner_key, json!({"name": role, "role": role}))
            .await;
        let b = b.ok(201);
        (
            b["key"].as_str().unwrap().to_owned(),
            b["key_id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn add(&self, key: &str, name: &str, content: &str, extra: Value) -> String {
        let mut body = json!({"name": name, "type": "text", "content": content});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        self.post("/v1/documents", key, body).await.ok(201)["document_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Two tenants with a document each and every key role.
pub struct World {
    pub app: App,
    pub a: String,
    pub b: String,
    pub a_viewer: String,
    pub a_member: String,
    pub a_admin: String,
    pub a_doc: String,
    pub b_doc: String,
    pub b_key_id: String,
}

/// Text only tenant B holds; no response to A may contain it.
pub const B_SECRET: &str = "zyzzogeton-globex-secret";

impl World {
    pub async fn new(backend: Backend) -> World {
        let app = spawn_app(backend).await;
        let a = app.tenant("acme").await;
        let b = app.tenant("globex").await;
        let (a_viewer, _) = app.key(&a, "viewer").await;
        let (a_member, _) = app.key(&a, "member").await;
        let (a_admin, _) = app.key(&a, "admin").await;
        let (_, b_key_id) = app.key(&b, "member").await;
        let a_doc = app
            .add(
                &a,
                "refunds.txt",
                "Refunds are processed within five days.",
                json!({"origin": "user-1", "metadata": {"year": 2025}}),
            )
            .await;
        let b_doc = app
            .add(
                &b,
                "secret.txt",
                &format!("Refunds {B_SECRET} are processed in globex."),
                json!({"origin": "user-9", "metadata": {"year": 2024, "team": "globex"}}),
            )
            .await;
        World {
            app,
            a,
            b,
            a_viewer,
            a_member,
            a_admin,
            a_doc,
            b_doc,
            b_key_id,
        }
    }

    /// Asserts nothing of tenant B is in a response body.
    pub fn nothing_foreign(&self, r: &Resp) {
        for needle in [B_SECRET, &self.b_doc, "globex", "user-9", &self.b_key_id] {
            assert!(
                !r.text.contains(needle),
                "response leaks {needle:?}: {}",
                r.text
            );
        }
    }
}
