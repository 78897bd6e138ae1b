//! Who is calling, for which tenant, with which role — decided once, here.
//!
//! [`Caller<R>`] is the only way a handler reaches tenant data: it
//! authenticates the bearer credential (API key or JWT), takes the tenant
//! **from the credential alone**, cross-checks the optional hints
//! (`X-Tenant-ID`, `Host: <slug>.<base domain>`, `tenant_id`/`owner_id` in the
//! query string; the body is checked by [`Body`]), refuses suspended tenants,
//! and checks the role the handler's type names (`Caller<Member>`). What the
//! handle then exposes follows from that type: [`Caller::reader`] for every
//! role, [`Caller::writer`] only where `R: CanWrite`, [`Caller::keys`] and
//! [`Caller::exporter`] only where `R: CanManage`, so a handler cannot call an
//! operation its declared role does not allow.
//!
//! [`PlatformAdmin`] guards `/admin/v1`: the configured admin token or a JWT
//! with role `platform_admin` signed by an admin-plane key; a valid tenant
//! credential there (a tenant key's token whatever its role) is 403.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use chrono::Utc;
use enclave::Tenant;
use enclave_core::{Role, TenantId, TenantStatus};
use enclave_store::control::{TenantControl, TenantRecord};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::failures::Cause;
use crate::jwt::Verified;
use crate::keys;
use crate::{ApiError, AppState};

/// The authenticated principal of a tenant request.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant: Arc<TenantRecord>,
    pub role: Role,
    /// `key:<key id>` or `user:<sub>`: the audit log's actor.
    pub actor: String,
}

impl TenantCtx {
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant.id
    }
}

/// A role a handler requires.
pub trait Need: Send + Sync + 'static {
    const ROLE: Role;
}
/// Roles that may change documents and messages.
pub trait CanWrite: Need {}
/// Roles that may manage keys and export.
pub trait CanManage: CanWrite {}

pub struct Viewer;
pub struct Member;
pub struct Admin;
pub struct Owner;
impl Need for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Need for Member {
    const ROLE: Role = Role::Member;
}
impl Need for Admin {
    const ROLE: Role = Role::Admin;
}
impl Need for Owner {
    const ROLE: Role = Role::Owner;
}
impl CanWrite for Member {}
impl CanWrite for Admin {}
impl CanWrite for Owner {}
impl CanManage for Admin {}
impl CanManage for Owner {}

/// An authenticated caller holding at least role `R` in its tenant.
pub struct Caller<R: Need> {
    pub ctx: TenantCtx,
    tenant: Tenant,
    state: AppState,
    _role: PhantomData<R>,
}

/// The read-only operations every role has.
pub struct Reader<'a>(&'a Tenant);

impl Reader<'_> {
    pub async fn search(
        &self,
        p: enclave_core::SearchParams,
    ) -> enclave::Result<enclave_core::SearchResults> {
        if p.include_documents {
            self.0.search_with_documents(p).await
        } else {
            self.0.search(p).await
        }
    }
    pub async fn list_documents(
        &self,
        p: enclave::ListParams,
    ) -> enclave::Result<enclave::DocumentList> {
        self.0.list_documents(p).await
    }
    pub async fn get_document(
        &self,
        id: &enclave_core::DocumentId,
        include_chunks: bool,
    ) -> enclave::Result<enclave_core::Document> {
        self.0.get_document(id, include_chunks).await
    }
    pub async fn statistics(&self) -> enclave::Result<enclave_core::Statistics> {
        self.0.statistics().await
    }
    pub async fn messages(
        &self,
        session: &enclave_core::SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> enclave::Result<Vec<enclave_core::Message>> {
        self.0.messages(session, before_seq, limit).await
    }
}

impl<R: Need> Caller<R> {
    pub fn reader(&self) -> Reader<'_> {
        Reader(&self.tenant)
    }
    /// The handle, for the server's own accounting (storage used, quotas),
    /// never for an operation the role does not allow.
    pub(crate) fn tenant_handle(&self) -> &Tenant {
        &self.tenant
    }
    pub fn state(&self) -> &AppState {
        &self.state
    }
    /// Appends to this tenant's audit log as this caller.
    pub async fn audit(
        &self,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Result<(), ApiError> {
        self.state
            .audit(
                Some(self.ctx.tenant_id()),
                &self.ctx.actor,
                action,
                target,
                detail,
            )
            .await
    }
}

impl<R: CanWrite> Caller<R> {
    /// Every document operation.
    pub fn writer(&self) -> &Tenant {
        &self.tenant
    }
}

