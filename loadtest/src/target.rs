//! Where the load goes and what the machine allows: the target addresses (loopback only) and
//! the file-descriptor limit.
//!
//! Promises: a target that resolves to anything but a loopback address is refused before a
//! single packet is sent; the soft `RLIMIT_NOFILE` is raised to the hard limit where the
//! platform has one. Must never: send load to another host.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};

/// Resolves `target` (`host:port`, optionally `http://` or `ws://` in front) and refuses it
/// unless every address it names is a loopback address.
pub async fn loopback(what: &str, target: &str) -> anyhow::Result<SocketAddr> {
    let bare = target
        .split_once("://")
        .map_or(target, |(_, rest)| rest)
        .trim_end_matches('/');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(bare)
        .await
        .with_context(|| format!("{what} {target:?} is not a host:port"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{what} {target:?} resolves to no address");
    };
    if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "{what} {target:?} resolves to {outside}, which is not a loopback address: the load \
             test only targets this machine over loopback (127.0.0.0/8, ::1)"
        );
    }
    Ok(first)
}

/// One or several addresses of the same kind (the API of each node, or its gateway): user `i`,
/// or client `i`, goes to address `i` modulo their number, so the load is spread evenly.
#[derive(Debug, Clone)]
pub struct Spread(Arc<[SocketAddr]>);

impl Spread {
    pub fn one(addr: SocketAddr) -> Self {
        Spread(Arc::from([addr]))
    }

    /// The addresses of a comma-separated `targets`, each checked with [`loopback`].
    pub async fn parse(what: &str, targets: &str) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        for target in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            addrs.push(loopback(what, target).await?);
        }
        if addrs.is_empty() {
            bail!("{what} names no address");
        }
        Ok(Spread(addrs.into()))
    }

    /// The address for user (or client) `i`.
    pub fn for_index(&self, i: usize) -> SocketAddr {
        self.0[i % self.0.len()]
    }

    pub fn all(&self) -> &[SocketAddr] {
        &self.0
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// The soft and hard limits on open files after trying to raise the soft one to the hard one.
#[derive(Debug, Clone, Copy)]
pub struct FdLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur as u64;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(FdLimit {
        before,
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    Ok(FdLimit {
        before: u64::MAX,
        soft: u64::MAX,
        hard: u64::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets() {
        assert_eq!(
            loopback("--api", "127.0.0.1:5001").await.unwrap(),
            "127.0.0.1:5001".parse().unwrap()
        );
        assert!(loopback("--ws", "ws://127.0.0.2:5200/").await.is_ok());
        assert!(loopback("--ws", "[::1]:5200").await.is_ok());
        let err = loopback("--api", "10.1.2.3:5001").await.unwrap_err();
        assert!(err.to_string().contains("not a loopback"), "{err}");
        assert!(loopback("--api", "0.0.0.0:5001").await.is_err());
        assert!(loopback("--api", "no port").await.is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_fd_limit_reaches_the_hard_one() {
        let l = raise_fd_limit().unwrap();
        assert!(l.soft >= l.before);
        assert!(l.soft <= l.hard);
    }
}
