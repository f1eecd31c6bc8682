//! A core's watch hub: the watch streams whose connections live on this core, and the
//! fan-out of every published batch of events to them.
//!
//! Every watcher is either *synced* (it has seen every event up to this core's view, so the
//! next publication's matching events go straight to it) or *unsynced* (it starts in the
//! past, or its stream was too slow to take a batch): an unsynced watcher catches up from
//! the view's history in bounded chunks, then becomes synced. Nothing is buffered per
//! watcher: a slow client costs a position (`next_revision`), never memory, and a watcher
//! whose position falls below the compacted revision is cancelled with `compact_revision`,
//! as etcd does.
//!
//! The hub is plain synchronous code (sends are `try_send` on bounded channels), so it is
//! driven by the shard's executor and tested without one.

use std::collections::{BTreeMap, HashMap, VecDeque};

use corekv_engine::mvcc::{Event, EventKind, ReadView};
use corekv_engine::pb::{PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse};
use corekv_engine::KvError;
use corekv_net::shard_api::{encode_event_field, Bytes, WatchEvents, WatchItem, WatchSender};
use prost::Message;

/// Control responses (created/canceled/progress) held for a stream that is not reading;
/// past this the stream is closed: the client has stopped reading altogether.
const STREAM_CONTROL_QUEUED_MAX: usize = 1024;
/// Watchers per stream.
const STREAM_WATCHERS_MAX: usize = 100_000;
/// Revisions read from history per catch-up step of one watcher.
const CATCH_UP_REVISIONS_MAX: i64 = 1_000;
/// Watchers advanced per catch-up pass, so one pass never stalls the core.
const CATCH_UP_WATCHERS_PER_PASS_MAX: usize = 512;
/// etcd's default interval for progress notifications to idle watchers.
pub const PROGRESS_NOTIFY_INTERVAL_MS: u64 = 10 * 60 * 1000;

const FILTER_NO_PUT: i32 = 0;
const FILTER_NO_DELETE: i32 = 1;

/// etcd's texts for refused watch creations.
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The keys one watcher follows, in etcd's encoding after its normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySet {
    Single(Vec<u8>),
    From(Vec<u8>),
    Between(Vec<u8>, Vec<u8>),
}

impl KeySet {
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySet::Single(k) => key == k.as_slice(),
            KeySet::From(k) => key >= k.as_slice(),
            KeySet::Between(k, end) => key >= k.as_slice() && key < end.as_slice(),
        }
    }

    /// (key, range_end) for history reads.
    fn as_request(&self) -> (&[u8], &[u8]) {
        match self {
            KeySet::Single(k) => (k, b""),
            KeySet::From(k) => (k, b"\0"),
            KeySet::Between(k, end) => (k, end),
        }
    }
}

#[derive(Debug)]
struct Watcher {
    keys: KeySet,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The first revision this watcher has not been sent yet.
    next_revision: i64,
    synced: bool,
    /// When the last response (or creation) went to this watcher, for progress notices.
    last_sent_ms: u64,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let filtered = match event.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.keys.contains(&event.kv().key)
    }
}

struct Stream {
    outlet: Outlet,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
}

/// Where a stream's responses go, in order.
struct Outlet {
    responses: WatchSender,
    /// Responses that must precede any further events of this stream.
    control: VecDeque<PbWatchResponse>,
}

impl Outlet {
    /// Sends queued control responses; true when none is left.
    fn flush_control(&mut self) -> Result<bool, Closed> {
        while self.responses.has_room() {
            let Some(front) = self.control.pop_front() else {
                return Ok(true);
            };
            self.responses.send(front).map_err(|_| Closed)?;
        }
        Ok(self.control.is_empty())
    }

    fn control(&mut self, response: PbWatchResponse) -> Result<(), Closed> {
        if self.control.len() >= STREAM_CONTROL_QUEUED_MAX {
            return Err(Closed);
        }
        self.control.push_back(response);
        self.flush_control().map(|_| ())
    }

    /// Whether an event response could be sent now.
    fn has_room(&self) -> bool {
        self.control.is_empty() && self.responses.has_room()
    }

