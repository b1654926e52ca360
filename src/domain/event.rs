//! The events of the log.
//!
//! Owns the vocabulary of `architecture.md` section 1: each event type, its schema version, and
//! the record the log keeps of it ([`RecordedEvent`]: seq, id, time, node). How a record is
//! stored and shown is [`super::encoding`]'s; it reads every version ever written and upcasts
//! old ones. Must never: change a released version's fields (add a version instead), or carry
//! a raw token.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUpdated {
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub device_level: DeviceLevel,
    pub token_hash: TokenHash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceQuit {
    pub uid: Uid,
    /// One flag, or `-1` for every flag of the uid.
    pub device_flag: QuitScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    pub session_id: SessionId,
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub device_level: DeviceLevel,
    pub device_id: DeviceId,
    pub node_id: NodeId,
    /// The peer's socket address as text (`203.0.113.7:50412`).
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnected {
    pub session_id: SessionId,
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub reason: CloseReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemUids {
    pub uids: Vec<Uid>,
}

/// The end of a server lifetime (and, in version 1, its start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLifetime {
    pub node_id: NodeId,
    pub boot_id: Uuid,
    pub version: String,
}

/// The start of a server lifetime. Version 2 added the addresses it served on, so an operator
/// reading the log knows where each lifetime listened; version 1 events read with none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStart {
    pub node_id: NodeId,
    pub boot_id: Uuid,
    pub version: String,
    pub api_addr: Option<String>,
    pub ws_addr: Option<String>,
}

impl From<NodeLifetime> for NodeStart {
    /// The upcast of `NodeStarted` v1.
    fn from(v1: NodeLifetime) -> Self {
        NodeStart {
            node_id: v1.node_id,
            boot_id: v1.boot_id,
            version: v1.version,
            api_addr: None,
            ws_addr: None,
        }
    }
}

/// Something that happened, in the past tense. The log is a sequence of these. It serializes
/// as its bare payload (the envelope carries the type and version); it is read back by
/// [`RecordedEvent::decode`], which knows every version. The order of each payload struct's
/// fields is part of the binary encoding ([`super::encoding::binary`]): never reorder them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Event {
    TokenUpdated(TokenUpdated),
    DeviceQuit(DeviceQuit),
    Connected(Connected),
    Disconnected(Disconnected),
    SystemUidsAdded(SystemUids),
    SystemUidsRemoved(SystemUids),
    NodeStarted(NodeStart),
    NodeStopped(NodeLifetime),
}

/// Why stored bytes are not an event this build can read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unknown event type {kind:?} version {version}")]
    Unknown { kind: String, version: u16 },
    #[error("malformed {kind} v{version} payload: {source}")]
    Payload {
        kind: &'static str,
        version: u16,
        source: serde_json::Error,
    },
    #[error("malformed binary event header: {0}")]
    Header(postcard::Error),
    #[error("unknown binary event type code {code} version {version}")]
    UnknownCode { code: u8, version: u16 },
    #[error("malformed binary {kind} v{version} payload: {source}")]
    BinaryPayload {
        kind: &'static str,
        version: u16,
        source: postcard::Error,
    },
    #[error("{extra} bytes after a binary {kind} v{version} payload")]
    Trailing {
        kind: &'static str,
        version: u16,
        extra: usize,
    },
}

impl Event {
    /// The `type` of the envelope.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TokenUpdated(_) => "TokenUpdated",
            Event::DeviceQuit(_) => "DeviceQuit",
            Event::Connected(_) => "Connected",
            Event::Disconnected(_) => "Disconnected",
            Event::SystemUidsAdded(_) => "SystemUidsAdded",
            Event::SystemUidsRemoved(_) => "SystemUidsRemoved",
            Event::NodeStarted(_) => "NodeStarted",
            Event::NodeStopped(_) => "NodeStopped",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn version(&self) -> u16 {
        match self {
            Event::NodeStarted(_) => 2,
            _ => 1,
        }
    }

    /// The one uid the event is about, for events that are about one user.
    pub fn uid(&self) -> Option<&Uid> {
        match self {
            Event::TokenUpdated(e) => Some(&e.uid),
            Event::DeviceQuit(e) => Some(&e.uid),
            Event::Connected(e) => Some(&e.uid),
            Event::Disconnected(e) => Some(&e.uid),
            _ => None,
        }
    }

    /// Every uid the event concerns: what the `(uid, seq)` index files it under.
    pub fn uids(&self) -> &[Uid] {
        match self {
            Event::SystemUidsAdded(e) | Event::SystemUidsRemoved(e) => &e.uids,
            other => other.uid().map(std::slice::from_ref).unwrap_or(&[]),
        }
    }
}

/// An event as the log holds it: its place, identity, time and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub seq: Seq,
    pub event_id: Uuid,
    /// Milliseconds since the Unix epoch, by the recording node's clock.
    pub recorded_at: i64,
    pub node_id: NodeId,
    pub event: Event,
}