impl<R: CanManage> Caller<R> {
    pub fn keys(&self) -> Arc<dyn TenantControl> {
        self.state.control().tenant(self.ctx.tenant_id())
    }
    pub fn exporter(&self) -> &Tenant {
        &self.tenant
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated(
            "missing Authorization: Bearer credential",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header"))?;
    let (scheme, cred) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthenticated("malformed Authorization header"))?;
    let cred = cred.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || cred.is_empty() {
        return Err(ApiError::Unauthenticated(
            "the Authorization scheme must be Bearer",
        ));
    }
    Ok(cred)
}

const BAD_CREDENTIAL: &str = "the credential is not valid";

/// A credential that did not authenticate: what to count, and the answer.
struct Failure {
    cause: Cause,
    /// The tenant whose key it named (its chain records the aggregate).
    scope: Option<TenantId>,
    actor: String,
}

enum AuthError {
    Failed(Failure),
    /// Not the credential's fault (a store is down, or a platform-admin
    /// token on a tenant route).
    Other(ApiError),
}

impl From<ApiError> for AuthError {
    fn from(e: ApiError) -> Self {
        AuthError::Other(e)
    }
}

fn failed(cause: Cause, scope: Option<TenantId>, actor: &str) -> AuthError {
    AuthError::Failed(Failure {
        cause,
        scope,
        actor: actor.to_owned(),
    })
}

/// The client address of a request: the peer, or the client a trusted
/// proxy names (when the server was started with connection info;
/// in-process tests have none).
pub(crate) fn client_addr(ext: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    ext.get::<crate::client::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| ext.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0))
}

/// Checks the failure buckets (before any store access), then
/// authenticates; a failed credential is counted against the address and
/// aggregated into the audit log, and answers 401.
async fn authenticate_guarded(
    state: &AppState,
    parts: &Parts,
    cred: &str,
) -> Result<(TenantId, Role, String), ApiError> {
    let addr = client_addr(&parts.extensions);
    let guard = &state.inner.failures;
    let key_id = keys::parse(cred).map(|(id, _)| id);
    guard.admit_or_hold(addr, key_id).await?;
    match authenticate(state, cred).await {
        Ok(ok) => Ok(ok),
        Err(AuthError::Other(e)) => Err(e),
        Err(AuthError::Failed(f)) => {
            guard.failed(addr, f.scope.as_ref(), f.cause, None, &f.actor);
            Err(ApiError::Unauthenticated(BAD_CREDENTIAL))
        }
    }
}

/// Authenticates a tenant credential: (tenant id, role, actor).
async fn authenticate(state: &AppState, cred: &str) -> Result<(TenantId, Role, String), AuthError> {
    if keys::looks_like_key(cred) {
        let Some((key_id, secret)) = keys::parse(cred) else {
            return Err(failed(Cause::Malformed, None, "anonymous"));
        };
        let Some(key) = state
            .control()
            .find_key(key_id)
            .await
            .map_err(ApiError::from)?
        else {
            return Err(failed(Cause::UnknownKey, None, "anonymous"));
        };
        let actor = format!("key:{}", key.key_id);
        let cause = if !keys::verify(&key.salt, &key.secret_hash, secret) {
            Some(Cause::WrongSecret)
        } else if key.revoked_at.is_some() {
            Some(Cause::RevokedKey)
        } else if key.expires_at.is_some_and(|e| e <= Utc::now()) {
            Some(Cause::ExpiredKey)
        } else {
            None
        };
        if let Some(cause) = cause {
            return Err(failed(cause, Some(key.tenant_id), &actor));
        }
        state.inner.failures.verified_key(&key.key_id);
        state.touch_key(&key.key_id).await;
        return Ok((key.tenant_id, key.role, actor));
    }
    let claims = match state.inner.jwt.verify(cred) {
        None => return Err(failed(Cause::InvalidToken, None, "anonymous")),
        Some(Verified::Admin(_)) => {
            return Err(AuthError::Other(ApiError::forbidden(
                "a platform admin credential has no tenant; use /admin/v1",
            )))
        }
        Some(Verified::Tenant(claims)) => claims,
    };
    let actor = format!("user:{}", claims.sub);
    let tenant = claims
        .tenant_id
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| failed(Cause::InvalidToken, None, &actor))?;
    let role = claims
        .role
        .parse::<Role>()
        .map_err(|_| failed(Cause::InvalidToken, None, &actor))?;
    Ok((tenant, role, actor))
}

