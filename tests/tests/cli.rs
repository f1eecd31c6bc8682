//! Command line and operational surface: flag errors, single-member cluster
//! configuration, and the etcdctl maintenance/cluster commands.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Runs the server binary of `kind` with the standard etcd flags (fresh data
/// dir, free ports) followed by `extra`, inside a temp cwd; bounded to 15 s.
fn run_server_with(kind: Kind, extra: &[&str], initial_cluster: Option<String>) -> CmdOutput {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let cluster = initial_cluster
        .map(|c| {
            c.replace("{peer}", &peer)
                .replace("{peer2}", &format!("http://127.0.0.1:{}", ports[2]))
        })
        .unwrap_or_else(|| format!("n1={peer}"));
    let mut cmd = Command::new(server_bin(kind));
    for (k, _) in std::env::vars_os() {
        let k2 = k.to_string_lossy();
        if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
            cmd.env_remove(&k);
        }
    }
    cmd.current_dir(dir.path()).args([
        "--name",
        "n1",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &cluster,
    ]);
    cmd.args(extra);
    run_with_timeout(cmd, None, Duration::from_secs(15))
}

#[test]
fn unknown_flag_exits_2_and_names_the_flag() {
    for kind in reference_then_target() {
        let o = run_server_with(kind, &["--no-such-flag-xyz"], None);
        assert!(
            !o.timed_out,
            "{kind}: started despite an unknown flag:\n{o}"
        );
        assert_eq!(o.code, 2, "{kind}: exit code for an unknown flag:\n{o}");
        assert!(
            o.stderr.contains("no-such-flag-xyz"),
            "{kind}: stderr must name the unknown flag:\n{o}"
        );
        // Also a flag given without the standard ones.
        let mut cmd = Command::new(server_bin(kind));
        let dir = tempfile::tempdir().unwrap();
        cmd.current_dir(dir.path()).arg("--bogus");
        let o = run_with_timeout(cmd, None, Duration::from_secs(15));
        assert_eq!(o.code, 2, "{kind}: exit code for `--bogus`:\n{o}");
        assert!(
            o.stderr.contains("bogus"),
            "{kind}: stderr must name `bogus`:\n{o}"
        );
    }
}

#[test]
fn bad_flag_value_exits_2() {
    for kind in reference_then_target() {
        let o = run_server_with(kind, &["--max-txn-ops=abc"], None);
        assert!(
            !o.timed_out,
            "{kind}: started despite --max-txn-ops=abc:\n{o}"
        );
        assert_eq!(o.code, 2, "{kind}: exit code for --max-txn-ops=abc:\n{o}");
        assert!(
            o.stderr.contains("max-txn-ops") && o.stderr.contains("abc"),
            "{kind}: stderr must name the flag and the bad value:\n{o}"
        );
    }
}

