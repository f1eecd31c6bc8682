//! Auto-compaction, as etcd 3.4's `v3compactor` does it, driven by the sequencer's loop:
//! the leader proposes an ordinary Compaction through the log.
//!
//! - periodic (`--auto-compaction-retention` a duration, or hours): the current revision is
//!   recorded every tenth of the period (of an hour, for periods over an hour); once a full
//!   period has passed since the start or since the last successful compaction, the
//!   revision recorded a period ago is compacted; after the first compaction the wait is the
//!   period capped at an hour. A failed compaction is retried at the next recording.
//! - revision (`--auto-compaction-retention` a count): every 5 minutes (etcd's fixed
//!   interval; `--auto-compaction-revision-interval` here), the revision `retention` below
//!   the current one is compacted, unless it is not positive or was compacted last time.
//!
//! A compaction answered "required revision has been compacted" counts as done, as in etcd.
//! Members that do not lead only keep recording (etcd pauses the compactor on followers).
//! The logic is a pure state machine over the times and revisions it is given.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to keep, and how often to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (time).
    Periodic(Duration),
    /// Keep this many revisions; check every `interval`.
    Revision { retention: i64, interval: Duration },
}

/// etcd records revisions this many times per period.
const RETRY_DIVISOR: u32 = 10;

/// The compactor's state.
#[derive(Debug)]
pub struct Compactor {
    kind: Kind,
    /// A compaction was proposed and its outcome is awaited.
    waiting: bool,
    next_wake: Instant,
}

#[derive(Debug)]
enum Kind {
    Periodic {
        period: Duration,
        /// Revisions recorded, oldest first: `revs[0]` is the one a period ago.
        revs: VecDeque<i64>,
        retentions: usize,
        retry: Duration,
        /// The wait between compactions: the period at first, then at most an hour.
        base: Duration,
        last_success: Instant,
    },
    Revision {
        retention: i64,
        interval: Duration,
        /// The last revision compacted.
        prev: i64,
        proposed: i64,
    },
}

impl Compactor {
    /// A compactor started at `now`, when the key space is at `revision`.
    pub fn new(mode: AutoCompaction, now: Instant, revision: i64) -> Compactor {
        match mode {
            AutoCompaction::Periodic(period) => {
                let capped = period.min(Duration::from_secs(3600));
                let retry = (capped / RETRY_DIVISOR).max(Duration::from_millis(1));
                let retentions = (period.as_nanos() / retry.as_nanos()) as usize + 1;
                let mut revs = VecDeque::with_capacity(retentions + 1);
                revs.push_back(revision);
                Compactor {
                    kind: Kind::Periodic {
                        period,
                        revs,
                        retentions,
                        retry,
                        base: period,
                        last_success: now,
                    },
                    waiting: false,
                    next_wake: now + retry,
                }
            }
            AutoCompaction::Revision {
                retention,
                interval,
            } => Compactor {
                kind: Kind::Revision {
                    retention,
                    interval,
                    prev: 0,
                    proposed: 0,
                },
                waiting: false,
                next_wake: now + interval,
            },
        }
    }

    /// The revision to compact now, if any. `leading`: whether this member may propose.
    pub fn poll(&mut self, now: Instant, revision: i64, leading: bool) -> Option<i64> {
        if self.waiting || now < self.next_wake {
            return None;
        }
        match &mut self.kind {
            Kind::Periodic {
                period,
                revs,
                retentions,
                retry,
                base,
                last_success,
            } => {
                if !leading || now.duration_since(*last_success) < *base {
                    record(revs, *retentions, revision);
                    self.next_wake = now + *retry;
                    return None;
                }
                if *base == *period {
                    *base = (*period).min(Duration::from_secs(3600));
                }
                self.waiting = true;
                revs.front().copied()
            }
            Kind::Revision {
                retention,
                interval,
                prev,
                proposed,
            } => {
                let target = revision - *retention;
                if !leading || target <= 0 || target == *prev {
                    self.next_wake = now + *interval;
                    return None;
                }
                *proposed = target;
                self.waiting = true;
                Some(target)
            }
        }
    }

    /// The outcome of the compaction [`Self::poll`] asked for: `done` if it was applied or
    /// the revision was already compacted. `revision` is the key space's revision now.
    pub fn finished(&mut self, now: Instant, done: bool, revision: i64) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        match &mut self.kind {
            Kind::Periodic {
                revs,
                retentions,
                retry,
                last_success,
                ..
            } => {
                if done {
                    *last_success = now;
                }
                record(revs, *retentions, revision);
                self.next_wake = now + *retry;
            }
            Kind::Revision {
                interval,
                prev,
                proposed,
                ..
            } => {
                if done {
                    *prev = *proposed;
                }
                self.next_wake = now + *interval;
            }
        }
    }
}

