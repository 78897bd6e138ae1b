//! The conformance kit: behaviour every backend must show, written once.
