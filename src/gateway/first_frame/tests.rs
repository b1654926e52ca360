//! The typed reading of the first frame against the `serde_json` map it replaced.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

/// The reading this module replaced: the whole frame into a `serde_json` map. Kept as the
/// oracle the typed reading must agree with.
fn parse_first_as_a_map(text: &str) -> FirstFrame {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return FirstFrame::Refused("first frame is not a JSON object");
    };
    if map
        .get("jsonrpc")
        .is_some_and(|v| v.as_str() != Some("2.0"))
    {
        return FirstFrame::Refused("jsonrpc is not \"2.0\"");
    }
    if map.get("method").and_then(Value::as_str) != Some("connect") {
        return FirstFrame::Refused("first frame is not a connect");
    }
    let Some(id) = map.get("id").and_then(Value::as_str) else {
        return FirstFrame::Refused("connect without a string id");
    };
    let id = id.to_owned();
    match params_of_a_map(map.get("params")) {
        Ok(params) => FirstFrame::Connect { id, params },
        Err(why) => FirstFrame::BadConnect { id, why },
    }
}

fn params_of_a_map(params: Option<&Value>) -> Result<ConnectParams, String> {
    let Some(Value::Object(p)) = params else {
        return Err("params missing or not an object".into());
    };
    let p: &Map<String, Value> = p;
    let field = |name: &str| p.get(name).filter(|v| !v.is_null());
    let uid = field("uid")
        .and_then(Value::as_str)
        .ok_or("uid missing or not a string")?;
    let uid = Uid::parse(uid).map_err(|e| format!("invalid uid: it {e}"))?;
    let token = field("token")
        .and_then(Value::as_str)
        .ok_or("token missing or not a string")?;
    let presented = Token::parse(token)
        .ok_or("token must be 1 to 4096 bytes")?
        .hash();
    let device_flag = match field("deviceFlag") {
        None => DeviceFlag(0),
        Some(v) => v
            .as_i64()
            .and_then(DeviceFlag::parse)
            .ok_or("deviceFlag outside 0..=255")?,
    };
    let device_id = match field("deviceId") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            Some(DeviceId::parse(s).ok_or("deviceId longer than 255 bytes or not printable")?)
        }
        Some(_) => return Err("deviceId is not a string".into()),
    };
    Ok(ConnectParams {
        uid,
        presented,
        device_flag,
        device_id,
        client_timestamp: field("clientTimestamp").and_then(Value::as_i64),
    })
}

/// Everything a reading decides, the whole token hash included.
fn outcome(f: &FirstFrame) -> String {
    match f {
        FirstFrame::Connect { id, params: p } => format!(
            "connect {id:?} {:?} {} {:?} {:?} {:?}",
            p.uid.as_str(),
            p.presented.to_hex(),
            p.device_flag,
            p.device_id,
            p.client_timestamp
        ),
        FirstFrame::BadConnect { id, why } => format!("bad connect {id:?}: {why}"),
        FirstFrame::Refused(why) => format!("refused: {why}"),
    }
}

fn agrees(text: &str) -> Result<(), String> {
    let (typed, mapped) = (
        outcome(&parse_first(text)),
        outcome(&parse_first_as_a_map(text)),
    );
    if typed == mapped {
        Ok(())
    } else {
        Err(format!("{text}\n typed: {typed}\n map:   {mapped}"))
    }
}

