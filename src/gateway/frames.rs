//! JSON-RPC 2.0 frames as the EasySDK clients speak them (`protocol.md` 3.1 to 3.3).
//!
//! Owns the reading of the frames after connect into an [`Inbound`] (the first frame is
//! [`super::first_frame`]'s) and the writing of every outbound frame with its fields in the
//! contract's order. Promises: a server notification never carries an `id`
//! key; a response echoes the request's id unchanged; no input makes it panic. Must never: put
//! a token in an error or a log line.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A frame after connect.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Request {
        id: RequestId,
        method: String,
    },
    Notification {
        method: String,
    },
    /// Not a request or notification: answered with -32700 and the id when one could be read.
    Unparsable {
        id: RequestId,
    },
}

/// A request's id, echoed in its response unchanged: a string, an integer, `null`; or a
/// number that `Value` would not give back as it came (`1e2`, `1.5`, an integer past 64 bits:
/// serde_json holds those as floats and writes `100.0`, or drops digits), kept as the client
/// wrote it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    Value(Value),
    Written(Box<RawValue>),
}

impl RequestId {
    pub const NULL: RequestId = RequestId::Value(Value::Null);

    /// The id of `text`, a request whose `id` parsed to `id`.
    fn of(text: &str, id: &Value) -> RequestId {
        /// Only the id, as written.
        #[derive(Deserialize)]
        struct Written<'a> {
            #[serde(borrow)]
            id: &'a RawValue,
        }
        match id {
            // Read a second time only here: a float id is rare.
            Value::Number(n) if n.is_f64() => match serde_json::from_str::<Written>(text) {
                Ok(w) => RequestId::Written(w.id.to_owned()),
                // A repeated "id" key: the last one, as the map kept it.
                Err(_) => RequestId::Value(id.clone()),
            },
            _ => RequestId::Value(id.clone()),
        }
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        RequestId::Value(Value::String(id))
    }
}

/// Equal when they are written the same.
impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_string(self).ok() == serde_json::to_string(other).ok()
    }
}

fn object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn jsonrpc_ok(map: &Map<String, Value>) -> bool {
    match map.get("jsonrpc") {
        None => true,
        Some(v) => v.as_str() == Some("2.0"),
    }
}

pub fn parse_inbound(text: &str) -> Inbound {
    let Some(map) = object(text) else {
        return Inbound::Unparsable {
            id: RequestId::NULL,
        };
    };
    let id = map.get("id").cloned();
    let readable_id = match &id {
        Some(v @ (Value::String(_) | Value::Number(_))) => RequestId::of(text, v),
        _ => RequestId::NULL,
    };
    if !jsonrpc_ok(&map) {
        return Inbound::Unparsable { id: readable_id };
    }
    let Some(method) = map.get("method").and_then(Value::as_str) else {
        return Inbound::Unparsable { id: readable_id };
    };
    match id {
        None => Inbound::Notification {
            method: method.to_owned(),
        },
        Some(Value::String(_) | Value::Number(_)) => Inbound::Request {
            id: readable_id,
            method: method.to_owned(),
        },
        Some(_) => Inbound::Unparsable {
            id: RequestId::NULL,
        },
    }
}

#[derive(Serialize)]
struct ResultFrame<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    result: T,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    error: RpcError<'a>,
}

#[derive(Serialize)]
struct RpcError<'a> {
    code: i32,
    message: &'a str,
}

#[derive(Serialize)]
struct NotificationFrame<'a> {
    jsonrpc: &'static str,
    method: &'static str,
    params: KickParams<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KickParams<'a> {
    reason_code: u8,
    reason: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectResult {
    server_key: &'static str,
    salt: &'static str,
    time_diff: i64,
    reason_code: u8,
    server_version: u8,
    node_id: u64,
}

#[derive(Serialize)]
struct Empty {}

/// Reason codes used on the wire (`protocol.md` 3.6).
pub const REASON_SUCCESS: u8 = 1;
pub const CODE_AUTH_FAIL: i32 = 2;
pub const REASON_CONNECT_KICK: u8 = 12;
pub const CODE_SYSTEM_ERROR: i32 = 15;
pub const CODE_PARSE_ERROR: i32 = -32700;
pub const CODE_METHOD_NOT_FOUND: i32 = -32601;

