//! Throughput figures (not a pass/fail test). Run in release mode:
//! `cargo test -p corekv-engine --release btree_perf -- --ignored --nocapture`
//! (`COREKV_BTREE_PERF_N` sets the number of keys, default 1,000,000).

use std::ops::Bound;
use std::time::Instant;

use super::*;

fn run(label: &str, keys: &[[u8; 8]], batch: usize) {
    let (_dir, path) = tmp();
    let store = open(&path);
    let value = [0x5Au8; 256];
    let t = Instant::now();
    for chunk in keys.chunks(batch) {
        let mut w = store.write().unwrap();
        for k in chunk {
            w.insert(k, &value).unwrap();
        }
        w.commit().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let st = store.stats();
    eprintln!(
        "{label}: {} inserts in {:.2}s = {:.0}/s ({:.1} ms/commit of {batch}); file {} MiB, \
         {} pages, {} free, depth {}",
        keys.len(),
        secs,
        keys.len() as f64 / secs,
        secs * 1000.0 / keys.len().div_ceil(batch) as f64,
        st.file_bytes >> 20,
        st.page_count,
        st.free_pages,
        st.depth
    );
    let r = store.read();
    let t = Instant::now();
    let mut rng = Rng::new(1);
    let gets = keys.len().min(1_000_000);
    for _ in 0..gets {
        let k = &keys[rng.below(keys.len() as u64) as usize];
        assert_eq!(r.get(k).unwrap().map(<[u8]>::len), Some(256));
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{label}: {gets} random gets in {secs:.2}s = {:.0}/s",
        gets as f64 / secs
    );
    let t = Instant::now();
    let n = r.range(Bound::Unbounded, Bound::Unbounded).count();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, keys.len());
    eprintln!(
        "{label}: full scan of {n} in {secs:.2}s = {:.0}/s",
        n as f64 / secs
    );
}

#[test]
#[ignore]
fn btree_perf_insert_1m() {
    let n: u64 = std::env::var("COREKV_BTREE_PERF_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // Ascending keys, like revisions.
    let seq: Vec<[u8; 8]> = (0..n).map(|i| i.to_be_bytes()).collect();
    run("ascending", &seq, 1000);
    // Random keys.
    let mut rng = Rng::new(9);
    let rnd: Vec<[u8; 8]> = (0..n).map(|_| rng.next_u64().to_be_bytes()).collect();
    run("random", &rnd, 1000);
}
