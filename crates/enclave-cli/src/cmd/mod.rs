//! One module per family of CLI commands; `main` only parses and dispatches.

pub(crate) mod documents;
pub(crate) mod postgres;