/// Refuses a hint that names another tenant (counted against the client
/// address and aggregated into the tenant's audit log, like a failed
/// credential). More than one `X-Tenant-ID` or `Host` header is refused the
/// same way: a proxy routing on another copy than the one checked here
/// would disagree with the server.
fn check_hints(state: &AppState, parts: &Parts, ctx: &TenantCtx) -> Result<(), ApiError> {
    let refuse = |hint: &'static str| {
        state.inner.failures.failed(
            client_addr(&parts.extensions),
            Some(ctx.tenant_id()),
            Cause::TenantMismatch,
            Some(hint),
            &ctx.actor,
        );
        ApiError::TenantMismatch
    };
    let mut tenant_hints = parts.headers.get_all("x-tenant-id").iter();
    if let Some(h) = tenant_hints.next() {
        if tenant_hints.next().is_some() {
            return Err(refuse("X-Tenant-ID"));
        }
        if h.as_bytes() != ctx.tenant_id().as_str().as_bytes() {
            return Err(refuse("X-Tenant-ID"));
        }
    }
    if let Some(base) = &state.options().base_domain {
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(refuse("Host"));
        }
        let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
        if let Some(sub) = host_subdomain(host, base) {
            if sub != ctx.tenant.slug.as_str() {
                return Err(refuse("Host"));
            }
        }
    }
    if let Some(q) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|_| ApiError::invalid("the query string is malformed"))?;
        for (k, v) in pairs {
            if k == "tenant_id" && v != ctx.tenant_id().as_str() {
                return Err(refuse("tenant_id"));
            }
            if k == "owner_id" && v != ctx.tenant_id().as_str() {
                return Err(refuse("owner_id"));
            }
        }
    }
    Ok(())
}

/// The label before `.<base>` in a Host header value, compared as DNS
/// names are: case-insensitively, a port and one trailing dot
/// (the absolute form, `acme.example.com.`) ignored. `None` when the host is
/// not under `base`.
fn host_subdomain(host: &str, base: &str) -> Option<String> {
    // Whatever follows the last ':' is the port (numeric or not: a
    // malformed port must not skip the check). IPv6 literals are never
    // under a base domain.
    let host = match host.rsplit_once(':') {
        Some((h, _)) if !host.starts_with('[') => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let base = base.strip_suffix('.').unwrap_or(base).to_ascii_lowercase();
    host.strip_suffix(&format!(".{base}")).map(str::to_owned)
}

impl<R: Need> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cred = bearer(&parts.headers).inspect_err(|_| {
            state.inner.failures.failed(
                client_addr(&parts.extensions),
                None,
                Cause::Malformed,
                None,
                "anonymous",
            )
        })?;
        let (tenant_id, role, actor) = authenticate_guarded(state, parts, cred).await?;
        // The handle first, then the directory entry: a handle made before a
        // purge can never write after it, and one made after it reads the
        // entry the purge changed.
        let handle = state.memory().tenant(&tenant_id);
        // A credential of a tenant that no longer exists (purged) is invalid.
        let tenant = state
            .tenant_record(&tenant_id)
            .await?
            .ok_or(ApiError::Unauthenticated(BAD_CREDENTIAL))?;
        let ctx = TenantCtx {
            tenant,
            role,
            actor,
        };
        tracing::Span::current().record("tenant_id", ctx.tenant_id().as_str());
        check_hints(state, parts, &ctx)?;
        if ctx.tenant.status == TenantStatus::Suspended {
            return Err(ApiError::TenantSuspended);
        }
        // Every authenticated request of the tenant counts, refused ones too.
        let (tenant_rate, key_rate) = state
            .options()
            .plans
            .rates(&ctx.tenant.plan, &ctx.tenant.limits);
        let cost = crate::limits::request_cost(&parts.headers, state.options().max_body_bytes);
        let decision = state
            .inner
            .limiter
            .check(ctx.tenant_id(), &ctx.actor, tenant_rate, key_rate, cost)
            .await;
        if let Some(slot) = parts.extensions.get::<crate::limits::Slot>() {
            slot.set(decision);
        }
        if !decision.allowed {
            return Err(ApiError::RateLimited(decision.retry_after_secs));
        }
        if !role.allows(R::ROLE) {
            state
                .audit_refusal(
                    Some(ctx.tenant_id()),
                    &ctx.actor,
                    "role.denied",
                    json!({"role": role.as_str(), "needed": R::ROLE.as_str(), "path": parts.uri.path()}),
                )
                .await;
            return Err(ApiError::forbidden(format!(
                "this operation needs the {} role; the credential has {}",
                R::ROLE,
                role
            )));
        }
        parts.extensions.insert(ctx.clone());
        state.inner.usage.record(
            ctx.tenant_id(),
            enclave_store::control::UsageCounts {
                requests: 1,
                ..Default::default()
            },
        );
        Ok(Caller {
            tenant: handle,
            ctx,
            state: state.clone(),
            _role: PhantomData,
        })
    }
}

