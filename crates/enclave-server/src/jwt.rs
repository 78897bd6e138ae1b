//! JWT verification (API.md §1): HS256 with a configured secret, RS256/ES256
//! with a configured public key (PEM) or JWKS file. The algorithm in a
//! token's header only selects among the *configured* keys of that
//! algorithm: `alg: none`, an unconfigured algorithm, or an HS256 token
//! "signed" with a public key find no key and are refused.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Claims Enclave reads. `exp` is required; `iss`/`aud` are checked when
/// configured.
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
}

/// The configured verification keys.
#[derive(Default)]
pub struct JwtVerifier {
    keys: Vec<KeyEntry>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
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
    #[error("ENCLAVE_JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM")]
    BadPem,
    #[error("JWKS: {0}")]
    BadJwks(String),
    #[error("the HS256 secret must be at least 32 bytes")]
    ShortSecret,
}

impl JwtVerifier {
    pub fn new(issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            keys: Vec::new(),
            issuer,
            audience,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn add_hs256(&mut self, secret: &[u8]) -> Result<(), JwtConfigError> {
        if secret.len() < 32 {
            return Err(JwtConfigError::ShortSecret);
        }
        self.keys.push(KeyEntry {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret),
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
        self.keys.push(KeyEntry {
            alg,
            kid: None,
            key,
        });
        Ok(())
    }

    /// Every RSA / P-256 key of a JWKS document.
    pub fn add_jwks(&mut self, json: &str) -> Result<(), JwtConfigError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
            self.keys.push(KeyEntry {
                alg,
                kid: jwk.common.key_id.clone(),
                key,
            });
        }
        if self.keys.is_empty() {
            return Err(JwtConfigError::BadJwks("no RSA or EC key".into()));
        }
        Ok(())
    }

    /// Verifies signature, `exp` (60 s leeway), and `iss`/`aud` when
    /// configured. The error is deliberately one kind: the client is told
    /// only that the credential is not valid.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = decode_header(token).ok()?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp"]);
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
