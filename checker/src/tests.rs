use super::*;
use std::collections::HashMap;

/// One event of a scripted history; ops are named by a label.
enum Ev {
    Inv(&'static str, Op),
    Ok(&'static str, Response),
    Timeout(&'static str),
    Fail(&'static str),
}
use Ev::*;

fn put(k: &str, v: &str) -> Op {
    Op::put(k, v)
}
fn get(k: &str) -> Op {
    Op::get(k)
}
fn val(v: &str) -> Response {
    Response::Value(Some(v.into()))
}
fn absent() -> Response {
    Response::Value(None)
}
fn done() -> Response {
    Response::Done
}

fn build(script: &[Ev]) -> History {
    let mut h = History::new();
    let mut ids: HashMap<&str, OpId> = HashMap::new();
    for (client, ev) in script.iter().enumerate() {
        match ev {
            Inv(label, op) => {
                ids.insert(label, h.invoke(client as u64, op.clone()));
            }
            Ok(label, r) => h.ok(ids[label], r.clone()),
            Timeout(label) => h.timeout(ids[label]),
            Fail(label) => h.fail(ids[label]),
        }
    }
    h
}

const BUDGET: u64 = 1_000_000;

#[test]
fn table() {
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, bool, Vec<Ev>)> = vec![
        ("empty history", true, vec![]),
        (
            "read of a missing key",
            true,
            vec![Inv("r", get("x")), Ok("r", absent())],
        ),
        (
            "sequential write then read",
            true,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("r", get("x")),
                Ok("r", val("1")),
            ],
        ),
        (
            "stale read after a completed write",
            false,
            vec![
                Inv("w1", put("x", "1")),
                Ok("w1", done()),
                Inv("w2", put("x", "2")),
                Ok("w2", done()),
                Inv("r", get("x")),
                Ok("r", val("1")),
            ],
        ),
        (
            "read of a value never written",
            false,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("r", get("x")),
                Ok("r", val("7")),
            ],
        ),
        (
            "lost write: read absent after the write completed",
            false,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("r", get("x")),
                Ok("r", absent()),
            ],
        ),
        (
            "read overlapping a write may see either value (old)",
            true,
            vec![
                Inv("w", put("x", "1")),
                Inv("r", get("x")),
                Ok("r", absent()),
                Ok("w", done()),
            ],
        ),
        (
            "read overlapping a write may see either value (new)",
            true,
            vec![
                Inv("w", put("x", "1")),
                Inv("r", get("x")),
                Ok("r", val("1")),
                Ok("w", done()),
            ],
        ),
        (
            "two overlapping reads disagreeing in a possible order",
            true,
            vec![
                Inv("w", put("x", "1")),
                Inv("r1", get("x")),
                Ok("r1", val("1")),
                Inv("r2", get("x")),
                Ok("r2", val("1")),
                Ok("w", done()),
            ],
        ),
        (
            "new value seen, then old value seen by a later read",
            false,
            vec![
                Inv("w", put("x", "1")),
                Inv("r1", get("x")),
                Ok("r1", val("1")),
                Inv("r2", get("x")),
                Ok("r2", absent()),
                Ok("w", done()),
            ],
        ),
        (
            "concurrent writes, reads agree on one order",
            true,
            vec![
                Inv("a", put("x", "a")),
                Inv("b", put("x", "b")),
                Ok("a", done()),
                Ok("b", done()),
                Inv("r1", get("x")),
                Ok("r1", val("a")),
                Inv("r2", get("x")),
                Ok("r2", val("a")),
            ],
        ),
        (
            "concurrent writes, later reads flip back",
            false,
            vec![
                Inv("a", put("x", "a")),
                Inv("b", put("x", "b")),
                Ok("a", done()),
                Ok("b", done()),
                Inv("r1", get("x")),
                Ok("r1", val("a")),
                Inv("r2", get("x")),
                Ok("r2", val("b")),
            ],
        ),
        (
            "timed-out write that appears later",
            true,
            vec![
                Inv("w", put("x", "1")),
                Timeout("w"),
                Inv("r1", get("x")),
                Ok("r1", absent()),
                Inv("r2", get("x")),
                Ok("r2", val("1")),
            ],
        ),
        (
            "timed-out write that never appears",
            true,
            vec![
                Inv("w", put("x", "1")),
                Timeout("w"),
                Inv("r1", get("x")),
                Ok("r1", absent()),
            ],
        ),
        (
            "timed-out write appears, then disappears",
            false,
            vec![
                Inv("w", put("x", "1")),
                Timeout("w"),
                Inv("r1", get("x")),
                Ok("r1", val("1")),
                Inv("r2", get("x")),
                Ok("r2", absent()),
            ],
        ),
        (
            "timed-out write cannot take effect before it was invoked",
            false,
            vec![
                Inv("r", get("x")),
                Ok("r", val("1")),
                Inv("w", put("x", "1")),
                Timeout("w"),
            ],
        ),
        (
            "never-completed write counts as timed out",
            true,
            vec![
                Inv("w", put("x", "1")),
                Inv("r", get("x")),
                Ok("r", val("1")),
            ],
        ),
        (
            "failed write must not be seen",
            false,
            vec![
                Inv("w", put("x", "1")),
                Fail("w"),
                Inv("r", get("x")),
                Ok("r", val("1")),
            ],
        ),
        (
            "timed-out read constrains nothing",
            true,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("r", get("x")),
                Timeout("r"),
            ],
        ),
        (
            "keys are independent",
            true,
            vec![
                Inv("wx", put("x", "1")),
                Ok("wx", done()),
                Inv("wy", put("y", "2")),
                Ok("wy", done()),
                Inv("ry", get("y")),
                Ok("ry", val("2")),
                Inv("rx", get("x")),
                Ok("rx", val("1")),
            ],
        ),
        (
            "stale read on one key among good ones",
            false,
            vec![
                Inv("wx", put("x", "1")),
                Ok("wx", done()),
                Inv("wy", put("y", "2")),
                Ok("wy", done()),
                Inv("ry", get("y")),
                Ok("ry", absent()),
                Inv("rx", get("x")),
                Ok("rx", val("1")),
            ],
        ),
        (
            "cas succeeds on the expected value",
            true,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("c", Op::cas("x", Some("1".into()), "2")),
                Ok("c", Response::Swapped(true)),
                Inv("r", get("x")),
                Ok("r", val("2")),
            ],
        ),
        (
            "cas that reports success on the wrong value",
            false,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("c", Op::cas("x", Some("0".into()), "2")),
                Ok("c", Response::Swapped(true)),
            ],
        ),
        (
            "two creates of an absent key cannot both succeed",
            false,
            vec![
                Inv("a", Op::cas("x", None, "a")),
                Inv("b", Op::cas("x", None, "b")),
                Ok("a", Response::Swapped(true)),
                Ok("b", Response::Swapped(true)),
            ],
        ),
        (
            "concurrent creates: one wins",
            true,
            vec![
                Inv("a", Op::cas("x", None, "a")),
                Inv("b", Op::cas("x", None, "b")),
                Ok("a", Response::Swapped(false)),
                Ok("b", Response::Swapped(true)),
                Inv("r", get("x")),
                Ok("r", val("b")),
            ],
        ),
        (
            "failed cas must leave the value alone",
            false,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("c", Op::cas("x", Some("9".into()), "2")),
                Ok("c", Response::Swapped(false)),
                Inv("r", get("x")),
                Ok("r", val("2")),
            ],
        ),
        (
            "timed-out cas may take effect later",
            true,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("c", Op::cas("x", Some("1".into()), "2")),
                Timeout("c"),
                Inv("r1", get("x")),
                Ok("r1", val("1")),
                Inv("r2", get("x")),
                Ok("r2", val("2")),
            ],
        ),
        (
            "delete then read absent",
            true,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("d", Op::delete("x")),
                Ok("d", done()),
                Inv("r", get("x")),
                Ok("r", absent()),
            ],
        ),
        (
            "read the value back after a completed delete",
            false,
            vec![
                Inv("w", put("x", "1")),
                Ok("w", done()),
                Inv("d", Op::delete("x")),
                Ok("d", done()),
                Inv("r", get("x")),
                Ok("r", val("1")),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, linearizable, script) in &cases {
        let outcome = check(&build(script), BUDGET);
        let ok = matches!(
            (&outcome, linearizable),
            (Outcome::Linearizable, true) | (Outcome::NotLinearizable(_), false)
        );
        if !ok {
            failures.push(format!(
                "{name}: expected linearizable={linearizable}, got {outcome:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn violation_names_the_key_and_the_smallest_window() {
    // A long good prefix on "x", then a stale read; unrelated traffic on "y".
    let mut script = Vec::new();
    let labels: Vec<&'static str> = (0..20)
        .map(|i| &*Box::leak(format!("w{i}").into_boxed_str()))
        .collect();
    for (i, label) in labels.iter().enumerate() {
        script.push(Inv(label, put("x", &i.to_string())));
        script.push(Ok(label, done()));
    }
    script.push(Inv("y", put("y", "1")));
    script.push(Ok("y", done()));
    script.push(Inv("stale", get("x")));
    script.push(Ok("stale", val("18")));
    script.push(Inv("late", get("x")));
    script.push(Ok("late", val("19")));
    let outcome = check(&build(&script), BUDGET);
    let Outcome::NotLinearizable(v) = outcome else {
        panic!("expected a violation, got {outcome:?}");
    };
    assert_eq!(v.key, b"x".to_vec());
    // The core: put 18, put 19, the stale read. Nothing older, nothing later.
    assert_eq!(v.ops.len(), 3, "{v}");
    assert!(v.ops[0].contains("put \"18\""), "{v}");
    assert!(v.ops[1].contains("put \"19\""), "{v}");
    assert!(v.ops[2].contains("get -> \"18\""), "{v}");
    assert_eq!(v.window, (37, 44), "{v}");
    let text = v.to_string();
    assert!(text.contains("key \"x\""), "{text}");
}

#[test]
fn exhausted_budget_is_unknown_not_a_verdict() {
    // Many concurrent writes with reads that force deep backtracking.
    let mut h = History::new();
    let writes: Vec<OpId> = (0..12)
        .map(|i| h.invoke(i, Op::put("x", i.to_string())))
        .collect();
    for id in writes {
        h.ok(id, Response::Done);
    }
    let r = h.invoke(99, Op::get("x"));
    h.ok(r, Response::Value(Some(b"nope".to_vec())));
    assert!(matches!(check(&h, 50), Outcome::Unknown { ref key } if key == b"x"));
    assert!(matches!(check(&h, 10_000_000), Outcome::NotLinearizable(_)));
}

#[test]
fn many_concurrent_ops_are_checked_quickly() {
    // 8 clients, 2000 ops, a register whose reads always see the latest completed write
    // or a concurrent one: linearizable, and memoisation keeps the search small.
    let mut h = History::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut current: Option<Vec<u8>> = None;
    let mut open: Vec<(OpId, Option<Vec<u8>>)> = Vec::new();
    for i in 0..2000u64 {
        if open.len() < 8 && next() % 2 == 0 {
            let client = open.len() as u64;
            if next() % 2 == 0 {
                let v = i.to_string().into_bytes();
                open.push((h.invoke(client, Op::put("x", v.clone())), Some(v)));
            } else {
                open.push((h.invoke(client, Op::get("x")), None));
            }
        } else if !open.is_empty() {
            let k = (next() as usize) % open.len();
            let (id, write) = open.swap_remove(k);
            // Each op takes effect at its completion: trivially linearizable.
            match write {
                Some(v) => {
                    current = Some(v);
                    h.ok(id, Response::Done);
                }
                None => h.ok(id, Response::Value(current.clone())),
            }
        }
    }
    let outcome = check(&h, 1_000_000);
    assert!(outcome.is_linearizable(), "{outcome:?}");
}

/// One op of a brute-force reference history: (invoke, return or None, op, response).
type RefOp = (u64, Option<u64>, Op, Option<Response>);

/// Reference semantics by exhaustion: some order of all ops that respects real time (an
/// op that returned before another was invoked goes first) and explains every definite
/// response. Ops of unknown outcome may go anywhere after their invocation, including
/// last, where they change nothing observed.
fn brute_force(ops: &[RefOp]) -> bool {
    fn go(ops: &[RefOp], used: &mut Vec<bool>, state: Option<Vec<u8>>, placed: usize) -> bool {
        if placed == ops.len() {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // Every op not yet placed that returned before i was invoked must precede i.
            let blocked = (0..ops.len())
                .any(|j| !used[j] && j != i && ops[j].1.is_some_and(|ret| ret < ops[i].0));
            if blocked {
                continue;
            }
            let (next, fits) = match (&ops[i].2, &ops[i].3) {
                (Op::Put { value, .. }, _) => (Some(value.clone()), true),
                (Op::Delete { .. }, _) => (None, true),
                (Op::Get { .. }, Some(Response::Value(v))) => (state.clone(), *v == state),
                (Op::Get { .. }, _) => (state.clone(), true),
                (Op::Cas { expected, new, .. }, r) => {
                    let swaps = state == *expected;
                    let next = if swaps {
                        Some(new.clone())
                    } else {
                        state.clone()
                    };
                    let fits = match r {
                        Some(Response::Swapped(s)) => *s == swaps,
                        _ => true,
                    };
                    (next, fits)
                }
            };
            if fits {
                used[i] = true;
                if go(ops, used, next, placed + 1) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    go(ops, &mut vec![false; ops.len()], None, 0)
}

#[test]
fn agrees_with_brute_force_on_random_small_histories() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut legal, mut illegal) = (0, 0);
    for _ in 0..3000 {
        let mut h = History::new();
        let mut reference: Vec<RefOp> = Vec::new();
        let mut clock = 0u64;
        // Up to 3 clients, each with at most one op open; 6 ops in all.
        let mut open: Vec<Option<(OpId, usize)>> = vec![None; 3];
        let mut invoked = 0;
        let values = ["1", "2", "3"];
        while invoked < 6 || open.iter().any(|o| o.is_some()) {
            let c = next(3) as usize;
            match open[c] {
                None if invoked < 6 => {
                    let op = match next(5) {
                        0 | 1 => Op::get("k"),
                        2 => Op::put("k", values[next(3) as usize]),
                        3 => Op::cas(
                            "k",
                            (next(3) > 0).then(|| values[next(3) as usize].into()),
                            values[next(3) as usize],
                        ),
                        _ => Op::delete("k"),
                    };
                    clock += 1;
                    let id = h.invoke(c as u64, op.clone());
                    reference.push((clock, None, op, None));
                    open[c] = Some((id, reference.len() - 1));
                    invoked += 1;
                }
                None => {}
                Some((id, r)) => {
                    open[c] = None;
                    if next(6) == 0 {
                        h.timeout(id);
                        continue;
                    }
                    let response = match &reference[r].2 {
                        Op::Put { .. } | Op::Delete { .. } => Response::Done,
                        Op::Get { .. } => {
                            Response::Value((next(4) > 0).then(|| values[next(3) as usize].into()))
                        }
                        Op::Cas { .. } => Response::Swapped(next(2) == 0),
                    };
                    clock += 1;
                    h.ok(id, response.clone());
                    reference[r].1 = Some(clock);
                    reference[r].3 = Some(response);
                }
            }
        }
        let expected = brute_force(&reference);
        let outcome = check(&h, 1_000_000);
        match (&outcome, expected) {
            (Outcome::Linearizable, true) => legal += 1,
            (Outcome::NotLinearizable(_), false) => illegal += 1,
            _ => panic!("checker says {outcome:?}, brute force says {expected}: {reference:?}"),
        }
    }
    // The generator must produce plenty of both kinds, or the comparison proves little.
    assert!(
        legal > 300 && illegal > 300,
        "legal {legal}, illegal {illegal}"
    );
}

#[test]
fn violation_core_drops_unobserved_writes_around_successful_cas() {
    // Puts 0..9, a successful cas 9 -> "c", then a read of 9 again: the read is stale.
    let mut h = History::new();
    for i in 0..10 {
        let id = h.invoke(1, Op::put("x", i.to_string()));
        h.ok(id, Response::Done);
    }
    let c = h.invoke(2, Op::cas("x", Some(b"9".to_vec()), "c"));
    h.ok(c, Response::Swapped(true));
    let r = h.invoke(3, Op::get("x"));
    h.ok(r, Response::Value(Some(b"9".to_vec())));
    let Outcome::NotLinearizable(v) = check(&h, BUDGET) else {
        panic!("a stale read after a cas must be caught");
    };
    // The cas and the read are definite; put 9 stays as a write of unknown outcome (it
    // could happen once, not both before the cas and before the read); puts 0..8 are gone.
    assert_eq!(v.ops.len(), 2, "{v}");
    assert_eq!(v.maybe_ops, 1, "{v}");
    assert!(
        v.ops[0].contains("cas \"9\" -> \"c\" -> swapped=true"),
        "{v}"
    );
    assert!(v.ops[1].contains("get -> \"9\""), "{v}");
}
