//! Conformance checks every backend of a seam runs (feature `testkit`).

pub mod control;
