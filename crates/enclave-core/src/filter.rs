//! Metadata filters (API.md §5): parsed once from JSON into a typed condition
//! list, so backends render a closed set of operators and never interpolate
//! caller text into a query.
//!
//! Semantics, the same in every backend:
//! - conditions are ANDed; `{"a": {"b": 1}}` and `{"a.b": 1}` both address the
//!   nested key `a.b`;
//! - comparisons are typed: a number never equals a string, `$gt` on strings is
//!   lexicographic (so RFC 3339 dates compare as dates), on mismatched types it
//!   is false;
//! - `$ne` and `$exists: false` match documents that lack the key.

use serde_json::{Map, Value};

use crate::error::InvalidInput;

/// Most conditions one filter may hold.
pub const MAX_CONDITIONS: usize = 32;
/// Most values one `$in` may list.
pub const MAX_IN_VALUES: usize = 256;
/// Deepest key path.
pub const MAX_PATH_DEPTH: usize = 8;
/// Longest key segment, in characters.
pub const MAX_KEY_LEN: usize = 128;

/// A value a condition compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Number(f64),
    String(String),
}

impl Scalar {
    fn from_json(field: &str, v: &Value) -> Result<Self, InvalidInput> {
        match v {
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Scalar::Number)
                .ok_or_else(|| InvalidInput::new(field, "number out of range")),
            Value::String(s) => Ok(Scalar::String(s.clone())),
            Value::Null => Err(InvalidInput::new(
                field,
                "null cannot be compared; use {\"$exists\": false}",
            )),
            _ => Err(InvalidInput::new(
                field,
                "expected a string, number or boolean",
            )),
        }
    }

    /// Ordering of two values of the same kind; `None` when kinds differ.
    fn compare(&self, other: &Scalar) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
            (Scalar::Number(a), Scalar::Number(b)) => a.partial_cmp(b),
            (Scalar::String(a), Scalar::String(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// One comparison operator and its operand.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FilterOp {
    Eq(Scalar),
    Ne(Scalar),
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    In(Vec<Scalar>),
    Exists(bool),
}

/// A key path and the operator applied to the value found there.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub path: Vec<String>,
    pub op: FilterOp,
}

/// A parsed metadata filter: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataFilter {
    pub conditions: Vec<Condition>,
}

impl MetadataFilter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Parses the API's filter object. Errors name the key at fault.
    pub fn parse(value: &Value) -> Result<Self, InvalidInput> {
        let obj = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(o) => o,
            _ => {
                return Err(InvalidInput::new(
                    "metadata",
                    "filter must be a JSON object",
                ))
            }
        };
        crate::check::json("metadata", value)?;
        let mut conditions = Vec::new();
        parse_object(obj, &mut Vec::new(), &mut conditions)?;
        if conditions.len() > MAX_CONDITIONS {
            return Err(InvalidInput::new(
                "metadata",
                format!("at most {MAX_CONDITIONS} conditions"),
            ));
        }
        Ok(Self { conditions })
    }

    /// Evaluates the filter against a document's metadata. Backends that
    /// filter in SQL must agree with this function (the conformance kit checks).
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        self.conditions.iter().all(|c| c.matches(metadata))
    }
}

impl Condition {
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        let found = lookup(metadata, &self.path).and_then(|v| Scalar::from_json("", v).ok());
        let present = lookup(metadata, &self.path).is_some();
        let cmp = |s: &Scalar| found.as_ref().and_then(|f| f.compare(s));
        use std::cmp::Ordering::*;
        match &self.op {
            FilterOp::Eq(s) => cmp(s) == Some(Equal),
            FilterOp::Ne(s) => cmp(s) != Some(Equal),
            FilterOp::Gt(s) => cmp(s) == Some(Greater),
            FilterOp::Gte(s) => matches!(cmp(s), Some(Greater | Equal)),
            FilterOp::Lt(s) => cmp(s) == Some(Less),
            FilterOp::Lte(s) => matches!(cmp(s), Some(Less | Equal)),
            FilterOp::In(list) => list.iter().any(|s| cmp(s) == Some(Equal)),
            FilterOp::Exists(want) => present == *want,
        }
    }
}

fn lookup<'a>(metadata: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = metadata.get(first)?;
    for seg in rest {
        cur = cur.as_object()?.get(seg)?;
    }
    match cur {
        Value::Null => None,
        v => Some(v),
    }
}

fn check_key(field: &str, key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
        return Err(InvalidInput::new(
            field,
            format!("metadata keys must be 1-{MAX_KEY_LEN} characters"),
        ));
    }
    if key.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(InvalidInput::new(
            field,
            "metadata keys may not contain quotes, backslashes or control characters",
        ));
    }
    Ok(())
}

