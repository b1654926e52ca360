//! How times are shown to people and parsed from them: RFC 3339, UTC, milliseconds
//! (`2026-11-28T02:44:15.123Z`), on every surface (`/user/sessions`, the CLI); and how far a
//! long operation has come (`1200/5000 events (24%)`).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// How far a run over `total` events has come: `1200/5000 events (24%)`. The percent is whole
/// and rounded down, so that 100% means done.
pub fn progress(done: u64, total: u64) -> String {
    let percent = match total {
        0 => 100,
        _ => u128::from(done.min(total)) * 100 / u128::from(total),
    };
    format!("{done}/{total} events ({percent}%)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_at_millisecond_precision() {
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-15T00:13:20.123+02:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn progress_is_in_whole_percents_and_reaches_100_only_when_done() {
        assert_eq!(progress(0, 5000), "0/5000 events (0%)");
        assert_eq!(progress(1234, 5000), "1234/5000 events (24%)");
        assert_eq!(progress(4999, 5000), "4999/5000 events (99%)");
        assert_eq!(progress(5000, 5000), "5000/5000 events (100%)");
        assert_eq!(progress(0, 0), "0/0 events (100%)");
        assert_eq!(
            progress(u64::MAX, u64::MAX),
            format!("{0}/{0} events (100%)", u64::MAX)
        );
    }
}