/// The platform admin (admin token or `platform_admin` JWT).
pub struct PlatformAdmin {
    pub actor: String,
}

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = client_addr(&parts.extensions);
        let guard = &state.inner.failures;
        let cred = bearer(&parts.headers)
            .inspect_err(|_| guard.failed(addr, None, Cause::Malformed, None, "anonymous"))?;
        // Wrong admin tokens spend the address' failures like any bad
        // credential, and an address with none left is refused before the
        // token is even compared: guessing is as slow as the bucket.
        guard.admit_or_hold(addr, None).await?;
        let token = state.options().admin_token.as_ref();
        if token.is_some_and(|t| keys::token_eq(cred, secrecy::ExposeSecret::expose_secret(t))) {
            return Ok(PlatformAdmin {
                actor: "platform".into(),
            });
        }
        if !keys::looks_like_key(cred) {
            match state.inner.jwt.verify(cred) {
                Some(Verified::Admin(claims)) => {
                    return Ok(PlatformAdmin {
                        actor: format!("admin:{}", claims.sub),
                    });
                }
                Some(Verified::Tenant(_)) => {
                    return Err(ApiError::forbidden(
                        "tenant credentials cannot use the admin plane",
                    ));
                }
                None => {}
            }
            guard.failed(addr, None, Cause::WrongAdminToken, None, "anonymous");
            return Err(ApiError::Unauthenticated(BAD_CREDENTIAL));
        }
        // A valid tenant key is forbidden here; anything else is unknown.
        match authenticate(state, cred).await {
            Ok((tenant, _, actor)) => {
                guard.failed(addr, Some(&tenant), Cause::AdminDenied, None, &actor);
                Err(ApiError::forbidden(
                    "tenant credentials cannot use the admin plane",
                ))
            }
            Err(AuthError::Other(e)) => Err(e),
            Err(AuthError::Failed(f)) => {
                guard.failed(addr, f.scope.as_ref(), f.cause, None, &f.actor);
                Err(ApiError::Unauthenticated(BAD_CREDENTIAL))
            }
        }
    }
}

/// A JSON body. `tenant_id` / `owner_id` at its top level never select a
/// tenant: equal to the caller's they are ignored, different they are 403
/// `tenant_mismatch` (with an audit event). Malformed JSON, wrong types and
/// unknown fields are 400 `invalid_request`; over the body limit, 413.
pub struct Body<T>(pub T);

/// [`Body`] plus the SHA-256 of the raw bytes (for `Idempotency-Key`).
pub struct HashedBody<T> {
    pub value: T,
    pub sha256: Vec<u8>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(Body(read_body(req, state).await?.0))
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for HashedBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (value, sha256) = read_body(req, state).await?;
        Ok(HashedBody { value, sha256 })
    }
}

async fn read_body<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
) -> Result<(T, Vec<u8>), ApiError> {
    let ctx = req.extensions().get::<TenantCtx>().cloned();
    let addr = client_addr(req.extensions());
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json")
                || (v.starts_with("application/") && v.contains("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::invalid(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "the body is over the {}-byte limit",
                    state.options().max_body_bytes
                ))
            } else {
                ApiError::invalid("the body could not be read")
            }
        })?;
    let sha256 = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes).to_vec()
    };
    let mut value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    // Every body of the API is an object (serde would also read a struct
    // from an array of its fields' values).
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    whole_numbers_as_integers(&mut value);
    if let (Some(obj), Some(ctx)) = (value.as_object_mut(), ctx) {
        for field in ["tenant_id", "owner_id"] {
            if let Some(v) = obj.remove(field) {
                if v.as_str() != Some(ctx.tenant_id().as_str()) {
                    state.inner.failures.failed(
                        addr,
                        Some(ctx.tenant_id()),
                        Cause::TenantMismatch,
                        Some(field),
                        &ctx.actor,
                    );
                    return Err(ApiError::TenantMismatch);
                }
            }
        }
    }
    let value = serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("the body does not match the schema: {e}")))?;
    Ok((value, sha256))
}

/// Spells each whole number written with a fraction (`5.0`, `1e2`) as the
/// integer it is, as JSON Schema counts it (`"type": "integer"` admits
/// `5.0`), so integer fields take it. Metadata is the caller's data and
/// stays as written.
fn whole_numbers_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k != "metadata" {
                    whole_numbers_as_integers(v);
                }
            }
        }
        _ => {}
    }
}

/// A query string, parsed into `T`; a malformed or unknown parameter is 400
/// `invalid_request` in problem JSON.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map(Q)
            .map_err(|e| ApiError::invalid(format!("query string: {e}")))
    }
}
