//! Randomized comparison of [`Store`] with a deliberately naive model: every revision of
//! every key in a plain list, every read a linear scan. Random puts, deletes, txns (with
//! nested txns) and compactions are applied to both; responses, events, errors, reads at
//! random past revisions, old snapshots and the physically retained history must agree.

use super::*;
use crate::pb::{
    PbCompactionRequest, PbCompare, PbDeleteRequest, PbDeleteResponse, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

use crate::test_rng::Rng;

/// One revision of one key; `kv == None` is a tombstone.
#[derive(Clone, Debug)]
struct MRev {
    main: i64,
    kv: Option<KeyValue>,
}

#[derive(Clone, Debug)]
struct Model {
    /// Unsorted; each key's revisions in the order they were written.
    keys: Vec<(Vec<u8>, Vec<MRev>)>,
    revision: i64,
    compacted: i64,
}

/// What a model change looks like, to compare with the store's events.
type MEvent = (EventKind, KeyValue, Option<KeyValue>);

/// The running state of one model command.
struct Ctx {
    begin: i64,
    events: Vec<MEvent>,
}

impl Ctx {
    /// The revision reads see: the txn's own once it wrote something.
    fn current(&self) -> i64 {
        self.begin + i64::from(!self.events.is_empty())
    }
}

fn hdr(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            keys: Vec::new(),
            revision: 1,
            compacted: -1,
        }
    }

    fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let (_, revs) = self.keys.iter().find(|(k, _)| k == key)?;
        revs.iter()
            .filter(|r| r.main <= rev)
            .last()
            .and_then(|r| r.kv.clone())
    }

    fn live_at(&self, start: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        let mut names: Vec<&Vec<u8>> = self
            .keys
            .iter()
            .map(|(k, _)| k)
            .filter(|k| in_range(k, start, end))
            .collect();
        names.sort();
        names.iter().filter_map(|k| self.get_at(k, rev)).collect()
    }

    fn push(&mut self, ctx: &mut Ctx, key: &[u8], kv: Option<KeyValue>, event: MEvent) {
        let rev = MRev {
            main: ctx.begin + 1,
            kv,
        };
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, revs)) => revs.push(rev),
            None => self.keys.push((key.to_vec(), vec![rev])),
        }
        ctx.events.push(event);
    }

    fn range(&self, r: &PbRangeRequest, current: i64) -> Result<PbRangeResponse, KvError> {
        if r.revision > current {
            return Err(KvError::FutureRevision);
        }
        let rev = if r.revision <= 0 { current } else { r.revision };
        if rev < self.compacted {
            return Err(KvError::Compacted);
        }
        let live = self.live_at(&r.key, &r.range_end, rev);
        let count = live.len() as i64;
        let mut kvs = if r.count_only { Vec::new() } else { live };
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        if r.sort_order == 0 && !filtered && r.limit > 0 {
            kvs.truncate(r.limit as usize + 1);
        }
        kvs.retain(|kv| {
            (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        });
        // The generator only sorts by key, where there are no ties.
        if r.sort_order == 2 {
            kvs.reverse();
        }
        let more = r.limit > 0 && kvs.len() as i64 > r.limit;
        if more {
            kvs.truncate(r.limit as usize);
        }
        let kvs = kvs
            .iter()
            .map(|kv| {
                let mut pb = kv.to_pb();
                if r.keys_only {
                    pb.value.clear();
                }
                pb
            })
            .collect();
        Ok(PbRangeResponse {
            header: hdr(current),
            kvs,
            more,
            count,
        })
    }

    fn put(&mut self, ctx: &mut Ctx, r: &PbPutRequest) -> Result<PbPutResponse, KvError> {
        let prev = self.get_at(&r.key, ctx.current());
        if (r.ignore_value || r.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let rev = ctx.begin + 1;
        let kv = KeyValue {
            key: r.key.clone().into(),
            value: if r.ignore_value {
                prev.as_ref().unwrap().value.clone()
            } else {
                r.value.clone().into()
            },
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: if r.ignore_lease {
                prev.as_ref().unwrap().lease
            } else {
                r.lease
            },
        };
        let prev_kv = if r.prev_kv {
            prev.as_ref().map(KeyValue::to_pb)
        } else {
            None
        };
        self.push(ctx, &r.key, Some(kv.clone()), (EventKind::Put, kv, prev));
        Ok(PbPutResponse {
            header: hdr(rev),
            prev_kv,
        })
    }

    fn delete(&mut self, ctx: &mut Ctx, r: &PbDeleteRequest) -> PbDeleteResponse {
        let victims = self.live_at(&r.key, &r.range_end, ctx.current());
        for v in &victims {
            let tomb = KeyValue {
                key: v.key.clone(),
                mod_revision: ctx.begin + 1,
                ..Default::default()
            };
            self.push(
                ctx,
                &v.key,
                None,
                (EventKind::Delete, tomb, Some(v.clone())),
            );
        }
        PbDeleteResponse {
            header: hdr(ctx.current()),
            deleted: victims.len() as i64,
            prev_kvs: if r.prev_kv {
                victims.iter().map(KeyValue::to_pb).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn compare(&self, c: &PbCompare) -> bool {
        let kvs = self.live_at(&c.key, &c.range_end, self.revision);
        if kvs.is_empty() {
            return c.target != 3 && compare_one(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_one(c, kv))
    }

    /// The branch choices of a txn and its nested txns, flattened in pre-order as etcd does.
    fn path(&self, t: &PbTxnRequest, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(PbTxnOpRequest::RequestTxn(n)) = &op.request {
                self.path(n, out);
            }
        }
    }

    /// The check pass over the chosen ops (put checks, then range checks), against self.
    fn check(&self, t: &PbTxnRequest, path: &[bool], ranges: bool) -> Result<usize, KvError> {
        let mut used = 1;
        for op in if path[0] { &t.success } else { &t.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestTxn(n)) => {
                    used += self.check(n, &path[used..], ranges)?
                }
                Some(PbTxnOpRequest::RequestPut(p))
                    if !ranges
                        && (p.ignore_value || p.ignore_lease)
                        && self.get_at(&p.key, self.revision).is_none() =>
                {
                    return Err(KvError::KeyNotFound);
                }
                Some(PbTxnOpRequest::RequestRange(q)) if ranges && q.revision != 0 => {
                    if q.revision > self.revision {
                        return Err(KvError::FutureRevision);
                    }
                    if q.revision < self.compacted {
                        return Err(KvError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(used)
    }

    fn run(
        &mut self,
        ctx: &mut Ctx,
        t: &PbTxnRequest,
        path: &[bool],
    ) -> Result<(PbTxnResponse, usize), KvError> {
        let mut used = 1;
        let mut responses = Vec::new();
        for op in if path[0] { &t.success } else { &t.failure } {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(q)) => {
                    PbTxnOpResponse::ResponseRange(self.range(q, ctx.current())?)
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    PbTxnOpResponse::ResponsePut(self.put(ctx, p)?)
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete(ctx, d))
                }
                Some(PbTxnOpRequest::RequestTxn(n)) => {
                    let (resp, n_used) = self.run(ctx, n, &path[used..])?;
                    used += n_used;
                    PbTxnOpResponse::ResponseTxn(resp)
                }
                None => unreachable!("the generator always sets a request"),
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok((
            PbTxnResponse {
                header: Some(Default::default()),
                succeeded: path[0],
                responses,
            },
            used,
        ))
    }

    fn apply(&mut self, command: &Command) -> Result<(CommandResponse, Vec<MEvent>), KvError> {
        let saved = self.clone();
        let result = self.apply_inner(command);
        if result.is_err() {
            *self = saved;
        }
        result
    }

    fn apply_inner(
        &mut self,
        command: &Command,
    ) -> Result<(CommandResponse, Vec<MEvent>), KvError> {
        let mut ctx = Ctx {
            begin: self.revision,
            events: Vec::new(),
        };
        let response = match command {
            Command::Put(p) => CommandResponse::Put(self.put(&mut ctx, p)?),
            Command::DeleteRange(d) => CommandResponse::DeleteRange(self.delete(&mut ctx, d)),
            Command::Txn(t) => {
                let mut path = Vec::new();
                self.path(t, &mut path);
                self.check(t, &path, false)?;
                self.check(t, &path, true)?;
                let (mut resp, _) = self.run(&mut ctx, t, &path)?;
                resp.header = hdr(ctx.current());
                CommandResponse::Txn(resp)
            }
            Command::Compact(c) => {
                if c.revision <= self.compacted {
                    return Err(KvError::Compacted);
                }
                if c.revision > self.revision {
                    return Err(KvError::FutureRevision);
                }
                self.compacted = c.revision;
                CommandResponse::Compact(crate::pb::PbCompactionResponse {
                    header: hdr(self.revision),
                })
            }
            // The model covers the key space only; lease_tests.rs covers leases.
            Command::LeaseGrant(_)
            | Command::LeaseRevoke(_)
            | Command::LeaseCheckpoint(_)
            | Command::Alarm(_)
            | Command::MemberAttributes(_)
            | Command::MemberUpdate(_)
            | Command::MemberConf(_)
            | Command::Auth(_) => {
                unreachable!("the model generates no lease, alarm, membership or auth commands")
            }
        };
        self.revision = ctx.current();
        Ok((response, ctx.events))
    }

    /// What compaction must have left: per key, every revision after the compacted one,
    /// plus the newest one at or before it if that one is live.
    fn retained(&self) -> Vec<(Vec<u8>, i64)> {
        let mut out = Vec::new();
        for (key, revs) in &self.keys {
            let newest_old = revs.iter().rposition(|r| r.main <= self.compacted);
            for (i, r) in revs.iter().enumerate() {
                let keep_old = Some(i) == newest_old && r.kv.is_some();
                if r.main > self.compacted || keep_old {
                    out.push((key.clone(), r.main));
                }
            }
        }
        out.sort();
        out
    }
}

fn compare_one(c: &PbCompare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let int = |v: Option<i64>| v.unwrap_or(0);
    let ord = match (c.target, &c.target_union) {
        (0, u) => kv
            .version
            .cmp(&int(if let Some(PbTargetUnion::Version(v)) = u {
                Some(*v)
            } else {
                None
            })),
        (1, u) => kv
            .create_revision
            .cmp(&int(if let Some(PbTargetUnion::CreateRevision(v)) = u {
                Some(*v)
            } else {
                None
            })),
        (2, u) => kv
            .mod_revision
            .cmp(&int(if let Some(PbTargetUnion::ModRevision(v)) = u {
                Some(*v)
            } else {
                None
            })),
        (3, Some(PbTargetUnion::Value(v))) => kv.value.as_ref().cmp(v.as_slice()),
        (3, _) => kv.value.as_ref().cmp(&b""[..]),
        _ => Ordering::Equal,
    };
    match c.result {
        0 => ord == Ordering::Equal,
        1 => ord == Ordering::Greater,
        2 => ord == Ordering::Less,
        _ => ord != Ordering::Equal,
    }
}

// ---- generation -------------------------------------------------------------------------

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"ba", b"c", b"d", b"e", b"f"];

fn key(rng: &mut Rng) -> Vec<u8> {
    KEYS[rng.below(KEYS.len() as u64) as usize].to_vec()
}

fn range_end(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => Vec::new(),
        1 => vec![0],
        _ => key(rng),
    }
}

fn gen_put(rng: &mut Rng) -> PbPutRequest {
    let ignore_value = rng.chance(8);
    PbPutRequest {
        key: key(rng),
        value: if ignore_value {
            Vec::new()
        } else {
            format!("v{}", rng.below(5)).into_bytes()
        },
        lease: rng.below(3) as i64,
        prev_kv: rng.chance(50),
        ignore_value,
        ignore_lease: false,
    }
}

fn gen_delete(rng: &mut Rng) -> PbDeleteRequest {
    PbDeleteRequest {
        key: key(rng),
        range_end: range_end(rng),
        prev_kv: rng.chance(50),
    }
}

fn gen_range(rng: &mut Rng, revision: i64, compacted: i64) -> PbRangeRequest {
    let pick_rev = |rng: &mut Rng| rng.between(compacted.max(1) - 1, revision + 1);
    PbRangeRequest {
        key: key(rng),
        range_end: range_end(rng),
        limit: if rng.chance(40) {
            rng.between(-1, 4)
        } else {
            0
        },
        revision: if rng.chance(50) { pick_rev(rng) } else { 0 },
        sort_order: if rng.chance(20) {
            rng.between(1, 2) as i32
        } else {
            0
        },
        sort_target: 0,
        serializable: false,
        keys_only: rng.chance(15),
        count_only: rng.chance(10),
        min_mod_revision: if rng.chance(15) {
            rng.between(0, revision)
        } else {
            0
        },
        max_mod_revision: if rng.chance(15) {
            rng.between(0, revision)
        } else {
            0
        },
        min_create_revision: if rng.chance(15) {
            rng.between(0, revision)
        } else {
            0
        },
        max_create_revision: if rng.chance(15) {
            rng.between(0, revision)
        } else {
            0
        },
    }
}

fn gen_compare(rng: &mut Rng, revision: i64) -> PbCompare {
    let target = rng.below(4) as i32;
    let union = match target {
        0 => PbTargetUnion::Version(rng.between(0, 3)),
        1 => PbTargetUnion::CreateRevision(rng.between(0, revision)),
        2 => PbTargetUnion::ModRevision(rng.between(0, revision)),
        _ => PbTargetUnion::Value(format!("v{}", rng.below(5)).into_bytes()),
    };
    PbCompare {
        result: rng.below(4) as i32,
        target,
        key: key(rng),
        range_end: if rng.chance(25) {
            range_end(rng)
        } else {
            Vec::new()
        },
        target_union: if rng.chance(90) { Some(union) } else { None },
    }
}

fn gen_ops(rng: &mut Rng, depth: u32, revision: i64, compacted: i64) -> Vec<PbTxnRequestOp> {
    (0..rng.below(4))
        .map(|_| {
            let request = match rng.below(if depth < 2 { 4 } else { 3 }) {
                0 => PbTxnOpRequest::RequestPut(gen_put(rng)),
                1 => PbTxnOpRequest::RequestDeleteRange(gen_delete(rng)),
                2 => PbTxnOpRequest::RequestRange(gen_range(rng, revision, compacted)),
                _ => PbTxnOpRequest::RequestTxn(gen_txn(rng, depth + 1, revision, compacted)),
            };
            PbTxnRequestOp {
                request: Some(request),
            }
        })
        .collect()
}

fn gen_txn(rng: &mut Rng, depth: u32, revision: i64, compacted: i64) -> PbTxnRequest {
    PbTxnRequest {
        compare: (0..rng.below(3))
            .map(|_| gen_compare(rng, revision))
            .collect(),
        success: gen_ops(rng, depth, revision, compacted),
        failure: gen_ops(rng, depth, revision, compacted),
    }
}

fn gen_command(rng: &mut Rng, model: &Model) -> Command {
    let (rev, compacted) = (model.revision, model.compacted);
    match rng.below(20) {
        0..=7 => Command::Put(gen_put(rng)),
        8..=10 => Command::DeleteRange(gen_delete(rng)),
        11..=18 => Command::Txn(gen_txn(rng, 0, rev, compacted)),
        _ => Command::Compact(PbCompactionRequest {
            revision: rng.between(compacted - 1, rev + 1),
            physical: false,
        }),
    }
}

// ---- the property -----------------------------------------------------------------------

fn event_summary(e: &Event) -> MEvent {
    (e.kind, e.kv().clone(), e.prev_kv().cloned())
}

fn check_reads(rng: &mut Rng, view: &ReadView, model: &Model, step: usize) {
    for _ in 0..4 {
        let req = gen_range(rng, model.revision, model.compacted);
        assert_eq!(
            view.range(&req),
            model.range(&req, model.revision),
            "step {step}: {req:?}"
        );
    }
    assert_eq!(
        view.key_count(),
        model.live_at(b"", &[0], model.revision).len(),
        "step {step}"
    );
}

fn run_seed(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let mut store = Store::with_test_leases();
    let mut model = Model::new();
    let mut snapshots: Vec<(ReadView, Model)> = Vec::new();
    for step in 0..steps {
        let command = gen_command(&mut rng, &model);
        let got = store.apply(&command);
        let expected = model.apply(&command);
        match (got, expected) {
            (Ok(applied), Ok((response, events))) => {
                assert_eq!(applied.response, response, "step {step}: {command:?}");
                let got_events: Vec<MEvent> = applied.events.iter().map(event_summary).collect();
                assert_eq!(got_events, events, "step {step}: {command:?}");
                assert_eq!(applied.revision, model.revision, "step {step}");
            }
            (Err(e), Err(expected)) => assert_eq!(e, expected, "step {step}: {command:?}"),
            (got, expected) => {
                panic!("step {step}: {command:?}\n got {got:?}\n expected {expected:?}")
            }
        }
        assert_eq!(
            (store.revision(), store.compact_revision()),
            (model.revision, model.compacted.max(0))
        );
        check_reads(&mut rng, &store.view(), &model, step);
        let retained: Vec<(Vec<u8>, i64)> = store
            .state
            .history_keys()
            .into_iter()
            .map(|(k, m, _)| (k.to_vec(), m))
            .collect();
        let mut retained = retained;
        retained.sort();
        assert_eq!(retained, model.retained(), "step {step}: retained history");
        if step % 10 == 0 {
            snapshots.push((store.view(), model.clone()));
        }
        if !snapshots.is_empty() && rng.chance(20) {
            let (view, old) = &snapshots[rng.below(snapshots.len() as u64) as usize];
            check_reads(&mut rng, view, old, step);
        }
    }
}

#[test]
fn store_matches_naive_model() {
    for seed in 1..=40u64 {
        run_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 300);
    }
}
