//! One options struct for the server: every setting is a flag and a `WK_*` environment
//! variable, with its default written once, here.
//!
//! Promises: `--help` explains each setting and shows its default; [`Config::check`] refuses a
//! configuration that would expose the API without a manager token; an error about a setting
//! names its environment variable too, so that an operator who set `WK_IDLE_TIMEOUT` is not
//! sent looking for an `--idle-timeout` they never passed. Must never: print the manager
//! token (its environment value is hidden from `--help`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};

/// The longest any of the time limits may be (see [`Config::check`]).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest outbound queue a session may have, in frames: far more than a client that reads
/// ever needs, and well inside what a channel can hold.
const MAX_OUTBOUND_QUEUE: usize = 1 << 20;
/// The event log's page cache unless set, in MiB. Under the load tool's churn the server's RSS
/// levels off about 150 MiB above what its sessions hold at 64 MiB (sled counts a page by its
/// size on disk and holds about twice that; 16 MiB levels off about 60 MiB above), where sled's
/// own default, 1 GiB, kept climbing past 450 MB (see "Memory under churn" in
/// docs/performance.md). At 64, a server that registered a million users and holds 10,000 of
/// them online sat at 310-318 MiB; at 32, at 278 MiB, inside the 300 MiB that issue 21 sets
/// (see "Memory at a million users"). Smaller costs reads of the log from disk: the uid index
/// of a million users is far larger than any of these.
pub const DEFAULT_LOG_CACHE_MB: u64 = 32;
/// The SQL view's page cache unless set, in MiB, over all of its connections: what SQLite
/// gives its connections by default (2,000 KiB each, 4 connections). The view is read by uid
/// through its indexes, so a small cache serves; the projector's writes touch the pages of the
/// newest sessions, which stay in it.
pub const DEFAULT_VIEW_CACHE_MB: u64 = 8;
/// The largest page cache the SQL view may be given, in MiB (64 GiB): SQLite takes the size
/// of each connection's cache in KiB as a 32-bit number.
pub const MAX_VIEW_CACHE_MB: u64 = 64 << 10;
/// The largest page cache the event log may be given, in MiB (1 TiB): its bytes must fit sled's
/// `u64`, and no machine this runs on has more memory to give it.
const MAX_LOG_CACHE_MB: u64 = 1 << 20;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Directory of the event log (`log/`, sled) and the SQL view (`view.sqlite`); unused
    /// with --database-url.
    #[arg(long, env = "WK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Keep the event log and the SQL view in this PostgreSQL database (postgres://...),
    /// shared by every node started on it, instead of sled and SQLite in --data-dir.
    #[arg(long, env = "WK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// With --database-url: how long this node's lease lasts. It is renewed every tenth of
    /// this (at most 1 s apart); a node whose lease runs out is lost, and a peer closes its sessions (`node_lost`).
    #[arg(long, env = "WK_NODE_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_lease: Duration,

    /// The event log's page cache (sled), in MiB: what of the log stays in memory once read or
    /// written. The server's memory grows with the events appended until this is full, then
    /// levels off (sled's own default is 1024). Unused with --database-url.
    #[arg(long, env = "WK_LOG_CACHE_MB", default_value_t = DEFAULT_LOG_CACHE_MB)]
    pub log_cache_mb: u64,

    /// The SQL view's page cache (SQLite), in MiB, shared by the view's connections: what of
    /// the view stays in memory for the history and audit reads and the projector's writes.
    /// Unused with --database-url.
    #[arg(long, env = "WK_VIEW_CACHE_MB", default_value_t = DEFAULT_VIEW_CACHE_MB)]
    pub view_cache_mb: u64,

    /// Address of the HTTP API. Port 0 binds a free port (logged at start).
    #[arg(long, env = "WK_API_ADDR", default_value = "127.0.0.1:5001")]
    pub api_addr: SocketAddr,

    /// Address of the WebSocket gateway. Port 0 binds a free port (logged at start).
    #[arg(long, env = "WK_WS_ADDR", default_value = "0.0.0.0:5200")]
    pub ws_addr: SocketAddr,

    /// Manager token: when set, every API request must carry it in the `token` header.
    #[arg(long, env = "WK_MANAGER_TOKEN", hide_env_values = true)]
    pub manager_token: Option<String>,

    /// Serve the API on a non-loopback address without a manager token (warns at every start).
    #[arg(long, env = "WK_ALLOW_OPEN_API")]
    pub allow_open_api: bool,

    /// This node's id, recorded in every event and session.
    #[arg(long, env = "WK_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// A session with no inbound frame for this long is closed (`idle_timeout`).
    #[arg(long, env = "WK_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// A new WebSocket must send its `connect` frame within this long after the upgrade (and
    /// finish the upgrade itself within this long of connecting).
    #[arg(long, env = "WK_FIRST_FRAME_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub first_frame_timeout: Duration,

    /// An API connection must send the whole head of its next request within this long (a
    /// client that trickles its headers, keeps a connection idle, or does not read its answer,
    /// is disconnected, at most a quarter of this later; a request in hand is never cut by it).
    /// Longer
    /// than the 90 s that common HTTP clients (reqwest, Go) keep an idle connection pooled, so
    /// that the server is not the one to close a connection a client is about to reuse.
    #[arg(long, env = "WK_HEADER_READ_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest HTTP request body, in bytes (larger: 413).
    #[arg(long, env = "WK_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Most uids in one `/user/onlinestatus` or system-uids request.
    #[arg(long, env = "WK_MAX_UIDS_PER_REQUEST", default_value_t = 10_000)]
    pub max_uids_per_request: usize,

    /// Largest WebSocket message, in bytes, after reassembly (larger: close 1009).
    #[arg(long, env = "WK_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Most open WebSocket connections in total.
    #[arg(long, env = "WK_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most connections not yet authenticated, in total.
    #[arg(long, env = "WK_MAX_PENDING", default_value_t = 10_000)]
    pub max_pending: usize,

    /// Most connections not yet authenticated from one peer address.
    #[arg(long, env = "WK_MAX_PENDING_PER_IP", default_value_t = 2_048)]
    pub max_pending_per_ip: usize,

    /// Outbound frames queued per session; while they are all waiting, nothing more is read
    /// from the client.
    #[arg(long, env = "WK_OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// A session whose outbound queue stays full this long, the client taking none of it, is
    /// closed as a slow consumer (1008, `slow_consumer`).
    #[arg(long, env = "WK_SLOW_READER_LIMIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub slow_reader_limit: Duration,

    /// Send WuKongIM's `user.onlinestatus` webhook to this URL (http://...; the server adds
    /// `?event=user.onlinestatus`): an entry for every session's start and end, in log order,
    /// retried until the receiver answers 2xx.
    #[arg(long, env = "WK_WEBHOOK_URL", value_parser = parse_webhook_url)]
    pub webhook_url: Option<Box<reqwest::Url>>,

    /// With --webhook-url: sign each body, `X-WK-Signature: sha256=<hex HMAC-SHA256 of the
    /// body with this key>`.
    #[arg(long, env = "WK_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

