//! Sockets to the gateway from chosen loopback addresses, for the per-address and total limits:
//! a bare TCP connection, an upgrade that the server may answer or refuse, and the room in this
//! process's open-files limit that a thousand sockets need.
//!
//! Owns nothing but the sockets it hands out. Promises: an upgrade is either admitted or refused
//! within a bound, never left hanging. Must never retry behind a test's back, except in
//! [`TestApp::ws_from_within`], whose point is to wait for a slot.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use super::{eventually, TestApp, Ws};

/// Makes sure this process may open at least `wanted` files (sockets), raising the soft limit
/// toward the hard one when it is lower (a common default soft limit is 1,024). Panics with an
/// explanation when the hard limit is too low.
pub fn ensure_open_files(wanted: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(got, 0, "getrlimit(RLIMIT_NOFILE) failed");
    if lim.rlim_cur >= wanted {
        return;
    }
    assert!(
        lim.rlim_max >= wanted,
        "this test needs {wanted} open files; the hard limit is {}",
        lim.rlim_max
    );
    lim.rlim_cur = wanted;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(set, 0, "setrlimit(RLIMIT_NOFILE) failed");
}

/// The loopback address 127.0.0.`n`. Linux routes all of 127.0.0.0/8 to `lo`, so a test can
/// open sockets from several peer addresses to exercise the per-address limits.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

impl TestApp {
    /// A TCP connection to the gateway from `from` (bound before connecting). The kernel
    /// completes it whether or not the server then keeps it.
    pub async fn tcp_from(&self, from: Ipv4Addr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(5),
            socket.connect(self.server().ws_addr()),
        )
        .await
        .expect("tcp connects within 5 s")
        .expect("tcp connects")
    }

    /// Completes a WebSocket upgrade over `tcp`: `Ok` once the server answered 101, `Err` (what
    /// the client saw) when the server closed the socket instead. Panics after 5 s of neither.
    pub async fn try_upgrade(&self, tcp: TcpStream) -> Result<Ws, String> {
        let upgrade = tokio_tungstenite::client_async(&self.ws, MaybeTlsStream::Plain(tcp));
        match tokio::time::timeout(Duration::from_secs(5), upgrade).await {
            Err(_) => panic!("the upgrade was neither answered nor refused within 5 s"),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    /// A WebSocket from `from`: `Ok` when the server admitted it (answered the upgrade), `Err`
    /// when it dropped it. See [`TestApp::try_upgrade`].
    pub async fn try_ws_from(&self, from: Ipv4Addr) -> Result<Ws, String> {
        let tcp = self.tcp_from(from).await;
        self.try_upgrade(tcp).await
    }

    /// A WebSocket from `from`, tried again after a short pause until the server admits one:
    /// for a slot that a socket closing on its own frees a moment later.
    pub async fn ws_from_within(&self, from: Ipv4Addr) -> Ws {
        eventually(
            &format!("a socket from {from} admitted"),
            async || self.try_ws_from(from).await,
            Result::is_ok,
        )
        .await
        .expect("an admitted socket")
    }
}
