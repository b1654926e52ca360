//! The domain: what a user, a device and a session are, the events that change them, and the two
//! pure functions that give those events meaning.
//!
//! Owns the vocabulary every other layer speaks: newtypes parsed once at the edge ([`ids`]), the
//! commands ([`command`]), the event log's events ([`event`]) and how the log stores them ([`encoding`]), the state
//! commands are decided against ([`state`]), [`decide`], and the one [`evolve`]. Promises purity: nothing here does I/O, reads a clock or locks.
//! Must never: store or print a raw token, or accept a value that the protocol forbids.

pub mod command;
pub mod decide;
pub mod encoding;
pub mod event;
pub mod evolve;
pub mod ids;
pub mod state;

#[cfg(test)]
mod properties;

pub use command::{Command, Subject};
pub use decide::{decide, AuthFailure, Rejection};
pub use event::{DecodeError, Event, RecordedEvent};
pub use evolve::{evolve, Fold, State};
pub use ids::*;
pub use state::{OnlineFlags, OpenSession, StateOf, TokenSlot, UserState};
