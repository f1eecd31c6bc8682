//! `db info` and `defrag` against B+ tree files built with the engine's btree API.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use common::{flip_byte, tool};
use corekv_engine::btree::{Options, Store, META_BYTES, PAGE_SIZE};

const META: [u8; META_BYTES] = [7; META_BYTES];

/// Builds a store with 8000 entries, then removes 95% of them: a fragmented file.
/// Returns what it holds.
fn fragmented(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = Store::open(path, Options::default()).unwrap();
    let mut model = BTreeMap::new();
    for batch in 0..8u32 {
        let mut w = store.write().unwrap();
        for i in 0..1000u32 {
            let n = batch * 1000 + i;
            let key = format!("key{n:06}").into_bytes();
            // Every 25th value is large enough for an overflow run.
            let len = if n % 25 == 0 { 3000 } else { 400 };
            let value: Vec<u8> = (0..len).map(|j| (n as usize + j) as u8).collect();
            w.insert(&key, &value).unwrap();
            model.insert(key, value);
        }
        w.commit().unwrap();
    }
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for chunk in keys.chunks(500) {
        let mut w = store.write().unwrap();
        for (i, k) in chunk.iter().enumerate() {
            if i % 20 != 0 {
                assert!(w.remove(k).unwrap());
                model.remove(k);
            }
        }
        w.commit().unwrap();
    }
    let mut w = store.write().unwrap();
    w.set_meta(&META);
    w.commit().unwrap();
    model
}

fn contents(path: &Path) -> (BTreeMap<Vec<u8>, Vec<u8>>, [u8; META_BYTES]) {
    let store = Store::open(
        path,
        Options {
            create_if_missing: false,
        },
    )
    .unwrap();
    store.verify().expect("store verifies");
    let r = store.read();
    let map = r
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    (map, r.meta())
}

fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn info_reports_stats_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let model = fragmented(&db_path(&data));
    let expected = Store::open(db_path(&data), Options::default())
        .unwrap()
        .stats();

    let out = tool(&["db", "info", "--data-dir", s(&data), "-w", "json"]);
    out.expect_code(0);
    let j = out.json();
    assert_eq!(j["entries"], model.len());
    assert_eq!(j["page_size"], PAGE_SIZE);
    assert_eq!(j["page_count"], expected.page_count);
    assert_eq!(j["file_bytes"], expected.file_bytes);
    assert_eq!(j["free_pages"], expected.free_pages);
    assert_eq!(j["depth"], expected.depth);
    assert_eq!(j["txid"], expected.txid);
    assert!(j["fragmentation_percent"].as_f64().unwrap() > 50.0, "{out}");
    assert_eq!(j["verify"]["ok"], true);
    assert!(j["verify"]["overflow_pages"].as_u64().unwrap() > 0);

    let out = tool(&["db", "info", "--db", s(&db_path(&data))]);
    out.expect_code(0);
    for field in [
        "page size",
        "page count",
        "file bytes",
        "free pages",
        "fragmentation",
        "tree depth",
        "entries",
        "txid",
        "verify",
    ] {
        assert!(
            out.stdout.contains(&format!("| {field} ")),
            "{field}:\n{out}"
        );
    }
    assert!(out.stdout.contains("| 4096 "), "{out}");
    assert!(out.stdout.contains("OK ("), "{out}");
}

