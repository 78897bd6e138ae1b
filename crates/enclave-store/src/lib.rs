//! Enclave's storage seam.
//!
//! A backend hands out tenant-scoped handles ([`Store::tenant`]); every data
//! method lives on [`TenantStore`] and takes no tenant argument, so no call
//! site can name the wrong tenant. Backends return *candidates* (chunk keys
//! and scores); the library fuses and ranks once, above this layer.
//!
//! - [`control`]: the control plane's seam (tenant directory, API keys,
//!   hash-chained audit log, usage counters, ingestion jobs, budget alerts);
//! - [`sqlite`]: the embedded default (one shared file, or one file per tenant);
//! - [`vector`]: exact SIMD similarity search shared by embedded backends.
//!
//! Every control backend runs [`testkit::control`] (feature `testkit`), and
//! every backend runs the library's conformance suite
//! (`crates/enclave/tests/conformance.rs` and `isolation.rs`), one source for
//! all backends.

pub mod control;
mod model;
pub mod sqlite;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod vector;

pub use model::*;
