//! The domain: what a user, a device and a session are, the events that change them, and the two
//! pure functions that give those events meaning.
//!
//! Owns the vocabulary every other layer speaks: newtypes parsed once at the edge ([`ids`]), the
//! event log's events and their wire encoding ([`event`]), the per-user state ([`state`]), and
//! `decide`/`evolve` ([`decide`]). Promises purity: nothing here does I/O, reads a clock or locks.
//! Must never: store or print a raw token, or accept a value that the protocol forbids.

pub mod decide;
pub mod event;
pub mod ids;
pub mod state;

#[cfg(test)]
mod properties;

pub use decide::{decide, AuthFailure, Command, Rejection};
pub use event::{DecodeError, Event, RecordedEvent};
pub use ids::*;
pub use state::{OnlineFlags, OpenSession, TokenSlot, UserState};
