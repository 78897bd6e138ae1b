//! JWT verification (API.md §1): HS256 with a configured secret, RS256/ES256
//! with a configured public key (PEM) or JWKS file. The algorithm in a
//! token's header only selects among the *configured* keys of that
//! algorithm: `alg: none`, an unconfigured algorithm, or an HS256 token
//! "signed" with a public key find no key and are refused. Tenant users'
//! tokens and `platform_admin` tokens are signed by different keys
//! (`ENCLAVE_JWT_*` and `ENCLAVE_JWT_ADMIN_*`), each with its own issuer and
//! audience; a key given for both is refused at start.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Claims Enclave reads. `exp` is required; `nbf` is checked when present,
/// `iss`/`aud` when configured.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub role: String,
    pub exp: i64,
}

struct KeyEntry {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
    /// SHA-256 of the key material as configured: the same key may not
    /// serve both planes.
    fingerprint: [u8; 32],
}

fn fingerprint(material: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(material).into()
}

/// The keys of one plane and the `iss`/`aud` its tokens must carry.
#[derive(Default)]
pub struct JwtKeys {
    keys: Vec<KeyEntry>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field(
                "algorithms",
                &self.keys.iter().map(|k| k.alg).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("neither an RSA nor an EC public key in PEM")]
    BadPem,
    #[error("JWKS: {0}")]
    BadJwks(String),
    #[error("the HS256 secret must be at least 32 bytes")]
    ShortSecret,
    #[error(
        "a key configured for platform_admin tokens is also a tenant key: the admin plane needs keys of its own"
    )]
    SharedKey,
}

impl JwtKeys {
    pub fn new(issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            keys: Vec::new(),
            issuer,
            audience,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn add_hs256(&mut self, secret: &[u8]) -> Result<(), JwtConfigError> {
        if secret.len() < 32 {
            return Err(JwtConfigError::ShortSecret);
        }
        self.keys.push(KeyEntry {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret),
            fingerprint: fingerprint(secret),
        });
        Ok(())
    }

    /// An RSA (RS256) or EC P-256 (ES256) public key in PEM.
    pub fn add_public_pem(&mut self, pem: &[u8]) -> Result<(), JwtConfigError> {
        let (alg, key) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, k)
        } else {
            return Err(JwtConfigError::BadPem);
        };
        // The base64 body, so line endings and labels do not disguise a key.
        let body: Vec<u8> = String::from_utf8_lossy(pem)
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.trim().bytes().collect::<Vec<_>>())
            .collect();
        self.keys.push(KeyEntry {
            alg,
            kid: None,
            key,
            fingerprint: fingerprint(&body),
        });
        Ok(())
    }

    /// Every RSA / P-256 key of a JWKS document.
    pub fn add_jwks(&mut self, json: &str) -> Result<(), JwtConfigError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
        let before = self.keys.len();
        for jwk in &set.keys {
            let (alg, material) = match &jwk.algorithm {
                AlgorithmParameters::RSA(p) => (Algorithm::RS256, format!("{}.{}", p.n, p.e)),
                AlgorithmParameters::EllipticCurve(p) => {
                    (Algorithm::ES256, format!("{}.{}", p.x, p.y))
                }
                _ => continue,
            };
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
            self.keys.push(KeyEntry {
                alg,
                kid: jwk.common.key_id.clone(),
                key,
                fingerprint: fingerprint(material.as_bytes()),
            });
        }
        if self.keys.len() == before {
            return Err(JwtConfigError::BadJwks("no RSA or EC key".into()));
        }
        Ok(())
    }

    /// Verifies signature, `exp` and `nbf` (60 s leeway), and `iss`/`aud`
    /// when configured.
    fn verify(&self, token: &str) -> Option<Claims> {
        if self.keys.is_empty() {
            return None;
        }
        let header = decode_header(token).ok()?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        self.keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .find_map(|k| decode::<Claims>(token, &k.key, &validation).ok())
            .map(|d| d.claims)
    }
}

/// A token and the plane whose key signed it.
#[derive(Debug, Clone)]
pub enum Verified {
    /// Signed by a tenant-plane key: a tenant user (never `platform_admin`).
    Tenant(Claims),
    /// Signed by an admin-plane key with role `platform_admin`.
    Admin(Claims),
}

/// The configured verification keys: the tenant plane's (whose tokens
/// name a tenant and a tenant role) and the admin plane's (whose tokens
/// carry role `platform_admin`). No key serves both, so an identity
/// provider trusted to sign in tenant users cannot mint platform admins.
#[derive(Debug, Default)]
pub struct JwtVerifier {
    tenant: JwtKeys,
    admin: JwtKeys,
}

