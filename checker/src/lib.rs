//! A linearizability checker for concurrent histories of a key-value store.
//!
//! A [`History`] records operations as clients saw them: when each was invoked, and whether
//! it completed with a response, definitely failed (had no effect), or timed out (its outcome
//! is unknown: it may have taken effect at any point after its invocation, or never).
//! [`check`] decides whether some total order of the operations explains every response and
//! respects real time (an operation that completed before another was invoked comes first).
//!
//! Keys are independent (a history is linearizable iff each key's sub-history is), so each
//! key is checked on its own with the Wing-Gong search as improved by Lowe: operations are
//! linearized one at a time, backtracking when a response cannot be explained, and a search
//! state (the set of operations linearized so far, the key's value) is never explored twice.
//! The search is bounded by a step budget; a key that exceeds it makes the result
//! [`Outcome::Unknown`] rather than hang.
//!
//! On a violation, the history of the offending key is shrunk to a small core that still
//! cannot be linearized: the shortest prefix that fails, without the writes whose values
//! nobody read, and without every read whose removal (or write whose weakening to "unknown
//! outcome") keeps it failing.
//!
//! ```
//! use corekv_linearizability::{check, History, Op, Outcome, Response};
//!
//! let mut h = History::new();
//! let w = h.invoke(1, Op::put("x", "1"));
//! h.ok(w, Response::Done);
//! let t = h.invoke(2, Op::put("x", "2"));
//! h.timeout(t); // may land any time from here on, or never
//! let r = h.invoke(3, Op::get("x"));
//! h.ok(r, Response::Value(None)); // but nothing explains the key being absent
//! match check(&h, 100_000) {
//!     Outcome::NotLinearizable(v) => {
//!         assert_eq!(v.key, b"x".to_vec());
//!         println!("{v}");
//!     }
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//! ```

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// A key or a value: arbitrary bytes.
pub type Bytes = Vec<u8>;

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key written.
        key: Bytes,
        /// The value written.
        value: Bytes,
    },
    /// Reads `key`; completes with [`Response::Value`].
    Get {
        /// The key read.
        key: Bytes,
    },
    /// Sets `key` to `new` if its value is `expected` (`None`: the key is absent); completes
    /// with [`Response::Swapped`] saying whether it did.
    Cas {
        /// The key compared and written.
        key: Bytes,
        /// The value required for the swap; `None` requires the key to be absent.
        expected: Option<Bytes>,
        /// The value written on success.
        new: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key removed.
        key: Bytes,
    },
}

impl Op {
    /// A put of `value` at `key`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    /// A read of `key`.
    pub fn get(key: impl Into<Bytes>) -> Op {
        Op::Get { key: key.into() }
    }
    /// A compare-and-set of `key` from `expected` (`None`: absent) to `new`.
    pub fn cas(key: impl Into<Bytes>, expected: Option<Bytes>, new: impl Into<Bytes>) -> Op {
        Op::Cas {
            key: key.into(),
            expected,
            new: new.into(),
        }
    }
    /// A delete of `key`.
    pub fn delete(key: impl Into<Bytes>) -> Op {
        Op::Delete { key: key.into() }
    }
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A put or delete completed.
    Done,
    /// A get returned this value (`None`: the key was absent).
    Value(Option<Bytes>),
    /// A compare-and-set completed; `true` if it swapped.
    Swapped(bool),
}

/// Names one invoked operation in a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

#[derive(Debug, Clone)]
enum End {
    Pending,
    Ok(Response, u64),
    Failed,
    TimedOut,
}

#[derive(Debug, Clone)]
struct Record {
    client: u64,
    op: Op,
    invoke: u64,
    end: End,
}

/// A concurrent history, built in real-time order: every call is an event later than the
/// previous one. Operations never completed are treated as timed out.
#[derive(Debug, Clone, Default)]
pub struct History {
    records: Vec<Record>,
    clock: u64,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records that `client` invoked `op` now; returns its id for [`History::ok`] and friends.
    pub fn invoke(&mut self, client: u64, op: Op) -> OpId {
        self.clock += 1;
        self.records.push(Record {
            client,
            op,
            invoke: self.clock,
            end: End::Pending,
        });
        OpId(self.records.len() - 1)
    }

    /// Records that `id` completed now with `response`.
    ///
    /// # Panics
    /// If `id` already ended, or `response` is not the kind its operation returns.
    pub fn ok(&mut self, id: OpId, response: Response) {
        let record = &self.records[id.0];
        let fits = matches!(
            (&record.op, &response),
            (Op::Put { .. } | Op::Delete { .. }, Response::Done)
                | (Op::Get { .. }, Response::Value(_))
                | (Op::Cas { .. }, Response::Swapped(_))
        );
        assert!(fits, "{response:?} is not a response to {:?}", record.op);
        self.clock += 1;
        let clock = self.clock;
        self.end(id, End::Ok(response, clock));
    }

