//! API keys: `ek_<public-id>_<secret>`. The public id finds the record; the
//! 256-bit random secret is stored only as SHA-256(salt ‖ secret) and
//! compared in constant time. A fast hash is right here: the secret is
//! high-entropy, so there is nothing for a slow password hash to protect.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ek_";
const ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;

/// A freshly minted key: the full string (shown once) and what is stored.
pub struct MintedKey {
    pub key: String,
    pub key_id: String,
    pub salt: Vec<u8>,
    pub secret_hash: Vec<u8>,
}

pub fn mint() -> MintedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut salt);
    let key_id = hex::encode(id);
    let secret = hex::encode(secret);
    MintedKey {
        key: format!("{PREFIX}{key_id}_{secret}"),
        secret_hash: hash(&salt, &secret),
        key_id,
        salt: salt.to_vec(),
    }
}

fn hash(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// Whether a bearer credential has the shape of an API key (then it is
/// never tried as a JWT).
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// Splits `ek_<id>_<secret>` into (id, secret), checking lengths and hex.
pub fn parse(credential: &str) -> Option<(&str, &str)> {
    let rest = credential.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_ok = |s: &str, n: usize| {
        s.len() == n * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex_ok(id, ID_BYTES) && hex_ok(secret, SECRET_BYTES)).then_some((id, secret))
}

/// Constant-time check of a presented secret against the stored hash.
pub fn verify(salt: &[u8], stored_hash: &[u8], secret: &str) -> bool {
    hash(salt, secret).ct_eq(stored_hash).into()
}

/// Constant-time equality for the platform admin token.
pub fn token_eq(a: &str, b: &str) -> bool {
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.ct_eq(&hb).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_parses_and_verifies_and_a_changed_secret_does_not() {
        let k = mint();
        let (id, secret) = parse(&k.key).expect("parses");
        assert_eq!(id, k.key_id);
        assert!(verify(&k.salt, &k.secret_hash, secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if &wrong[0..1] == "a" { "b" } else { "a" });
        assert!(!verify(&k.salt, &k.secret_hash, &wrong));
        assert!(!k.key.contains(&hex::encode(&k.secret_hash)));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let k = mint();
        for bad in [
            "ek_".to_string(),
            "ek_abc_def".into(),
            k.key.to_uppercase(),
            format!("{}x", k.key),
            k.key.replacen('_', "-", 2),
            k.key.trim_start_matches("ek_").to_string(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }
}
