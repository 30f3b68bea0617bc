//! A minimal stderr logger for the `log` facade: `LEVEL target: message`, level chosen by flag
//! or the `FANOUT_LOG` environment variable. Nothing is logged per message at `info`.

use log::{LevelFilter, Log, Metadata, Record};

/// Environment variable that sets the log level when no flag does.
pub const LOG_ENV: &str = "FANOUT_LOG";

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{:<5} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger at `level`, or at `FANOUT_LOG`, or at `info`; a second call is a no-op.
pub fn init(level: Option<LevelFilter>) {
    let level = level.or_else(|| std::env::var(LOG_ENV).ok().and_then(|v| v.parse().ok())).unwrap_or(LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
