//! Validation errors raised by the domain types. They name the offending field
//! so that every layer above can turn them into a clear message.

use std::fmt;

/// Input that breaks a rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidInput {
    /// The field (or parameter) at fault, e.g. `tenant_id`, `metadata.year`.
    pub field: String,
    /// What is wrong, in words a client developer can act on.
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
