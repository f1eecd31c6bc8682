//! A progress line on stderr for long operations, drawn only when stderr is a terminal
//! (so pipes, logs and tests see nothing of it). A bar when the total is known, a spinner
//! with a counter otherwise; redrawn by a background thread every 100 ms and erased when
//! the [`Progress`] is dropped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Plain items, labelled with this word ("segments").
    Items(&'static str),
    /// Bytes, shown as KiB/MiB/...
    Bytes,
    /// Nothing to count: a spinner with the elapsed time only.
    Elapsed,
}

struct Shared {
    label: String,
    unit: Unit,
    pos: AtomicU64,
    /// 0: unknown (spinner).
    total: AtomicU64,
    done: AtomicBool,
}

/// A progress line; inert when stderr is not a terminal.
pub struct Progress {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Is stderr a terminal?
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

impl Progress {
    /// Starts a progress line; `total` None draws a spinner.
    pub fn start(label: impl Into<String>, total: Option<u64>, unit: Unit) -> Progress {
        let shared = Arc::new(Shared {
            label: label.into(),
            unit,
            pos: AtomicU64::new(0),
            total: AtomicU64::new(total.unwrap_or(0)),
            done: AtomicBool::new(false),
        });
        let thread = stderr_is_tty().then(|| {
            let shared = shared.clone();
            std::thread::spawn(move || draw_loop(&shared))
        });
        Progress { shared, thread }
    }

    pub fn set(&self, pos: u64) {
        self.shared.pos.store(pos, Ordering::Relaxed);
    }

    pub fn inc(&self, n: u64) {
        self.shared.pos.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

fn draw_loop(shared: &Shared) {
    let started = Instant::now();
    let mut tick = 0usize;
    // Quick operations finish before the first frame and never draw anything.
    let mut wait = Duration::from_millis(300);
    loop {
        let step = Duration::from_millis(20);
        let mut slept = Duration::ZERO;
        while slept < wait {
            if shared.done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(step);
            slept += step;
        }
        wait = Duration::from_millis(100);
        let total = shared.total.load(Ordering::Relaxed);
        let line = render(
            &shared.label,
            shared.unit,
            shared.pos.load(Ordering::Relaxed),
            (total > 0).then_some(total),
            started.elapsed(),
            tick,
        );
        tick += 1;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Items(_) => n.to_string(),
        Unit::Bytes => crate::output::human(n),
        Unit::Elapsed => String::new(),
    }
}

/// One frame of the progress line.
pub fn render(
    label: &str,
    unit: Unit,
    pos: u64,
    total: Option<u64>,
    elapsed: Duration,
    tick: usize,
) -> String {
    const WIDTH: u64 = 30;
    let word = match unit {
        Unit::Items(w) => format!(" {w}"),
        Unit::Bytes | Unit::Elapsed => String::new(),
    };
    let secs = elapsed.as_secs_f64();
    match total {
        Some(total) => {
            let pos = pos.min(total);
            let filled = (pos * WIDTH / total) as usize;
            let pct = pos * 100 / total;
            format!(
                "{label} [{}{}] {pct:>3}% {}/{}{word} {secs:.1}s",
                "#".repeat(filled),
                "-".repeat(WIDTH as usize - filled),
                amount(unit, pos),
                amount(unit, total)
            )
        }
        None => {
            const SPIN: [char; 4] = ['|', '/', '-', '\\'];
            let count = match unit {
                Unit::Elapsed => String::new(),
                _ => format!("{}{word} ", amount(unit, pos)),
            };
            format!("{label} {} {count}{secs:.1}s", SPIN[tick % 4])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bar_and_spinner() {
        let bar = render(
            "wal",
            Unit::Items("segments"),
            3,
            Some(6),
            Duration::from_millis(1500),
            0,
        );
        assert_eq!(
            bar,
            format!(
                "wal [{}{}]  50% 3/6 segments 1.5s",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
        let spin = render("defrag", Unit::Bytes, 2048, None, Duration::from_secs(2), 1);
        assert_eq!(spin, "defrag / 2.0 KiB 2.0s");
        let spin = render("verify", Unit::Elapsed, 0, None, Duration::from_secs(1), 2);
        assert_eq!(spin, "verify - 1.0s");
    }

    #[test]
    fn quiet_when_stderr_is_not_a_terminal() {
        // Under `cargo test` stderr is captured or a pipe in CI; either way nothing is drawn
        // unless it is a terminal, and dropping never blocks.
        let p = Progress::start("x", Some(10), Unit::Items("things"));
        p.inc(5);
        assert_eq!(p.thread.is_some(), stderr_is_tty());
    }
}