/// A webhook URL: absolute, `http` (this build speaks no TLS), with a host. Boxed: a URL is
/// large, and the config is carried by value in the CLI's commands.
fn parse_webhook_url(s: &str) -> Result<Box<reqwest::Url>, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "the scheme must be http (this build sends no TLS; put a TLS proxy in front of an \
             https receiver), not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    Ok(Box::new(url))
}

/// Parses only the server options (tests and tools build configs this way, so that the
/// defaults above are the only ones).
#[derive(Parser)]
struct ConfigOnly {
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve the API on {0} without a manager token: set --manager-token \
         (WK_MANAGER_TOKEN), bind a loopback address, or pass --allow-open-api"
    )]
    OpenApi(SocketAddr),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Builds a config from command-line style arguments (without the program name).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let all = std::iter::once(std::ffi::OsString::from("wkuser"))
            .chain(args.into_iter().map(Into::into));
        let argv: Vec<OsString> = all.collect();
        ConfigOnly::try_parse_from(&argv)
            .map(|c| c.config)
            .map_err(|e| name_the_environment(e, &ConfigOnly::command(), &argv))
    }

    /// Refuses settings that are unsafe or meaningless; returns warnings for the log.
    pub fn check(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        if self.manager_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(format!(
                "{} must not be empty",
                setting("manager-token")
            )));
        }
        if self.webhook_secret.as_deref() == Some("") {
            return Err(ConfigError::Invalid(format!(
                "{} must not be empty",
                setting("webhook-secret")
            )));
        }
        if self.webhook_secret.is_some() && self.webhook_url.is_none() {
            warnings.push(format!(
                "{} is set without {}: no webhook is sent",
                setting("webhook-secret"),
                setting("webhook-url")
            ));
        }
        if !self.api_addr.ip().is_loopback() && self.manager_token.is_none() {
            if !self.allow_open_api {
                return Err(ConfigError::OpenApi(self.api_addr));
            }
            warnings.push(format!(
                "the API on {} is open to anyone who can reach it: no manager token is set",
                self.api_addr
            ));
        }
        for (name, value) in [
            ("max-body-bytes", self.max_body_bytes),
            ("max-uids-per-request", self.max_uids_per_request),
            ("max-message-bytes", self.max_message_bytes),
            ("max-connections", self.max_connections),
            ("max-pending", self.max_pending),
            ("max-pending-per-ip", self.max_pending_per_ip),
            ("outbound-queue", self.outbound_queue),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{} must be at least 1",
                    setting(name)
                )));
            }
        }
        if self.log_cache_mb == 0 || self.log_cache_mb > MAX_LOG_CACHE_MB {
            // sled has no "no cache": it panics on opening with less than 256 bytes. Past the
            // bound, the bytes would overflow the u64 sled counts them in.
            return Err(ConfigError::Invalid(format!(
                "{} must be between 1 and {MAX_LOG_CACHE_MB} MiB (it is {})",
                setting("log-cache-mb"),
                self.log_cache_mb
            )));
        }
        if self.view_cache_mb == 0 || self.view_cache_mb > MAX_VIEW_CACHE_MB {
            return Err(ConfigError::Invalid(format!(
                "{} must be between 1 and {MAX_VIEW_CACHE_MB} MiB (it is {})",
                setting("view-cache-mb"),
                self.view_cache_mb
            )));
        }
        if self.outbound_queue > MAX_OUTBOUND_QUEUE {
            // The queue is allocated per session: past tokio's bound a channel cannot be made,
            // and the first connect would fail after its `Connected` was recorded.
            return Err(ConfigError::Invalid(format!(
                "{} must be at most {MAX_OUTBOUND_QUEUE} frames (it is {})",
                setting("outbound-queue"),
                self.outbound_queue
            )));
        }
        for (name, value) in [
            ("idle-timeout", self.idle_timeout),
            ("first-frame-timeout", self.first_frame_timeout),
            ("header-read-timeout", self.header_read_timeout),
            ("slow-reader-limit", self.slow_reader_limit),
            ("node-lease", self.node_lease),
        ] {
            // Zero would cut every session, every new WebSocket, or every API connection
            // before its first frame or request (or every session whose queue ever fills).
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!(
                    "{} must be longer than zero",
                    setting(name)
                )));
            }
            // Deadlines are the time now plus these: beyond the clock's range they would
            // panic in the connections' tasks, and a year is a limit in name only anyway.
            if value > MAX_TIMEOUT {
                return Err(ConfigError::Invalid(format!(
                    "{} must be at most 365 days (it is {})",
                    setting(name),
                    humantime::format_duration(value)
                )));
            }
        }
        if self.slow_reader_limit >= self.idle_timeout {
            // The queue fills only right after a read, which also restarts the idle limit:
            // that limit always comes first, and no session ever ends as a slow consumer.
            warnings.push(format!(
                "--slow-reader-limit ({}) is not shorter than --idle-timeout ({}): a client that \
                 stops reading is closed as idle_timeout, never as slow_consumer",
                humantime::format_duration(self.slow_reader_limit),
                humantime::format_duration(self.idle_timeout)
            ));
        }
        Ok(warnings)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    pub fn view_path(&self) -> PathBuf {
        self.data_dir.join("view.sqlite")
    }

    /// What the webhook is told to do, when one is configured.
    pub fn webhook(&self) -> Option<crate::webhook::WebhookSettings> {
        self.webhook_url
            .as_ref()
            .map(|url| crate::webhook::WebhookSettings {
                url: (**url).clone(),
                secret: self.webhook_secret.clone(),
            })
    }
}

