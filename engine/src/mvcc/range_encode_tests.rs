//! Property: [`ReadView::range_encoded`] (and [`RangeAnswer::encode`]) write exactly the
//! bytes prost writes for the `PbRangeResponse` that [`ReadView::range`] builds, once its
//! header is filled as the network layer fills it, with the same errors. Random stores
//! (puts with and without leases, negative and huge lease IDs, empty and long keys and
//! values, deletes, compactions) and random requests (single keys, ranges, prefixes and
//! empty ranges; past, compacted and future revisions; every sort order and target,
//! unknown ones included; limits including negative and MaxInt64; min/max filters;
//! keys_only; count_only), read from the current view and from older snapshots.

use bytes::BufMut;
use prost::Message;

use super::*;
use crate::pb::{
    PbCompactionRequest, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbRangeResponse,
};

use crate::test_rng::Rng;

/// Lease IDs puts may name: small, huge and negative ones (10-byte varints).
const LEASES: &[i64] = &[0, 1, 2, i64::MAX, -1, i64::MIN];

fn key(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(3) {
        // Longer than 127 bytes: a two-byte length.
        let mut k = b"long/".to_vec();
        k.resize(130 + rng.below(200) as usize, b'a' + rng.below(3) as u8);
        return k;
    }
    let len = 1 + rng.below(3) as usize;
    (0..len).map(|_| rng.pick(b"abc\xff")).collect()
}

fn value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => vec![b'x'; 100 + rng.below(300) as usize],
        2 if rng.chance(10) => vec![b'y'; 17_000],
        _ => format!("v{}", rng.below(6)).into_bytes(),
    }
}

fn range_end(rng: &mut Rng, key: &[u8]) -> Vec<u8> {
    match rng.below(5) {
        0 | 1 => Vec::new(),
        2 => vec![0],
        3 => {
            // A prefix range.
            let mut end = key.to_vec();
            *end.last_mut().expect("keys are not empty") = end.last().unwrap().saturating_add(1);
            end
        }
        _ => self::key(rng),
    }
}

fn apply_random(rng: &mut Rng, store: &mut Store) {
    let command = match rng.below(20) {
        0..=13 => {
            let ignore_value = rng.chance(8);
            Command::Put(PbPutRequest {
                key: key(rng),
                value: if ignore_value { Vec::new() } else { value(rng) },
                lease: rng.pick(LEASES),
                prev_kv: false,
                ignore_value,
                ignore_lease: rng.chance(5),
            })
        }
        14..=17 => {
            let k = key(rng);
            Command::DeleteRange(PbDeleteRequest {
                range_end: range_end(rng, &k),
                key: k,
                prev_kv: false,
            })
        }
        _ => Command::Compact(PbCompactionRequest {
            revision: rng.between(store.compact_revision(), store.revision()),
            physical: false,
        }),
    };
    // Refused commands (ignore_value on a missing key, compacting twice...) change nothing.
    let _ = store.apply(&command);
}

fn random_request(rng: &mut Rng, revision: i64, compacted: i64) -> PbRangeRequest {
    let k = key(rng);
    let filter = |rng: &mut Rng| {
        if rng.chance(15) {
            rng.between(0, revision + 1)
        } else {
            0
        }
    };
    PbRangeRequest {
        range_end: if rng.chance(80) {
            range_end(rng, &k)
        } else {
            vec![0]
        },
        key: if rng.chance(10) { b"\0".to_vec() } else { k },
        limit: match rng.below(10) {
            0..=4 => 0,
            5..=7 => rng.between(1, 6),
            8 => rng.pick(&[-1, i64::MAX, i64::MIN, 1_000_000]),
            _ => rng.between(1, 40),
        },
        revision: if rng.chance(40) {
            rng.between(compacted - 1, revision + 1)
        } else {
            0
        },
        sort_order: if rng.chance(40) {
            rng.between(0, 3) as i32
        } else {
            0
        },
        sort_target: if rng.chance(40) {
            rng.between(0, 5) as i32
        } else {
            0
        },
        serializable: rng.chance(50),
        keys_only: rng.chance(20),
        count_only: rng.chance(10),
        min_mod_revision: filter(rng),
        max_mod_revision: filter(rng),
        min_create_revision: filter(rng),
        max_create_revision: filter(rng),
    }
}

fn random_header(rng: &mut Rng) -> HeaderFields {
    let field =
        |rng: &mut Rng| rng.pick(&[0, 1, 127, 128, 0x1234_5678_9abc_def0, 1 << 63, u64::MAX]);
    HeaderFields {
        cluster_id: field(rng),
        member_id: field(rng),
        raft_term: field(rng),
    }
}

/// What the network layer's `fill_header` does to the usual path's response.
fn fill_header(resp: &mut PbRangeResponse, h: &HeaderFields) {
    let header = resp.header.get_or_insert_with(Default::default);
    header.cluster_id = h.cluster_id;
    header.member_id = h.member_id;
    header.raft_term = h.raft_term;
}

