//! Tests of the B+ tree store. Shared helpers: a small xorshift RNG, a `BTreeMap` model and
//! checks against it, and a fault-injecting file layer.

mod basic;
mod corrupt;
mod crash;
mod model;
mod perf;
mod readers;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::io::FileIo;
use super::{Options, ReadTxn, Store, WriteTxn, PAGE_SIZE};

pub(super) type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// xorshift64* — deterministic and dependency-free.
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// A key from a space of `space` keys; a few are long (up to the 1 KiB limit).
pub(super) fn rand_key(rng: &mut Rng, space: u64) -> Vec<u8> {
    let n = rng.below(space);
    let mut k = format!("k{n:06}").into_bytes();
    // The length is a function of the key number so a key is always the same bytes.
    let extra = match n % 23 {
        0 => 1024 - k.len(),
        1 | 2 => 300,
        3..=6 => 40,
        _ => 0,
    };
    k.resize(k.len() + extra, b'x');
    k
}

/// A value: mostly small, some around the inline/overflow boundary, rarely large.
pub(super) fn rand_value(rng: &mut Rng, large: bool) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=59 => rng.below(64),
        60..=84 => 64 + rng.below(400),
        85..=96 => 1000 + rng.below(9000),
        _ if large => 100_000 + rng.below(1_600_000),
        _ => 20_000 + rng.below(20_000),
    } as usize;
    rng.bytes(len)
}

/// Full scan, count and point lookups of every key equal the model.
pub(super) fn check_read(txn: &ReadTxn, model: &Model) {
    assert_eq!(txn.len(), model.len() as u64, "entry count");
    let got: Vec<(Vec<u8>, Vec<u8>)> = txn
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|kv| {
            let (k, v) = kv.expect("scan");
            (k.to_vec(), v.to_vec())
        })
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(got.len(), want.len(), "scan length");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "scan key");
        assert!(
            g.1 == w.1,
            "scan value of {:?}",
            String::from_utf8_lossy(&w.0[..8.min(w.0.len())])
        );
    }
    for (k, v) in model {
        assert_eq!(txn.get(k).expect("get"), Some(&v[..]));
    }
}

fn bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn rand_bound(rng: &mut Rng, space: u64) -> Bound<Vec<u8>> {
    match rng.below(3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(rand_key(rng, space)),
        _ => Bound::Excluded(rand_key(rng, space)),
    }
}

/// Random ranges through `range` equal the model's.
pub(super) fn check_ranges<'a, F, I>(range: F, model: &Model, rng: &mut Rng, space: u64, n: usize)
where
    F: Fn(Bound<&[u8]>, Bound<&[u8]>) -> I,
    I: Iterator<Item = super::Result<(&'a [u8], &'a [u8])>>,
{
    for _ in 0..n {
        let (s, e) = (rand_bound(rng, space), rand_bound(rng, space));
        let valid = match (&s, &e) {
            (Bound::Included(a), Bound::Included(b)) => a <= b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
            | (Bound::Excluded(a), Bound::Included(b)) => a < b,
            _ => true,
        };
        if !valid {
            continue; // BTreeMap::range panics on such bounds
        }
        let want: Vec<(&[u8], &[u8])> = model
            .range::<[u8], _>((bound(&s), bound(&e)))
            .map(|(k, v)| (&k[..], &v[..]))
            .collect();
        let got: Vec<(&[u8], &[u8])> = range(bound(&s), bound(&e))
            .map(|kv| kv.expect("range"))
            .collect();
        assert_eq!(got.len(), want.len(), "range {s:?}..{e:?} length");
        assert!(got == want, "range contents");
    }
}

/// Point lookups of random keys (present or not) inside a write transaction.
pub(super) fn check_gets(w: &WriteTxn<'_>, model: &Model, rng: &mut Rng, space: u64, n: usize) {
    for _ in 0..n {
        let k = rand_key(rng, space);
        assert_eq!(
            w.get(&k).expect("get").map(<[u8]>::to_vec),
            model.get(&k).cloned()
        );
    }
}

pub(super) fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    (dir, path)
}

pub(super) fn open(path: &Path) -> Store {
    Store::open(path, Options::default()).expect("open")
}

