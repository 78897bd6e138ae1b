//! The audit log: events hash-chained per scope (a tenant, or the platform),
//! so an edited, removed or reordered event breaks [`verify_chain`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An event to append to an audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// A stored audit event. `scope` is the tenant id, or [`PLATFORM_SCOPE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub scope: String,
    pub seq: i64,
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
    #[serde(with = "hex_opt")]
    pub prev_hash: Option<Vec<u8>>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// The audit scope of platform (admin plane) events. Tenant ids start with a
/// letter or digit, so no tenant can own this scope.
pub const PLATFORM_SCOPE: &str = "_platform";

/// The hash of an audit event: SHA-256 over the previous hash and a canonical
/// line of the event's fields (timestamps at microsecond precision, detail as
/// key-sorted JSON).
pub fn audit_hash(
    scope: &str,
    seq: i64,
    event_id: &str,
    ev: &NewAuditEvent,
    prev: Option<&[u8]>,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or(&[0u8; 32]));
    let line = serde_json::json!([
        scope,
        seq,
        event_id,
        ev.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        ev.actor,
        ev.action,
        ev.target,
        ev.detail,
    ]);
    h.update(canonical_json(&line).as_bytes());
    h.finalize().to_vec()
}

/// JSON text with every object's keys in byte order, whatever order the
/// `Map` keeps (serde_json's `preserve_order` feature may be on in some
/// builds) or the store returns (PostgreSQL's jsonb reorders keys).
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Truncates a timestamp to what every backend stores (microseconds), so a
/// hash computed before the write matches the stored event.
pub fn audit_time(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Checks a scope's events, oldest first: consecutive sequence numbers, each
/// `prev_hash` equal to the previous event's hash, each hash recomputed.
/// Returns the first broken event's sequence number.
pub fn verify_chain(events: &[AuditEvent]) -> Result<u64, i64> {
    let mut prev: Option<&AuditEvent> = None;
    for e in events {
        let ok_link = match prev {
            None => e.prev_hash.is_none() && e.seq == 1,
            Some(p) => e.seq == p.seq + 1 && e.prev_hash.as_deref() == Some(&p.hash[..]),
        };
        let ev = NewAuditEvent {
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
            at: e.at,
        };
        let expect = audit_hash(&e.scope, e.seq, &e.event_id, &ev, e.prev_hash.as_deref());
        if !ok_link || expect != e.hash {
            return Err(e.seq);
        }
        prev = Some(e);
    }
    Ok(events.len() as u64)
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let ev = NewAuditEvent {
                actor: "key:abc".into(),
                action: "document.delete".into(),
                target: Some(format!("doc-{i}")),
                detail: serde_json::json!({"b": 1, "a": [i]}),
                at: audit_time(Utc::now()),
            };
            let prev = out.last().map(|e| e.hash.clone());
            let seq = i as i64 + 1;
            let hash = audit_hash("acme", seq, &format!("e{i}"), &ev, prev.as_deref());
            out.push(AuditEvent {
                scope: "acme".into(),
                seq,
                event_id: format!("e{i}"),
                at: ev.at,
                actor: ev.actor,
                action: ev.action,
                target: ev.target,
                detail: ev.detail,
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn the_hash_does_not_depend_on_the_order_of_object_keys() {
        let ev = |detail: Value| NewAuditEvent {
            actor: "a".into(),
            action: "x".into(),
            target: None,
            detail,
            at: audit_time(Utc::now()),
        };
        let at = audit_time(Utc::now());
        let (mut a, mut b) = (ev(Value::Null), ev(Value::Null));
        a.at = at;
        b.at = at;
        // Built in two insertion orders (distinct under preserve_order).
        let mut m1 = Map::new();
        m1.insert("role".into(), Value::from("member"));
        m1.insert("needed".into(), Value::from("admin"));
        m1.insert(
            "path".into(),
            serde_json::json!({"z": 1, "a": [1, {"y": 2, "b": 3}]}),
        );
        let mut m2 = Map::new();
        m2.insert(
            "path".into(),
            serde_json::json!({"a": [1, {"b": 3, "y": 2}], "z": 1}),
        );
        m2.insert("needed".into(), Value::from("admin"));
        m2.insert("role".into(), Value::from("member"));
        a.detail = Value::Object(m1);
        b.detail = Value::Object(m2);
        assert_eq!(
            audit_hash("t", 1, "e", &a, None),
            audit_hash("t", 1, "e", &b, None)
        );
        assert_eq!(
            canonical_json(&a.detail),
            r#"{"needed":"admin","path":{"a":[1,{"b":3,"y":2}],"z":1},"role":"member"}"#
        );
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_removal_or_reorder_is_found() {
        let good = chain(5);
        assert_eq!(verify_chain(&good), Ok(5));

        let mut edited = good.clone();
        edited[2].target = Some("something else".into());
        assert_eq!(verify_chain(&edited), Err(3));

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed), Err(3));

        let mut swapped = good.clone();
        swapped.swap(3, 4);
        assert_eq!(verify_chain(&swapped), Err(5));

        let mut rehashed = good.clone();
        rehashed[4].detail = serde_json::json!({"forged": true});
        // Recomputing the edited event's own hash is not enough: it no longer
        // matches what the (unchanged) chain committed to... unless it is the
        // last event; then the edit is only caught against an anchored head.
        let ev = NewAuditEvent {
            actor: rehashed[4].actor.clone(),
            action: rehashed[4].action.clone(),
            target: rehashed[4].target.clone(),
            detail: rehashed[4].detail.clone(),
            at: rehashed[4].at,
        };
        rehashed[4].hash = audit_hash(
            "acme",
            5,
            &rehashed[4].event_id,
            &ev,
            rehashed[4].prev_hash.as_deref(),
        );
        assert_eq!(verify_chain(&rehashed), Ok(5));
        assert_ne!(
            rehashed[4].hash, good[4].hash,
            "the head hash changes, which is what an anchored head detects"
        );
    }
}
