//! The benchmark commands (`enclave bench`, `bench-http`, `bench-fairness`,
//! `bench-abuse`; docs/BENCHMARKS.md): commands that print figures, kept
//! apart from the product commands. `common` holds what they share.

pub mod abuse;
mod common;
pub mod corpus;
pub mod fair;
pub mod http;
mod postgres;
mod text;
mod victim;

pub(crate) use common::percentile;
