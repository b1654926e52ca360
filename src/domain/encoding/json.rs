//! The JSON envelope: the log's stored encoding until the binary one replaced it, and still the
//! operator form (`/events`, `wkuser events`).
//!
//! `{"event_id","recorded_at","node_id","type","version","data"}`, with `"seq"` first in the
//! operator form. Promises: reads every type and version ever stored as JSON (a log written
//! before the binary encoding is read as it is, never rewritten), and writes the operator form
//! byte for byte as it always was. Must never: change a byte of either form (the golden files
//! and the operator tools depend on them).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::event::{DecodeError, Event, NodeLifetime, RecordedEvent};
use crate::domain::ids::{NodeId, Seq};

/// The envelope as written: stored without `seq` (the key holds it), shown to operators with it.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
    event_id: Uuid,
    recorded_at: i64,
    node_id: NodeId,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u16,
    data: &'a Event,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    event_id: Uuid,
    recorded_at: i64,
    node_id: NodeId,
    #[serde(rename = "type")]
    kind: &'a str,
    version: u16,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn envelope(rec: &RecordedEvent, seq: Option<Seq>) -> EnvelopeOut<'_> {
    EnvelopeOut {
        seq,
        event_id: rec.event_id,
        recorded_at: rec.recorded_at,
        node_id: rec.node_id,
        kind: rec.event.kind(),
        version: rec.event.version(),
        data: &rec.event,
    }
}

/// The stored JSON bytes (no `seq`).
pub(super) fn encode(rec: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(&envelope(rec, None)).expect("the envelope always serializes")
}

/// The operator form: the stored JSON with its `seq` first.
pub(super) fn operator(rec: &RecordedEvent) -> Box<RawValue> {
    let text = serde_json::to_string(&envelope(rec, Some(rec.seq)))
        .expect("the operator form always serializes");
    RawValue::from_string(text).expect("serde_json wrote valid JSON")
}

pub(super) fn decode(seq: Seq, bytes: &[u8]) -> Result<RecordedEvent, DecodeError> {
    let env: EnvelopeIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
    let event = payload(env.kind, env.version, env.data.get())?;
    Ok(RecordedEvent {
        seq,
        event_id: env.event_id,
        recorded_at: env.recorded_at,
        node_id: env.node_id,
        event,
    })
}

/// Every type and version ever stored as JSON; an old version is upcast to the current one.
fn payload(kind: &str, version: u16, data: &str) -> Result<Event, DecodeError> {
    fn de<'a, T: Deserialize<'a>>(
        kind: &'static str,
        version: u16,
        data: &'a str,
    ) -> Result<T, DecodeError> {
        serde_json::from_str(data).map_err(|source| DecodeError::Payload {
            kind,
            version,
            source,
        })
    }
    Ok(match (kind, version) {
        ("TokenUpdated", 1) => Event::TokenUpdated(de("TokenUpdated", 1, data)?),
        ("DeviceQuit", 1) => Event::DeviceQuit(de("DeviceQuit", 1, data)?),
        ("Connected", 1) => Event::Connected(de("Connected", 1, data)?),
        ("Disconnected", 1) => Event::Disconnected(de("Disconnected", 1, data)?),
        ("SystemUidsAdded", 1) => Event::SystemUidsAdded(de("SystemUidsAdded", 1, data)?),
        ("SystemUidsRemoved", 1) => Event::SystemUidsRemoved(de("SystemUidsRemoved", 1, data)?),
        ("NodeStarted", 1) => {
            Event::NodeStarted(de::<NodeLifetime>("NodeStarted", 1, data)?.into())
        }
        ("NodeStarted", 2) => Event::NodeStarted(de("NodeStarted", 2, data)?),
        ("NodeStopped", 1) => Event::NodeStopped(de("NodeStopped", 1, data)?),
        _ => {
            return Err(DecodeError::Unknown {
                kind: kind.to_owned(),
                version,
            })
        }
    })
}
