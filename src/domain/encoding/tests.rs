//! The encodings pinned: golden files of both (`tests/golden/events`), the operator form, and
//! round trips of any event through the binary envelope.

use proptest::prelude::*;
use uuid::Uuid;

use crate::domain::event::*;
use crate::domain::ids::*;

use super::binary;

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

fn recorded(seq: u64, event: Event) -> RecordedEvent {
    RecordedEvent {
        seq: Seq(seq),
        event_id: Uuid::now_v7(),
        recorded_at: 1_700_000_000_000,
        node_id: NodeId(7),
        event,
    }
}

#[test]
fn every_event_round_trips_through_both_encodings() {
    for (i, event) in sample_events().into_iter().enumerate() {
        let rec = recorded(i as u64 + 1, event);
        let binary = rec.encode();
        assert_eq!(binary[0], binary::FORMAT, "{rec:?}");
        assert_eq!(RecordedEvent::decode(rec.seq, &binary).unwrap(), rec);
        let json = rec.encode_as_json();
        assert_eq!(json[0], b'{');
        assert_eq!(RecordedEvent::decode(rec.seq, &json).unwrap(), rec);
    }
}

#[test]
fn unknown_versions_are_refused_not_guessed() {
    let bytes = br#"{"event_id":"0190d7a8-0000-7000-8000-000000000000","recorded_at":1,"node_id":1,"type":"Connected","version":99,"data":{}}"#;
    assert!(matches!(
        RecordedEvent::decode(Seq(1), bytes),
        Err(DecodeError::Unknown { version: 99, .. })
    ));
    // The binary header of a Disconnected: type code 4, then version 99 (a varint).
    let mut binary = golden_binary("Disconnected.v1");
    assert_eq!(&binary[..3], &[binary::FORMAT, 4, 1]);
    binary[2] = 99;
    assert!(matches!(
        RecordedEvent::decode(Seq(1), &binary),
        Err(DecodeError::UnknownCode {
            code: 4,
            version: 99
        })
    ));
    // A version only JSON ever held is not read from the binary envelope.
    binary[1] = 7;
    binary[2] = 1;
    assert!(matches!(
        RecordedEvent::decode(Seq(1), &binary),
        Err(DecodeError::UnknownCode {
            code: 7,
            version: 1
        })
    ));
}

