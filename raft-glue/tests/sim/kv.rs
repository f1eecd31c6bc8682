//! The simulated state machine: a tiny KV map applied from committed entries.

use std::collections::BTreeMap;

pub type Key = u8;
pub type Value = u64;

/// A write carried in a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Put {
        key: Key,
        value: Value,
    },
    Cas {
        key: Key,
        expected: Option<Value>,
        new: Value,
    },
    Delete {
        key: Key,
    },
}

impl Cmd {
    pub fn key(&self) -> Key {
        match self {
            Cmd::Put { key, .. } | Cmd::Cas { key, .. } | Cmd::Delete { key } => *key,
        }
    }
}

/// A client's write: (client, seq) names it uniquely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub client: u64,
    pub seq: u64,
    pub cmd: Cmd,
}

/// What applying a request returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Done,
    Swapped(bool),
}

/// The whole state machine: the map, and per client the highest request applied (so a
/// proposal the network duplicated is applied once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub data: BTreeMap<Key, Value>,
    pub last_seq: BTreeMap<u64, u64>,
}

impl Image {
    /// Applies `req`; `None` if it is a duplicate (or older than one already applied).
    pub fn apply(&mut self, req: &Request) -> Option<Reply> {
        let last = self.last_seq.entry(req.client).or_insert(0);
        if req.seq <= *last {
            return None;
        }
        *last = req.seq;
        Some(match req.cmd {
            Cmd::Put { key, value } => {
                self.data.insert(key, value);
                Reply::Done
            }
            Cmd::Delete { key } => {
                self.data.remove(&key);
                Reply::Done
            }
            Cmd::Cas { key, expected, new } => {
                let swap = self.data.get(&key).copied() == expected;
                if swap {
                    self.data.insert(key, new);
                }
                Reply::Swapped(swap)
            }
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        for (k, v) in &self.data {
            out.push(*k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.last_seq.len() as u32).to_le_bytes());
        for (c, s) in &self.last_seq {
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Image {
        let mut image = Image::default();
        let n = take_u32(&mut b);
        for _ in 0..n {
            let k = take(&mut b, 1)[0];
            let v = take_u64(&mut b);
            image.data.insert(k, v);
        }
        let n = take_u32(&mut b);
        for _ in 0..n {
            let c = take_u64(&mut b);
            let s = take_u64(&mut b);
            image.last_seq.insert(c, s);
        }
        assert!(b.is_empty(), "trailing bytes in a snapshot image");
        image
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(&self.client.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        match self.cmd {
            Cmd::Put { key, value } => {
                out.extend_from_slice(&[0, key]);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Cmd::Cas { key, expected, new } => {
                out.extend_from_slice(&[1, key, expected.is_some() as u8]);
                out.extend_from_slice(&expected.unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&new.to_le_bytes());
            }
            Cmd::Delete { key } => out.extend_from_slice(&[2, key]),
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Request {
        let client = take_u64(&mut b);
        let seq = take_u64(&mut b);
        let tag = take(&mut b, 1)[0];
        let key = take(&mut b, 1)[0];
        let cmd = match tag {
            0 => Cmd::Put {
                key,
                value: take_u64(&mut b),
            },
            1 => {
                let has = take(&mut b, 1)[0] == 1;
                let e = take_u64(&mut b);
                Cmd::Cas {
                    key,
                    expected: has.then_some(e),
                    new: take_u64(&mut b),
                }
            }
            2 => Cmd::Delete { key },
            t => panic!("unknown command tag {t}"),
        };
        assert!(b.is_empty(), "trailing bytes in a request");
        Request { client, seq, cmd }
    }
}

/// A read's context for read_index: (client, seq).
pub fn read_ctx(client: u64, seq: u64) -> Vec<u8> {
    let mut out = client.to_le_bytes().to_vec();
    out.extend_from_slice(&seq.to_le_bytes());
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
    assert!(b.len() >= n, "short record");
    let (head, tail) = b.split_at(n);
    *b = tail;
    head
}

fn take_u32(b: &mut &[u8]) -> u32 {
    u32::from_le_bytes(take(b, 4).try_into().unwrap())
}

fn take_u64(b: &mut &[u8]) -> u64 {
    u64::from_le_bytes(take(b, 8).try_into().unwrap())
}