fn to_string<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).expect("frames are plain data")
}

pub fn connect_ok(id: &str, time_diff: i64, node_id: u64) -> String {
    to_string(&ResultFrame {
        jsonrpc: "2.0",
        id: &RequestId::from(id.to_owned()),
        result: ConnectResult {
            server_key: "",
            salt: "",
            time_diff,
            reason_code: REASON_SUCCESS,
            server_version: 1,
            node_id,
        },
    })
}

pub fn empty_result(id: &RequestId) -> String {
    to_string(&ResultFrame {
        jsonrpc: "2.0",
        id,
        result: Empty {},
    })
}

pub fn error(id: &RequestId, code: i32, message: &str) -> String {
    to_string(&ErrorFrame {
        jsonrpc: "2.0",
        id,
        error: RpcError { code, message },
    })
}

pub fn auth_fail(id: &str) -> String {
    error(&RequestId::from(id.to_owned()), CODE_AUTH_FAIL, "auth fail")
}

/// The kick notification: no `id` key, so the EasySDK treats it as a notification.
pub fn kick(reason: &str) -> String {
    to_string(&NotificationFrame {
        jsonrpc: "2.0",
        method: "disconnect",
        params: KickParams {
            reason_code: REASON_CONNECT_KICK,
            reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_frames_are_byte_exact() {
        assert_eq!(
            connect_ok("c1", -15, 1),
            r#"{"jsonrpc":"2.0","id":"c1","result":{"serverKey":"","salt":"","timeDiff":-15,"reasonCode":1,"serverVersion":1,"nodeId":1}}"#
        );
        assert_eq!(
            auth_fail("c1"),
            r#"{"jsonrpc":"2.0","id":"c1","error":{"code":2,"message":"auth fail"}}"#
        );
        assert_eq!(
            kick("device quit"),
            r#"{"jsonrpc":"2.0","method":"disconnect","params":{"reasonCode":12,"reason":"device quit"}}"#
        );
        assert_eq!(
            empty_result(&RequestId::from("p".to_owned())),
            r#"{"jsonrpc":"2.0","id":"p","result":{}}"#
        );
        assert_eq!(
            error(&RequestId::NULL, CODE_PARSE_ERROR, "parse error"),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#
        );
    }

    #[test]
    fn inbound_after_connect() {
        assert_eq!(
            parse_inbound(r#"{"method":"ping","id":"p1"}"#),
            Inbound::Request {
                id: RequestId::from("p1".to_owned()),
                method: "ping".into()
            }
        );
        assert_eq!(
            parse_inbound(r#"{"method":"recvack","params":{}}"#),
            Inbound::Notification {
                method: "recvack".into()
            }
        );
        assert_eq!(
            parse_inbound("{"),
            Inbound::Unparsable {
                id: RequestId::NULL
            }
        );
        assert_eq!(
            parse_inbound(r#"{"id":"x","params":{}}"#),
            Inbound::Unparsable {
                id: RequestId::from("x".to_owned())
            }
        );
    }

    #[test]
    fn a_numeric_id_is_echoed_as_it_was_written() {
        for (id, echoed) in [
            ("7", "7"),
            ("-3", "-3"),
            ("1e2", "1e2"),
            ("-0.0", "-0.0"),
            ("1.5", "1.5"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("\"p\\u0031\"", "\"p1\""),
        ] {
            let Inbound::Request { id: parsed, .. } =
                parse_inbound(&format!(r#"{{"method":"ping","id":{id}}}"#))
            else {
                panic!("{id}: not a request");
            };
            assert_eq!(
                empty_result(&parsed),
                format!(r#"{{"jsonrpc":"2.0","id":{echoed},"result":{{}}}}"#),
                "{id}"
            );
        }
        // A repeated key: the last one, written as `Value` writes it.
        let Inbound::Request { id, .. } = parse_inbound(r#"{"method":"ping","id":1.5,"id":2.5}"#)
        else {
            panic!("not a request");
        };
        assert_eq!(serde_json::to_string(&id).unwrap(), "2.5");
    }
}
