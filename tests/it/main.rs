//! The integration tests, in one binary: each module starts the real service (on
//! port 0) or drives its router, against moto, Redis, or a programmable fake SES.
//! `scripts/test.sh` starts moto and Redis and runs them under cargo-nextest, one
//! process per test.

mod harness;

mod account;
mod api;
mod cli;
mod contracts;
mod feedback;
mod hostile;
mod layout;
mod metrics;
mod moto;
mod properties;
mod reliability;
mod state;
mod templates;
