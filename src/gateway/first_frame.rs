//! The first frame of a connection (`protocol.md` 3.2), read into a [`FirstFrame`].
//!
//! Owns the reading of the connect frame: its members are read straight into typed fields
//! that borrow from the text (no map of the whole frame, no string per key), each kept as the
//! last occurrence of its key left it, then checked in the contract's order. Every connect of
//! a login storm passes here, and a `serde_json` map of the frame was about a fifth of what a
//! connect allocated. Promises: every text gets the answer reading it into a
//! `serde_json::Value` gave (the same JSON refused, every member read through `deserialize_any`
//! as `Value` reads it, the last of a repeated key winning; the tests hold it to that reading),
//! except `serde_json`'s own private raw-value key, which a `Value` unwraps as a frame inside a
//! string and which is here just another unknown key; no input makes it panic. Must never: put
//! a token in an error or a log line.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::domain::{DeviceFlag, DeviceId, Token, TokenHash, Uid};

/// What the connect frame asks for, parsed.
#[derive(Debug)]
pub struct ConnectParams {
    pub uid: Uid,
    /// The hash of the token the client presented: the token itself goes no further.
    pub presented: TokenHash,
    pub device_flag: DeviceFlag,
    /// `None`: the client sent none (or an empty one); the server makes one.
    pub device_id: Option<DeviceId>,
    pub client_timestamp: Option<i64>,
}

/// The first frame of a connection.
#[derive(Debug)]
pub enum FirstFrame {
    Connect {
        id: String,
        params: ConnectParams,
    },
    /// A connect request with an id but bad params: answered with the auth failure.
    BadConnect {
        id: String,
        why: String,
    },
    /// Anything else: closed (1008) without a reply.
    Refused(&'static str),
}

pub fn parse_first(text: &str) -> FirstFrame {
    let Ok(frame) = serde_json::from_str::<FrameMembers>(text) else {
        return FirstFrame::Refused("first frame is not a JSON object");
    };
    match &frame.jsonrpc {
        None => {}
        Some(Member::Str(v)) if v == "2.0" => {}
        Some(_) => return FirstFrame::Refused("jsonrpc is not \"2.0\""),
    }
    if !matches!(&frame.method, Some(Member::Str(m)) if m == "connect") {
        return FirstFrame::Refused("first frame is not a connect");
    }
    let Some(Member::Str(id)) = frame.id else {
        return FirstFrame::Refused("connect without a string id");
    };
    let id = id.into_owned();
    match frame.params {
        Some(Params::Object(p)) => match connect_params(p) {
            Ok(params) => FirstFrame::Connect { id, params },
            Err(why) => FirstFrame::BadConnect { id, why },
        },
        Some(Params::Other) | None => FirstFrame::BadConnect {
            id,
            why: "params missing or not an object".into(),
        },
    }
}

fn connect_params(p: ParamMembers<'_>) -> Result<ConnectParams, String> {
    let Some(Member::Str(uid)) = present(p.uid) else {
        return Err("uid missing or not a string".into());
    };
    let uid = Uid::parse(&uid).map_err(|e| format!("invalid uid: it {e}"))?;
    let Some(Member::Str(token)) = present(p.token) else {
        return Err("token missing or not a string".into());
    };
    let presented = Token::parse(&token)
        .ok_or("token must be 1 to 4096 bytes")?
        .hash();
    let device_flag = match present(p.device_flag) {
        None => DeviceFlag(0),
        Some(Member::Int(n)) => DeviceFlag::parse(n).ok_or("deviceFlag outside 0..=255")?,
        Some(_) => return Err("deviceFlag outside 0..=255".into()),
    };
    let device_id = match present(p.device_id) {
        None => None,
        Some(Member::Str(s)) if s.is_empty() => None,
        Some(Member::Str(s)) => {
            Some(DeviceId::parse(&s).ok_or("deviceId longer than 255 bytes or not printable")?)
        }
        Some(_) => return Err("deviceId is not a string".into()),
    };
    let client_timestamp = match p.client_timestamp {
        Some(Member::Int(n)) => Some(n),
        _ => None,
    };
    Ok(ConnectParams {
        uid,
        presented,
        device_flag,
        device_id,
        client_timestamp,
    })
}

/// A member that is `null` counts as missing.
fn present(m: Option<Member<'_>>) -> Option<Member<'_>> {
    m.filter(|m| !matches!(m, Member::Null))
}

/// The frame's members the connect reads, each the last of its key; others are read through
/// (so that the frame is checked as JSON whole) and dropped.
#[derive(Default)]
struct FrameMembers<'a> {
    jsonrpc: Option<Member<'a>>,
    method: Option<Member<'a>>,
    id: Option<Member<'a>>,
    params: Option<Params<'a>>,
}

/// The params' members the connect reads, each the last of its key.
#[derive(Default)]
struct ParamMembers<'a> {
    uid: Option<Member<'a>>,
    token: Option<Member<'a>>,
    device_flag: Option<Member<'a>>,
    device_id: Option<Member<'a>>,
    client_timestamp: Option<Member<'a>>,
}

/// `params`: an object, or anything else (which the connect refuses alike).
enum Params<'a> {
    Object(ParamMembers<'a>),
    Other,
}

/// A member's value, as much of it as the connect asks of it.
enum Member<'a> {
    Null,
    /// Borrowed from the frame unless it held escapes.
    Str(Cow<'a, str>),
    /// A number that `Value::as_i64` gives: an integer in i64's range.
    Int(i64),
    /// Anything else: a boolean, another number, an array, an object.
    Other,
}

/// A key or a string, borrowed from the frame unless it held escapes.
struct Text<'a>(Cow<'a, str>);

/// Any JSON value, read through and dropped, checked on the way as `Value` checks it (the same
/// `deserialize_any` reads its strings, numbers and nesting).
struct Skipped;

impl<'de> Deserialize<'de> for FrameMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Frame;
        impl<'de> Visitor<'de> for Frame {
            type Value = FrameMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = FrameMembers::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "jsonrpc" => m.jsonrpc = Some(map.next_value()?),
                        "method" => m.method = Some(map.next_value()?),
                        "id" => m.id = Some(map.next_value()?),
                        "params" => m.params = Some(map.next_value()?),
                        _ => map.next_value::<Skipped>().map(drop)?,
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_any(Frame)
    }
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = ParamMembers::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "uid" => m.uid = Some(map.next_value()?),
                        "token" => m.token = Some(map.next_value()?),
                        "deviceFlag" => m.device_flag = Some(map.next_value()?),
                        "deviceId" => m.device_id = Some(map.next_value()?),
                        "clientTimestamp" => m.client_timestamp = Some(map.next_value()?),
                        _ => map.next_value::<Skipped>().map(drop)?,
                    }
                }
                Ok(Params::Object(m))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Skipped::seq(seq).map(|_| Params::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Params::Other)
            }
        }
        d.deserialize_any(ParamsVisitor)
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl<'de> Visitor<'de> for MemberVisitor {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Member::Null)
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Member::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(n).map_or(Member::Other, Member::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Member::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Member::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Skipped::seq(seq).map(|_| Member::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Skipped::map(map).map(|_| Member::Other)
            }
        }
        d.deserialize_any(MemberVisitor)
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl Skipped {
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Skipped, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }

    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Skipped, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SkippedVisitor;
        impl<'de> Visitor<'de> for SkippedVisitor {
            type Value = Skipped;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skipped, A::Error> {
                Skipped::seq(seq)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skipped, A::Error> {
                Skipped::map(map)
            }
        }
        d.deserialize_any(SkippedVisitor)
    }
}

#[cfg(test)]
mod tests;
