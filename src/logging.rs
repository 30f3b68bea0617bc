//! The server's log on stderr, through the `log` facade: one line per event, nothing per message
//! at `info`.
//!
//! Two formats. Text, for people: `2026-12-02T04:48:44.123Z INFO  fanout::server: listening on
//! 127.0.0.1:7400`. JSON (`--log-format json`), for log shippers: one object per line with the
//! keys `ts`, `level`, `target` and `msg`. Timestamps are RFC 3339 in UTC with milliseconds,
//! computed by [`rfc3339_millis`]: one fixed format is twenty lines of calendar arithmetic, not a
//! reason for a date crate.
//!
//! The level and the format may change while the server runs (SIGHUP reloads them), so both
//! live in atomics that every line reads.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Environment variable that sets the log level when no flag does.
pub const LOG_ENV: &str = "FANOUT_LOG";

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message`, for people.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `msg`), for log shippers.
    Json,
}

impl LogFormat {
    fn from_u8(value: u8) -> Self {
        if value == 1 {
            Self::Json
        } else {
            Self::Text
        }
    }
}

static FORMAT: AtomicU8 = AtomicU8::new(0);

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let line = format_line(LogFormat::from_u8(FORMAT.load(Ordering::Relaxed)), since_epoch, record);
        // One write per line, so lines from several reactor threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger at `level` in `format`; a second call only changes level and format.
pub fn init(level: LevelFilter, format: LogFormat) {
    let _ = log::set_logger(&LOGGER);
    set_level(level);
    set_format(format);
}

/// Changes the level of every later line (SIGHUP reloads it).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Changes the format of every later line (SIGHUP reloads it).
pub fn set_format(format: LogFormat) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// Parses a level name as `--log-level` and `FANOUT_LOG` take it: off, error, warn, info,
/// debug or trace, in any case.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.trim().parse().map_err(|_| format!("unknown log level {text:?} (off, error, warn, info, debug, trace)"))
}

/// The level `FANOUT_LOG` asks for: `Ok(None)` when it is unset or empty, an error naming the
/// bad value otherwise, so that a typo is reported instead of silently ignored.
pub fn level_from_env() -> Result<Option<LevelFilter>, String> {
    match std::env::var(LOG_ENV) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => parse_level(&value).map(Some).map_err(|e| format!("{LOG_ENV}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{LOG_ENV} is not UTF-8")),
    }
}

/// One log line, newline included, for a record logged `since_epoch` after 1970-01-01 UTC.
fn format_line(format: LogFormat, since_epoch: Duration, record: &Record<'_>) -> String {
    let ts = rfc3339_millis(since_epoch);
    match format {
        LogFormat::Text => format!("{ts} {:<5} {}: {}\n", record.level(), record.target(), record.args()),
        LogFormat::Json => {
            let mut line = String::with_capacity(128);
            line.push_str("{\"ts\":\"");
            line.push_str(&ts);
            line.push_str("\",\"level\":\"");
            line.push_str(&record.level().as_str().to_ascii_lowercase());
            line.push_str("\",\"target\":");
            push_json_string(&mut line, record.target());
            line.push_str(",\"msg\":");
            push_json_string(&mut line, &record.args().to_string());
            line.push_str("}\n");
            line
        }
    }
}

/// Appends `text` as a JSON string literal: quotes, backslashes and control characters escaped
/// (RFC 8259), the rest as is; shared by the JSON logs and the introspection endpoints.
pub(crate) fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `since_epoch` after 1970-01-01T00:00:00Z as RFC 3339 in UTC with milliseconds
/// (`2026-12-02T04:48:44.123Z`). Leap seconds do not exist for the system clock, so every day
/// has 86,400 seconds and the date follows from the day count alone.
pub fn rfc3339_millis(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, in_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Year, month (1-12) and day (1-31) of the `days`-th day after 1970-01-01, in the proleptic
/// Gregorian calendar: H. Hinnant's `civil_from_days`, counting from 0000-03-01 so that the
/// leap day ends each 4-, 100- and 400-year cycle.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        rfc3339_millis(Duration::from_secs(secs) + Duration::from_millis(millis))
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z", "a leap day of a 400-year");
        assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z", "2100 is not a leap year");
        assert_eq!(at(1_798_778_924, 123), "2027-01-01T04:48:44.123Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_one_before() {
        // A naive oracle: walk the calendar one day at a time.
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let length = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < length(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn json_lines_escape_what_json_must() {
        let record = Record::builder()
            .level(log::Level::Warn)
            .target("fanout::hub")
            .args(format_args!("a \"quoted\" back\\slash\nnew line\u{1}"))
            .build();
        let line = format_line(LogFormat::Json, Duration::from_millis(1_500), &record);
        assert_eq!(
            line,
            "{\"ts\":\"1970-01-01T00:00:01.500Z\",\"level\":\"warn\",\"target\":\"fanout::hub\",\
             \"msg\":\"a \\\"quoted\\\" back\\\\slash\\nnew line\\u0001\"}\n"
        );
        let text = format_line(LogFormat::Text, Duration::from_millis(1_500), &record);
        assert_eq!(text, "1970-01-01T00:00:01.500Z WARN  fanout::hub: a \"quoted\" back\\slash\nnew line\u{1}\n");
    }

    #[test]
    fn levels_parse_in_any_case_and_typos_are_named() {
        assert_eq!(parse_level("DEBUG"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("off"), Ok(LevelFilter::Off));
        assert!(parse_level("verbose").unwrap_err().contains("\"verbose\""));
    }
}
