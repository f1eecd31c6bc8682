//! corekv-bench's gRPC clients against a real etcd and the server under test: the
//! requests it counts as done really happened (the keys are there, read back with
//! etcdctl), and a request the server refuses is counted as an error with etcd's message,
//! through both the lean `h2` client and `etcd-client`. Counts only: no timing is judged.

mod common;

use std::process::Command;

use common::*;

/// Upper bound for one corekv-bench run (its requests are few and bounded by --total).
const BENCH_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn bench_bin() -> std::path::PathBuf {
    let p = workspace_root()
        .join("target")
        .join("debug")
        .join("corekv-bench");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

fn bench(server: &Server, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(bench_bin());
    cmd.arg("--endpoints")
        .arg(server.endpoint())
        .args(["--timeout", "10", "--json"])
        .args(args);
    run_with_timeout(cmd, None, BENCH_RUN_TIMEOUT)
}

fn etcdctl_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = etcdctl_at(&server.endpoint(), args, None);
    out.expect_ok(&format!("etcdctl {args:?}"));
    out.json()
}

/// (number of keys, sum of their versions, store revision) of the keys under "0".
fn keys_versions_revision(server: &Server) -> (usize, i64, i64) {
    let j = etcdctl_json(server, &["get", "0", "--prefix", "-w", "json"]);
    let kvs = j["kvs"].as_array().cloned().unwrap_or_default();
    let versions = kvs.iter().map(|kv| kv["version"].as_i64().unwrap()).sum();
    (
        kvs.len(),
        versions,
        j["header"]["revision"].as_i64().unwrap(),
    )
}

#[track_caller]
fn expect_done(out: &CmdOutput, requests: u64, what: &str) {
    out.expect_ok(what);
    let j = out.json();
    assert_eq!(j["total_requests"], requests, "{what}:\n{out}");
    assert_eq!(j["errors"], 0, "{what}:\n{out}");
}

#[test]
fn bench_requests_land_and_refusals_are_counted() {
    for kind in reference_then_target() {
        let server = Server::start(kind);
        for client in ["h2", "etcd-client"] {
            let what = |op: &str| format!("{kind}: corekv-bench {op} --grpc-client {client}");
            let common = ["--grpc-client", client, "--warmup", "0"];
            etcdctl_json(&server, &["del", "", "--from-key", "-w", "json"]);
            let (_, _, rev0) = keys_versions_revision(&server);

            // 120 puts of keys 0..49 in order, over 4 connections and 8 clients: keys
            // 0..19 are put three times, 20..49 twice, so the versions add up to 120.
            let put = bench(
                &server,
                &[
                    &common[..],
                    &["--conns", "4", "--clients", "8", "put", "--total", "120"],
                    &[
                        "--key-space-size",
                        "50",
                        "--sequential-keys",
                        "--val-size",
                        "64",
                    ],
                ]
                .concat(),
            );
            expect_done(&put, 120, &what("put"));
            assert_eq!(
                keys_versions_revision(&server),
                (50, 120, rev0 + 120),
                "{}",
                what("put")
            );
            let value = etcdctl_json(&server, &["get", "00000007", "-w", "json"]);
            let value = value["kvs"][0]["value"].as_str().unwrap().to_string();
            assert_eq!(value.len(), 88, "64 bytes in base64: {value}");

            // 20 transactions of 3 puts each: keys 0..59, one revision per transaction.
            let txn = bench(
                &server,
                &[
                    &common[..],
                    &["--conns", "2", "--clients", "4", "txn-put", "--total", "20"],
                    &[
                        "--txn-ops",
                        "3",
                        "--key-space-size",
                        "1000",
                        "--sequential-keys",
                    ],
                ]
                .concat(),
            );
            expect_done(&txn, 20, &what("txn-put"));
            assert_eq!(
                keys_versions_revision(&server),
                (60, 180, rev0 + 140),
                "{}",
                what("txn-put")
            );

            for consistency in ["l", "s"] {
                let range = bench(
                    &server,
                    &[
                        &common[..],
                        &["--conns", "2", "--clients", "4", "range", "--total", "40"],
                        &["--key", "00000005", "--consistency", consistency],
                    ]
                    .concat(),
                );
                expect_done(
                    &range,
                    40,
                    &what(&format!("range --consistency {consistency}")),
                );
            }

            // A value over the server's request limit (1.5 MiB by default): refused with
            // etcd's message, counted as errors, and nothing is written.
            let refused = bench(
                &server,
                &[
                    &common[..],
                    &["put", "--total", "2", "--val-size", "1800000"],
                    &["--key-space-size", "100"],
                ]
                .concat(),
            );
            assert_eq!(refused.code, 1, "{}: {refused}", what("put of 1.8 MB"));
            let j = refused.json();
            assert_eq!(j["errors"], 2, "{refused}");
            let first = j["first_error"].as_str().unwrap_or_default();
            assert!(
                first.contains("etcdserver: request is too large"),
                "{}: first error {first:?}",
                what("put of 1.8 MB")
            );
            assert_eq!(keys_versions_revision(&server), (60, 180, rev0 + 140));
        }
        drop(server);
    }
}

/// `corekv-bench free-ports N` (for scripts): N distinct ports, each with its next port free
/// and named by no other, since corekv takes the client port + 1 for its binary protocol.
#[test]
fn free_ports_leaves_room_for_the_binary_port() {
    let mut cmd = Command::new(bench_bin());
    cmd.args(["free-ports", "8"]);
    let out = run_with_timeout(cmd, None, BENCH_RUN_TIMEOUT);
    out.expect_ok("corekv-bench free-ports 8");
    let ports: Vec<u16> = out
        .stdout
        .split_whitespace()
        .map(|p| p.parse().expect("a port number"))
        .collect();
    assert_eq!(ports.len(), 8, "{out}");
    for (i, &p) in ports.iter().enumerate() {
        for &q in &ports[i + 1..] {
            assert!(p.abs_diff(q) > 1, "{p} and {q} overlap:\n{out}");
        }
    }
}
