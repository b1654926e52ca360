//! The binary envelope: how the log stores an event since JSON took two to three times the
//! room (figures in `docs/performance.md`, "Bytes per event").
//!
//! One byte [`FORMAT`], then, in postcard's wire format (documented and stable since its 1.0:
//! varints for integers and lengths, strings as length and bytes, no field names), a header
//! (type code, schema version, event id, time, node) and the event's payload struct. Ids are
//! their 16 bytes, a token hash its 32, numbers varints. Promises: every type and version this
//! encoding has ever written is read back exactly, and bytes after the payload are refused, not
//! ignored. Must never: renumber a type code or a [`CloseReason`](crate::domain::CloseReason)
//! variant (the payload holds its index), reorder a payload struct's fields (the bytes hold
//! them by position), or change what a code and version mean: add a version instead.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::event::{DecodeError, Event, RecordedEvent};
use crate::domain::ids::{NodeId, Seq};

/// The first byte of a binary envelope. A stored JSON envelope starts with `{`, so the first
/// byte tells the two apart.
pub const FORMAT: u8 = 0x01;

/// What precedes the payload.
#[derive(Serialize, Deserialize)]
struct Header {
    /// The event's type, by [`code`].
    code: u8,
    version: u16,
    event_id: [u8; 16],
    /// `recorded_at` less the milliseconds a UUID v7 `event_id` opens with. The writer stamps
    /// both within a batch, so this is a few milliseconds at most: one byte of varint instead
    /// of six. Any id and any time round-trip (the arithmetic wraps both ways).
    recorded_at_offset: i64,
    node_id: NodeId,
}

/// The type codes. Written to disk: never renumber one, never reuse a retired one.
fn code(event: &Event) -> u8 {
    match event {
        Event::TokenUpdated(_) => 1,
        Event::DeviceQuit(_) => 2,
        Event::Connected(_) => 3,
        Event::Disconnected(_) => 4,
        Event::SystemUidsAdded(_) => 5,
        Event::SystemUidsRemoved(_) => 6,
        Event::NodeStarted(_) => 7,
        Event::NodeStopped(_) => 8,
    }
}

/// The first 48 bits of a UUID: a v7's Unix time in milliseconds.
fn id_millis(id: &[u8; 16]) -> i64 {
    let mut be = [0u8; 8];
    be[2..].copy_from_slice(&id[..6]);
    i64::from_be_bytes(be)
}

pub(super) fn encode(rec: &RecordedEvent) -> Vec<u8> {
    let event_id = *rec.event_id.as_bytes();
    let header = Header {
        code: code(&rec.event),
        version: rec.event.version(),
        event_id,
        recorded_at_offset: rec.recorded_at.wrapping_sub(id_millis(&event_id)),
        node_id: rec.node_id,
    };
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT);
    let out = postcard::to_extend(&header, out).expect("a header always serializes");
    // `Event` serializes as its bare payload struct (it is untagged): the header names it.
    postcard::to_extend(&rec.event, out).expect("an event always serializes")
}

/// Reads the bytes after [`FORMAT`].
pub(super) fn decode(seq: Seq, bytes: &[u8]) -> Result<RecordedEvent, DecodeError> {
    let (header, payload_bytes) =
        postcard::take_from_bytes::<Header>(bytes).map_err(DecodeError::Header)?;
    let event = payload(header.code, header.version, payload_bytes)?;
    Ok(RecordedEvent {
        seq,
        event_id: Uuid::from_bytes(header.event_id),
        recorded_at: id_millis(&header.event_id).wrapping_add(header.recorded_at_offset),
        node_id: header.node_id,
        event,
    })
}

/// Every type and version this encoding has written.
fn payload(code: u8, version: u16, bytes: &[u8]) -> Result<Event, DecodeError> {
    fn de<'a, T: Deserialize<'a>>(
        kind: &'static str,
        version: u16,
        bytes: &'a [u8],
    ) -> Result<T, DecodeError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|source| DecodeError::BinaryPayload {
                kind,
                version,
                source,
            })?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing {
                kind,
                version,
                extra: rest.len(),
            });
        }
        Ok(value)
    }
    Ok(match (code, version) {
        (1, 1) => Event::TokenUpdated(de("TokenUpdated", 1, bytes)?),
        (2, 1) => Event::DeviceQuit(de("DeviceQuit", 1, bytes)?),
        (3, 1) => Event::Connected(de("Connected", 1, bytes)?),
        (4, 1) => Event::Disconnected(de("Disconnected", 1, bytes)?),
        (5, 1) => Event::SystemUidsAdded(de("SystemUidsAdded", 1, bytes)?),
        (6, 1) => Event::SystemUidsRemoved(de("SystemUidsRemoved", 1, bytes)?),
        (7, 2) => Event::NodeStarted(de("NodeStarted", 2, bytes)?),
        (8, 1) => Event::NodeStopped(de("NodeStopped", 1, bytes)?),
        _ => return Err(DecodeError::UnknownCode { code, version }),
    })
}
