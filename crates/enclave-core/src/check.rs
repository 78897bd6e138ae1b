//! Checks every store can rely on, whatever it is: text without NUL
//! characters (PostgreSQL's `text` and `jsonb` cannot hold them, SQLite
//! would store what PostgreSQL refuses, so both refuse them here), and
//! timestamps in years 1–9999 (PostgreSQL's `timestamptz` range and the
//! RFC 3339 text SQLite stores, which sorts by time only with four-digit
//! years).

use chrono::{DateTime, Utc};
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

/// Longest name of an API key or a tenant, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// Refuses a name (of a document, key or tenant) that is only white space,
/// longer than `max` characters, or holds a control character.
pub fn name(field: &str, s: &str, max: usize) -> Result<(), InvalidInput> {
    if s.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The first and last instants both stores hold (years 1–9999 in UTC).
pub fn timestamp_range() -> (DateTime<Utc>, DateTime<Utc>) {
    let first = chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 999_999_999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (first, last)
}

/// Keeps a timestamp to years 1–9999 as written: one within a day outside
/// them in UTC (`0001-01-01T00:00:00+05:00`, whose UTC year is 0 — a UTC
/// offset is less than a day) is moved to the range's nearest end; one
/// further out is refused.
pub fn timestamp(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidInput> {
    let (first, last) = timestamp_range();
    let day = chrono::Duration::days(1);
    if t >= first && t <= last {
        Ok(t)
    } else if t < first && t > first - day {
        Ok(first)
    } else if t > last && t < last + day {
        Ok(last)
    } else {
        Err(InvalidInput::new(
            field,
            "must be a timestamp in years 1-9999",
        ))
    }
}

/// [`timestamp`] for an optional one.
pub fn maybe_timestamp(
    field: &str,
    t: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, InvalidInput> {
    t.map(|t| timestamp(field, t)).transpose()
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
    fn names_are_non_blank_bounded_and_free_of_control_characters() {
        assert!(name("name", "Quarterly report", 200).is_ok());
        for bad in ["", " \u{3000} ", "a\u{9b}b", "tab\there", &"x".repeat(201)] {
            assert_eq!(name("name", bad, 200).unwrap_err().field, "name", "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_kept_to_years_1_to_9999_as_written() {
        let ok: DateTime<Utc> = "0001-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(timestamp("t", ok).unwrap(), ok);
        let ok: DateTime<Utc> = "9999-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(timestamp("t", ok).unwrap(), ok);
        let (first, last) = timestamp_range();
        let early: DateTime<Utc> = "0001-01-01T00:00:00+23:59".parse().unwrap();
        assert_eq!(timestamp("t", early).unwrap(), first);
        let late: DateTime<Utc> = "9999-12-31T23:00:00-23:59".parse().unwrap();
        assert_eq!(timestamp("t", late).unwrap(), last);
        let far = DateTime::<Utc>::MIN_UTC;
        assert_eq!(
            timestamp("created_after", far).unwrap_err().field,
            "created_after"
        );
        assert!(timestamp("t", DateTime::<Utc>::MAX_UTC).is_err());
        assert!(timestamp("t", first - chrono::Duration::days(2)).is_err());
    }
}
