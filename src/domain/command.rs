//! Commands: what a caller asks of the system, already parsed and typed at the edge.
//!
//! Owns [`Command`] and its [`Subject`], the part of the state a command is decided against
//! and ordered by: one user, the set of system uids, or nothing (a node's lifetime). Promises:
//! every change to the system is one of these commands, whatever the edge it came in by (HTTP,
//! WebSocket, the server's own lifetime). Must never: carry a raw token (a connect carries the
//! hash of the one it presented).

use super::event::{NodeLifetime, NodeStart};
use super::ids::*;

/// A request to change the state.
#[derive(Debug, Clone)]
pub enum Command {
    /// `/user/token`: set the token and level of uid + flag.
    SetToken {
        uid: Uid,
        device_flag: DeviceFlag,
        device_level: DeviceLevel,
        token_hash: TokenHash,
    },
    /// `/user/device_quit`: clear the token(s) and kick the connections of those flags.
    QuitDevice { uid: Uid, scope: QuitScope },
    /// A WebSocket `connect` with the hash of the token it presented.
    Connect {
        session_id: SessionId,
        uid: Uid,
        device_flag: DeviceFlag,
        device_id: DeviceId,
        presented: TokenHash,
        node_id: NodeId,
        peer: String,
    },
    /// A session ends (the client left, the server closed it).
    Disconnect {
        uid: Uid,
        session_id: SessionId,
        reason: CloseReason,
    },
    /// `/user/systemuids_add`: idempotent.
    AddSystemUids { uids: Vec<Uid> },
    /// `/user/systemuids_remove`: idempotent.
    RemoveSystemUids { uids: Vec<Uid> },
    /// A node's lifetime begins: recorded before it serves anything.
    StartNode(NodeStart),
    /// A node's lifetime ends: recorded after its last session closed.
    StopNode(NodeLifetime),
}

/// The part of the state a command is decided against; commands of one subject are decided
/// and appended one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    User(&'a Uid),
    SystemUids,
    /// Nothing to decide against: the command is recorded as it is.
    Node,
}

impl Command {
    pub fn subject(&self) -> Subject<'_> {
        match self {
            Command::SetToken { uid, .. }
            | Command::QuitDevice { uid, .. }
            | Command::Connect { uid, .. }
            | Command::Disconnect { uid, .. } => Subject::User(uid),
            Command::AddSystemUids { .. } | Command::RemoveSystemUids { .. } => Subject::SystemUids,
            Command::StartNode(_) | Command::StopNode(_) => Subject::Node,
        }
    }
}