fn record(revs: &mut VecDeque<i64>, retentions: usize, revision: i64) {
    revs.push_back(revision);
    if revs.len() > retentions {
        revs.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps time by `step`, the revision by one per step, for `steps` steps, compacting
    /// successfully at once; returns `(elapsed, compacted revision)` of each compaction.
    fn drive(
        c: &mut Compactor,
        start: Instant,
        step: Duration,
        steps: u32,
        leading: bool,
    ) -> Vec<(Duration, i64)> {
        let mut out = Vec::new();
        for i in 1..=steps {
            let now = start + step * i;
            let revision = 1 + i as i64;
            if let Some(r) = c.poll(now, revision, leading) {
                out.push((now - start, r));
                c.finished(now, true, revision);
            }
        }
        out
    }

    #[test]
    fn periodic_compacts_the_revision_of_one_period_ago() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut c = Compactor::new(AutoCompaction::Periodic(period), start, 1);
        // One step a second, one revision a second (revision = 1 + seconds).
        let done = drive(&mut c, start, Duration::from_secs(1), 35, true);
        // Nothing for the first period; then every period, the revision from a period back.
        assert_eq!(done[0], (Duration::from_secs(10), 1));
        assert_eq!(done[1].0, Duration::from_secs(20));
        assert_eq!(done[2].0, Duration::from_secs(30));
        for (at, rev) in &done[1..] {
            let secs = at.as_secs() as i64;
            // revs[0] was recorded one period and one recording interval earlier (etcd's
            // window of period / interval + 1 recordings ends at the last recording).
            assert_eq!(*rev - 1, secs - 11, "at {secs}s compacted {rev}");
        }
    }

    #[test]
    fn periodic_over_an_hour_waits_the_period_then_compacts_hourly() {
        let start = Instant::now();
        let mut c = Compactor::new(
            AutoCompaction::Periodic(Duration::from_secs(3 * 3600)),
            start,
            1,
        );
        let done = drive(&mut c, start, Duration::from_secs(60), 6 * 60, true);
        let hours: Vec<u64> = done.iter().map(|(at, _)| at.as_secs() / 60).collect();
        assert_eq!(
            hours,
            vec![180, 240, 300, 360],
            "minutes of each compaction"
        );
        // Recorded every 6 minutes, 31 kept: revs[0] is from 3 hours (and 6 minutes) back.
        assert_eq!(
            done[0].1, 1,
            "the first compaction takes the revision at the start"
        );
        for (at, rev) in &done[1..] {
            let minute = at.as_secs() as i64 / 60;
            assert_eq!(*rev - 1, minute - 186, "at {minute} min compacted {rev}");
        }
    }

    #[test]
    fn periodic_retries_a_failed_compaction_at_the_next_recording() {
        let start = Instant::now();
        let mut c = Compactor::new(AutoCompaction::Periodic(Duration::from_secs(10)), start, 1);
        let t = |s: u64| start + Duration::from_secs(s);
        for s in 1..10 {
            assert_eq!(c.poll(t(s), 1, true), None);
        }
        assert!(c.poll(t(10), 1, true).is_some());
        assert_eq!(c.poll(t(11), 1, true), None, "one compaction at a time");
        c.finished(t(10), false, 1);
        assert_eq!(c.poll(t(10), 1, true), None, "waits a retry interval");
        assert!(
            c.poll(t(11), 1, true).is_some(),
            "retried after a tenth of the period"
        );
    }

    #[test]
    fn periodic_on_a_follower_only_records() {
        let start = Instant::now();
        let mut c = Compactor::new(AutoCompaction::Periodic(Duration::from_secs(10)), start, 1);
        assert!(drive(&mut c, start, Duration::from_secs(1), 30, false).is_empty());
        // Leading now: the window is full, and the wait since the start has passed.
        let now = start + Duration::from_secs(31);
        let rev = c.poll(now, 40, true).expect("compacts once leading");
        assert!((20..=23).contains(&rev), "{rev}");
    }

    #[test]
    fn revision_mode_keeps_retention_revisions() {
        let start = Instant::now();
        let interval = Duration::from_secs(300);
        let mut c = Compactor::new(
            AutoCompaction::Revision {
                retention: 100,
                interval,
            },
            start,
            1,
        );
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(c.poll(at(299), 500, true), None, "not before the interval");
        assert_eq!(c.poll(at(300), 500, true), Some(400));
        c.finished(at(300), true, 500);
        assert_eq!(c.poll(at(599), 700, true), None);
        assert_eq!(
            c.poll(at(600), 500, true),
            None,
            "the same revision is not compacted twice"
        );
        assert_eq!(c.poll(at(900), 650, true), Some(550));
        c.finished(at(900), false, 650);
        assert_eq!(
            c.poll(at(1200), 650, true),
            Some(550),
            "a failure is retried"
        );
        c.finished(at(1200), true, 650);
        assert_eq!(c.poll(at(1500), 90, true), None, "nothing below revision 1");
        assert_eq!(
            c.poll(at(1800), 1000, false),
            None,
            "followers do not compact"
        );
        assert_eq!(c.poll(at(2100), 1000, true), Some(900));
    }
}
