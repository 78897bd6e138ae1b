//! Deserializers for values that arrive as text from the environment.

use std::collections::HashMap;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::limits::{PlanLimits, Plans};

/// A scalar as it was written: the environment layer reads `12345` as a
/// number and `true` as a boolean, but a secret is text either way.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Unsigned(n) => n.to_string(),
            Scalar::Signed(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

pub(super) fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?
        .map(Scalar::into_text)
        .filter(|s| !s.is_empty())
        .map(SecretString::from))
}

pub(super) fn plans<'de, D: Deserializer<'de>>(d: D) -> Result<Plans, D::Error> {
    Plans::with(HashMap::<String, PlanLimits>::deserialize(d)?).map_err(serde::de::Error::custom)
}