    /// Records that `id` definitely had no effect (the store refused it).
    pub fn fail(&mut self, id: OpId) {
        self.end(id, End::Failed);
    }

    /// Records that `id` ended without an answer: it may or may not have taken effect.
    pub fn timeout(&mut self, id: OpId) {
        self.end(id, End::TimedOut);
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn end(&mut self, id: OpId, end: End) {
        let record = &mut self.records[id.0];
        assert!(
            matches!(record.end, End::Pending),
            "operation {id:?} already ended"
        );
        record.end = end;
    }
}

/// The verdict of [`check`].
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Some real-time-respecting order explains every response.
    Linearizable,
    /// No order does; the violation explains where.
    NotLinearizable(Violation),
    /// The search for `key` exceeded its budget before deciding (no violation was found on
    /// the keys that were decided).
    Unknown {
        /// The first key whose search ran out of budget.
        key: Bytes,
    },
}

impl Outcome {
    /// Whether the history is known to be linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Outcome::Linearizable)
    }
}

/// Why a history is not linearizable: a small set of operations on one key that no order
/// can explain.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The key.
    pub key: Bytes,
    /// The window (first invocation, last completion, in history events) of `ops`.
    pub window: (u64, u64),
    /// The operations with a definite outcome that, together with the key's operations of
    /// unknown outcome invoked before the window ends, cannot be linearized; one line each.
    pub ops: Vec<String>,
    /// How many operations of unknown outcome (timed out, or made so by the shrinking) were
    /// allowed to take effect anywhere after their invocation.
    pub maybe_ops: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable in events {}..={}: no order of these operations \
             explains their responses ({} operations of unknown outcome also allowed):",
            show(&self.key),
            self.window.0,
            self.window.1,
            self.maybe_ops
        )?;
        for op in &self.ops {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// Checks `history`, spending at most `budget` search steps on each key.
pub fn check(history: &History, budget: u64) -> Outcome {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, record) in history.records.iter().enumerate() {
        by_key.entry(record.op.key()).or_default().push(i);
    }
    let mut unknown = None;
    for (key, indexes) in by_key {
        let ops = KeyOps::new(history, &indexes);
        match ops.search(budget) {
            Search::Ok => {}
            Search::Unknown => {
                unknown.get_or_insert_with(|| key.to_vec());
            }
            Search::Illegal => {
                return Outcome::NotLinearizable(ops.explain(history, key, budget));
            }
        }
    }
    match unknown {
        None => Outcome::Linearizable,
        Some(key) => Outcome::Unknown { key },
    }
}

/// Search steps allowed to each trial while shrinking a violation, so explaining one stays
/// quick however large the budget for deciding is.
const SHRINK_BUDGET: u64 = 100_000;

/// Sentinel return time of an operation of unknown outcome: after everything.
const NEVER: u64 = u64::MAX;

/// A value id for the search: 0 is "absent", n > 0 the n-th distinct value of the key.
type Val = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put(Val),
    Get(Val),
    Cas {
        expected: Val,
        new: Val,
        swapped: Option<bool>,
    },
}

