//! The key type of the key map: short keys inline, long ones shared.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;

/// Longest key held inline (the enum stays 32 bytes, the size of a `Bytes`).
const INLINE_BYTES_MAX: usize = 23;

/// A key of the key map. Copying a map node copies its keys: an inline key is a plain
/// 32-byte copy, where a `Bytes` key bumps a reference count on a cold cache line (and
/// dropping the old node bumps it back); comparing inline keys during a search reads
/// the node itself instead of following a pointer per key. Longer keys share the
/// record's bytes. Ordered, compared and borrowed as the byte string it holds.
#[derive(Clone)]
pub(super) enum MapKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES_MAX],
    },
    Shared(Bytes),
}

const _: () = assert!(std::mem::size_of::<MapKey>() == 32);

impl MapKey {
    /// The map key for `key`: inline if short, else sharing `key`'s bytes.
    pub fn new(key: &Bytes) -> MapKey {
        if key.len() <= INLINE_BYTES_MAX {
            let mut bytes = [0; INLINE_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(key);
            MapKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            MapKey::Shared(key.clone())
        }
    }

    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            MapKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MapKey::Shared(b) => b,
        }
    }
}

impl Borrow<[u8]> for MapKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &MapKey) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MapKey {}

impl PartialOrd for MapKey {
    fn partial_cmp(&self, other: &MapKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MapKey {
    fn cmp(&self, other: &MapKey) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl fmt::Debug for MapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.as_slice()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inline and shared keys order exactly as their bytes do, on both sides of the limit.
    #[test]
    fn orders_as_bytes() {
        let lens = [0, 1, 7, 8, 22, 23, 24, 25, 64];
        let mut keys: Vec<Bytes> = Vec::new();
        for len in lens {
            for fill in [0u8, 1, 0x7f, 0xff] {
                keys.push(Bytes::from(vec![fill; len]));
                let mut v = vec![fill; len];
                if let Some(last) = v.last_mut() {
                    *last = last.wrapping_add(1);
                }
                keys.push(Bytes::from(v));
            }
        }
        for a in &keys {
            let ka = MapKey::new(a);
            assert_eq!(ka.as_slice(), &a[..]);
            assert_eq!(
                matches!(ka, MapKey::Inline { .. }),
                a.len() <= INLINE_BYTES_MAX
            );
            for b in &keys {
                let kb = MapKey::new(b);
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
            }
        }
    }
}
