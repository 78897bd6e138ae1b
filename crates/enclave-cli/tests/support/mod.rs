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

pub use enclave_server::testkit::*;

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// A scratch database of `ENCLAVE_TEST_DATABASE_URL`'s server, migrated
    /// by its owner; the server connects as the app role.
    Postgres,
}

pub struct App {
    /// The client of this server (`app.get(..)`, `app.base`).
    pub api: Api,
    /// The store flags the server was started with (for other commands).
    pub store_args: Vec<String>,
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
    let settings = dir.path().join("settings.toml");
    let extra: Vec<&str> = env
        .iter()
        .filter(|(k, _)| *k == EXTRA_SETTINGS)
        .map(|(_, v)| *v)
        .collect();
    let toml = settings_file(&extra);
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
        .env("ENCLAVE_JWT_ISSUER", JWT_ISSUER)
        .env("ENCLAVE_JWT_AUDIENCE", JWT_AUDIENCE)
        .env("ENCLAVE_JWT_ADMIN_SECRET", ADMIN_JWT_SECRET)
        .env("ENCLAVE_JWT_ADMIN_ISSUER", ADMIN_JWT_ISSUER)
        .env("ENCLAVE_MAX_BODY_BYTES", MAX_BODY_BYTES)
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
        api: Api::new(addr),
        store_args,
        child,
        dir,
        rsa_private_pem: private,
        rsa_public_pem: public,
        main_superuser,
    }
}

impl std::ops::Deref for App {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl App {
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
}

/// Two tenants with a document each and every key role, on a server
/// process of `backend`.
pub type World = enclave_server::testkit::World<App>;

pub async fn world(backend: Backend) -> World {
    World::on(spawn_app(backend).await).await
}
