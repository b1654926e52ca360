//! Ids and flags of the protocol, each a newtype parsed once at the edge.
//!
//! Owns the rules of `protocol.md` section 1 for uids, device flags and levels, tokens and
//! session ids. A value of these types is valid by construction: parse a `&str`/`i64` with the
//! `parse` functions and hand the typed value inward. Must never: let a raw token reach `Debug`
//! or `Display` output (only [`TokenHash`] is printable).

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The uid reserved for the platform itself; never a user.
pub const RESERVED_UID: &str = "____system";
/// Longest uid, in bytes of UTF-8.
pub const MAX_UID_BYTES: usize = 255;
/// Longest token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest device id a client may send, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 255;

/// Per byte: 0 for printable ASCII allowed in a uid, non-zero for anything that needs a closer
/// look (`@ # &`, whitespace and control bytes, the bytes of non-ASCII characters). A `const`,
/// so that other tables can start from it (the onlinestatus body scanner's).
pub const UID_BYTE_CLASS: [u8; 256] = {
    let mut t = [1u8; 256];
    let mut b = 0x21;
    while b <= 0x7e {
        t[b] = 0;
        b += 1;
    }
    t[b'@' as usize] = 1;
    t[b'#' as usize] = 1;
    t[b'&' as usize] = 1;
    t
};
/// The same table, read at run time from one place in memory.
static BYTE_CLASS: [u8; 256] = UID_BYTE_CLASS;

/// Why a string is not a uid. The message is for a person reading an HTTP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("must be 1 to 255 bytes")]
    Length,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
    #[error("must not contain '@', '#' or '&'")]
    Forbidden,
    #[error("must not be ____system, which is reserved")]
    Reserved,
}

/// A user's unique id: 1..=255 bytes of UTF-8, no whitespace or control characters, none of
/// `@ # &`, never `____system`. Up to 24 bytes are stored inline (no heap allocation), which
/// is nearly every real uid: the presence map compares keys without another cache miss.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(compact_str::CompactString);

impl Uid {
    /// Checks a candidate uid without allocating. The common case (printable ASCII) is one
    /// table lookup per byte with no branch; anything else takes the precise path.
    pub fn check(s: &str) -> Result<(), UidError> {
        if s.is_empty() || s.len() > MAX_UID_BYTES {
            return Err(UidError::Length);
        }
        let flags = s
            .as_bytes()
            .iter()
            .fold(0u8, |acc, &b| acc | BYTE_CLASS[b as usize]);
        if flags == 0 {
            return if s == RESERVED_UID {
                Err(UidError::Reserved)
            } else {
                Ok(())
            };
        }
        for &b in s.as_bytes() {
            match b {
                b'@' | b'#' | b'&' => return Err(UidError::Forbidden),
                0x21..=0x7e => {}
                0x00..=0x20 | 0x7f => return Err(UidError::Whitespace),
                _ => return Self::check_unicode(s),
            }
        }
        // Not reached (every flagged byte returns above); the full check is the safe answer.
        Self::check_unicode(s)
    }

    fn check_unicode(s: &str) -> Result<(), UidError> {
        for c in s.chars() {
            if c.is_whitespace() || c.is_control() {
                return Err(UidError::Whitespace);
            }
            if matches!(c, '@' | '#' | '&') {
                return Err(UidError::Forbidden);
            }
        }
        Ok(())
    }

    pub fn parse(s: &str) -> Result<Self, UidError> {
        Self::check(s)?;
        Ok(Uid(compact_str::CompactString::new(s)))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Uid {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Uid::parse(&s).map_err(|e| serde::de::Error::custom(format_args!("uid {e}")))
    }
}

/// The device type: an opaque number 0..=255, matched exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceFlag(pub u8);

impl DeviceFlag {
    pub fn parse(n: i64) -> Option<Self> {
        u8::try_from(n).ok().map(DeviceFlag)
    }

    /// The name a person reads: the concept page's names, `flag N` for the rest.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self.0 {
            1 => "iOS".into(),
            2 => "Android".into(),
            3 => "Web".into(),
            4 => "Desktop".into(),
            n => format!("flag {n}").into(),
        }
    }
}

impl fmt::Display for DeviceFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which flags a device quit clears: one, or every flag of the uid (`-1` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuitScope {
    All,
    One(DeviceFlag),
}

impl QuitScope {
    pub fn parse(n: i64) -> Option<Self> {
        if n == -1 {
            Some(QuitScope::All)
        } else {
            DeviceFlag::parse(n).map(QuitScope::One)
        }
    }

    pub fn covers(self, flag: DeviceFlag) -> bool {
        match self {
            QuitScope::All => true,
            QuitScope::One(f) => f == flag,
        }
    }
}

impl Serialize for QuitScope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            QuitScope::All => s.serialize_i16(-1),
            QuitScope::One(f) => s.serialize_i16(f.0.into()),
        }
    }
}

impl<'de> Deserialize<'de> for QuitScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A compact format reads back the i16 it wrote; JSON takes any integer, to refuse one
        // out of range with a clear message.
        let n = if d.is_human_readable() {
            i64::deserialize(d)?
        } else {
            i16::deserialize(d)?.into()
        };
        QuitScope::parse(n).ok_or_else(|| serde::de::Error::custom("device_flag outside -1..=255"))
    }
}

/// 0 = slave (several devices of one flag online together), 1 = master (one per uid + flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceLevel {
    #[default]
    Slave,
    Master,
}

impl DeviceLevel {
    pub fn parse(n: i64) -> Option<Self> {
        match n {
            0 => Some(DeviceLevel::Slave),
            1 => Some(DeviceLevel::Master),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            DeviceLevel::Slave => 0,
            DeviceLevel::Master => 1,
        }
    }
}

