//! A tenant's own limits (API.md §8 `limits`): overrides of its plan's
//! request rate and the quotas only a tenant has.

use serde::{Deserialize, Serialize};

/// A limit's value in its one spelling: whole numbers as integers, the
/// rest as floats (so every store reads back what was written, and an
/// audit event's hash over it verifies).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimitValue {
    Whole(u64),
    Fraction(f64),
}

impl LimitValue {
    /// The value in its one spelling (`-0.0` and `5.0` are whole).
    pub fn new(x: f64) -> Self {
        if x.fract() == 0.0 && x.abs() <= u64::MAX as f64 {
            LimitValue::Whole(x.abs() as u64)
        } else {
            LimitValue::Fraction(x)
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            LimitValue::Whole(n) => n as f64,
            LimitValue::Fraction(x) => x,
        }
    }

    /// The value if it is a whole number.
    pub fn as_whole(self) -> Option<u64> {
        match self {
            LimitValue::Whole(n) => Some(n),
            LimitValue::Fraction(_) => None,
        }
    }
}

/// Each limit is absent, `null` (given as null: no limit, as absent) or a
/// number; the object is written and read back exactly as it was given.
/// Fields in alphabetical order: serialized, they spell the same JSON
/// object as the map the API was sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Bucket capacity of the tenant's request rate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub burst: Option<Option<LimitValue>>,
    /// Tokens the tenant may embed per UTC day.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub embedding_tokens_per_day: Option<Option<LimitValue>>,
    /// Documents the tenant may hold.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub max_documents: Option<Option<LimitValue>>,
    /// Bytes the tenant may store (documents, chunks, vectors, messages).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub max_storage_bytes: Option<Option<LimitValue>>,
    /// Dollars the tenant may spend per calendar month (UTC).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub monthly_budget_usd: Option<Option<LimitValue>>,
    /// Requests per second of the tenant's bucket.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub requests_per_second: Option<Option<LimitValue>>,
}

impl TenantLimits {
    /// The limits' names, as the API spells them.
    pub const FIELDS: [&'static str; 6] = [
        "requests_per_second",
        "burst",
        "max_documents",
        "max_storage_bytes",
        "embedding_tokens_per_day",
        "monthly_budget_usd",
    ];

    fn value(v: Option<Option<LimitValue>>) -> Option<LimitValue> {
        v.flatten()
    }

    /// A quota as a whole number (a fraction is cut down).
    fn whole(v: Option<Option<LimitValue>>) -> Option<u64> {
        Self::value(v).map(|x| x.as_f64() as u64)
    }

    pub fn max_documents(&self) -> Option<u64> {
        Self::whole(self.max_documents)
    }

    pub fn max_storage_bytes(&self) -> Option<u64> {
        Self::whole(self.max_storage_bytes)
    }

    pub fn embedding_tokens_per_day(&self) -> Option<u64> {
        Self::whole(self.embedding_tokens_per_day)
    }

    pub fn monthly_budget_usd(&self) -> Option<f64> {
        Self::value(self.monthly_budget_usd).map(LimitValue::as_f64)
    }

    /// The tenant's own rate, when it has one above zero.
    pub fn requests_per_second(&self) -> Option<f64> {
        Self::value(self.requests_per_second)
            .map(LimitValue::as_f64)
            .filter(|r| *r > 0.0)
    }

    /// The tenant's own bucket capacity, when it is a whole number above
    /// zero.
    pub fn burst(&self) -> Option<u64> {
        Self::value(self.burst)
            .and_then(LimitValue::as_whole)
            .filter(|b| *b > 0)
    }

    /// The object to store (and to show).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("numbers and nulls always serialize")
    }

    /// A stored object (whatever it holds beyond the known limits is not a
    /// limit and is dropped).
    pub fn from_json(v: serde_json::Value) -> Self {
        serde_json::from_value(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn limits_read_and_write_the_same_json_object_including_nulls() {
        for v in [
            json!({}),
            json!({"burst": 5, "max_documents": null}),
            json!({"monthly_budget_usd": 0.5, "requests_per_second": 2.25, "max_storage_bytes": 9007199254740992u64}),
        ] {
            let limits: TenantLimits = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&limits).unwrap(), v);
            assert_eq!(serde_json::to_string(&limits).unwrap(), v.to_string());
        }
    }

    #[test]
    fn accessors_read_as_the_quotas_and_rates_do() {
        let l: TenantLimits = serde_json::from_value(
            json!({"max_documents": 2.9, "burst": 2.5, "requests_per_second": 0, "monthly_budget_usd": 3}),
        )
        .unwrap();
        assert_eq!(l.max_documents(), Some(2));
        assert_eq!(l.burst(), None, "a fractional burst is no burst");
        assert_eq!(l.requests_per_second(), None);
        assert_eq!(l.monthly_budget_usd(), Some(3.0));
        assert_eq!(l.max_storage_bytes(), None);
        assert_eq!(LimitValue::new(-0.0), LimitValue::Whole(0));
        assert_eq!(LimitValue::new(1.5), LimitValue::Fraction(1.5));
    }
}
