//! Writes: Put, DeleteRange and Txn, as etcd's applierV3backend runs them on a write txn.
//!
//! Every change of one command shares main revision `begin + 1` and takes sub revisions
//! 0, 1, 2... in order. Once the first change is made the working state's revision becomes
//! `begin + 1`, so later reads in the same txn see its own writes (etcd's storeTxnWrite).

use std::sync::Arc;

use bytes::Bytes;

use super::compare::{branch, Path};
use super::header;
use super::range;
use super::state::{KeyRange, Record, State, Written};
use super::{Event, KeyValue};
use crate::pb::{
    PbDeleteRequest, PbDeleteResponse, PbPutRequest, PbPutResponse, PbRangeRequest,
    PbRangeResponse, PbResponseOp, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use crate::KvError;

/// A top-level Put.
pub(super) fn apply_put(
    state: &mut State,
    r: &PbPutRequest,
) -> Result<(PbPutResponse, Vec<Event>), KvError> {
    let mut w = Writer::new(state);
    let resp = w.put(r);
    w.finish(resp)
}

/// A top-level DeleteRange.
pub(super) fn apply_delete(
    state: &mut State,
    r: &PbDeleteRequest,
) -> Result<(PbDeleteResponse, Vec<Event>), KvError> {
    let mut w = Writer::new(state);
    let resp = w.delete_range(r);
    w.finish(resp)
}

/// Deletes each of `keys` that is live, in the given order, all in one new revision
/// (sub revisions in that order), as etcd's lease revoke does in one write txn.
pub(super) fn delete_keys(state: &mut State, keys: &[Bytes]) -> Vec<Event> {
    let mut w = Writer::new(state);
    for key in keys {
        w.delete_live(&KeyRange::Single(key.clone()));
    }
    w.finish(Ok(())).expect("deleting live keys cannot fail").1
}

/// A Txn: choose the path against the state before the txn, check it, then run it.
pub(super) fn apply_txn(
    state: &mut State,
    r: &PbTxnRequest,
) -> Result<(PbTxnResponse, Vec<Event>), KvError> {
    let path = Path::evaluate(state, r);
    // etcd checks every put on the path first, then every range, both before any write.
    for_each_op(r, &path, &mut |op| check_put(state, op))?;
    for_each_op(r, &path, &mut |op| check_range(state, op))?;
    let mut w = Writer::new(state);
    let resp = w.txn(r, &path).map(|mut resp| {
        resp.header = header(w.state.revision);
        resp
    });
    w.finish(resp)
}

/// Calls `f` on every non-txn op on the chosen path, depth first in op order.
fn for_each_op(
    r: &PbTxnRequest,
    path: &Path,
    f: &mut impl FnMut(&PbTxnOpRequest) -> Result<(), KvError>,
) -> Result<(), KvError> {
    let mut nested = path.nested.iter();
    for op in branch(r, path.succeeded) {
        match &op.request {
            Some(PbTxnOpRequest::RequestTxn(t)) => {
                for_each_op(t, nested.next().expect("a path per nested txn"), f)?
            }
            Some(op) => f(op)?,
            None => {}
        }
    }
    Ok(())
}

/// etcd's checkPut: ignore_value/ignore_lease need the key to exist before the txn.
fn check_put(state: &State, op: &PbTxnOpRequest) -> Result<(), KvError> {
    if let PbTxnOpRequest::RequestPut(p) = op {
        if (p.ignore_value || p.ignore_lease) && state.live(&p.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        check_lease(state, p.lease)?;
    }
    Ok(())
}

/// etcd's lessor lookup: a put may only attach a lease that exists.
fn check_lease(state: &State, lease: i64) -> Result<(), KvError> {
    if lease != 0 && !state.leases.contains_key(&lease) {
        return Err(KvError::LeaseNotFound);
    }
    Ok(())
}

/// etcd's checkRange: revision 0 is always fine; otherwise it must lie in
/// [compacted, current] of the state before the txn. A negative revision is therefore
/// "compacted" once anything was compacted, exactly as in etcd.
fn check_range(state: &State, op: &PbTxnOpRequest) -> Result<(), KvError> {
    if let PbTxnOpRequest::RequestRange(q) = op {
        if q.revision == 0 {
            return Ok(());
        }
        if q.revision > state.revision {
            return Err(KvError::FutureRevision);
        }
        if q.revision < state.compact_revision {
            return Err(KvError::Compacted);
        }
    }
    Ok(())
}

/// Runs one command's ops on the state in place and collects their events. A command
/// that fails part-way is undone ([`Writer::finish`]), so it changes nothing: that is its
/// atomicity. (Working on a copy instead made every write copy its map paths twice, once
/// for the copy and once more for the next command: the sequencer's main cost.)
struct Writer<'a> {
    state: &'a mut State,
    /// The revision before this command.
    begin: i64,
    events: Vec<Event>,
    /// Every change made so far, oldest first, to undo them if the command fails.
    written: Vec<Written>,
}

impl<'a> Writer<'a> {
    fn new(state: &'a mut State) -> Writer<'a> {
        let begin = state.revision;
        Writer {
            state,
            begin,
            events: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Ends the command: on success hands back its response and events; on failure takes
    /// back every change it made, newest first, and the revision, then returns the error.
    fn finish<T>(self, result: Result<T, KvError>) -> Result<(T, Vec<Event>), KvError> {
        match result {
            Ok(response) => Ok((response, self.events)),
            Err(err) => {
                for written in self.written.into_iter().rev() {
                    self.state.unwrite(written);
                }
                self.state.revision = self.begin;
                Err(err)
            }
        }
    }

    /// The revision every change of this command gets.
    fn write_revision(&self) -> i64 {
        self.begin + 1
    }

    /// Applies one change: the next sub revision, and the state now reads at the new revision.
    /// `prev`: the key's live record this change replaces, for the event's prev_kv.
    fn record(&mut self, kv: KeyValue, tombstone: bool, prev: Option<Arc<Record>>) {
        let sub = self.events.len() as i64;
        let written = self.state.write(kv, tombstone, sub);
        self.note(written, prev);
    }

    /// Keeps a change made at the next sub revision: its event, and what undoes it.
    fn note(&mut self, written: Written, prev: Option<Arc<Record>>) {
        let event = Event::new(written.record.clone(), prev);
        self.written.push(written);
        self.state.revision = self.write_revision();
        self.events.push(event);
    }

    /// etcd's Put: create_revision and version continue the key's live generation. The key's
    /// current record is read in the same descent of the key map that writes the new one.
    fn put(&mut self, r: &PbPutRequest) -> Result<PbPutResponse, KvError> {
        let key = Bytes::copy_from_slice(&r.key);
        let lease_known = check_lease(self.state, r.lease);
        let rev = self.write_revision();
        let sub = self.events.len() as i64;
        let mut prev_kv = None;
        let written = self.state.write_with(key, false, sub, |newest, key| {
            let prev = newest.filter(|rec| !rec.tombstone()).map(|rec| &rec.kv);
            if (r.ignore_value || r.ignore_lease) && prev.is_none() {
                return Err(KvError::KeyNotFound);
            }
            lease_known?;
            if r.prev_kv {
                prev_kv = prev.map(KeyValue::to_pb);
            }
            Ok(KeyValue {
                key,
                value: match (prev, r.ignore_value) {
                    (Some(p), true) => p.value.clone(),
                    _ => Bytes::copy_from_slice(&r.value),
                },
                create_revision: prev.map_or(rev, |p| p.create_revision),
                mod_revision: rev,
                version: prev.map_or(0, |p| p.version) + 1,
                lease: match (prev, r.ignore_lease) {
                    (Some(p), true) => p.lease,
                    _ => r.lease,
                },
            })
        })?;
        let prev = written.replaced_live();
        self.note(written, prev);
        Ok(PbPutResponse {
            header: header(rev),
            prev_kv,
        })
    }

    /// etcd's DeleteRange: a tombstone per live key in the range, in key order.
    fn delete_range(&mut self, r: &PbDeleteRequest) -> Result<PbDeleteResponse, KvError> {
        let victims = self.delete_live(&KeyRange::new(&r.key, &r.range_end));
        let prev_kvs = if r.prev_kv {
            victims.iter().map(|v| v.kv.to_pb()).collect()
        } else {
            Vec::new()
        };
        // Deleting nothing reports the current revision: begin, or begin + 1 if this txn
        // already wrote (etcd's storeTxnWrite.DeleteRange).
        Ok(PbDeleteResponse {
            header: header(self.state.revision),
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    /// Writes a tombstone for every live key in `range`, in key order; returns what died.
    fn delete_live(&mut self, range: &KeyRange) -> Vec<Arc<Record>> {
        let victims = self.state.live_in(range);
        let rev = self.write_revision();
        for victim in &victims {
            let kv = KeyValue {
                key: victim.kv.key.clone(),
                mod_revision: rev,
                ..Default::default()
            };
            self.record(kv, true, Some(victim.clone()));
        }
        victims
    }

    fn range(&self, r: &PbRangeRequest) -> Result<PbRangeResponse, KvError> {
        range::range(self.state, r)
    }

    /// Runs the chosen branch. A nested txn's header is empty (revision 0), as etcd's
    /// newTxnResp leaves it; only the top-level one gets a revision.
    fn txn(&mut self, r: &PbTxnRequest, path: &Path) -> Result<PbTxnResponse, KvError> {
        let ops = branch(r, path.succeeded);
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(q)) => {
                    Some(PbTxnOpResponse::ResponseRange(self.range(q)?))
                }
                Some(PbTxnOpRequest::RequestPut(q)) => {
                    Some(PbTxnOpResponse::ResponsePut(self.put(q)?))
                }
                Some(PbTxnOpRequest::RequestDeleteRange(q)) => {
                    Some(PbTxnOpResponse::ResponseDeleteRange(self.delete_range(q)?))
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => {
                    let path = nested.next().expect("a path per nested txn");
                    Some(PbTxnOpResponse::ResponseTxn(self.txn(t, path)?))
                }
                None => None,
            };
            responses.push(PbResponseOp { response });
        }
        Ok(PbTxnResponse {
            header: Some(Default::default()),
            succeeded: path.succeeded,
            responses,
        })
    }
}
