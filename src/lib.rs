//! wkuser: the user subsystem of WuKongIM (tokens, device sessions, online status, system
//! uids) as an event-sourced server.
//!
//! The data flows one way: a command (HTTP call, WebSocket connect or close, a kick) is decided
//! against the in-memory state ([`domain`]), its events are appended durably to the log
//! ([`log`]), then applied to the in-memory projection ([`presence`]) and, asynchronously, to the
//! SQL view ([`view`]). [`http`] and [`gateway`] are the two edges; [`app`] wires them.

pub mod app;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod human;
pub mod log;
pub mod ops;
pub mod presence;
pub mod service;
pub mod view;