#[test]
fn endpoint_status_member_list_and_health() {
    for kind in reference_then_target() {
        println!("=== {kind} ===");
        let s = Server::start(kind);
        s.etcdctl(&["put", "a", "1"]).expect_ok("put");
        s.etcdctl(&["put", "b", "2"]).expect_ok("put");

        // endpoint status -w json
        let o = s.etcdctl(&["endpoint", "status", "-w", "json"]);
        o.expect_ok("endpoint status");
        let v = o.json();
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: status is not an array:\n{o}"));
        assert_eq!(arr.len(), 1, "{kind}: one endpoint:\n{o}");
        let e = &arr[0];
        assert_eq!(e["Endpoint"], Value::String(s.endpoint()), "{kind}:\n{o}");
        let st = &e["Status"];
        let hdr = &st["header"];
        let member_id = hdr["member_id"].as_u64().unwrap_or(0);
        assert_ne!(member_id, 0, "{kind}: header.member_id:\n{o}");
        assert_ne!(
            hdr["cluster_id"].as_u64().unwrap_or(0),
            0,
            "{kind}: header.cluster_id:\n{o}"
        );
        assert_eq!(
            hdr["revision"].as_i64(),
            Some(3),
            "{kind}: header.revision:\n{o}"
        );
        assert_eq!(
            st["leader"].as_u64(),
            Some(member_id),
            "{kind}: leader is itself:\n{o}"
        );
        assert!(
            st["version"].as_str().map_or(false, |v| !v.is_empty()),
            "{kind}: version:\n{o}"
        );
        assert!(
            st["raftTerm"].as_u64().unwrap_or(0) > 0,
            "{kind}: raftTerm:\n{o}"
        );
        assert!(
            st["raftIndex"].as_u64().unwrap_or(0) > 0,
            "{kind}: raftIndex:\n{o}"
        );
        assert!(
            st["dbSize"].as_i64().unwrap_or(0) > 0,
            "{kind}: dbSize:\n{o}"
        );

        // member list -w json
        let o = s.etcdctl(&["member", "list", "-w", "json"]);
        o.expect_ok("member list");
        let v = o.json();
        assert_eq!(
            v["header"]["member_id"].as_u64(),
            Some(member_id),
            "{kind}:\n{o}"
        );
        assert_eq!(v["header"]["cluster_id"], hdr["cluster_id"], "{kind}:\n{o}");
        let members = v["members"].as_array().expect("members array");
        assert_eq!(members.len(), 1, "{kind}: one member:\n{o}");
        let m = &members[0];
        assert_eq!(m["ID"].as_u64(), Some(member_id), "{kind}:\n{o}");
        assert_eq!(m["name"], "n1", "{kind}:\n{o}");
        assert_eq!(
            m["peerURLs"],
            serde_json::json!([s.peer_url()]),
            "{kind}:\n{o}"
        );
        assert_eq!(
            m["clientURLs"],
            serde_json::json!([s.endpoint()]),
            "{kind}:\n{o}"
        );
        assert!(
            m.get("isLearner").map_or(true, |l| l == false),
            "{kind}:\n{o}"
        );

        // member list (simple): "<hex id>, started, n1, <peer>, <client>, false"
        let o = s.etcdctl(&["member", "list"]);
        o.expect_ok("member list");
        assert_eq!(
            o.stdout,
            format!(
                "{member_id:x}, started, n1, {}, {}, false\n",
                s.peer_url(),
                s.endpoint()
            ),
            "{kind}:\n{o}"
        );

        // endpoint health (etcdctl 3.4 prints the result on stderr)
        let o = s.etcdctl(&["endpoint", "health"]);
        assert_eq!(o.code, 0, "{kind}: endpoint health:\n{o}");
        let all = format!("{}{}", o.stdout, o.stderr);
        assert!(
            all.contains(&format!(
                "{} is healthy: successfully committed proposal",
                s.endpoint()
            )),
            "{kind}: endpoint health:\n{o}"
        );
        let o = s.etcdctl(&["endpoint", "health", "-w", "json"]);
        assert_eq!(o.code, 0, "{kind}: endpoint health -w json:\n{o}");
        let v = o.json();
        assert_eq!(
            v[0]["endpoint"],
            Value::String(s.endpoint()),
            "{kind}:\n{o}"
        );
        assert_eq!(v[0]["health"], Value::Bool(true), "{kind}:\n{o}");
    }
}

/// `--max-txn-ops` set through the environment (corekv: COREKV_MAX_TXN_OPS;
/// proven on etcd with its ETCD_MAX_TXN_OPS) and through the flag.
#[test]
fn max_txn_ops_from_env_and_flag() {
    let ok_txn = "\nput a 1\nput b 2\n\n\n";
    let too_many = "\nput a 1\nput b 2\nput c 3\n\n\n";
    for kind in reference_then_target() {
        for (how, opts) in [
            (
                "env",
                ServerOpts {
                    env: vec![(kind.max_txn_ops_env().to_string(), "2".to_string())],
                    ..Default::default()
                },
            ),
            (
                "flag",
                ServerOpts {
                    extra_args: vec!["--max-txn-ops=2".to_string()],
                    ..Default::default()
                },
            ),
        ] {
            let s = Server::start_with(kind, opts);
            let o = s.etcdctl_stdin(&["txn"], ok_txn.as_bytes());
            assert_eq!(o.code, 0, "{kind} ({how}): 2-op txn must pass:\n{o}");
            let o = s.etcdctl_stdin(&["txn"], too_many.as_bytes());
            assert_eq!(o.code, 1, "{kind} ({how}): 3-op txn must fail:\n{o}");
            assert!(
                o.stderr
                    .ends_with("Error: etcdserver: too many operations in txn request\n"),
                "{kind} ({how}):\n{o}"
            );
            assert!(
                o.stderr.contains("code = InvalidArgument"),
                "{kind} ({how}): gRPC code:\n{o}"
            );
        }
    }
}
