//! wkuser: the user subsystem of WuKongIM (tokens, device sessions, online status, system
//! uids) as an event-sourced server.
//!
//! The data flows one way: a command (an HTTP call, a WebSocket connect or close, the node's own
//! lifetime) is decided against the in-memory state ([`domain`]) on the [`write`] path, its
//! events are appended durably to the [`log`], and the log's writer hands each committed batch
//! to the subscribers ([`apply`]): the in-memory projection ([`presence`]), the live sessions
//! that carry kicks, and the projector of the SQL [`view`]. [`http`] and [`gateway`] are the two
//! edges; [`app`] wires them and runs the node's lifetime; [`ops`] are the operator commands.

pub mod app;
pub mod apply;
pub mod archive;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod human;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod postgres;
pub mod presence;
pub mod view;
pub mod webhook;
pub mod write;
