//! What the tests share, split by kind: the server under test and how it starts, the clients
//! that talk to it (HTTP, WebSocket, raw frames, sockets from chosen addresses), the real binary
//! as a child process, and the state it leaves (the SQL view, the data directory).
//!
//! Every name is re-exported here, so that a test module takes them all with
//! `use crate::helpers::*;`. Promises: a helper that waits is bounded and fails with what it
//! saw; a wait for something the server does later goes through [`eventually`]. Must never hold a shortcut into the server that a client could not take, except the
//! in-process reads of the log and the view that check what was recorded.

#![allow(dead_code)]

mod browser;
mod data_dir;
mod eventually;
mod flaky;
mod http;
mod pids;
mod postgres;
pub mod process;
mod raw_ws;
mod server;
mod sockets;
mod throwaway_pg;
mod view;
mod ws;

pub use browser::*;
pub use data_dir::*;
pub use eventually::*;
pub use flaky::*;
pub use http::*;
pub use pids::processes_naming;
pub use postgres::*;
pub use process::*;
pub use raw_ws::*;
pub use server::*;
pub use sockets::*;
pub use throwaway_pg::*;
pub use view::*;
pub use ws::*;
