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
//! with role `platform_admin`; a valid tenant credential there is 403.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use chrono::Utc;
use enclave::Tenant;
use enclave_core::{Role, TenantId, TenantStatus};
use enclave_store::control::{TenantControl, TenantRecord};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

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

/// Authenticates a tenant credential: (tenant id, role, actor).
async fn authenticate(state: &AppState, cred: &str) -> Result<(TenantId, Role, String), ApiError> {
    if keys::looks_like_key(cred) {
        let Some((key_id, secret)) = keys::parse(cred) else {
            return Err(ApiError::Unauthenticated(BAD_CREDENTIAL));
        };
        let Some(key) = state.control().find_key(key_id).await? else {
            state
                .audit_refusal(
                    None,
                    "anonymous",
                    "auth.failed",
                    json!({"reason": "unknown key"}),
                )
                .await;
            return Err(ApiError::Unauthenticated(BAD_CREDENTIAL));
        };
        let actor = format!("key:{}", key.key_id);
        let reason = if !keys::verify(&key.salt, &key.secret_hash, secret) {
            Some("wrong secret")
        } else if key.revoked_at.is_some() {
            Some("revoked key")
        } else if key.expires_at.is_some_and(|e| e <= Utc::now()) {
            Some("expired key")
        } else {
            None
        };
        if let Some(reason) = reason {
            state
                .audit_refusal(
                    Some(&key.tenant_id),
                    &actor,
                    "auth.failed",
                    json!({"reason": reason}),
                )
                .await;
            return Err(ApiError::Unauthenticated(BAD_CREDENTIAL));
        }
        state.touch_key(&key.key_id).await;
        return Ok((key.tenant_id, key.role, actor));
    }
    let claims = state
        .inner
        .jwt
        .verify(cred)
        .ok_or(ApiError::Unauthenticated(BAD_CREDENTIAL))?;
    if claims.role == "platform_admin" {
        return Err(ApiError::forbidden(
            "a platform admin credential has no tenant; use /admin/v1",
        ));
    }
    let tenant = claims
        .tenant_id
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or(ApiError::Unauthenticated(BAD_CREDENTIAL))?;
    let role = claims
        .role
        .parse::<Role>()
        .map_err(|_| ApiError::Unauthenticated(BAD_CREDENTIAL))?;
    Ok((tenant, role, format!("user:{}", claims.sub)))
}

/// Refuses, with an audit event, a hint that names another tenant.
async fn check_hints(state: &AppState, parts: &Parts, ctx: &TenantCtx) -> Result<(), ApiError> {
    let mismatch = |what: &str| json!({"hint": what});
    if let Some(h) = parts.headers.get("x-tenant-id") {
        if h.as_bytes() != ctx.tenant_id().as_str().as_bytes() {
            state
                .audit_refusal(
                    Some(ctx.tenant_id()),
                    &ctx.actor,
                    "tenant.mismatch",
                    mismatch("X-Tenant-ID"),
                )
                .await;
            return Err(ApiError::TenantMismatch);
        }
    }
    if let Some(base) = &state.options().base_domain {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.to_ascii_lowercase();
        if let Some(sub) = host.strip_suffix(&format!(".{}", base.to_ascii_lowercase())) {
            if sub != ctx.tenant.slug.as_str() {
                state
                    .audit_refusal(
                        Some(ctx.tenant_id()),
                        &ctx.actor,
                        "tenant.mismatch",
                        mismatch("Host"),
                    )
                    .await;
                return Err(ApiError::TenantMismatch);
            }
        }
    }
    if let Some(q) = parts.uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|_| ApiError::invalid("the query string is malformed"))?;
        for (k, v) in pairs {
            if (k == "tenant_id" || k == "owner_id") && v != ctx.tenant_id().as_str() {
                state
                    .audit_refusal(
                        Some(ctx.tenant_id()),
                        &ctx.actor,
                        "tenant.mismatch",
                        mismatch(&k),
                    )
                    .await;
                return Err(ApiError::TenantMismatch);
            }
        }
    }
    Ok(())
}

impl<R: Need> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cred = bearer(&parts.headers)?;
        let (tenant_id, role, actor) = authenticate(state, cred).await?;
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
        check_hints(state, parts, &ctx).await?;
        if ctx.tenant.status == TenantStatus::Suspended {
            return Err(ApiError::TenantSuspended);
        }
        // Every authenticated request of the tenant counts, refused ones too.
        let (tenant_rate, key_rate) = state
            .options()
            .plans
            .rates(&ctx.tenant.plan, &ctx.tenant.limits);
        let decision = state
            .inner
            .limiter
            .check(ctx.tenant_id(), &ctx.actor, tenant_rate, key_rate)
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
            tenant: state.memory().tenant(ctx.tenant_id()),
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
        let cred = bearer(&parts.headers)?;
        let token = &state.options().admin_token;
        if !token.is_empty() && keys::token_eq(cred, token) {
            return Ok(PlatformAdmin {
                actor: "platform".into(),
            });
        }
        if !keys::looks_like_key(cred) {
            if let Some(claims) = state.inner.jwt.verify(cred) {
                if claims.role == "platform_admin" {
                    return Ok(PlatformAdmin {
                        actor: format!("admin:{}", claims.sub),
                    });
                }
                return Err(ApiError::forbidden(
                    "tenant credentials cannot use the admin plane",
                ));
            }
            return Err(ApiError::Unauthenticated(BAD_CREDENTIAL));
        }
        // A valid tenant key is forbidden here; anything else is unknown.
        match authenticate(state, cred).await {
            Ok((tenant, _, actor)) => {
                state
                    .audit_refusal(
                        Some(&tenant),
                        &actor,
                        "admin.denied",
                        json!({"path": parts.uri.path()}),
                    )
                    .await;
                Err(ApiError::forbidden(
                    "tenant credentials cannot use the admin plane",
                ))
            }
            Err(e) => Err(e),
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
    if let (Some(obj), Some(ctx)) = (value.as_object_mut(), ctx) {
        for field in ["tenant_id", "owner_id"] {
            if let Some(v) = obj.remove(field) {
                if v.as_str() != Some(ctx.tenant_id().as_str()) {
                    state
                        .audit_refusal(
                            Some(ctx.tenant_id()),
                            &ctx.actor,
                            "tenant.mismatch",
                            json!({"hint": field}),
                        )
                        .await;
                    return Err(ApiError::TenantMismatch);
                }
            }
        }
    }
    let value = serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("the body does not match the schema: {e}")))?;
    Ok((value, sha256))
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
