//! The integration tests: one binary, the real server on port 0, real sockets.
//!
//! `helpers` starts and restarts the server ([`helpers::spawn_app`]); each other module covers
//! one surface of the contract.

mod crash;
mod helpers;
mod smoke;
mod stats;