    /// Sends event responses if nothing is queued ahead of them; false if the stream is full
    /// (nothing sent then: a watcher's batch goes whole or not at all).
    fn send_events(&mut self, responses: Vec<WatchItem>) -> Result<bool, Closed> {
        if !self.flush_control()? || !self.responses.has_room() {
            return Ok(false);
        }
        for response in responses {
            self.responses.send(response).map_err(|_| Closed)?;
        }
        Ok(true)
    }
}

impl Stream {
    fn auto_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_auto_id) {
            self.next_auto_id += 1;
        }
        let id = self.next_auto_id;
        self.next_auto_id += 1;
        id
    }
}

/// A watch creation, as etcd's WatchCreateRequest carries it.
#[derive(Debug, Clone, Default)]
pub struct WatchCreate {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub start_revision: i64,
    pub progress_notify: bool,
    pub filters: Vec<i32>,
    pub prev_kv: bool,
    pub watch_id: i64,
    pub fragment: bool,
}

/// The stream's connection is gone (its receiver dropped) or it stopped reading entirely.
#[derive(Debug)]
pub struct Closed;

/// What the hub needs to know of the member to fill headers.
#[derive(Debug, Clone, Copy)]
pub struct HeaderFacts {
    pub raft_term: u64,
    /// Largest response before a fragmenting watcher's events are split (--max-request-bytes).
    pub fragment_bytes_max: usize,
}

/// All watch streams of one core.
pub struct WatchHub {
    streams: HashMap<u64, Stream>,
    view: ReadView,
    facts: HeaderFacts,
    /// Unsynced watchers exist somewhere (skip catch-up passes otherwise).
    unsynced: usize,
    /// The stream id the next catch-up pass starts at (round robin across passes).
    catch_up_cursor: u64,
    /// (streams, watchers, unsynced) as last added to the process-wide metrics.
    reported: (i64, i64, i64),
}

impl WatchHub {
    /// An empty hub reading history from `view`.
    pub fn new(view: ReadView, facts: HeaderFacts) -> WatchHub {
        WatchHub {
            streams: HashMap::new(),
            view,
            facts,
            unsynced: 0,
            catch_up_cursor: 0,
            reported: (0, 0, 0),
        }
    }

    /// Number of watchers on this core.
    pub fn watchers(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Number of streams on this core.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// A new stream; its responses go to `responses` (bounded).
    pub fn open(&mut self, stream_id: u64, responses: WatchSender) {
        let outlet = Outlet {
            responses,
            control: VecDeque::new(),
        };
        let stream = Stream {
            outlet,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
        };
        self.streams.insert(stream_id, stream);
    }

    /// The stream ended (client closed its side, or its connection went away).
    pub fn close(&mut self, stream_id: u64) {
        if let Some(stream) = self.streams.remove(&stream_id) {
            self.unsynced -= stream.watchers.values().filter(|w| !w.synced).count();
        }
    }

    /// One request from a stream: create, cancel, or progress.
    pub fn request(&mut self, stream_id: u64, request: PbWatchRequest, now_ms: u64) {
        let result = match request.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let create = WatchCreate {
                    key: c.key,
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    progress_notify: c.progress_notify,
                    filters: c.filters,
                    prev_kv: c.prev_kv,
                    watch_id: c.watch_id,
                    fragment: c.fragment,
                };
                self.create(stream_id, create, now_ms)
            }
            Some(PbWatchRequestUnion::CancelRequest(cancel)) => {
                self.cancel(stream_id, cancel.watch_id)
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => self.progress(stream_id),
            None => Ok(()),
        };
        if result.is_err() {
            self.close(stream_id);
        }
    }

    fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            revision,
            raft_term: self.facts.raft_term,
            ..Default::default()
        })
    }

    /// Creates a watcher (etcd's created response, or created+canceled if refused).
    pub fn create(
        &mut self,
        stream_id: u64,
        create: WatchCreate,
        now_ms: u64,
    ) -> Result<(), Closed> {
        let current = self.view.revision();
        let header = self.header(current);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return Ok(());
        };
        let refused = |reason: &str| PbWatchResponse {
            header: header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let Some(keys) = key_set(create.key, create.range_end) else {
            return stream.outlet.control(refused(ERR_EMPTY_RANGE));
        };
        if create.watch_id != 0 && stream.watchers.contains_key(&create.watch_id) {
            return stream.outlet.control(refused(ERR_DUPLICATE_ID));
        }
        if stream.watchers.len() >= STREAM_WATCHERS_MAX {
            return Err(Closed);
        }
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            stream.auto_id()
        };
        let start = if create.start_revision == 0 {
            current + 1
        } else {
            create.start_revision
        };
        let watcher = Watcher {
            keys,
            no_put: create.filters.contains(&FILTER_NO_PUT),
            no_delete: create.filters.contains(&FILTER_NO_DELETE),
            prev_kv: create.prev_kv,
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            next_revision: start,
            synced: start > current,
            last_sent_ms: now_ms,
        };
        if !watcher.synced {
            self.unsynced += 1;
        }
        stream.watchers.insert(id, watcher);
        stream.outlet.control(PbWatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })?;
        // A new watcher starting in the past gets its first chunk at once.
        self.catch_up_stream(stream_id, now_ms, 16);
        Ok(())
    }

    fn cancel(&mut self, stream_id: u64, watch_id: i64) -> Result<(), Closed> {
        let header = self.header(self.view.revision());
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return Ok(());
        };
        // etcd answers nothing for an unknown id.
        let Some(watcher) = stream.watchers.remove(&watch_id) else {
            return Ok(());
        };
        if !watcher.synced {
            self.unsynced -= 1;
        }
        stream.outlet.control(PbWatchResponse {
            header,
            watch_id,
            canceled: true,
            ..Default::default()
        })
    }

    /// etcd 3.4 answers a progress request with the current revision and watch id -1.
    fn progress(&mut self, stream_id: u64) -> Result<(), Closed> {
        let header = self.header(self.view.revision());
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return Ok(());
        };
        stream.outlet.control(PbWatchResponse {
            header,
            watch_id: -1,
            ..Default::default()
        })
    }

    /// The key space was replaced (a snapshot from the leader): no batch of events leads
    /// to the next view, so every watcher catches up from that view's history instead.
    pub fn resync(&mut self) {
        for stream in self.streams.values_mut() {
            for watcher in stream.watchers.values_mut().filter(|w| w.synced) {
                watcher.synced = false;
                self.unsynced += 1;
            }
        }
    }

    /// A new published view and the events that lead to it, in revision order.
    pub fn publish(&mut self, view: ReadView, raft_term: u64, events: &[Event], now_ms: u64) {
        let previous = self.view.revision();
        debug_assert!(view.revision() >= previous, "views only move forward");
        self.view = view;
        self.facts.raft_term = raft_term;
        let revision = self.view.revision();
        let mut closed = Vec::new();
        // Each event encoded at most once per variant (without, with prev_kv) for the whole
        // batch; watchers share the bytes.
        let mut shared = SharedEvents::new(events);
        let mut mine: Vec<usize> = Vec::new();
        for (stream_id, stream) in self.streams.iter_mut() {
            for (id, watcher) in stream.watchers.iter_mut().filter(|(_, w)| w.synced) {
                // A watcher created with a future start revision skips what precedes it.
                let from = watcher.next_revision;
                mine.clear();
                mine.extend(
                    events
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.kv().mod_revision >= from && watcher.wants(e))
                        .map(|(i, _)| i),
                );
                if mine.is_empty() {
                    watcher.next_revision = from.max(revision + 1);
                    continue;
                }
                let responses = shared.responses(*id, watcher, &mine, revision, &self.facts);
                match stream.outlet.send_events(responses) {
                    Ok(true) => {
                        watcher.next_revision = revision + 1;
                        watcher.last_sent_ms = now_ms;
                    }
                    Ok(false) => {
                        // Too slow for this batch: fall back to reading history later.
                        watcher.synced = false;
                        watcher.next_revision = previous + 1;
                        self.unsynced += 1;
                    }
                    Err(Closed) => {
                        closed.push(*stream_id);
                        break;
                    }
                }
            }
        }
        for stream_id in closed {
            self.close(stream_id);
        }
        self.catch_up(now_ms);
    }

    /// Periodic work: flush control responses, advance unsynced watchers, send progress
    /// notifications to idle watchers that asked for them, drop streams that went away.
    pub fn tick(&mut self, now_ms: u64) {
        let revision = self.view.revision();
        let header = self.header(revision);
        let mut closed = Vec::new();
        for (stream_id, stream) in self.streams.iter_mut() {
            if stream.outlet.responses.is_disconnected() || stream.outlet.flush_control().is_err() {
                closed.push(*stream_id);
                continue;
            }
            for (id, watcher) in stream.watchers.iter_mut() {
                let idle =
                    now_ms.saturating_sub(watcher.last_sent_ms) >= PROGRESS_NOTIFY_INTERVAL_MS;
                if watcher.progress_notify && watcher.synced && idle {
                    let notice = PbWatchResponse {
                        header: header,
                        watch_id: *id,
                        ..Default::default()
                    };
                    if let Ok(true) = stream.outlet.send_events(vec![notice.into()]) {
                        watcher.last_sent_ms = now_ms;
                    }
                }
            }
        }
        for stream_id in closed {
            self.close(stream_id);
        }
        self.catch_up(now_ms);
        self.report_metrics();
    }

    /// Adds this core's change in watcher counts to the process-wide gauges.
    fn report_metrics(&mut self) {
        let now = (
            self.streams.len() as i64,
            self.watchers() as i64,
            self.unsynced as i64,
        );
        let m = corekv_net::metrics::global();
        m.watch_streams.fetch_add(
            now.0 - self.reported.0,
            std::sync::atomic::Ordering::Relaxed,
        );
        m.watchers.fetch_add(
            now.1 - self.reported.1,
            std::sync::atomic::Ordering::Relaxed,
        );
        m.slow_watchers.fetch_add(
            now.2 - self.reported.2,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.reported = now;
    }

    fn catch_up(&mut self, now_ms: u64) {
        if self.unsynced == 0 {
            return;
        }
        // One budget for the whole pass, starting where the last pass stopped, so a core
        // with many lagging streams still gets back to its other work promptly.
        let mut ids: Vec<u64> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        let start = ids.partition_point(|id| *id < self.catch_up_cursor);
        let mut budget = CATCH_UP_WATCHERS_PER_PASS_MAX;
        for stream_id in ids[start..].iter().chain(&ids[..start]).copied() {
            if budget == 0 {
                self.catch_up_cursor = stream_id;
                return;
            }
            budget -= self.catch_up_stream(stream_id, now_ms, budget);
        }
        self.catch_up_cursor = 0;
    }

    /// Advances at most `budget` of the stream's unsynced watchers by one bounded chunk
    /// each; returns how many it looked at.
    fn catch_up_stream(&mut self, stream_id: u64, now_ms: u64, budget: usize) -> usize {
        let current = self.view.revision();
        let compacted = self.view.compact_revision();
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return 0;
        };
        let mut became_synced = 0;
        let mut visited = 0;
        let mut result = Ok(());
        let mut cancelled = Vec::new();
        for (id, watcher) in stream
            .watchers
            .iter_mut()
            .filter(|(_, w)| !w.synced)
            .take(budget)
        {
            // Reading history for a stream that cannot take the answer would be wasted work.
            if !stream.outlet.has_room() {
                break;
            }
            visited += 1;
            let after = watcher.next_revision - 1;
            let up_to = current.min(after.saturating_add(CATCH_UP_REVISIONS_MAX));
            let (key, end) = watcher.keys.as_request();
            let events = match self.view.changes(key, end, after, up_to, usize::MAX) {
                Ok(events) => events,
                Err(KvError::Compacted) => {
                    cancelled.push(*id);
                    continue;
                }
                Err(_) => continue,
            };
            let mine: Vec<&Event> = events.iter().filter(|e| watcher.wants(e)).collect();
            let responses = if mine.is_empty() {
                Vec::new()
            } else {
                event_responses(*id, watcher, &mine, current, &self.facts)
                    .into_iter()
                    .map(WatchItem::from)
                    .collect()
            };
            match stream.outlet.send_events(responses) {
                Ok(true) => {
                    watcher.next_revision = up_to + 1;
                    if !mine.is_empty() {
                        watcher.last_sent_ms = now_ms;
                    }
                    if watcher.next_revision > current {
                        watcher.synced = true;
                        became_synced += 1;
                    }
                }
                Ok(false) => break,
                Err(closed) => {
                    result = Err(closed);
                    break;
                }
            }
        }
        self.unsynced -= became_synced;
        for id in cancelled {
            stream.watchers.remove(&id);
            self.unsynced -= 1;
            // etcd: the watcher is cancelled with the compacted revision it fell behind,
            // in a response whose header carries no revision.
            let notice = PbWatchResponse {
                header: Some(PbResponseHeader {
                    revision: 0,
                    raft_term: self.facts.raft_term,
                    ..Default::default()
                }),
                watch_id: id,
                canceled: true,
                compact_revision: compacted,
                ..Default::default()
            };
            if stream.outlet.control(notice).is_err() {
                result = Err(Closed);
            }
        }
        if result.is_err() {
            self.close(stream_id);
        }
        visited
    }
}

