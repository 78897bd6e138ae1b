//! The server's application layer: what a request or a background task
//! does once the credential is checked, over the library's tenant handle
//! and the control seam. Routes (HTTP only) and `crate::background` call
//! these; a service never names a route or an axum extractor.
//!
//! - [`ingest`]: a document body → the library's document, added within
//!   quotas and metered; job submission;
//! - [`quota`]: every quota and the monthly budget, in one place;
//! - [`keys`]: minting API keys (audited between mint and store);
//! - [`tenants`]: the directory as the platform plane changes it (limits,
//!   placement);
//! - [`purge`]: verified purge;
//! - [`audit`]: appending (fail closed) and verifying the hash chains.

pub mod audit;
pub mod ingest;
pub mod keys;
pub mod purge;
pub mod quota;
pub mod tenants;
