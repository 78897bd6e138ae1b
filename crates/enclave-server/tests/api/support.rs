//! `spawn_app()`: the server in this test process, on port 0, over a fresh
//! data directory or a scratch PostgreSQL database (hash embedder: these
//! tests prove HTTP and isolation behaviour, not retrieval quality). Its
//! settings go through the same `enclave_server::settings::load` as the
//! binary's, with the test's variables in place of a process environment;
//! the stores are opened as `enclave serve` opens them. The client half
//! (requests, problems, refusal tables, the two-tenant world) is
//! `enclave_server::testkit`, shared with the process-level suites of
//! `enclave-cli/tests`.

#![allow(dead_code, unused_macros)]

/// Runs each named `async fn(Backend)` as a test on both stores.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::support::Backend::Embedded).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::support::Backend::Postgres).await } )*
        }
    };
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave::{EmbedderConfig, Layout, Memory, MemoryConfig, StoreConfig};
use enclave_server::jwt::JwtVerifier;
use enclave_server::AppState;
use enclave_store::control::ControlStore;
use enclave_store::sqlite::SqliteControl;
use secrecy::ExposeSecret;
use serde_json::json;

pub use enclave_server::testkit::*;

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// A scratch database of `ENCLAVE_TEST_DATABASE_URL`'s server, migrated
    /// by its owner; the server connects as the app role.
    Postgres,
}

/// `env` values [`spawn_app_with`] replaces on PostgreSQL: the main
/// database's owner URL and the test server's superuser URL.
pub const OWNER_URL: &str = "<owner url>";
pub const SUPERUSER_URL: &str = "<superuser url>";
/// An `env` name whose value [`spawn_app_with`] appends to the server's
/// settings file instead of setting it (e.g. `[plans.tight]` tables).
pub const EXTRA_SETTINGS: &str = "<extra settings>";

/// The embedding dimensions of the hash embedder the servers run.
const DIMENSIONS: usize = 384;

/// Where a server's data lives (a replica opens the same).
#[derive(Clone)]
enum Stores {
    Embedded(PathBuf),
    /// The app role's URL of the main database, and the owner / superuser
    /// URLs `OWNER_URL` / `SUPERUSER_URL` stand for.
    Postgres {
        app_url: String,
        owner_url: String,
        superuser_url: String,
    },
}

/// A server running in this process; dropping it shuts it down.
pub struct App {
    /// The client of this server (`app.get(..)`, `app.base`).
    pub api: Api,
    /// The server's shared state (its control plane, its settings).
    pub state: AppState,
    stores: Stores,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub dir: tempfile::TempDir,
    pub rsa_private_pem: Vec<u8>,
    pub rsa_public_pem: Vec<u8>,
    /// PostgreSQL: superuser options for the server's main database.
    pub main_superuser: Option<sqlx::postgres::PgConnectOptions>,
}

impl std::ops::Deref for App {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app(backend: Backend) -> App {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let (private, public, _) = rsa_pair(dir.path());
    start(backend, dir, private, public, env).await
}

/// A server using the RSA pair already in `keys` (rsa.pem, rsa.pub.pem).
pub async fn spawn_app_with_keys(backend: Backend, keys: &Path, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let private = std::fs::read(keys.join("rsa.pem")).unwrap();
    let public = std::fs::read(keys.join("rsa.pub.pem")).unwrap();
    start(backend, dir, private, public, env).await
}

/// Another server on `app`'s stores (a replica behind the same load
/// balancer), with its own extra variables.
pub async fn spawn_replica(app: &App, env: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = serve(
        app.stores.clone(),
        dir,
        app.rsa_private_pem.clone(),
        app.rsa_public_pem.clone(),
        env,
    )
    .await;
    replica.main_superuser = app.main_superuser.clone();
    replica
}

async fn start(
    backend: Backend,
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
    env: &[(&str, &str)],
) -> App {
    let (stores, main_superuser) = match backend {
        Backend::Embedded => (Stores::Embedded(dir.path().join("data")), None),
        Backend::Postgres => {
            let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL").expect(
                "ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL",
            );
            let (db, app_role) = enclave_postgres::scratch::ScratchDatabase::migrated(&admin_url)
                .await
                .expect("scratch database");
            let stores = Stores::Postgres {
                app_url: db.url_as(&app_role),
                owner_url: db.owner_url.clone(),
                superuser_url: admin_url,
            };
            (stores, Some(db.superuser.clone()))
        }
    };
    let mut app = serve(stores, dir, private, public, env).await;
    app.main_superuser = main_superuser;
    app
}

