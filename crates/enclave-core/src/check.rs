//! Checks every store can rely on, whatever it is: text without NUL
//! characters (PostgreSQL's `text` and `jsonb` cannot hold them, SQLite
//! would store what PostgreSQL refuses, so both refuse them here), and
//! timestamps in years 1–9999 (PostgreSQL's `timestamptz` range and the
//! RFC 3339 text SQLite stores, which sorts by time only with four-digit
//! years).

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use crate::error::InvalidInput;

/// Refuses text holding a NUL character.
pub fn text(field: &str, s: &str) -> Result<(), InvalidInput> {
    if s.contains('\0') {
        return Err(InvalidInput::new(
            field,
            "must not contain NUL (\\u0000) characters",
        ));
    }
    Ok(())
}

/// Refuses a JSON value with a NUL character in any string or object key.
pub fn json(field: &str, v: &Value) -> Result<(), InvalidInput> {
    let bad = |s: &str| s.contains('\0');
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if bad(s) => return text(field, s),
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => {
                for (k, v) in m {
                    text(field, k)?;
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a timestamp outside years 1–9999.
pub fn timestamp(field: &str, t: &DateTime<Utc>) -> Result<(), InvalidInput> {
    if !(1..=9999).contains(&t.year()) {
        return Err(InvalidInput::new(
            field,
            "must be a timestamp in years 1-9999",
        ));
    }
    Ok(())
}

/// [`timestamp`] for an optional one.
pub fn maybe_timestamp(field: &str, t: Option<&DateTime<Utc>>) -> Result<(), InvalidInput> {
    t.map_or(Ok(()), |t| timestamp(field, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_anywhere_in_text_or_json_is_refused_with_the_field() {
        assert!(text("content", "fine\ttext").is_ok());
        assert_eq!(text("content", "a\0b").unwrap_err().field, "content");
        assert!(json("metadata", &json!({"a": [1, "x", {"b": null}]})).is_ok());
        for bad in [
            json!({"a\u{0}": 1}),
            json!({"a": {"b": ["ok", "n\u{0}"]}}),
            json!("\u{0}"),
        ] {
            assert_eq!(json("metadata", &bad).unwrap_err().field, "metadata");
        }
    }

    #[test]
    fn timestamps_are_kept_to_years_1_to_9999() {
        let ok: DateTime<Utc> = "0001-01-01T00:00:00Z".parse().unwrap();
        assert!(timestamp("t", &ok).is_ok());
        let ok: DateTime<Utc> = "9999-12-31T23:59:59Z".parse().unwrap();
        assert!(timestamp("t", &ok).is_ok());
        let far = DateTime::<Utc>::MIN_UTC;
        assert_eq!(
            timestamp("created_after", &far).unwrap_err().field,
            "created_after"
        );
        assert!(timestamp("t", &DateTime::<Utc>::MAX_UTC).is_err());
    }
}
