//! raft-rs logs through slog; corekv logs through the `log` facade. This drain forwards one to
//! the other so raft's messages land in the same stream at the same levels.

use slog::{Drain, Level, OwnedKVList, Record};

pub(crate) struct LogBridge;

impl Drain for LogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            Level::Critical | Level::Error => log::Level::Error,
            Level::Warning => log::Level::Warn,
            Level::Info => log::Level::Info,
            Level::Debug => log::Level::Debug,
            Level::Trace => log::Level::Trace,
        };
        if log::log_enabled!(target: "raft", level) {
            log::log!(target: "raft", level, "{}", record.msg());
        }
        Ok(())
    }
}

pub(crate) fn logger() -> slog::Logger {
    slog::Logger::root(LogBridge.fuse(), slog::o!())
}