fn parse_object(
    obj: &Map<String, Value>,
    prefix: &mut Vec<String>,
    out: &mut Vec<Condition>,
) -> Result<(), InvalidInput> {
    for (key, value) in obj {
        let field = display_path(prefix, key);
        if key.starts_with('$') {
            return Err(InvalidInput::new(
                field,
                format!("operator {key} must be applied to a key"),
            ));
        }
        let depth_before = prefix.len();
        for seg in key.split('.') {
            check_key(&field, seg)?;
            prefix.push(seg.to_owned());
        }
        if prefix.len() > MAX_PATH_DEPTH {
            return Err(InvalidInput::new(field, "key path too deep"));
        }
        match value {
            Value::Object(inner) if inner.keys().any(|k| k.starts_with('$')) => {
                if !inner.keys().all(|k| k.starts_with('$')) {
                    return Err(InvalidInput::new(
                        field,
                        "an operator object may not mix operators and keys",
                    ));
                }
                for (op, operand) in inner {
                    out.push(Condition {
                        path: prefix.clone(),
                        op: parse_op(&field, op, operand)?,
                    });
                }
            }
            Value::Object(inner) => {
                if inner.is_empty() {
                    return Err(InvalidInput::new(field, "empty object in filter"));
                }
                parse_object(inner, prefix, out)?;
            }
            other => out.push(Condition {
                path: prefix.clone(),
                op: FilterOp::Eq(Scalar::from_json(&field, other)?),
            }),
        }
        prefix.truncate(depth_before);
    }
    Ok(())
}

fn parse_op(field: &str, op: &str, operand: &Value) -> Result<FilterOp, InvalidInput> {
    let scalar = || Scalar::from_json(field, operand);
    Ok(match op {
        "$eq" => FilterOp::Eq(scalar()?),
        "$ne" => FilterOp::Ne(scalar()?),
        "$gt" => FilterOp::Gt(scalar()?),
        "$gte" => FilterOp::Gte(scalar()?),
        "$lt" => FilterOp::Lt(scalar()?),
        "$lte" => FilterOp::Lte(scalar()?),
        "$in" => {
            let arr = operand
                .as_array()
                .ok_or_else(|| InvalidInput::new(field, "$in expects an array"))?;
            if arr.is_empty() || arr.len() > MAX_IN_VALUES {
                return Err(InvalidInput::new(
                    field,
                    format!("$in expects 1-{MAX_IN_VALUES} values"),
                ));
            }
            FilterOp::In(
                arr.iter()
                    .map(|v| Scalar::from_json(field, v))
                    .collect::<Result<_, _>>()?,
            )
        }
        "$exists" => FilterOp::Exists(
            operand
                .as_bool()
                .ok_or_else(|| InvalidInput::new(field, "$exists expects true or false"))?,
        ),
        other => {
            return Err(InvalidInput::new(
                field,
                format!(
                "unknown operator {other}; expected $eq, $ne, $gt, $gte, $lt, $lte, $in or $exists"
            ),
            ))
        }
    })
}

fn display_path(prefix: &[String], key: &str) -> String {
    let mut s = String::from("metadata");
    for p in prefix {
        s.push('.');
        s.push_str(p);
    }
    s.push('.');
    s.push_str(key);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_every_operator_and_nested_paths() {
        let f = MetadataFilter::parse(&json!({
            "year": 2025,
            "quarter": {"$in": ["Q3", "Q4"]},
            "author": {"name": "Ada"},
            "score": {"$gte": 1.5, "$lt": 3},
            "draft": {"$exists": false},
            "lang.code": {"$ne": "de"}
        }))
        .unwrap();
        assert_eq!(f.conditions.len(), 7);
        assert!(f
            .conditions
            .iter()
            .any(|c| c.path == ["author", "name"]
                && c.op == FilterOp::Eq(Scalar::String("Ada".into()))));
        assert!(f.conditions.iter().any(|c| c.path == ["lang", "code"]));
    }

    #[test]
    fn evaluation_is_typed_and_handles_missing_keys() {
        let m = meta(json!({"year": 2025, "quarter": "Q4", "author": {"name": "Ada"}, "n": null}));
        let ok = |v: Value| MetadataFilter::parse(&v).unwrap().matches(&m);
        assert!(ok(json!({"year": 2025})));
        assert!(
            !ok(json!({"year": "2025"})),
            "a string never equals a number"
        );
        assert!(ok(json!({"year": {"$gt": 2024, "$lte": 2025}})));
        assert!(
            !ok(json!({"year": {"$gt": "2024"}})),
            "mismatched types compare false"
        );
        assert!(ok(json!({"quarter": {"$in": ["Q3", "Q4"]}})));
        assert!(ok(json!({"author.name": "Ada"})));
        assert!(ok(json!({"author": {"name": {"$ne": "Bob"}}})));
        assert!(
            ok(json!({"missing": {"$ne": "x"}})),
            "$ne matches a missing key"
        );
        assert!(ok(json!({"missing": {"$exists": false}})));
        assert!(
            ok(json!({"n": {"$exists": false}})),
            "null counts as missing"
        );
        assert!(!ok(json!({"year": {"$exists": false}})));
        assert!(
            ok(json!({"quarter": {"$gte": "Q1"}})),
            "strings compare lexicographically"
        );
    }

    #[test]
    fn malformed_filters_name_the_problem() {
        let cases = [
            (json!([1, 2]), "metadata"),
            (json!({"year": {"$regex": "x"}}), "metadata.year"),
            (json!({"year": {"$in": []}}), "metadata.year"),
            (json!({"year": {"$in": "Q4"}}), "metadata.year"),
            (json!({"year": {"$exists": "yes"}}), "metadata.year"),
            (json!({"year": {"$gt": 1, "month": 2}}), "metadata.year"),
            (json!({"$or": [{"a": 1}]}), "metadata.$or"),
            (json!({"a\"b": 1}), "metadata.a\"b"),
            (json!({"year": null}), "metadata.year"),
            (json!({"year": {"$eq": [1]}}), "metadata.year"),
        ];
        for (v, field) in cases {
            let err = MetadataFilter::parse(&v).unwrap_err();
            assert_eq!(err.field, field, "{v}");
        }
    }
}