impl JwtVerifier {
    pub fn new(tenant: JwtKeys, admin: JwtKeys) -> Result<Self, JwtConfigError> {
        if tenant
            .keys
            .iter()
            .any(|t| admin.keys.iter().any(|a| a.fingerprint == t.fingerprint))
        {
            return Err(JwtConfigError::SharedKey);
        }
        Ok(Self { tenant, admin })
    }

    pub fn is_enabled(&self) -> bool {
        !self.tenant.is_empty() || !self.admin.is_empty()
    }

    /// The error is deliberately one kind: the client is told only that the
    /// credential is not valid. A tenant-plane token claiming
    /// `platform_admin`, or an admin-plane token claiming anything else,
    /// is not valid.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        if let Some(c) = self.admin.verify(token) {
            return (c.role == PLATFORM_ADMIN).then_some(Verified::Admin(c));
        }
        self.tenant
            .verify(token)
            .filter(|c| c.role != PLATFORM_ADMIN)
            .map(Verified::Tenant)
    }
}

impl JwtVerifier {
    /// Both planes' keys as the settings name them (`jwt_*` for tenant
    /// users, `jwt_admin_*` for platform admins); key files are read here.
    pub fn from_settings(s: &crate::Settings) -> anyhow::Result<Self> {
        let tenant = plane_keys(
            "jwt_",
            &s.jwt_issuer,
            &s.jwt_audience,
            &s.jwt_secret,
            &s.jwt_public_key,
            &s.jwt_jwks,
        )?;
        let admin = plane_keys(
            "jwt_admin_",
            &s.jwt_admin_issuer,
            &s.jwt_admin_audience,
            &s.jwt_admin_secret,
            &s.jwt_admin_public_key,
            &s.jwt_admin_jwks,
        )?;
        Ok(Self::new(tenant, admin)?)
    }
}

/// One plane's keys (tenant users, or platform admins); `plane` prefixes
/// the setting named in an error.
fn plane_keys(
    plane: &str,
    issuer: &Option<String>,
    audience: &Option<String>,
    secret: &Option<secrecy::SecretString>,
    public_key: &Option<std::path::PathBuf>,
    jwks: &Option<std::path::PathBuf>,
) -> anyhow::Result<JwtKeys> {
    use anyhow::Context;
    use secrecy::ExposeSecret;
    let mut keys = JwtKeys::new(issuer.clone(), audience.clone());
    if let Some(secret) = secret {
        keys.add_hs256(secret.expose_secret().as_bytes())
            .with_context(|| format!("{plane}secret"))?;
    }
    if let Some(path) = public_key {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        keys.add_public_pem(&pem)
            .with_context(|| format!("{plane}public_key"))?;
    }
    if let Some(path) = jwks {
        let json =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.add_jwks(&json)
            .with_context(|| format!("{plane}jwks"))?;
    }
    Ok(keys)
}

/// The role claim of an admin-plane token.
pub const PLATFORM_ADMIN: &str = "platform_admin";

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const TENANT: &[u8] = b"tenant-plane-secret-of-at-least-32-bytes";
    const ADMIN: &[u8] = b"admin-plane-secret-of-at-least-32-bytes!";

    fn keys(secret: &[u8]) -> JwtKeys {
        let mut k = JwtKeys::new(None, None);
        k.add_hs256(secret).unwrap();
        k
    }

    fn token(secret: &[u8], role: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + 600;
        let claims = serde_json::json!({"sub": "u", "tenant_id": "acme", "role": role, "exp": exp});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn one_key_for_both_planes_is_refused() {
        assert!(matches!(
            JwtVerifier::new(keys(TENANT), keys(TENANT)),
            Err(JwtConfigError::SharedKey)
        ));
        assert!(JwtVerifier::new(keys(TENANT), keys(ADMIN)).is_ok());
    }

    #[test]
    fn each_plane_signs_only_its_own_roles() {
        let v = JwtVerifier::new(keys(TENANT), keys(ADMIN)).unwrap();
        assert!(matches!(
            v.verify(&token(TENANT, "owner")),
            Some(Verified::Tenant(_))
        ));
        assert!(v.verify(&token(TENANT, PLATFORM_ADMIN)).is_none());
        assert!(matches!(
            v.verify(&token(ADMIN, PLATFORM_ADMIN)),
            Some(Verified::Admin(_))
        ));
        assert!(v.verify(&token(ADMIN, "owner")).is_none());
        // Without admin keys nobody is a platform admin by JWT.
        let tenant_only = JwtVerifier::new(keys(TENANT), JwtKeys::default()).unwrap();
        assert!(tenant_only.verify(&token(TENANT, PLATFORM_ADMIN)).is_none());
        assert!(tenant_only.verify(&token(ADMIN, PLATFORM_ADMIN)).is_none());
    }
}
