//! Test helpers for the HTTP suites (feature `testkit`): a typed client of
//! a running server ([`Api`]), its answers ([`Resp`]), the route ×
//! credential → expected problem table ([`Refusal`]) and the two-tenant
//! [`World`]. The in-process suites (`enclave-server/tests/api`) and the
//! process-level ones (`enclave-cli/tests`) start the server their own way
//! and share these.

use std::ops::Deref;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-at-least-32-bytes-long";
/// The admin plane's own HS256 key and issuer (`platform_admin` tokens).
pub const ADMIN_JWT_SECRET: &str = "test-admin-jwt-secret-of-at-least-32-bytes";
pub const ADMIN_JWT_ISSUER: &str = "https://admin.issuer.test";
pub const JWT_ISSUER: &str = "https://issuer.test";
pub const JWT_AUDIENCE: &str = "enclave";
pub const BASE_DOMAIN: &str = "enclave.test";
/// The body limit the test servers run with.
pub const MAX_BODY_BYTES: &str = "1048576";

/// The settings every test server starts from (before a test's own):
/// the free plan generous enough never to bind, so tests are not about
/// rate limits unless they set a tenant's own `limits`; nor about
/// failed-credential limits (many tests send bad credentials from one
/// address) unless `extra` has its own `[auth_failures]`. `extra` is
/// appended (e.g. `[plans.tight]` tables).
pub fn settings_file(extra: &[&str]) -> String {
    let mut toml = "[plans.free]\nrequests_per_second = 10000\nburst = 20000\n".to_owned();
    if !extra.iter().any(|e| e.contains("[auth_failures]")) {
        toml.push_str("[auth_failures]\nper_address_burst = 1000000\nglobal_burst = 1000000\n");
    }
    for e in extra {
        toml.push_str(e);
        toml.push('\n');
    }
    toml
}

/// An RSA key pair from the machine's openssl (the public half configures
/// the server's RS256 verification): private PEM, public PEM, public path.
pub fn rsa_pair(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, std::path::PathBuf) {
    use std::process::{Command, Stdio};
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

/// A client of one running server.
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    pub client: Client,
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
/// ([`Api::expect_refusals`]).
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

impl Api {
    /// A client of the server at `base`.
    pub fn new(base: String) -> Self {
        Api {
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

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

    /// A key of `role` made with `owner_key`: (key, key id).
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

    /// Adds a text document (with `extra` body fields); its id.
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

/// Two tenants with a document each and every key role, on a server `A`
/// (however the suite started it).
pub struct World<A> {
    pub app: A,
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

impl<A: Deref<Target = Api>> World<A> {
    /// Tenants `acme` (A) and `globex` (B) on `app`.
    pub async fn on(app: A) -> World<A> {
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