/// etcd's normalisation of a watch range; `None` for an empty range.
fn key_set(mut key: Vec<u8>, range_end: Vec<u8>) -> Option<KeySet> {
    if key.is_empty() {
        key = vec![0];
    }
    match range_end.as_slice() {
        [] => Some(KeySet::Single(key)),
        [0] => Some(KeySet::From(key)),
        end if end <= key.as_slice() => None,
        _ => Some(KeySet::Between(key, range_end)),
    }
}

/// A published batch's events, each encoded (lazily) at most once per variant and shared
/// by every watcher it goes to.
struct SharedEvents<'a> {
    events: &'a [Event],
    /// Per event: the encoded `events` field without and with prev_kv.
    encoded: Vec<[Option<Bytes>; 2]>,
}

impl<'a> SharedEvents<'a> {
    fn new(events: &'a [Event]) -> SharedEvents<'a> {
        SharedEvents {
            events,
            encoded: Vec::new(),
        }
    }

    fn field(&mut self, index: usize, prev_kv: bool) -> Bytes {
        if self.encoded.is_empty() {
            self.encoded = vec![[None, None]; self.events.len()];
        }
        self.encoded[index][usize::from(prev_kv)]
            .get_or_insert_with(|| encode_event_field(&self.events[index].to_pb(prev_kv)))
            .clone()
    }

    /// The responses carrying events `mine` (indexes, in revision order) to one watcher:
    /// one response of shared bytes, unless the watcher asked for fragments and the whole
    /// is over the limit (then fragments built for it alone).
    fn responses(
        &mut self,
        watch_id: i64,
        watcher: &Watcher,
        mine: &[usize],
        revision: i64,
        facts: &HeaderFacts,
    ) -> Vec<WatchItem> {
        let item = WatchEvents {
            header: PbResponseHeader {
                revision,
                raft_term: facts.raft_term,
                ..Default::default()
            },
            watch_id,
            events: mine
                .iter()
                .map(|i| self.field(*i, watcher.prev_kv))
                .collect(),
        };
        if watcher.fragment && item.encoded_len() > facts.fragment_bytes_max {
            let events: Vec<&Event> = mine.iter().map(|i| &self.events[*i]).collect();
            return event_responses(watch_id, watcher, &events, revision, facts)
                .into_iter()
                .map(WatchItem::from)
                .collect();
        }
        vec![WatchItem::Events(item)]
    }
}

/// The responses carrying `events` to one watcher: one, or several fragments if the watcher
/// asked for fragmentation and the whole would exceed the size limit.
fn event_responses(
    watch_id: i64,
    watcher: &Watcher,
    events: &[&Event],
    revision: i64,
    facts: &HeaderFacts,
) -> Vec<PbWatchResponse> {
    let header = Some(PbResponseHeader {
        revision,
        raft_term: facts.raft_term,
        ..Default::default()
    });
    let pb: Vec<_> = events.iter().map(|e| e.to_pb(watcher.prev_kv)).collect();
    let whole = PbWatchResponse {
        header: header,
        watch_id,
        events: pb,
        ..Default::default()
    };
    if !watcher.fragment || whole.encoded_len() <= facts.fragment_bytes_max {
        return vec![whole];
    }
    let mut fragments = Vec::new();
    let mut current = PbWatchResponse {
        header: header,
        watch_id,
        fragment: true,
        ..Default::default()
    };
    let mut size = 0;
    for event in whole.events {
        let event_size = event.encoded_len() + 8;
        if !current.events.is_empty() && size + event_size > facts.fragment_bytes_max {
            let next = PbWatchResponse {
                header: header,
                watch_id,
                fragment: true,
                ..Default::default()
            };
            fragments.push(std::mem::replace(&mut current, next));
            size = 0;
        }
        size += event_size;
        current.events.push(event);
    }
    current.fragment = false;
    fragments.push(current);
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::mvcc::{CommandResponse, Store};
    use corekv_engine::pb::{PbCompactionRequest, PbPutRequest};
    use corekv_engine::request::Command;
    use corekv_net::shard_api::{watch_channel, WatchReceiver};

    const FACTS: HeaderFacts = HeaderFacts {
        raft_term: 1,
        fragment_bytes_max: 1 << 20,
    };

    struct Harness {
        store: Store,
        hub: WatchHub,
        now_ms: u64,
    }

    impl Harness {
        fn new() -> Harness {
            let store = Store::new();
            let hub = WatchHub::new(store.view(), FACTS);
            Harness {
                store,
                hub,
                now_ms: 0,
            }
        }

        /// A stream whose queue holds about `queue` small responses.
        fn open(&mut self, id: u64, queue: usize) -> WatchReceiver {
            let (tx, rx) = watch_channel(queue * 40);
            self.hub.open(id, tx);
            rx
        }

        fn create(&mut self, stream: u64, key: &str, end: &str, start: i64) {
            let create = WatchCreate {
                key: key.into(),
                range_end: end.into(),
                start_revision: start,
                prev_kv: true,
                ..Default::default()
            };
            assert!(self.hub.create(stream, create, self.now_ms).is_ok());
        }

        /// Applies writes one publication each.
        fn put(&mut self, key: &str, value: &str) {
            let cmd = Command::Put(PbPutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            });
            let applied = self.store.apply(&cmd).unwrap();
            assert!(matches!(applied.response, CommandResponse::Put(_)));
            self.hub
                .publish(self.store.view(), 1, &applied.events, self.now_ms);
        }
    }