#[test]
fn defrag_shrinks_the_file_and_keeps_its_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = db_path(&data);
    let model = fragmented(&db);
    std::fs::create_dir_all(data.join("member").join("wal")).unwrap();
    let size_before = std::fs::metadata(&db).unwrap().len();
    // A leftover of an interrupted defrag is cleared.
    std::fs::write(db.with_file_name("db.defrag.tmp"), b"junk").unwrap();

    let out = tool(&["defrag", "--data-dir", s(&data), "-w", "json"]);
    out.expect_code(0);
    let j = out.json();
    let size_after = std::fs::metadata(&db).unwrap().len();
    assert_eq!(j["before"]["file_bytes"], size_before);
    assert_eq!(j["after"]["file_bytes"], size_after);
    assert_eq!(j["after"]["free_pages"], 0);
    assert_eq!(j["entries"], model.len());
    assert!(
        size_after * 3 < size_before,
        "defrag should shrink {size_before} a lot, got {size_after}"
    );
    assert_eq!(size_after % PAGE_SIZE as u64, 0);
    assert!(
        !db.with_file_name("db.defrag.tmp").exists(),
        "temp file left behind"
    );

    let (map, meta) = contents(&db);
    assert!(map == model, "contents differ after defrag");
    assert_eq!(meta, META, "metadata record kept");

    // Table output; a second run on a compact file changes nothing that matters.
    let out = tool(&["defrag", "--db", s(&db)]);
    out.expect_code(0);
    for field in ["size before", "size after", "reclaimed", "entries"] {
        assert!(
            out.stdout.contains(&format!("| {field} ")),
            "{field}:\n{out}"
        );
    }
    assert!(contents(&db).0 == model);
    let info = tool(&["db", "info", "--db", s(&db), "-w", "json"]).json();
    assert_eq!(info["fragmentation_percent"], 0.0);
    assert_eq!(info["verify"]["ok"], true);
}

#[test]
fn refuses_while_the_store_or_the_data_dir_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = db_path(&data);
    fragmented(&db);
    let original = std::fs::read(&db).unwrap();

    {
        // Another process's open store (a server) holds the file's lock.
        let _held = Store::open(&db, Options::default()).unwrap();
        let out = tool(&["db", "info", "--data-dir", s(&data)]);
        out.expect_code(1);
        assert!(out.stderr.contains("locked"), "{out}");
        let out = tool(&["defrag", "--data-dir", s(&data)]);
        out.expect_code(1);
        assert!(
            out.stderr.contains("locked") && out.stderr.contains("stop it first"),
            "{out}"
        );
    }
    {
        // A running server holds the WAL directory's lock.
        let wal = data.join("member").join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        let f = File::open(&wal).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let out = tool(&["defrag", "--data-dir", s(&data)]);
        out.expect_code(1);
        assert!(
            out.stderr.contains("in use") && out.stderr.contains("member/wal"),
            "{out}"
        );
    }
    assert!(
        std::fs::read(&db).unwrap() == original,
        "refused runs must not touch the file"
    );
}

#[test]
fn missing_and_damaged_files_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tool(&["db", "info", "--data-dir", s(&data)]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("no database file at") && out.stderr.contains("member/snap/db"),
        "{out}"
    );
    let out = tool(&["defrag", "--db", s(&tmp.path().join("nope"))]);
    out.expect_code(1);
    assert!(out.stderr.contains("no database file at"), "{out}");
    assert!(!tmp.path().join("nope").exists(), "must not create a store");

    // A compacted file uses every page: damage page 2 of it.
    let db = db_path(&data);
    fragmented(&db);
    tool(&["defrag", "--db", s(&db)]).expect_code(0);
    flip_byte(&db, 2 * PAGE_SIZE as u64 + 100);
    let out = tool(&["db", "info", "--db", s(&db)]);
    out.expect_code(1);
    assert!(out.stderr.contains("corrupt page"), "{out}");
    assert!(out.stdout.contains("FAILED"), "{out}");
    let j = tool(&["db", "info", "--db", s(&db), "-w", "json"]).json();
    assert_eq!(j["verify"]["ok"], false);

    let damaged = std::fs::read(&db).unwrap();
    let out = tool(&["defrag", "--db", s(&db)]);
    out.expect_code(1);
    assert!(out.stderr.contains("corrupt page"), "{out}");
    assert!(
        std::fs::read(&db).unwrap() == damaged,
        "a failed defrag leaves the original"
    );
    assert!(
        !db.with_file_name("db.defrag.tmp").exists(),
        "temp file left behind"
    );
}