impl Serialize for DeviceLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for DeviceLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A compact format reads back the u8 it wrote (a binary format does not say how wide a
        // number is: reading another width would misread it); JSON takes any integer.
        let n = if d.is_human_readable() {
            i64::deserialize(d)?
        } else {
            u8::deserialize(d)?.into()
        };
        DeviceLevel::parse(n).ok_or_else(|| serde::de::Error::custom("device_level must be 0 or 1"))
    }
}

/// A token as presented by an application server or a client. Never stored, never printed:
/// it exists only long enough to be hashed.
pub struct Token<'a>(&'a str);

impl<'a> Token<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        (!s.is_empty() && s.len() <= MAX_TOKEN_BYTES).then_some(Token(s))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token: what the log, the view and the memory state keep instead of the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Compares in constant time, so that a wrong guess says nothing about the right one.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// Hex in JSON (what operators read); the 32 bytes themselves in a compact format (the log's
/// stored encoding), half the size.
impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return <[u8; 32]>::deserialize(d).map(TokenHash);
        }
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        TokenHash::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("token_hash must be 64 hex digits"))
    }
}

/// One device session (one authenticated connection), a UUID v7 so that ids sort by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub Uuid);

/// The UUID's text in JSON; its 16 bytes in a compact format, without the length a byte
/// string would carry (a session id is always 16 bytes).
impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            self.0.as_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Uuid::deserialize(d).map(SessionId)
        } else {
            <[u8; 16]>::deserialize(d).map(|b| SessionId(Uuid::from_bytes(b)))
        }
    }
}

impl SessionId {
    pub fn new() -> Self {
        SessionId(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(SessionId)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The client's own name for its device (`deviceId`), or one the server made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// `None` for an id too long to keep; an empty id should be replaced by [`DeviceId::generate`].
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= MAX_DEVICE_ID_BYTES && !s.chars().any(char::is_control))
            .then(|| DeviceId(s.to_owned()))
    }

    /// A server-made id for a client that sent none.
    pub fn generate() -> Self {
        DeviceId(format!("srv_{}", Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The node (server process identity in a cluster) that recorded an event or holds a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Position of an event in the log: dense, starting at 1, never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_key(k: &[u8]) -> Option<Seq> {
        Some(Seq(u64::from_be_bytes(k.try_into().ok()?)))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a device session ended (`protocol.md` 3.4); snake_case on every surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    ClientClosed,
    DeviceQuit,
    MasterLogin,
    TokenUpdated,
    Replaced,
    IdleTimeout,
    SlowConsumer,
    ProtocolError,
    ServerShutdown,
    ServerRestart,
    /// The node holding the session stopped renewing its lease; a peer closed it.
    NodeLost,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::ClientClosed,
        CloseReason::DeviceQuit,
        CloseReason::MasterLogin,
        CloseReason::TokenUpdated,
        CloseReason::Replaced,
        CloseReason::IdleTimeout,
        CloseReason::SlowConsumer,
        CloseReason::ProtocolError,
        CloseReason::ServerShutdown,
        CloseReason::ServerRestart,
        CloseReason::NodeLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::DeviceQuit => "device_quit",
            CloseReason::MasterLogin => "master_login",
            CloseReason::TokenUpdated => "token_updated",
            CloseReason::Replaced => "replaced",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ServerRestart => "server_restart",
            CloseReason::NodeLost => "node_lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The text of the kick notification (`protocol.md` 3.5), for the reasons that send one.
    pub fn kick_text(self) -> Option<&'static str> {
        match self {
            CloseReason::DeviceQuit => Some("device quit"),
            CloseReason::MasterLogin => Some("login in other device"),
            CloseReason::TokenUpdated => Some("token updated"),
            _ => None,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert!(Uid::parse("u1").is_ok());
        assert!(Uid::parse("用户").is_ok());
        assert_eq!(Uid::parse(""), Err(UidError::Length));
        assert!(Uid::parse(&"a".repeat(255)).is_ok());
        assert_eq!(Uid::parse(&"a".repeat(256)), Err(UidError::Length));
        assert_eq!(Uid::parse("a b"), Err(UidError::Whitespace));
        assert_eq!(Uid::parse("a\u{3000}b"), Err(UidError::Whitespace));
        assert_eq!(Uid::parse("a\u{85}b"), Err(UidError::Whitespace));
        for bad in ["a@b", "a#b", "a&b", "é@"] {
            assert_eq!(Uid::parse(bad), Err(UidError::Forbidden), "{bad}");
        }
        assert_eq!(Uid::parse("____system"), Err(UidError::Reserved));
    }

    #[test]
    fn flags_levels_scopes() {
        assert_eq!(DeviceFlag::parse(255), Some(DeviceFlag(255)));
        assert_eq!(DeviceFlag::parse(256), None);
        assert_eq!(DeviceFlag::parse(-1), None);
        assert_eq!(QuitScope::parse(-1), Some(QuitScope::All));
        assert_eq!(QuitScope::parse(-2), None);
        assert_eq!(DeviceLevel::parse(2), None);
        assert_eq!(DeviceFlag(1).name(), "iOS");
        assert_eq!(DeviceFlag(0).name(), "flag 0");
    }

    #[test]
    fn token_hash_is_constant_length_and_redacted() {
        let t = Token::parse("secret-token").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        let h = t.hash();
        assert!(h.matches(&Token::parse("secret-token").unwrap().hash()));
        assert!(!h.matches(&Token::parse("secret-tokeN").unwrap().hash()));
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert!(Token::parse("").is_none());
        assert!(Token::parse(&"x".repeat(4097)).is_none());
    }

    #[test]
    fn close_reasons_round_trip() {
        for r in CloseReason::ALL {
            assert_eq!(CloseReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
    }
}
