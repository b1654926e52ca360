//! The simulated users of a run: who holds a session, who only has a token, who the probes
//! across nodes use, and the known users seeded before it (`--known-users`, [`crate::seed`]).
//!
//! Every numbered uid comes from one [`Naming`], `{prefix}{i:0width$}` with the width fixed
//! by the largest index (at least six digits), so that a run with 200,000 known users and a
//! later one with 1,000,000 name their first users alike. The users holding sessions are the
//! first `--users` of the known users; with enough known users the offline ones of the
//! onlinestatus bodies are the next ones, so the churn and onlinestatus run over seeded users
//! and a known-users run adds no user of its own. Must never: make a uid the server would
//! refuse (checked before anything is sent).

use std::sync::Arc;

use wkuser::domain::Uid;

use crate::run::{LoadtestArgs, UIDS_PER_REQUEST};
use crate::ws::Frames;

/// How the numbered users are named.
#[derive(Debug, Clone)]
pub struct Naming {
    prefix: String,
    width: usize,
}

impl Naming {
    /// Names users `0..largest` of `prefix`.
    pub fn new(prefix: &str, largest: usize) -> Naming {
        Naming {
            prefix: prefix.to_owned(),
            width: largest.saturating_sub(1).to_string().len().max(6),
        }
    }

    /// User `i`: `load_000042`.
    pub fn uid(&self, i: usize) -> String {
        format!("{}{i:0w$}", self.prefix, w = self.width)
    }

    /// User `i` of another kind: `load_off000042`, `load_tail000001`.
    fn of_kind(&self, kind: &str, i: usize) -> String {
        format!("{}{kind}{i:0w$}", self.prefix, w = self.width)
    }
}

/// The token a seeded known user gets (the same in every run, so a rerun finds it unchanged).
pub fn known_token(i: usize) -> String {
    format!("kt-{i}")
}

/// The simulated users: `online` hold sessions, `offline` only have tokens; with several
/// nodes, `tail` and `kick` are the probes' users ([`crate::across`]), one per probe.
pub struct Users {
    pub online: Vec<String>,
    pub offline: Vec<String>,
    pub tail: Vec<String>,
    pub kick: Vec<String>,
    pub naming: Naming,
    run_id: String,
    seed: u64,
}

impl Users {
    pub fn new(args: &LoadtestArgs, nodes: usize) -> anyhow::Result<Users> {
        let naming = Naming::new(&args.uid_prefix, args.users.max(args.known_users));
        let probes = |rate: f64, kind: &str| -> Vec<String> {
            let n = if nodes > 1 {
                crate::across::Plan::users_for(rate, args.duration)
            } else {
                0
            };
            (0..n).map(|i| naming.of_kind(kind, i)).collect()
        };
        let (tail, kick) = (
            probes(args.tail_probes, "tail"),
            probes(args.kick_probes, "kick"),
        );
        let online: Vec<String> = (0..args.users).map(|i| naming.uid(i)).collect();
        let offline_count = (args.users / 10).max(UIDS_PER_REQUEST);
        // Known users beyond the online ones, when there are enough of them; else users of
        // their own.
        let offline: Vec<String> = if args.known_users >= args.users + offline_count {
            (args.users..args.users + offline_count)
                .map(|i| naming.uid(i))
                .collect()
        } else {
            (0..offline_count)
                .map(|i| naming.of_kind("off", i))
                .collect()
        };
        for uid in [&online[0], &offline[0]] {
            Uid::parse(uid).map_err(|e| {
                anyhow::anyhow!(
                    "--uid-prefix {:?} makes invalid uids ({uid:?}: it {e})",
                    args.uid_prefix
                )
            })?;
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Ok(Users {
            online,
            offline,
            tail,
            kick,
            naming,
            run_id: format!("{:x}", seed & 0xffff_ffff),
            seed,
        })
    }

    pub fn online_per_request(&self) -> usize {
        (UIDS_PER_REQUEST / 2).min(self.online.len())
    }

    /// Tokens of the first `n` users (online first, then offline, then the probes'), new for
    /// each run.
    pub fn tokens(&self, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("lt-{}-{i}", self.run_id)).collect()
    }

    /// Every user that gets a token, in the order of [`Users::tokens`].
    pub fn registered(&self) -> Vec<String> {
        [&self.online, &self.offline, &self.tail, &self.kick]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The probe users of one kind (`skip` users after the online and offline ones), with
    /// their tokens.
    pub fn probe_frames(&self, uids: &[String], skip: usize, flag: u8) -> Arc<Frames> {
        let tokens = self.tokens(skip + uids.len()).split_off(skip);
        Arc::new(Frames::new(uids.to_vec(), tokens, flag))
    }

    pub fn frames(&self, args: &LoadtestArgs) -> Frames {
        Frames::new(
            self.online.clone(),
            self.tokens(self.online.len()),
            args.device_flag,
        )
    }

    /// `count` onlinestatus bodies: 100 distinct uids each, half from the online users and the
    /// rest from the offline ones, shuffled.
    pub fn bodies(&self, count: usize) -> Vec<Vec<u8>> {
        let mut rng = SplitMix(self.seed);
        (0..count)
            .map(|_| {
                let mut uids: Vec<&str> = Vec::with_capacity(UIDS_PER_REQUEST);
                let on = self.online_per_request();
                pick_distinct(&mut rng, &self.online, on, &mut uids);
                pick_distinct(&mut rng, &self.offline, UIDS_PER_REQUEST - on, &mut uids);
                for i in (1..uids.len()).rev() {
                    uids.swap(i, rng.below(i + 1));
                }
                serde_json::to_vec(&uids).expect("strings serialize")
            })
            .collect()
    }

    /// The server's answer to `body` when every online user has one session on `flag`.
    pub fn expected_answer(&self, body: &[u8], flag: u8) -> Vec<u8> {
        let uids: Vec<String> = serde_json::from_slice(body).expect("our own body");
        // Same-width numbers: the online uids are sorted.
        let rows: Vec<String> = uids
            .iter()
            .filter(|u| self.online.binary_search(u).is_ok())
            .map(|u| {
                let uid = serde_json::to_string(u).expect("strings serialize");
                // The server writes the keys in this order.
                format!(r#"{{"uid":{uid},"device_flag":{flag},"online":1}}"#)
            })
            .collect();
        format!("[{}]", rows.join(",")).into_bytes()
    }
}

fn pick_distinct<'a>(rng: &mut SplitMix, from: &'a [String], n: usize, into: &mut Vec<&'a str>) {
    let n = n.min(from.len());
    let mut chosen = std::collections::HashSet::with_capacity(n);
    while chosen.len() < n {
        let i = rng.below(from.len());
        if chosen.insert(i) {
            into.push(&from[i]);
        }
    }
}

/// A tiny deterministic generator (SplitMix64) for picking uids; not for secrets.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_uids_keep_their_names_from_200_000_to_1_000_000_known_users() {
        let (small, large) = (
            Naming::new("load_", 200_000),
            Naming::new("load_", 1_000_000),
        );
        assert_eq!(small.uid(42), "load_000042");
        assert_eq!(small.uid(42), large.uid(42));
        assert_eq!(Naming::new("load_", 10).uid(7), "load_000007");
        assert_eq!(Naming::new("load_", 1_000_001).uid(7), "load_0000007");
        assert_eq!(small.of_kind("off", 3), "load_off000003");
    }
}
