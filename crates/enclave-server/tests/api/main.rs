//! The HTTP API's promises (API.md), as one test binary that runs the
//! server in this process on port 0, on both stores (`support`). The
//! promises that need a server process of its own — signals and `kill -9`,
//! open-file limits, the CLI's commands, schemathesis against the binary,
//! PostgreSQL stopped under it — stay in `enclave-cli/tests`.

#[macro_use]
mod support;

mod admin_placement;
mod isolation;
mod quotas;
mod rate_limits;
mod search;
