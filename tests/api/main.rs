//! The integration tests: one binary, the real server on port 0, real sockets.
//!
//! `helpers` starts and restarts the server ([`helpers::spawn_app`]) and holds the clients the
//! tests talk to it with; each other module covers one surface of the contract. `watchdog` turns a hung test into a fast failure with stacks.

mod bearer;
mod cli;
mod cli_errors;
mod cluster;
mod cluster_database_down;
mod cluster_tailing;
mod console;
mod console_browser;
mod console_browser_more;
mod crash;
mod gateway_bad_frames;
mod gateway_concurrency;
mod gateway_connect;
mod gateway_kicks;
mod gateway_session;
mod helpers;
mod history;
mod http_errors;
mod http_failures;
mod http_routes;
mod lastseen;
mod limits;
mod limits_api;
mod log_format;
mod log_layout;
mod log_postgres;
mod log_upgrade;
mod metrics;
mod openapi;
mod ops_archive;
mod ops_archive_crash;
mod ops_migrate;
mod ops_postgres;
mod persistence;
mod properties;
mod secrets;
mod server_log;
mod smoke;
mod stats;
mod throwaway_pg;
mod view_engines;
mod view_recovery;
mod watchdog;
mod webhook;
mod webhook_cluster;
mod webhook_crash;
mod webhook_receiver;

// The child-process helpers keep their older path, `crate::process`, for the modules that name
// them so.
use helpers::process;