fn golden_path(name: &str) -> String {
    format!("{}/tests/golden/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The exact stored bytes of a JSON golden file (`<type>.v<version>.json`).
fn golden_json(name: &str) -> Vec<u8> {
    let path = golden_path(&format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim_end().as_bytes().to_vec()
}

/// The exact stored bytes of a binary golden file (`<type>.v<version>.hex`: the bytes in hex).
fn golden_binary(name: &str) -> Vec<u8> {
    let path = golden_path(&format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex::decode(text.trim_end()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_current_version_has_a_json_golden_file_that_round_trips() {
    for event in sample_events() {
        let name = format!("{}.v{}", event.kind(), event.version());
        let bytes = golden_json(&name);
        let decoded =
            RecordedEvent::decode(Seq(1), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.event.kind(), event.kind(), "{name}");
        assert_eq!(
            String::from_utf8(decoded.encode_as_json()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{name}: the JSON encoding changed: it must read and show as it always did"
        );
    }
}

#[test]
fn every_current_version_has_a_binary_golden_file_of_the_same_event() {
    for event in sample_events() {
        let name = format!("{}.v{}", event.kind(), event.version());
        // The binary file holds the event of the JSON file: the two encodings mean the same.
        let from_json = RecordedEvent::decode(Seq(1), &golden_json(&name)).unwrap();
        let bytes = golden_binary(&name);
        let decoded =
            RecordedEvent::decode(Seq(1), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, from_json, "{name}");
        assert_eq!(
            hex::encode(decoded.encode()),
            hex::encode(&bytes),
            "{name}: the binary encoding changed; add a new version instead"
        );
    }
}

#[test]
fn the_operator_form_is_the_json_envelope_with_its_seq_first_whatever_was_stored() {
    for event in sample_events() {
        let name = format!("{}.v{}", event.kind(), event.version());
        let json = String::from_utf8(golden_json(&name)).unwrap();
        let expected = format!("{{\"seq\":42,{}", &json[1..]);
        for stored in [json.clone().into_bytes(), golden_binary(&name)] {
            let rec = RecordedEvent::decode(Seq(42), &stored).unwrap();
            assert_eq!(rec.to_operator_json().get(), expected, "{name}");
        }
    }
}

#[test]
fn node_started_v1_is_upcast_to_v2() {
    let v1 = RecordedEvent::decode(Seq(1), &golden_json("NodeStarted.v1")).unwrap();
    let Event::NodeStarted(start) = &v1.event else {
        panic!("{v1:?}")
    };
    assert_eq!(start.api_addr, None);
    assert_eq!(start.ws_addr, None);
    assert_eq!(start.version, "0.1.0");
    let shown = v1.to_operator_json().get().to_owned();
    assert!(shown.contains(r#""version":2"#), "{shown}");
    assert!(shown.contains(r#""api_addr":null"#), "{shown}");
    // Stored again, it is a v2 event.
    let again = RecordedEvent::decode(Seq(1), &v1.encode()).unwrap();
    assert_eq!(again, v1);
}

#[test]
fn close_reasons_keep_their_binary_codes() {
    // The payload holds a reason by its variant's index: this table is on disk.
    let pinned = [
        ("client_closed", 0u8),
        ("device_quit", 1),
        ("master_login", 2),
        ("token_updated", 3),
        ("replaced", 4),
        ("idle_timeout", 5),
        ("slow_consumer", 6),
        ("protocol_error", 7),
        ("server_shutdown", 8),
        ("server_restart", 9),
        ("node_lost", 10),
    ];
    assert_eq!(pinned.len(), CloseReason::ALL.len(), "a new reason: pin it");
    for (name, code) in pinned {
        let reason = CloseReason::parse(name).unwrap();
        assert_eq!(postcard::to_stdvec(&reason).unwrap(), [code], "{name}");
    }
}

#[test]
fn cut_or_padded_binary_events_are_refused() {
    for event in sample_events() {
        let name = format!("{}.v{}", event.kind(), event.version());
        let bytes = golden_binary(&name);
        for cut in 1..bytes.len() {
            assert!(
                RecordedEvent::decode(Seq(1), &bytes[..cut]).is_err(),
                "{name} cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            RecordedEvent::decode(Seq(1), &padded),
            Err(DecodeError::Trailing { extra: 1, .. })
        ));
    }
}

#[test]
fn a_uid_the_protocol_forbids_is_refused_in_binary_too() {
    let rec = recorded(
        1,
        Event::DeviceQuit(DeviceQuit {
            uid: uid("zz_check_zz"),
            device_flag: QuitScope::All,
        }),
    );
    let mut bytes = rec.encode();
    let at = bytes.windows(11).position(|w| w == b"zz_check_zz").unwrap();
    bytes[at] = b'@';
    assert!(matches!(
        RecordedEvent::decode(Seq(1), &bytes),
        Err(DecodeError::BinaryPayload { .. })
    ));
}

fn any_uid() -> impl Strategy<Value = Uid> {
    "[a-zA-Z0-9_\\-.:]{1,40}|[\\p{Han}]{1,8}".prop_filter_map("a uid", |s| Uid::parse(&s).ok())
}

fn any_event() -> impl Strategy<Value = Event> {
    let uuid = any::<u128>().prop_map(Uuid::from_u128);
    let level = any::<bool>().prop_map(|m| {
        if m {
            DeviceLevel::Master
        } else {
            DeviceLevel::Slave
        }
    });
    prop_oneof![
        (any_uid(), any::<u8>(), level.clone(), any::<[u8; 32]>()).prop_map(|(uid, f, l, h)| {
            Event::TokenUpdated(TokenUpdated {
                uid,
                device_flag: DeviceFlag(f),
                device_level: l,
                token_hash: TokenHash(h),
            })
        }),
        (any_uid(), proptest::option::of(any::<u8>())).prop_map(|(uid, f)| {
            Event::DeviceQuit(DeviceQuit {
                uid,
                device_flag: f.map_or(QuitScope::All, |f| QuitScope::One(DeviceFlag(f))),
            })
        }),
        (
            uuid.clone(),
            any_uid(),
            any::<u8>(),
            level,
            "[^\\p{Cc}]{1,60}",
            any::<u64>(),
            ".{0,50}"
        )
            .prop_map(|(s, uid, f, l, d, n, peer)| {
                Event::Connected(Connected {
                    session_id: SessionId(s),
                    uid,
                    device_flag: DeviceFlag(f),
                    device_level: l,
                    device_id: DeviceId::parse(&d).unwrap(),
                    node_id: NodeId(n),
                    peer,
                })
            }),
        (
            uuid.clone(),
            any_uid(),
            any::<u8>(),
            0..CloseReason::ALL.len()
        )
            .prop_map(|(s, uid, f, r)| {
                Event::Disconnected(Disconnected {
                    session_id: SessionId(s),
                    uid,
                    device_flag: DeviceFlag(f),
                    reason: CloseReason::ALL[r],
                })
            }),
        proptest::collection::vec(any_uid(), 0..5)
            .prop_map(|uids| Event::SystemUidsAdded(SystemUids { uids })),
        (uuid, any::<u64>(), proptest::option::of(".{0,20}")).prop_map(|(b, n, a)| {
            Event::NodeStarted(NodeStart {
                node_id: NodeId(n),
                boot_id: b,
                version: "9.9.9".into(),
                api_addr: a.clone(),
                ws_addr: a,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn any_event_round_trips_and_shows_as_its_json_would(
        event in any_event(),
        id in any::<u128>(),
        recorded_at in any::<i64>(),
        node in any::<u64>(),
        seq in 1..u64::MAX,
    ) {
        let rec = RecordedEvent {
            seq: Seq(seq),
            event_id: Uuid::from_u128(id),
            recorded_at,
            node_id: NodeId(node),
            event,
        };
        let decoded = RecordedEvent::decode(rec.seq, &rec.encode()).unwrap();
        prop_assert_eq!(&decoded, &rec);
        let via_json = RecordedEvent::decode(rec.seq, &rec.encode_as_json()).unwrap();
        let (shown, shown_via_json) = (decoded.to_operator_json(), via_json.to_operator_json());
        prop_assert_eq!(shown.get(), shown_via_json.get());
    }

    #[test]
    fn any_bytes_decode_or_are_refused_without_a_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        binary in any::<bool>(),
    ) {
        if binary && !bytes.is_empty() {
            bytes[0] = binary::FORMAT;
        }
        let _ = RecordedEvent::decode(Seq(1), &bytes);
    }
}
