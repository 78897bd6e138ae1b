//! Validated identifiers. Each type can only be built through its parser, so a
//! value of the type is proof that the string obeys the rules in API.md §1.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::InvalidInput;

/// Longest tenant id or origin, in bytes (API.md §1).
pub const MAX_NAME_ID_LEN: usize = 255;

fn check_name_id(kind: &'static str, s: &str) -> Result<(), InvalidInput> {
    if s.is_empty() {
        return Err(InvalidInput::new(kind, "must not be empty"));
    }
    if s.len() > MAX_NAME_ID_LEN {
        return Err(InvalidInput::new(
            kind,
            format!("must be at most {MAX_NAME_ID_LEN} characters"),
        ));
    }
    let bytes = s.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(InvalidInput::new(kind, "must start with a letter or digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(InvalidInput::new(
            kind,
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates; the only way to build one.
            pub fn parse(s: &str) -> Result<Self, InvalidInput> {
                check_name_id($kind, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// The isolation boundary. Comes only from a credential (or, in the
    /// library and CLI, from the operator who opened the handle).
    TenantId,
    "tenant_id"
);
name_id!(
    /// Sub-scope inside a tenant (a user, thread, project…). A filter, never a
    /// security boundary.
    Origin,
    "origin"
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// Parses the canonical hyphenated form; anything else is refused.
            pub fn parse(s: &str) -> Result<Self, InvalidInput> {
                if s.len() != 36 {
                    return Err(InvalidInput::new($kind, "must be a UUID"));
                }
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| InvalidInput::new($kind, "must be a UUID"))
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }
        impl FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.hyphenated())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// A conversation inside one tenant (API.md §6): the same id in two
    /// tenants is two sessions.
    SessionId,
    "session_id"
);

uuid_id!(
    /// A message of a conversation.
    MessageId,
    "message_id"
);
uuid_id!(
    /// A document inside one tenant.
    DocumentId,
    "document_id"
);
uuid_id!(
    /// A chunk of a document.
    ChunkId,
    "chunk_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_id_rules_follow_the_api_contract() {
        for ok in [
            "a",
            "acme",
            "Acme-42",
            "a.b_c-d",
            "9lives",
            &"x".repeat(255),
        ] {
            assert!(TenantId::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "-acme",
            ".acme",
            "_a",
            "a b",
            "a/b",
            "ä",
            "a;drop",
            &"x".repeat(256),
        ] {
            let err = TenantId::parse(bad).unwrap_err();
            assert_eq!(err.field, "tenant_id", "{bad}");
        }
        assert_eq!(Origin::parse("").unwrap_err().field, "origin");
    }

    #[test]
    fn document_ids_roundtrip_and_refuse_garbage() {
        let id = DocumentId::new();
        assert_eq!(DocumentId::parse(&id.to_string()).unwrap(), id);
        for bad in [
            "",
            "123",
            "not-a-uuid",
            "0190c8a2-aaaa-7bbb-8ccc-dddddddddddd'--",
        ] {
            assert!(DocumentId::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        let back: DocumentId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<TenantId>("\"../etc\"").is_err());
    }
}