/// The usual path: build the message, fill the header, prost-encode it.
fn via_prost(view: &ReadView, req: &PbRangeRequest, h: &HeaderFields) -> Result<Vec<u8>, KvError> {
    let mut resp = view.range(req)?;
    fill_header(&mut resp, h);
    Ok(resp.encode_to_vec())
}

/// Checks one request on one view; returns whether it answered (not an error).
fn check(view: &ReadView, req: &PbRangeRequest, h: &HeaderFields, what: &str) -> bool {
    let want = via_prost(view, req, h);
    let got = view.range_encoded(req, *h).map(|b| b.to_vec());
    assert_eq!(got, want, "{what}: {req:?} {h:?}");
    let Ok(bytes) = got else { return false };
    // The encoding decodes to the same message, and encode agrees with encoded_len when
    // appending to a buffer that already holds something (as tonic's frame header).
    let mut expected = view.range(req).unwrap();
    fill_header(&mut expected, h);
    assert_eq!(
        PbRangeResponse::decode(bytes.as_slice()).unwrap(),
        expected,
        "{what}"
    );
    let answer = view.range_answer(req).unwrap();
    assert_eq!(answer.encoded_len(h), bytes.len(), "{what}");
    assert_eq!(answer.to_pb().kvs.len(), answer.len());
    let mut framed = bytes::BytesMut::new();
    framed.put_slice(&[0; 5]);
    answer.encode(h, &mut framed);
    assert_eq!(&framed[5..], bytes.as_slice(), "{what}");
    true
}

#[test]
fn encoding_matches_prost_on_random_stores_and_requests() {
    let (mut answered, mut failed, mut nonempty) = (0, 0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng::new(seed);
        let mut store = Store::new();
        store.set_change_tracking(false);
        store.grant_leases_for_tests(LEASES.iter().copied().filter(|id| *id != 0));
        let mut old_views: Vec<ReadView> = Vec::new();
        for step in 0..120 {
            apply_random(&mut rng, &mut store);
            if step % 15 == 0 {
                old_views.push(store.view());
            }
            let view = store.view();
            for i in 0..3 {
                let (revision, compacted) = (view.revision(), view.compact_revision());
                let req = random_request(&mut rng, revision, compacted);
                let h = random_header(&mut rng);
                let what = format!("seed {seed} step {step} request {i}");
                if check(&view, &req, &h, &what) {
                    answered += 1;
                    nonempty += usize::from(!view.range_answer(&req).unwrap().is_empty());
                } else {
                    failed += 1;
                }
                // The same request on an older snapshot.
                if let Some(old) = old_views.get(rng.below(old_views.len() as u64) as usize) {
                    check(
                        old,
                        &req,
                        &h,
                        &format!("{what} (old view at {})", old.revision()),
                    );
                }
            }
        }
    }
    // The generator reaches both answers (most with kvs) and errors.
    assert!(
        answered > 5000 && nonempty > 2500 && failed > 100,
        "{answered} {nonempty} {failed}"
    );
}

#[test]
fn encoding_matches_prost_on_a_large_answer() {
    let mut store = Store::new();
    store.set_change_tracking(false);
    store.grant_leases_for_tests([7]);
    for i in 0..20_000u32 {
        let put = PbPutRequest {
            key: format!("key/{i:08}").into_bytes(),
            value: vec![b'v'; (i % 300) as usize],
            lease: if i % 3 == 0 { 7 } else { 0 },
            ..Default::default()
        };
        store.apply(&Command::Put(put)).unwrap();
    }
    let view = store.view();
    let h = HeaderFields {
        cluster_id: 0xdead_beef,
        member_id: 42,
        raft_term: 3,
    };
    let all = PbRangeRequest {
        key: b"key/".to_vec(),
        range_end: b"key0".to_vec(),
        ..Default::default()
    };
    assert!(check(&view, &all, &h, "all"));
    let sorted = PbRangeRequest {
        sort_order: 2,
        sort_target: 4,
        limit: 5000,
        ..all.clone()
    };
    assert!(check(&view, &sorted, &h, "sorted by value, limited"));
    let keys_only = PbRangeRequest {
        keys_only: true,
        ..all.clone()
    };
    assert!(check(&view, &keys_only, &h, "keys only"));
    let count_only = PbRangeRequest {
        count_only: true,
        ..all
    };
    assert!(check(&view, &count_only, &h, "count only"));
    let all = PbRangeRequest {
        key: b"key/".to_vec(),
        range_end: b"key0".to_vec(),
        ..Default::default()
    };
    let answer = view.range_answer(&all).unwrap();
    assert_eq!(
        (answer.len(), answer.count(), answer.more()),
        (20_000, 20_000, false)
    );
}
