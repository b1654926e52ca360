//! The events of the log and their stored encoding.
//!
//! Owns the vocabulary of `architecture.md` section 1 and the envelope every event is stored in:
//! `{"event_id","recorded_at","node_id","type","version","data"}` as one JSON object, keyed in the
//! log by its `seq`. Each event type has a schema version; [`Event::decode`] reads every version
//! it has ever written and upcasts old ones. Must never: rewrite an encoding that was released
//! (add a version instead), or carry a raw token.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
/// [`RecordedEvent::decode`], which knows every version.
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

    fn from_payload(kind: &str, version: u16, data: &str) -> Result<Event, DecodeError> {
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

impl RecordedEvent {
    /// The stored bytes (the `seq` is the key, not part of the value).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope(None)).expect("the envelope always serializes")
    }

    fn envelope(&self, seq: Option<Seq>) -> EnvelopeOut<'_> {
        EnvelopeOut {
            seq,
            event_id: self.event_id,
            recorded_at: self.recorded_at,
            node_id: self.node_id,
            kind: self.event.kind(),
            version: self.event.version(),
            data: &self.event,
        }
    }

    pub fn decode(seq: Seq, bytes: &[u8]) -> Result<RecordedEvent, DecodeError> {
        let env: EnvelopeIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
        let event = Event::from_payload(env.kind, env.version, env.data.get())?;
        Ok(RecordedEvent {
            seq,
            event_id: env.event_id,
            recorded_at: env.recorded_at,
            node_id: env.node_id,
            event,
        })
    }

    /// The event as one JSON object with its `seq` first, for operators (`/events`,
    /// `wkuser events`): `{"seq","event_id","recorded_at","node_id","type","version","data"}`.
    pub fn to_operator_json(&self) -> Box<RawValue> {
        let text = serde_json::to_string(&self.envelope(Some(self.seq)))
            .expect("the operator form always serializes");
        RawValue::from_string(text).expect("serde_json wrote valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::parse(s).unwrap()
    }

    fn sample_events() -> Vec<Event> {
        let session_id = SessionId::new();
        vec![
            Event::TokenUpdated(TokenUpdated {
                uid: uid("u1"),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Master,
                token_hash: Token::parse("t").unwrap().hash(),
            }),
            Event::DeviceQuit(DeviceQuit {
                uid: uid("u1"),
                device_flag: QuitScope::All,
            }),
            Event::DeviceQuit(DeviceQuit {
                uid: uid("u1"),
                device_flag: QuitScope::One(DeviceFlag(255)),
            }),
            Event::Connected(Connected {
                session_id,
                uid: uid("u1"),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse("web_1a2b3c4d_1700000000000").unwrap(),
                node_id: NodeId(1),
                peer: "127.0.0.1:5000".into(),
            }),
            Event::Disconnected(Disconnected {
                session_id,
                uid: uid("u1"),
                device_flag: DeviceFlag(1),
                reason: CloseReason::MasterLogin,
            }),
            Event::SystemUidsAdded(SystemUids {
                uids: vec![uid("a"), uid("b")],
            }),
            Event::SystemUidsRemoved(SystemUids {
                uids: vec![uid("a")],
            }),
            Event::NodeStarted(NodeStart {
                node_id: NodeId(1),
                boot_id: Uuid::now_v7(),
                version: "0.1.0".into(),
                api_addr: Some("127.0.0.1:5001".into()),
                ws_addr: Some("0.0.0.0:5200".into()),
            }),
            Event::NodeStopped(NodeLifetime {
                node_id: NodeId(1),
                boot_id: Uuid::now_v7(),
                version: "0.1.0".into(),
            }),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for (i, event) in sample_events().into_iter().enumerate() {
            let rec = RecordedEvent {
                seq: Seq(i as u64 + 1),
                event_id: Uuid::now_v7(),
                recorded_at: 1_700_000_000_000,
                node_id: NodeId(7),
                event,
            };
            let bytes = rec.encode();
            assert_eq!(RecordedEvent::decode(rec.seq, &bytes).unwrap(), rec);
        }
    }

    #[test]
    fn unknown_versions_are_refused_not_guessed() {
        let bytes = br#"{"event_id":"0190d7a8-0000-7000-8000-000000000000","recorded_at":1,"node_id":1,"type":"Connected","version":99,"data":{}}"#;
        assert!(matches!(
            RecordedEvent::decode(Seq(1), bytes),
            Err(DecodeError::Unknown { version: 99, .. })
        ));
    }

    /// The golden files pin the stored encoding: `tests/golden/events/<type>.v<version>.json`
    /// holds the exact bytes of one event of that type and version. A file of the current
    /// version must re-encode to the same bytes; an older version must decode (upcast).
    fn golden(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/golden/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim_end().as_bytes().to_vec()
    }

    #[test]
    fn every_current_event_version_has_a_golden_file_that_round_trips() {
        for event in sample_events() {
            let name = format!("{}.v{}", event.kind(), event.version());
            let bytes = golden(&name);
            let decoded =
                RecordedEvent::decode(Seq(1), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded.event.kind(), event.kind(), "{name}");
            assert_eq!(
                String::from_utf8(decoded.encode()).unwrap(),
                String::from_utf8(bytes).unwrap(),
                "{name}: the encoding changed; add a new version instead"
            );
        }
    }

    #[test]
    fn node_started_v1_is_upcast_to_v2() {
        let v1 = RecordedEvent::decode(Seq(1), &golden("NodeStarted.v1")).unwrap();
        let Event::NodeStarted(start) = &v1.event else {
            panic!("{v1:?}")
        };
        assert_eq!(start.api_addr, None);
        assert_eq!(start.ws_addr, None);
        assert_eq!(start.version, "0.1.0");
        let reencoded = String::from_utf8(v1.encode()).unwrap();
        assert!(reencoded.contains(r#""version":2"#), "{reencoded}");
        assert!(reencoded.contains(r#""api_addr":null"#), "{reencoded}");
    }
}