    /// (watch id, revisions of events) of every non-control response.
    fn drain(rx: &WatchReceiver) -> Vec<(i64, Vec<i64>)> {
        rx.drain()
            .into_iter()
            .filter(|r| !r.created && !r.canceled)
            .map(|r| {
                (
                    r.watch_id,
                    r.events
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn created_then_events_in_order_with_auto_ids_from_zero() {
        let mut h = Harness::new();
        let rx = h.open(1, 64);
        h.create(1, "a", "", 0);
        h.create(1, "a", "b", 0);
        let created: Vec<PbWatchResponse> = rx.drain();
        assert_eq!(
            created
                .iter()
                .map(|r| (r.watch_id, r.created, r.header.as_ref().unwrap().revision))
                .collect::<Vec<_>>(),
            vec![(0, true, 1), (1, true, 1)]
        );
        h.put("a", "1");
        h.put("ab", "1");
        h.put("b", "1");
        assert_eq!(drain(&rx), vec![(0, vec![2]), (1, vec![2]), (1, vec![3])]);
    }

    #[test]
    fn start_revision_in_the_past_replays_history_then_follows() {
        let mut h = Harness::new();
        for i in 0..5 {
            h.put("k", &i.to_string());
        }
        let rx = h.open(1, 64);
        h.create(1, "k", "", 3);
        h.put("k", "new");
        let revisions: Vec<i64> = drain(&rx).into_iter().flat_map(|(_, revs)| revs).collect();
        assert_eq!(revisions, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn slow_stream_catches_up_from_history_without_loss_or_duplicates() {
        let mut h = Harness::new();
        let rx = h.open(1, 2);
        h.create(1, "k", "\0", 0);
        let _ = rx.drain();
        let mut got = Vec::new();
        for i in 0..200 {
            h.put(&format!("k{i:03}"), "v");
            if i % 37 == 0 {
                got.extend(drain(&rx).into_iter().flat_map(|(_, r)| r));
            }
        }
        for _ in 0..500 {
            got.extend(drain(&rx).into_iter().flat_map(|(_, r)| r));
            h.now_ms += 50;
            h.hub.tick(h.now_ms);
        }
        assert_eq!(
            got,
            (2..=201).collect::<Vec<i64>>(),
            "every event once, in order"
        );
        assert_eq!(h.hub.unsynced, 0);
    }

    #[test]
    fn compacted_start_is_created_then_cancelled_with_compact_revision() {
        let mut h = Harness::new();
        for i in 0..5 {
            h.put("k", &i.to_string());
        }
        h.store
            .apply(&Command::Compact(PbCompactionRequest {
                revision: 4,
                physical: false,
            }))
            .unwrap();
        h.hub.publish(h.store.view(), 1, &[], 0);
        let rx = h.open(1, 64);
        h.create(1, "k", "", 2);
        let responses: Vec<PbWatchResponse> = rx.drain();
        assert_eq!(responses.len(), 2);
        assert!(responses[0].created && !responses[0].canceled);
        assert!(responses[1].canceled);
        assert_eq!(responses[1].compact_revision, 4);
        // As etcd 3.4: the cancel notice's header has no revision.
        assert_eq!(responses[1].header.as_ref().map(|h| h.revision), Some(0));
        assert_eq!(h.hub.watchers(), 0);
    }

    #[test]
    fn duplicate_id_and_empty_range_are_refused_like_etcd() {
        let mut h = Harness::new();
        let rx = h.open(1, 64);
        let create = |id: i64, key: &str, end: &str| WatchCreate {
            key: key.into(),
            range_end: end.into(),
            watch_id: id,
            ..Default::default()
        };
        for spec in [create(7, "a", ""), create(7, "a", ""), create(0, "b", "a")] {
            assert!(h.hub.create(1, spec, 0).is_ok());
        }
        let r: Vec<PbWatchResponse> = rx.drain();
        assert_eq!((r[0].watch_id, r[0].canceled), (7, false));
        assert_eq!(
            (r[1].watch_id, r[1].canceled, r[1].cancel_reason.as_str()),
            (-1, true, ERR_DUPLICATE_ID)
        );
        assert_eq!(
            (r[2].watch_id, r[2].canceled, r[2].cancel_reason.as_str()),
            (-1, true, ERR_EMPTY_RANGE)
        );
    }

    #[test]
    fn future_start_revision_skips_earlier_events() {
        let mut h = Harness::new();
        let rx = h.open(1, 64);
        h.create(1, "k", "", 4);
        for i in 0..4 {
            h.put("k", &i.to_string());
        }
        let revisions: Vec<i64> = drain(&rx).into_iter().flat_map(|(_, r)| r).collect();
        assert_eq!(revisions, vec![4, 5]);
    }

    #[test]
    fn dropped_receivers_free_their_streams() {
        let mut h = Harness::new();
        let rx = h.open(1, 4);
        h.create(1, "k", "", 0);
        drop(rx);
        h.put("k", "v");
        h.hub.tick(1);
        assert_eq!(h.hub.streams(), 0);
    }

    #[test]
    fn fragments_split_large_batches() {
        let mut h = Harness::new();
        h.hub.facts.fragment_bytes_max = 1000;
        let rx = h.open(1, 64);
        let create = WatchCreate {
            key: b"k".to_vec(),
            range_end: b"\0".to_vec(),
            fragment: true,
            ..Default::default()
        };
        assert!(h.hub.create(1, create, 0).is_ok());
        let _ = rx.drain();
        let puts: Vec<_> = (0..10)
            .map(|i| corekv_engine::pb::PbTxnRequestOp {
                request: Some(corekv_engine::pb::PbTxnOpRequest::RequestPut(
                    PbPutRequest {
                        key: format!("k{i}").into(),
                        value: vec![b'x'; 300],
                        ..Default::default()
                    },
                )),
            })
            .collect();
        let txn = corekv_engine::pb::PbTxnRequest {
            success: puts,
            ..Default::default()
        };
        let applied = h.store.apply(&Command::Txn(txn)).unwrap();
        h.hub.publish(h.store.view(), 1, &applied.events, 0);
        let responses: Vec<PbWatchResponse> = rx.drain();
        assert!(responses.len() > 1);
        assert!(responses[..responses.len() - 1].iter().all(|r| r.fragment));
        assert!(!responses.last().unwrap().fragment);
        assert_eq!(responses.iter().map(|r| r.events.len()).sum::<usize>(), 10);
    }
}