/// The setting whose flag is `--{long}`, named both ways it can be set:
/// `--idle-timeout (WK_IDLE_TIMEOUT)`. [`Config::check`] sees only values, not where they came
/// from, so its errors name both.
fn setting(long: &str) -> String {
    let command = ConfigOnly::command();
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env());
    match env {
        Some(env) => format!("--{long} ({})", env.to_string_lossy()),
        None => format!("--{long}"),
    }
}

/// Rewrites clap's error about an invalid value so that it names the environment variable
/// when the value came from there (`invalid value 'abc' for WK_IDLE_TIMEOUT
/// (--idle-timeout): ...`): clap names only the flag, whatever the value's source. Any other
/// error is returned as it is.
///
/// `command` is the command `argv` (program name first) was parsed by. clap reports no
/// source with the error, so it is found as clap chose it: the command line wins over the
/// environment, so the value came from the variable when it is set and the flag was not
/// given.
pub fn name_the_environment(
    error: clap::Error,
    command: &clap::Command,
    argv: &[OsString],
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    // clap shows the argument as `--idle-timeout <IDLE_TIMEOUT>`, or `--allow-open-api`.
    let Some(long) = shown
        .strip_prefix("--")
        .and_then(|rest| rest.split([' ', '=']).next())
    else {
        return error;
    };
    // The subcommand's own argument, or a global one of the command (`--log-format`).
    let env = subcommand_of(command, argv)
        .get_arguments()
        .chain(command.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env());
    let Some(env) = env else {
        return error;
    };
    let flag = format!("--{long}");
    let flag_given = argv
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if flag_given || std::env::var_os(env).is_none() {
        return error;
    }
    let rendered = error.render().to_string();
    let said = rendered
        .strip_prefix("error: ")
        .unwrap_or(&rendered)
        .replacen(
            &format!("'{shown}'"),
            &format!("{} ({flag})", env.to_string_lossy()),
            1,
        );
    clap::Error::raw(error.kind(), said)
}