#[test]
fn first_frame_as_the_easysdk_writes_it() {
    let f = parse_first(
        r#"{"method":"connect","params":{"uid":"u1","token":"t","deviceId":"web_1a2b3c4d_1700000000000","deviceFlag":1,"clientTimestamp":1700000000000},"id":"5f0e1f7c-7f2b-4c43-9d2c-4b8e0d1f2a3b"}"#,
    );
    let FirstFrame::Connect { id, params } = f else {
        panic!("{f:?}")
    };
    assert_eq!(id, "5f0e1f7c-7f2b-4c43-9d2c-4b8e0d1f2a3b");
    assert_eq!(params.uid.as_str(), "u1");
    assert_eq!(params.device_flag, DeviceFlag(1));
    assert_eq!(params.client_timestamp, Some(1_700_000_000_000));
    let minimal = parse_first(r#"{"method":"connect","id":"c","params":{"uid":"u","token":"t"}}"#);
    let FirstFrame::Connect { params, .. } = minimal else {
        panic!()
    };
    assert_eq!(params.device_flag, DeviceFlag(0));
    assert!(params.device_id.is_none());
}

#[test]
fn bad_first_frames() {
    for (text, refused) in [
        ("not json", true),
        ("[1]", true),
        (r#"{"method":"ping","id":"1"}"#, true),
        (r#"{"method":"connect"}"#, true),
        (r#"{"method":"connect","id":7,"params":{}}"#, true),
        (
            r#"{"jsonrpc":"1.0","method":"connect","id":"1","params":{}}"#,
            true,
        ),
        (r#"{"method":"connect","id":"1"}"#, false),
        (
            r#"{"method":"connect","id":"1","params":{"uid":"u"}}"#,
            false,
        ),
        (
            r#"{"method":"connect","id":"1","params":{"uid":5,"token":"t"}}"#,
            false,
        ),
        (
            r#"{"method":"connect","id":"1","params":{"uid":"a@b","token":"t"}}"#,
            false,
        ),
        (
            r#"{"method":"connect","id":"1","params":{"uid":"u","token":"t","deviceFlag":256}}"#,
            false,
        ),
        (
            r#"{"method":"connect","id":"1","params":{"uid":"u","token":""}}"#,
            false,
        ),
    ] {
        let f = parse_first(text);
        match f {
            FirstFrame::Refused(_) => assert!(refused, "{text}"),
            FirstFrame::BadConnect { .. } => assert!(!refused, "{text}"),
            FirstFrame::Connect { .. } => panic!("accepted {text}"),
        }
    }
}

/// The corners where a reader of its own could part from `Value`'s: repeated keys, escaped
/// keys, `null` members, numbers at the edges of i64, and JSON that `Value` refuses only
/// deep inside a member the connect never looks at.
#[test]
fn the_typed_reading_agrees_with_the_map_at_its_corners() {
    let connect = r#""method":"connect","id":"c""#;
    let params = r#""params":{"uid":"u","token":"t"}"#;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let mut cases = vec![
        format!(r#"{{{connect},{params}}}"#),
        format!(r#"{{"method":"ping",{connect},{params}}}"#),
        format!(r#"{{{connect},"method":"ping",{params}}}"#),
        format!(r#"{{{connect},{params},"params":5}}"#),
        format!(r#"{{{connect},"params":5,{params}}}"#),
        format!(r#"{{{connect},"params":null}}"#),
        format!(r#"{{{connect},"params":[{{"uid":"u","token":"t"}}]}}"#),
        format!(r#"{{"jsonrpc":null,{connect},{params}}}"#),
        format!(r#"{{"jsonrpc":"2.0","jsonrpc":"1.0",{connect},{params}}}"#),
        format!(r#"{{"\u006dethod":"conn\u0065ct","id":"\u0063",{params}}}"#),
        format!(r#"{{{connect},"params":{{"uid":"u","token":"t","uid":"v"}}}}"#),
        format!(r#"{{{connect},"params":{{"ui\u0064":"u","token":"\u0074"}}}}"#),
        format!(r#"{{{connect},"params":{{"uid":null,"token":"t"}}}}"#),
        format!(r#"{{{connect},"params":{{"uid":"u","uid":null,"token":"t"}}}}"#),
        format!(r#"{{{connect},{params},"x":"\ud800"}}"#),
        format!(r#"{{{connect},{params},"x":"\ud800\udc00"}}"#),
        format!(r#"{{{connect},{params},"\ud800":1}}"#),
        format!(r#"{{{connect},{params},"x":1e400}}"#),
        format!(r#"{{{connect},{params},"x":-1e400}}"#),
        format!(r#"{{{connect},{params},"x":1e-400}}"#),
        format!(r#"{{{connect},{params},"x":"a	b"}}"#),
        format!(r#"{{{connect},{params},"x":{}}}"#, deep(126)),
        format!(r#"{{{connect},{params},"x":{}}}"#, deep(127)),
        format!(r#"{{{connect},{params},"x":{}}}"#, deep(128)),
        format!(r#"{{{connect},{params},}}"#),
        format!(r#"{{{connect},{params}}} x"#),
        format!(r#"{{{connect},{params}}}  "#),
        format!(r#" {{{connect},{params}}}"#),
        format!(r#"{{{connect},{params}"#),
    ];
    for flag in [
        "null",
        "-1",
        "0",
        "-0",
        "255",
        "256",
        "1.0",
        "1e2",
        "\"1\"",
        "true",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        cases.push(format!(
            r#"{{{connect},"params":{{"uid":"u","token":"t","deviceFlag":{flag},"clientTimestamp":{flag},"deviceId":{flag}}}}}"#
        ));
    }
    for device_id in [r#""""#, r#""d""#, r#""a\u0000b""#, r#"["d"]"#, r#"{}"#] {
        cases.push(format!(
            r#"{{{connect},"params":{{"uid":"u","token":"t","deviceId":{device_id}}}}}"#
        ));
    }
    let failures: Vec<String> = cases.iter().filter_map(|c| agrees(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A member's JSON text: mostly what a connect frame holds, with the odd value around it.
fn member_text() -> impl Strategy<Value = String> {
    let valid = prop::sample::select(vec![
        "null",
        "true",
        "7",
        "-1",
        "256",
        "1.5",
        "1e2",
        "-0",
        "18446744073709551615",
        r#""2.0""#,
        r#""1.0""#,
        r#""connect""#,
        r#""ping""#,
        r#""""#,
        r#""u1""#,
        r#""a@b""#,
        r#""t""#,
        r#""c\u0031""#,
        r#""web_1""#,
        "[1,{\"a\":2}]",
        "{}",
    ]);
    // Rare: one of these anywhere makes the whole frame JSON that `Value` refuses.
    let refused = prop::sample::select(vec!["1e400", r#""\ud800""#, "\"a\tb\""]);
    let leaf = prop_oneof![100 => valid, 1 => refused].prop_map(str::to_owned);
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop::collection::vec((key_text(), inner), 0..4).prop_map(|members| object(&members))
    })
}

fn key_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "jsonrpc",
        "method",
        "id",
        "params",
        "uid",
        "token",
        "deviceFlag",
        "deviceId",
        "clientTimestamp",
        "x",
        r"\u006dethod",
        r"ui\u0064",
        "",
    ])
    .prop_map(|k| format!("\"{k}\""))
}

fn object(members: &[(String, String)]) -> String {
    let inner: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// Params: half of them start as a good connect's, which the members after may repeat, spoil
/// or leave alone.
fn params_text() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec((key_text(), member_text()), 0..5),
    )
        .prop_map(|(good, more)| {
            let mut m = Vec::new();
            if good {
                m.push((r#""uid""#.to_owned(), r#""u1""#.to_owned()));
                m.push((r#""token""#.to_owned(), r#""t""#.to_owned()));
            }
            m.extend(more);
            object(&m)
        })
}

/// A frame: half of them start as a good connect's members, then members in any order,
/// repeated or of the wrong type; a third of them cut short or with a stray character put in.
fn frame_text() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        1 => Just((r#""method""#.to_owned(), r#""connect""#.to_owned())),
        1 => Just((r#""id""#.to_owned(), r#""c""#.to_owned())),
        2 => params_text().prop_map(|p| (r#""params""#.to_owned(), p)),
        3 => (key_text(), member_text()),
    ];
    let frame = (
        any::<bool>(),
        params_text(),
        prop::collection::vec(member, 0..4),
    )
        .prop_map(|(good, params, more)| {
            let mut m = Vec::new();
            if good {
                m.push((r#""method""#.to_owned(), r#""connect""#.to_owned()));
                m.push((r#""id""#.to_owned(), r#""c""#.to_owned()));
                m.push((r#""params""#.to_owned(), params));
            }
            m.extend(more);
            object(&m)
        });
    let stray = prop::sample::select(vec![",", "}", "{", "\"", "\\", " ", "]", "x"]);
    (frame, any::<prop::sample::Index>(), stray, 0..6u8).prop_map(|(text, at, stray, how)| {
        let at = at.index(text.len() + 1);
        match how {
            0 => text[..at].to_owned(),
            1 => format!("{}{stray}{}", &text[..at], &text[at..]),
            _ => text,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_typed_reading_agrees_with_the_map(text in frame_text()) {
        agrees(&text).map_err(TestCaseError::fail)?;
    }
}

/// serde_json's private raw-value key, as the first key, makes a `Value` parse the string it
/// holds as the whole object: a connect wrapped in a string. The contract knows no such key,
/// and the typed reading takes it as any unknown one.
#[test]
fn a_connect_wrapped_in_serde_jsons_raw_value_key_is_no_connect() {
    let wrapped = r#"{"$serde_json::private::RawValue":"{\"method\":\"connect\",\"id\":\"c\",\"params\":{\"uid\":\"u\",\"token\":\"t\"}}"}"#;
    assert!(matches!(
        parse_first_as_a_map(wrapped),
        FirstFrame::Connect { .. }
    ));
    assert!(matches!(
        parse_first(wrapped),
        FirstFrame::Refused("first frame is not a connect")
    ));
}