impl Kind {
    /// The state after this operation from `state`, or `None` if its response is impossible.
    fn step(self, state: Val) -> Option<Val> {
        match self {
            Kind::Put(v) => Some(v),
            Kind::Get(v) => (state == v).then_some(state),
            Kind::Cas {
                expected,
                new,
                swapped,
            } => {
                let swaps = state == expected;
                match swapped {
                    Some(s) if s != swaps => None,
                    _ => Some(if swaps { new } else { state }),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct KOp {
    /// Index into the history's records.
    record: usize,
    kind: Kind,
    invoke: u64,
    /// Completion time, or [`NEVER`] when the outcome is unknown.
    ret: u64,
}

enum Search {
    Ok,
    Illegal,
    Unknown,
}

/// One key's operations, ready to search.
struct KeyOps {
    ops: Vec<KOp>,
}

impl KeyOps {
    fn new(history: &History, indexes: &[usize]) -> KeyOps {
        let mut values: BTreeMap<Bytes, Val> = BTreeMap::new();
        let mut intern = |v: &Option<Bytes>| -> Val {
            match v {
                None => 0,
                Some(v) => {
                    let next = values.len() as Val + 1;
                    *values.entry(v.clone()).or_insert(next)
                }
            }
        };
        let mut ops = Vec::new();
        for &i in indexes {
            let record = &history.records[i];
            let (ret, response) = match &record.end {
                End::Failed => continue,
                End::Ok(response, at) => (*at, Some(response)),
                End::Pending | End::TimedOut => (NEVER, None),
            };
            let kind = match (&record.op, response) {
                (Op::Put { value, .. }, _) => Kind::Put(intern(&Some(value.clone()))),
                (Op::Delete { .. }, _) => Kind::Put(0),
                // A read with no answer constrains nothing.
                (Op::Get { .. }, None) => continue,
                (Op::Get { .. }, Some(Response::Value(v))) => Kind::Get(intern(v)),
                (Op::Cas { expected, new, .. }, response) => Kind::Cas {
                    expected: intern(expected),
                    new: intern(&Some(new.clone())),
                    swapped: match response {
                        Some(Response::Swapped(s)) => Some(*s),
                        _ => None,
                    },
                },
                (op, r) => unreachable!("{r:?} answers {op:?}"),
            };
            ops.push(KOp {
                record: i,
                kind,
                invoke: record.invoke,
                ret,
            });
        }
        KeyOps { ops }
    }

    /// The Wing-Gong/Lowe search over this key's operations, from the absent state.
    fn search(&self, budget: u64) -> Search {
        let n = self.ops.len();
        if n == 0 {
            return Search::Ok;
        }
        // Events: 2i is op i's call, 2i+1 its return; node 2n is the list head.
        let mut events: Vec<(u64, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in self.ops.iter().enumerate() {
            // Calls sort before returns at equal times (only NEVER repeats); returns at
            // NEVER keep op order.
            events.push((op.invoke, 2 * i));
            events.push((op.ret, 2 * i + 1));
        }
        events.sort_by_key(|&(t, e)| (t, e & 1, e));
        let head = 2 * n;
        let mut next = vec![usize::MAX; 2 * n + 1];
        let mut prev = vec![usize::MAX; 2 * n + 1];
        let mut last = head;
        for &(_, e) in &events {
            next[last] = e;
            prev[e] = last;
            last = e;
        }
        let end = usize::MAX;
        next[last] = end;

        let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
            let (p, q) = (prev[x], next[x]);
            next[p] = q;
            if q != end {
                prev[q] = p;
            }
        };
        let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
            let (p, q) = (prev[x], next[x]);
            next[p] = x;
            if q != end {
                prev[q] = x;
            }
        };

        let words = n.div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut seen: HashSet<(Vec<u64>, Val)> = HashSet::new();
        // (op linearized, state before it)
        let mut stack: Vec<(usize, Val)> = Vec::new();
        let mut state: Val = 0;
        let mut cursor = next[head];
        let mut steps = 0u64;
        while next[head] != end {
            steps += 1;
            if steps > budget {
                return Search::Unknown;
            }
            if cursor == end {
                // Cannot happen: the list ends in a return, handled below.
                unreachable!("walked off the event list");
            }
            let op = cursor / 2;
            if cursor % 2 == 0 {
                // A call: try to linearize the op here.
                if let Some(after) = self.ops[op].kind.step(state) {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((op, state));
                        state = after;
                        unlink(&mut next, &mut prev, 2 * op);
                        unlink(&mut next, &mut prev, 2 * op + 1);
                        cursor = next[head];
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                cursor = next[cursor];
            } else {
                // A return of an op not yet linearized: undo the last choice.
                let Some((op, before)) = stack.pop() else {
                    return Search::Illegal;
                };
                state = before;
                linearized[op / 64] &= !(1 << (op % 64));
                relink(&mut next, &mut prev, 2 * op + 1);
                relink(&mut next, &mut prev, 2 * op);
                cursor = next[2 * op];
            }
        }
        Search::Ok
    }

    /// This key's operations as the history stood at event `cut`: later ones are gone, and
    /// ones still running at `cut` have unknown outcomes.
    fn prefix(&self, cut: u64) -> KeyOps {
        let ops = self
            .ops
            .iter()
            .filter(|op| op.invoke <= cut)
            .filter_map(|op| {
                let mut op = *op;
                if op.ret > cut {
                    op.ret = NEVER;
                    weaken(&mut op.kind)?;
                }
                Some(op)
            })
            .collect();
        KeyOps { ops }
    }

    fn illegal(&self, budget: u64) -> bool {
        matches!(self.search(budget), Search::Illegal)
    }

    /// Shrinks this (illegal) key history to a small illegal core and describes it. Each
    /// trial gets at most [`SHRINK_BUDGET`] steps; a trial that runs out keeps the op.
    fn explain(&self, history: &History, key: &[u8], budget: u64) -> Violation {
        let budget = budget.min(SHRINK_BUDGET);
        // The shortest illegal prefix (illegality is prefix-closed, so binary search).
        let mut cuts: Vec<u64> = self
            .ops
            .iter()
            .filter(|op| op.ret != NEVER)
            .map(|op| op.ret)
            .collect();
        cuts.sort_unstable();
        let mut core = KeyOps {
            ops: self.ops.clone(),
        };
        let (mut lo, mut hi) = (0, cuts.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.prefix(cuts[mid]).illegal(budget) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo < cuts.len() {
            core = self.prefix(cuts[lo]);
        }
        // Alternate the two shrinking passes while they make progress (weakening a failed
        // compare-and-set can let unobserved writes go, and so on); a few rounds suffice.
        for _round in 0..4 {
            let size = |k: &KeyOps| {
                let definite = k.ops.iter().filter(|op| op.ret != NEVER).count();
                (k.ops.len(), definite)
            };
            let before = size(&core);
            // Drop writes nobody observed, oldest first. This keeps the core a faithful witness:
            // take an order of the full history, and remove a put of v from it. Only the ops
            // between it and the next write saw v; none is a read of v or a compare-and-set
            // expecting v (excluded below), nor a failed compare-and-set (excluded: one could
            // now succeed); compare-and-sets of unknown outcome that saw v did nothing and can
            // move to the end. So the order still explains the rest: if the history without the
            // put is illegal, so was the history with it.
            let failed_cas = core.ops.iter().any(|op| {
                matches!(
                    op.kind,
                    Kind::Cas {
                        swapped: Some(false),
                        ..
                    }
                )
            });
            let mut i = 0;
            while i < core.ops.len() {
                let removable = match core.ops[i].kind {
                    Kind::Put(v) if !failed_cas => core.ops.iter().all(|op| match op.kind {
                        Kind::Get(seen) => seen != v,
                        Kind::Put(_) => true,
                        Kind::Cas { expected, .. } => expected != v,
                    }),
                    _ => false,
                };
                if removable {
                    let mut trial = KeyOps {
                        ops: core.ops.clone(),
                    };
                    trial.ops.remove(i);
                    if trial.illegal(budget) {
                        core = trial;
                        continue;
                    }
                }
                i += 1;
            }
            // Then drop reads and make writes' outcomes unknown wherever the contradiction
            // survives it: both only add possible orders, so what remains is still illegal.
            let mut i = core.ops.len();
            while i > 0 {
                i -= 1;
                if core.ops[i].ret == NEVER {
                    continue;
                }
                let mut trial = KeyOps {
                    ops: core.ops.clone(),
                };
                let mut op = trial.ops[i];
                op.ret = NEVER;
                match weaken(&mut op.kind) {
                    Some(()) => trial.ops[i] = op,
                    None => {
                        trial.ops.remove(i);
                    }
                }
                if trial.illegal(budget) {
                    core = trial;
                }
            }
            if size(&core) == before {
                break;
            }
        }
        let definite: Vec<&KOp> = core.ops.iter().filter(|op| op.ret != NEVER).collect();
        let window = (
            definite.iter().map(|op| op.invoke).min().unwrap_or(0),
            definite.iter().map(|op| op.ret).max().unwrap_or(0),
        );
        let ops = definite
            .iter()
            .map(|op| {
                let record = &history.records[op.record];
                let response = match &record.end {
                    End::Ok(response, _) => show_response(response),
                    _ => "?".to_string(),
                };
                format!(
                    "events {}..{}: client {} {} -> {}",
                    op.invoke,
                    op.ret,
                    record.client,
                    show_op(&record.op),
                    response
                )
            })
            .collect();
        Violation {
            key: key.to_vec(),
            window,
            ops,
            maybe_ops: core.ops.len() - definite.len(),
        }
    }
}

/// Makes an op's outcome unknown; `None` if it then has no effect worth keeping: a read,
/// or a compare-and-set known to have failed (it changed nothing, so dropping it only
/// drops a constraint).
fn weaken(kind: &mut Kind) -> Option<()> {
    match kind {
        Kind::Get(_)
        | Kind::Cas {
            swapped: Some(false),
            ..
        } => None,
        Kind::Put(_) => Some(()),
        Kind::Cas { swapped, .. } => {
            *swapped = None;
            Some(())
        }
    }
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn show_value(v: &Option<Bytes>) -> String {
    v.as_deref().map_or("<absent>".to_string(), show)
}

fn show_op(op: &Op) -> String {
    match op {
        Op::Put { value, .. } => format!("put {}", show(value)),
        Op::Get { .. } => "get".to_string(),
        Op::Cas { expected, new, .. } => format!("cas {} -> {}", show_value(expected), show(new)),
        Op::Delete { .. } => "delete".to_string(),
    }
}

fn show_response(response: &Response) -> String {
    match response {
        Response::Done => "ok".to_string(),
        Response::Value(v) => show_value(v),
        Response::Swapped(s) => format!("swapped={s}"),
    }
}

#[cfg(test)]
mod tests;
