//! `wal verify` and `wal dump` against a data dir written by a real corekv server (started on
//! loopback, fed with etcdctl, killed by PID).

mod common;

use common::{snapshot_files, tool, Server};

#[test]
fn verify_and_dump_a_server_written_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut server = Server::start(&data);
    server.put("foo", "bar");
    server.put("k2", "v2");
    server.put("tab", "a\tb");
    let long = "x".repeat(100);
    server.put("long", &long);
    let out = server.etcdctl(&["del", "k2"]);
    assert_eq!(out.stdout.trim(), "1", "{out}");

    // Read-only: works while the server is up (it holds the WAL lock).
    tool(&["wal", "verify", "--data-dir", data_s]).expect_code(0);
    // defrag is offline only: the running server's WAL lock makes it refuse.
    let out = tool(&["defrag", "--data-dir", data_s]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("in use") && out.stderr.contains("locked"),
        "{out}"
    );

    server.kill();
    let before = snapshot_files(&data);

    let out = tool(&["wal", "verify", "--data-dir", data_s]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("| result ") && out.stdout.contains("OK"),
        "{out}"
    );
    assert!(
        out.stdout.contains("| name ") && out.stdout.contains("n1"),
        "{out}"
    );

    let out = tool(&["wal", "verify", "--data-dir", data_s, "-w", "json"]);
    out.expect_code(0);
    let j = out.json();
    assert_eq!(j["ok"], true, "{out}");
    assert_eq!(j["metadata"]["name"], "n1");
    assert_eq!(j["segments"], 1);
    assert_eq!(j["requests"]["put"], 4, "{out}");
    assert_eq!(j["requests"]["delete_range"], 1, "{out}");
    // A new cluster's log starts after index 1 (the initial membership is in the store).
    assert_eq!(j["entries"]["first_index"], 2);
    assert!(j["entries"]["count"].as_u64().unwrap() >= 6, "{out}");
    assert_eq!(j["conf_state"]["voters"].as_array().unwrap().len(), 1);

    let out = tool(&["wal", "dump", "--data-dir", data_s]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("metadata member_id="), "{out}");
    assert!(lines[0].ends_with("name=\"n1\""), "{out}");
    for want in [
        r#"put key="foo" value="bar" lease=0"#,
        r#"put key="k2" value="v2" lease=0"#,
        r#"put key="tab" value="a\x09b" lease=0"#,
        &format!(
            r#"put key="long" value="{}"...(100 bytes) lease=0"#,
            "x".repeat(64)
        ),
        r#"delete_range key="k2" range_end="""#,
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(want)).count(),
            1,
            "want {want}:\n{out}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("confstate voters=[")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("hardstate term=")),
        "{out}"
    );
    let foo = lines.iter().find(|l| l.contains(r#"key="foo""#)).unwrap();
    assert!(
        foo.starts_with("entry index=") && foo.contains(" term=") && foo.contains(" type=normal "),
        "{foo}"
    );

    // JSON: one object per line, the same content.
    let out = tool(&["wal", "dump", "--data-dir", data_s, "-w", "json"]);
    out.expect_code(0);
    let recs = out.json_lines();
    assert_eq!(recs[0]["record"], "metadata");
    let puts: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["record"] == "entry" && r["request"]["ops"][0]["op"] == "put")
        .collect();
    assert_eq!(puts.len(), 4);
    assert_eq!(puts[0]["request"]["ops"][0]["key"], "foo");
    assert_eq!(puts[0]["request"]["ops"][0]["value"], "bar");
    assert_eq!(puts[3]["request"]["ops"][0]["value_size"], 100);
    assert_eq!(puts[3]["request"]["ops"][0]["value_truncated"], true);

    // --start-index and --limit.
    let foo_index = puts[0]["index"].as_u64().unwrap();
    let start = (foo_index + 1).to_string();
    let out = tool(&[
        "wal",
        "dump",
        "--data-dir",
        data_s,
        "--start-index",
        &start,
        "--limit",
        "1",
    ]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "metadata + one record:\n{out}");
    assert!(
        lines[1].starts_with(&format!("entry index={start} ")),
        "{out}"
    );
    assert!(
        lines[1].ends_with(r#"put key="k2" value="v2" lease=0"#),
        "{out}"
    );

    assert!(
        before == snapshot_files(&data),
        "verify and dump must not modify the data dir"
    );
}