/// The (sub)command `argv` runs: the deepest one whose names it gives in order.
fn subcommand_of<'c>(command: &'c clap::Command, argv: &[OsString]) -> &'c clap::Command {
    let mut current = command;
    for word in argv.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = current.find_subcommand(word) {
            current = sub;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:5001");
        assert_eq!(c.ws_addr.to_string(), "0.0.0.0:5200");
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.header_read_timeout, Duration::from_secs(120));
        assert_eq!(c.slow_reader_limit, Duration::from_secs(1));
        assert_eq!(c.log_cache_mb, 32);
        assert_eq!(c.view_cache_mb, 8);
        assert!(c.check().unwrap().is_empty());
    }

    #[test]
    fn every_setting_has_its_environment_variable_and_errors_name_it() {
        let command = ConfigOnly::command();
        let mut named = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"));
            let expected = format!("WK_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env.to_str(), Some(expected.as_str()), "--{long}");
            assert_eq!(setting(long), format!("--{long} ({expected})"));
            named += 1;
        }
        assert!(named >= 17, "only {named} settings seen");
    }

    #[test]
    fn an_invalid_value_on_the_command_line_keeps_clap_s_words() {
        let Err(e) = Config::from_args(["--node-id", "abc"]) else {
            panic!("--node-id abc was accepted");
        };
        let said = e.to_string();
        assert!(said.contains("for '--node-id <NODE_ID>'"), "{said}");
    }

    #[test]
    fn an_open_api_needs_a_token_or_an_explicit_flag() {
        let open = Config::from_args(["--api-addr", "0.0.0.0:5001"]).unwrap();
        assert!(matches!(open.check(), Err(ConfigError::OpenApi(_))));
        let allowed =
            Config::from_args(["--api-addr", "0.0.0.0:5001", "--allow-open-api"]).unwrap();
        assert_eq!(allowed.check().unwrap().len(), 1);
        let guarded =
            Config::from_args(["--api-addr", "0.0.0.0:5001", "--manager-token", "m"]).unwrap();
        assert!(guarded.check().unwrap().is_empty());
    }

    #[test]
    fn timeouts_past_a_year_are_refused_by_name() {
        for flag in [
            "--idle-timeout",
            "--first-frame-timeout",
            "--header-read-timeout",
            "--slow-reader-limit",
        ] {
            let year = Config::from_args([flag, "365days"]).unwrap();
            assert!(year.check().is_ok(), "{flag}");
            let more = Config::from_args([flag, "10000000000000000000s"]).unwrap();
            let Err(ConfigError::Invalid(why)) = more.check() else {
                panic!("{flag} past a year was accepted");
            };
            assert!(why.starts_with(flag), "{why}");
        }
    }

    #[test]
    fn zero_time_limits_are_refused_by_name() {
        for flag in [
            "--idle-timeout",
            "--first-frame-timeout",
            "--header-read-timeout",
            "--slow-reader-limit",
        ] {
            let zero = Config::from_args([flag, "0s"]).unwrap();
            let Err(ConfigError::Invalid(why)) = zero.check() else {
                panic!("{flag} 0s was accepted");
            };
            let env = format!("WK_{}", flag[2..].to_uppercase().replace('-', "_"));
            assert_eq!(why, format!("{flag} ({env}) must be longer than zero"));
            let least = Config::from_args([flag, "1ms"]).unwrap();
            assert!(least.check().is_ok(), "{flag}");
        }
    }

    #[test]
    fn a_slow_reader_limit_past_the_idle_limit_is_warned_of() {
        let shorter = Config::from_args(["--slow-reader-limit", "89s"]).unwrap();
        assert!(shorter.check().unwrap().is_empty());
        let longer = Config::from_args(["--slow-reader-limit", "90s"]).unwrap();
        let warnings = longer.check().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("--slow-reader-limit (1m 30s) is not shorter than"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_webhook_url_is_absolute_http_and_its_secret_not_empty() {
        let ok = Config::from_args(["--webhook-url", "http://10.0.0.2:8080/hook?x=1"]).unwrap();
        assert_eq!(
            ok.webhook().unwrap().url.as_str(),
            "http://10.0.0.2:8080/hook?x=1"
        );
        for bad in ["https://app/hook", "/hook", "http://", "ftp://app/"] {
            let Err(e) = Config::from_args(["--webhook-url", bad]) else {
                panic!("{bad} was accepted");
            };
            assert!(e.to_string().contains("--webhook-url"), "{e}");
        }
        let empty =
            Config::from_args(["--webhook-url", "http://a/", "--webhook-secret", ""]).unwrap();
        let Err(ConfigError::Invalid(why)) = empty.check() else {
            panic!("an empty secret was accepted");
        };
        assert_eq!(
            why,
            "--webhook-secret (WK_WEBHOOK_SECRET) must not be empty"
        );
        let alone = Config::from_args(["--webhook-secret", "s"]).unwrap();
        assert_eq!(alone.check().unwrap().len(), 1);
    }

    #[test]
    fn an_outbound_queue_past_its_bound_is_refused() {
        let most = Config::from_args(["--outbound-queue", "1048576"]).unwrap();
        assert!(most.check().is_ok());
        let more = Config::from_args(["--outbound-queue", "1048577"]).unwrap();
        let Err(ConfigError::Invalid(why)) = more.check() else {
            panic!("an outbound queue past the bound was accepted");
        };
        assert!(
            why.starts_with("--outbound-queue (WK_OUTBOUND_QUEUE) must be at most"),
            "{why}"
        );
    }
}
