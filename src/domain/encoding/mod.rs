//! The stored encodings of a [`RecordedEvent`], and its operator form.
//!
//! Owns the choice of encoding: events are written in the binary envelope ([`binary`]); a log
//! written before it holds JSON envelopes ([`json`]), which are read as they are, so that a data
//! directory (or a shared database) of an older build starts without a conversion, and holds
//! both encodings from then on. The first byte tells them apart: [`binary::FORMAT`], or `{`.
//! The operator form (`/events`, `wkuser events`) stays the JSON envelope with its `seq`,
//! whatever the stored encoding. Promises: `decode(encode(e)) == e` for every event; every byte
//! string an older build stored decodes to the event it meant. Must never: write JSON to the
//! log again (two encodings to write would be two to keep byte-stable), or panic on bytes it
//! cannot read (a [`DecodeError`] says why).

pub mod binary;
mod json;

use serde_json::value::RawValue;

use super::event::{DecodeError, RecordedEvent};
use super::ids::Seq;

impl RecordedEvent {
    /// The stored bytes, in the binary envelope (the `seq` is the key, not part of the value).
    pub fn encode(&self) -> Vec<u8> {
        binary::encode(self)
    }

    /// The stored bytes of the JSON envelope that builds before the binary one wrote. No node
    /// writes it any more: for tests and tools that build a log as an older build left it.
    pub fn encode_as_json(&self) -> Vec<u8> {
        json::encode(self)
    }

    /// Reads stored bytes of either encoding.
    pub fn decode(seq: Seq, bytes: &[u8]) -> Result<RecordedEvent, DecodeError> {
        match bytes.split_first() {
            Some((&binary::FORMAT, rest)) => binary::decode(seq, rest),
            _ => json::decode(seq, bytes),
        }
    }

    /// The event as one JSON object with its `seq` first, for operators (`/events`,
    /// `wkuser events`): `{"seq","event_id","recorded_at","node_id","type","version","data"}`.
    pub fn to_operator_json(&self) -> Box<RawValue> {
        json::operator(self)
    }
}

#[cfg(test)]
mod tests;