/// Loads the settings (the test servers' defaults, then `env`), opens the
/// stores and serves on a fresh loopback port.
async fn serve(
    stores: Stores,
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
    env: &[(&str, &str)],
) -> App {
    let settings_path = dir.path().join("settings.toml");
    let extra: Vec<&str> = env
        .iter()
        .filter(|(k, _)| *k == EXTRA_SETTINGS)
        .map(|(_, v)| *v)
        .collect();
    std::fs::write(&settings_path, settings_file(&extra)).unwrap();
    let public_path = dir.path().join("rsa.pub.pem");
    std::fs::write(&public_path, &public).unwrap();
    let mut vars: Vec<(String, String)> = [
        ("ENCLAVE_ADMIN_TOKEN", ADMIN),
        ("ENCLAVE_JWT_SECRET", JWT_SECRET),
        ("ENCLAVE_JWT_PUBLIC_KEY", public_path.to_str().unwrap()),
        ("ENCLAVE_JWT_ISSUER", JWT_ISSUER),
        ("ENCLAVE_JWT_AUDIENCE", JWT_AUDIENCE),
        ("ENCLAVE_JWT_ADMIN_SECRET", ADMIN_JWT_SECRET),
        ("ENCLAVE_JWT_ADMIN_ISSUER", ADMIN_JWT_ISSUER),
        ("ENCLAVE_MAX_BODY_BYTES", MAX_BODY_BYTES),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in env.iter().filter(|(k, _)| *k != EXTRA_SETTINGS) {
        let value = match (&stores, *v) {
            (Stores::Postgres { owner_url, .. }, OWNER_URL) => owner_url.clone(),
            (Stores::Postgres { superuser_url, .. }, SUPERUSER_URL) => superuser_url.clone(),
            _ => (*v).to_owned(),
        };
        vars.retain(|(name, _)| name != k);
        vars.push(((*k).to_owned(), value));
    }
    let flags = match &stores {
        Stores::Embedded(data) => json!({"data_dir": data, "base_domain": BASE_DOMAIN}),
        Stores::Postgres { app_url, .. } => {
            json!({"database_url": app_url, "base_domain": BASE_DOMAIN})
        }
    };
    let settings = enclave_server::settings::load(Some(&settings_path), vars, flags)
        .expect("the test server's settings");
    let state = open_state(&stores, settings).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    if let Some(addr) = state.options().metrics.listen.clone() {
        let operator = tokio::net::TcpListener::bind(&addr).await.unwrap();
        tokio::spawn(enclave_server::serve_operator(operator, state.clone()));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(enclave_server::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    App {
        api: Api::new(base),
        state,
        stores,
        stop: Some(stop),
        dir,
        rsa_private_pem: private,
        rsa_public_pem: public,
        main_superuser: None,
    }
}

/// The library, the control plane and the placer as `enclave serve` opens
/// them (`enclave-cli` `backends.rs`), on the hash embedder.
async fn open_state(stores: &Stores, settings: enclave_server::Settings) -> AppState {
    let jwt = JwtVerifier::from_settings(&settings).expect("JWT settings");
    let pool = settings.database_max_connections.get();
    let embedder = EmbedderConfig::Hash {
        dimensions: DIMENSIONS,
    };
    let (memory, control, placer): (Memory, Arc<dyn ControlStore>, _) = match stores {
        Stores::Embedded(data) => {
            let memory = Memory::open(MemoryConfig::new(
                StoreConfig::embedded(data, Layout::SharedFile),
                embedder,
            ))
            .await
            .expect("opening the embedded store");
            let data = data.clone();
            let control = tokio::task::spawn_blocking(move || SqliteControl::open(&data))
                .await
                .unwrap()
                .expect("opening control.sqlite");
            (memory, Arc::new(control), None)
        }
        Stores::Postgres { app_url, .. } => {
            let embedder = Memory::load_embedder(embedder).await.unwrap();
            let store = enclave_postgres::PgStore::connect_with(
                app_url,
                embedder.dimensions(),
                enclave_postgres::PgOptions {
                    max_connections: pool,
                    require_directory: true,
                    ..Default::default()
                },
            )
            .await
            .expect("connecting to PostgreSQL");
            let memory = Memory::from_parts(Arc::new(store), embedder, Default::default(), 4096);
            let control = enclave_postgres::PgControl::connect(app_url, pool)
                .await
                .expect("connecting the control plane");
            let placer = settings.placement_owner_url.as_ref().map(|owner| {
                let database_admin = settings
                    .tenant_database_admin_url
                    .as_ref()
                    .map(|u| u.expose_secret().to_owned());
                Arc::new(
                    enclave_postgres::PgPlacer::new(
                        owner.expose_secret().to_owned(),
                        app_url.clone(),
                        database_admin,
                    )
                    .expect("placement settings"),
                ) as Arc<dyn enclave_store::control::TenantPlacer>
            });
            (memory, Arc::new(control), placer)
        }
    };
    let memory = memory
        .with_scheduling(settings.embedding)
        .with_store_concurrency(settings.store);
    let state = AppState::new(memory, control, jwt, settings);
    match placer {
        Some(p) => state.with_placer(p),
        None => state,
    }
}

impl App {
    /// Verifies every audit chain of the server's control plane (what
    /// `enclave audit verify` runs); asserts each is intact and returns
    /// the report.
    pub async fn verify_audit(&self) -> String {
        let mut report = String::new();
        for enclave_server::ChainCheck { scope, outcome } in
            enclave_server::verify_audit(self.state.control().as_ref())
                .await
                .expect("verifying the audit chains")
        {
            match outcome {
                Ok(n) => report.push_str(&format!("{scope}: {n} events, chain intact\n")),
                Err(seq) => panic!("{scope}: chain broken at event {seq}\n{report}"),
            }
        }
        report
    }
}

/// Two tenants with a document each and every key role, on a server of
/// `backend`.
pub type World = enclave_server::testkit::World<App>;

pub async fn world(backend: Backend) -> World {
    World::on(spawn_app(backend).await).await
}