/// Puts `n` sequential keys `key{i:08}` with `vlen`-byte values, `batch` per commit.
pub(super) fn fill(store: &Store, model: &mut Model, n: usize, vlen: usize, batch: usize) {
    let mut i = 0;
    while i < n {
        let mut w = store.write().expect("write");
        for _ in 0..batch.min(n - i) {
            let k = format!("key{i:08}").into_bytes();
            let v = vec![(i % 251) as u8; vlen];
            w.insert(&k, &v).expect("insert");
            model.insert(k, v);
            i += 1;
        }
        w.commit().expect("commit");
    }
}

// ---------------------------------------------------------------------------------------
// Fault injection.

/// What the fault layer does at the chosen operation.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fault {
    /// The operation fails and nothing of it reaches the file.
    Fail,
    /// A write persists only its first `n` bytes, then fails.
    Tear(usize),
}

#[derive(Default)]
pub(super) struct FaultState {
    /// Operations (write, sync, set_len) done so far.
    pub ops: usize,
    /// The operation that fails (and every one after it).
    pub crash_at: Option<usize>,
    pub fault: Option<Fault>,
    pub crashed: bool,
    /// Writes since the last sync: offset and the bytes they replaced.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// A meta page write reached the file and has not been synced.
    pub meta_unsynced: bool,
    /// Every operation that went through: `('w', offset)`, `('s', 0)`, `('l', len)`.
    pub log: Vec<(char, u64)>,
}

/// A file that fails at a chosen operation, remembers what unsynced writes replaced, and
/// can simulate a power loss that drops or tears any of them.
pub(super) struct FaultFile {
    file: File,
    pub st: Arc<Mutex<FaultState>>,
}

impl FaultFile {
    fn pre_image(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut old = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut old[done..], offset + done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        old
    }

    fn check(&self, st: &mut FaultState) -> io::Result<bool> {
        if st.crashed {
            return Err(io::Error::other("injected fault: file is gone"));
        }
        if st.crash_at == Some(st.ops) {
            st.crashed = true;
            return Ok(true);
        }
        st.ops += 1;
        Ok(false)
    }
}

impl FileIo for FaultFile {
    fn file(&self) -> &File {
        &self.file
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let crash = self.check(&mut st)?;
        st.log.push(('w', offset));
        let n = match (crash, st.fault) {
            (false, _) => buf.len(),
            (true, Some(Fault::Tear(n))) => n.min(buf.len()),
            (true, _) => 0,
        };
        if n > 0 {
            let old = self.pre_image(offset, n);
            st.unsynced.push((offset, old));
            self.file.write_all_at(&buf[..n], offset)?;
            if offset < 2 * PAGE_SIZE as u64 {
                st.meta_unsynced = true;
            }
        }
        if crash {
            return Err(io::Error::other("injected fault: write"));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.check(&mut st)? {
            return Err(io::Error::other("injected fault: fdatasync"));
        }
        st.log.push(('s', 0));
        st.unsynced.clear();
        st.meta_unsynced = false;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.check(&mut st)? {
            return Err(io::Error::other("injected fault: ftruncate"));
        }
        st.log.push(('l', len));
        self.file.set_len(len)
    }
}

/// Opens `path` through a [`FaultFile`] with the given plan.
pub(super) fn open_faulty(
    path: &Path,
    crash_at: Option<usize>,
    fault: Fault,
) -> (Store, Arc<Mutex<FaultState>>) {
    let st = Arc::new(Mutex::new(FaultState {
        crash_at,
        fault: Some(fault),
        ..FaultState::default()
    }));
    let st2 = st.clone();
    let store = Store::open_with(path, Options::default(), &move |file| {
        Box::new(FaultFile {
            file,
            st: st2.clone(),
        })
    })
    .expect("open faulty");
    (store, st)
}

/// Power loss: each write since the last sync is kept, lost, or torn at a random byte
/// (the rest of it keeps the bytes it replaced). Undone newest first.
pub(super) fn power_loss(path: &Path, st: &Mutex<FaultState>, rng: &mut Rng) {
    let mut st = st.lock().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("reopen");
    for (offset, old) in st.unsynced.drain(..).rev() {
        let keep = match rng.below(3) {
            0 => old.len(),
            1 => 0,
            _ => rng.below(old.len() as u64 + 1) as usize,
        };
        if keep < old.len() {
            file.write_all_at(&old[keep..], offset + keep as u64)
                .expect("undo write");
        }
    }
}
