//! Multi-member clusters of real processes on loopback, started with etcd's flags:
//! bootstrap, serving through followers, leader failover, catch-up from log and snapshot,
//! membership changes with etcd's errors, a minority that refuses linearizable requests,
//! a member of another cluster refused. Where etcd's behaviour is the question, the same
//! scenario runs on a real etcd 3.4 cluster first.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{eventually, Cluster};
use common::*;

/// The `members` of `etcdctl member list -w json`: (name, peer URLs, client URLs, learner).
fn members(c: &Cluster, via: usize) -> Vec<(String, Vec<String>, Vec<String>, bool)> {
    let out = c.ctl(via, &["member", "list", "-w", "json"]);
    assert!(out.ok(), "member list: {out}");
    let v = out.json();
    let mut list: Vec<_> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let strings = |k: &str| -> Vec<String> {
                m[k].as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            (
                m["name"].as_str().unwrap_or("").to_string(),
                strings("peerURLs"),
                strings("clientURLs"),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    list.sort();
    list
}

fn value_of(c: &Cluster, via: usize, key: &str, serializable: bool) -> Option<String> {
    let mut args = vec!["get", key, "--print-value-only", "--command-timeout=2s"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = c.ctl(via, &args);
    out.ok().then(|| out.stdout.trim_end().to_string())
}

/// POST `body` (JSON) to `path` on `addr`: (HTTP status, JSON answer).
fn post_json(addr: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = http_send(addr, "POST", path, body);
    let json = serde_json::from_str(&r.text()).unwrap_or(serde_json::Value::Null);
    (r.status, json)
}

#[test]
fn three_members_bootstrap_and_serve_through_any_member() {
    for kind in reference_then_target() {
        println!("=== {kind} ===");
        let mut c = Cluster::start(kind, 3, &[]);
        // Every member published its attributes: etcdctl shows three started members.
        let want: Vec<_> = c
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    vec![n.peer_url()],
                    vec![n.endpoint()],
                    false,
                )
            })
            .collect();
        let seen = eventually(Duration::from_secs(10), || {
            let m = members(&c, 0);
            (m == want).then_some(m)
        });
        assert_eq!(seen, Some(want.clone()), "{kind}: member list");
        let table = c.ctl(1, &["member", "list"]);
        assert_eq!(table.stdout.matches(", started, ").count(), 3, "{table}");
        let follower = c.follower();
        let out = c.ctl(follower, &["put", "k", "v1"]);
        assert!(out.ok(), "{kind}: put through a follower: {out}");
        for i in 0..3 {
            assert_eq!(
                value_of(&c, i, "k", false).as_deref(),
                Some("v1"),
                "{kind} m{i}"
            );
        }
        let out = etcdctl_at(
            &c.nodes[follower].endpoint(),
            &["txn"],
            Some(b"value(\"k\") = \"v1\"\n\nput k v2\n\nput k nope\n\n"),
        );
        assert!(
            out.ok() && out.stdout.starts_with("SUCCESS"),
            "{kind}: {out}"
        );
        let lease = c.ctl(follower, &["lease", "grant", "60"]);
        assert!(
            lease.ok(),
            "{kind}: lease grant through a follower: {lease}"
        );
        let id = lease.stdout.split_whitespace().nth(1).expect("lease id");
        let ttl = c.ctl(follower, &["lease", "timetolive", id]);
        assert!(
            ttl.ok() && ttl.stdout.contains("granted with TTL(60s)"),
            "{ttl}"
        );
        let keep = c.ctl(follower, &["lease", "keep-alive", "--once", id]);
        assert!(
            keep.ok() && keep.stdout.contains("keepalived with TTL(60)"),
            "{keep}"
        );
        // The HTTP/JSON gateway through a follower: writes go through raft, reads anywhere.
        let other = (follower + 1) % 3;
        let fol = c.nodes[follower].addr();
        let oth = c.nodes[other].addr();
        let put = post_json(
            &fol,
            "/v3/kv/put",
            r#"{"key":"Z3c=","value":"dmlhLWZvbGxvd2Vy"}"#,
        );
        assert_eq!(
            put.0, 200,
            "{kind}: gateway put through a follower: {}",
            put.1
        );
        let got = post_json(&oth, "/v3/kv/range", r#"{"key":"Z3c="}"#);
        assert_eq!(got.0, 200, "{kind}: {}", got.1);
        assert_eq!(
            got.1["kvs"][0]["value"], "dmlhLWZvbGxvd2Vy",
            "{kind}: {}",
            got.1
        );
        let txn = post_json(
            &fol,
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Z3c=","target":"VALUE","value":"dmlhLWZvbGxvd2Vy"}],"success":[{"requestDeleteRange":{"key":"Z3c="}}]}"#,
        );
        assert_eq!(
            (txn.0, txn.1["succeeded"].as_bool()),
            (200, Some(true)),
            "{kind}: {}",
            txn.1
        );
        let grant = post_json(&fol, "/v3/lease/grant", r#"{"TTL":30}"#);
        assert_eq!(grant.0, 200, "{kind}: {}", grant.1);
        assert_eq!(grant.1["TTL"], "30", "{kind}: {}", grant.1);
        let list = post_json(&fol, "/v3/cluster/member/list", "{}");
        assert_eq!(
            list.1["members"].as_array().map(Vec::len),
            Some(3),
            "{kind}: {}",
            list.1
        );
        // Revisions agree everywhere.
        let revs: Vec<i64> = (0..3)
            .map(|i| {
                let v = c.ctl(i, &["get", "k", "-w", "json"]).json();
                v["header"]["revision"].as_i64().expect("revision")
            })
            .collect();
        assert!(
            revs.iter().all(|r| *r == revs[0]),
            "{kind}: revisions {revs:?}"
        );
    }
}

#[test]
fn leader_killed_new_leader_elected_and_old_leader_catches_up() {
    let mut c = Cluster::start(target_kind(), 3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    assert!(c.ctl(leader, &["put", "before", "1"]).ok());
    let survivor = (0..3).find(|i| *i != leader).expect("survivor");
    c.kill(leader);
    let killed_at = Instant::now();
    let wrote = eventually(Duration::from_secs(15), || {
        let out = c.ctl(survivor, &["put", "after", "2", "--command-timeout=2s"]);
        out.ok().then(|| killed_at.elapsed())
    });
    let took = wrote.unwrap_or_else(|| panic!("no write succeeded after the leader died"));
    println!("failover: a write through a follower succeeded {took:?} after SIGKILL of the leader");
    for i in 0..40 {
        assert!(c.ctl(survivor, &["put", &format!("w{i}"), "x"]).ok());
    }
    c.restart(leader);
    let caught_up = eventually(Duration::from_secs(15), || {
        (value_of(&c, leader, "w39", true).as_deref() == Some("x")).then_some(())
    });
    assert!(caught_up.is_some(), "the restarted member did not catch up");
    assert_eq!(value_of(&c, leader, "before", false).as_deref(), Some("1"));
    assert_eq!(value_of(&c, leader, "after", false).as_deref(), Some("2"));
}

#[test]
fn a_member_far_behind_catches_up_from_a_snapshot() {
    // --snapshot-count 100: the leader keeps few entries, so 600 writes later the
    // stopped member cannot be sent the log and gets the store image instead.
    let mut c = Cluster::start(Kind::Corekv, 3, &["--snapshot-count=100"]);
    let follower = c.follower();
    c.kill(follower);
    let live = (0..3).find(|i| *i != follower).expect("live member");
    // etcdctl has no batch mode: use txns of 100 puts each.
    for chunk in 0..6 {
        let mut body = String::from("\n");
        for i in chunk * 100..(chunk + 1) * 100 {
            body.push_str(&format!("put key{i:04} value{i}\n"));
        }
        body.push_str("\n\n");
        let out = etcdctl_at(&c.nodes[live].endpoint(), &["txn"], Some(body.as_bytes()));
        assert!(out.ok(), "{out}");
    }
    for i in 0..200 {
        assert!(c.ctl(live, &["put", "tail", &i.to_string()]).ok());
    }
    c.restart(follower);
    let ok = eventually(Duration::from_secs(20), || {
        (value_of(&c, follower, "tail", true).as_deref() == Some("199")).then_some(())
    });
    assert!(ok.is_some(), "the member did not catch up");
    assert_eq!(
        value_of(&c, follower, "key0599", true).as_deref(),
        Some("value599")
    );
    let metrics = http_get(&c.nodes[follower].addr(), "/metrics").expect("metrics");
    let installs: f64 = metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("corekv_snapshot_installs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("snapshot install metric");
    assert!(installs >= 1.0, "caught up without a snapshot?");
}

#[test]
fn a_fourth_member_added_with_member_add_catches_up() {
    let mut c = Cluster::start(target_kind(), 3, &[]);
    for i in 0..30 {
        assert!(c.ctl(0, &["put", &format!("k{i}"), "v"]).ok());
    }
    let new = c.add_member(false);
    let ok = eventually(Duration::from_secs(20), || {
        (value_of(&c, new, "k29", true).as_deref() == Some("v")).then_some(())
    });
    assert!(ok.is_some(), "the new member did not catch up");
    let started = eventually(Duration::from_secs(10), || {
        let m = members(&c, 0);
        (m.len() == 4 && m.iter().all(|m| !m.0.is_empty())).then_some(m)
    });
    assert!(started.is_some(), "member list: {:?}", members(&c, 0));
    // The new member serves writes and linearizable reads.
    assert!(c.ctl(new, &["put", "from-new", "1"]).ok());
    assert_eq!(value_of(&c, 0, "from-new", false).as_deref(), Some("1"));
}

/// Membership errors and the learner path, with etcd's texts.
#[test]
fn membership_changes_follow_etcd() {
    let mut transcripts = Vec::new();
    for kind in reference_then_target() {
        let mut c = Cluster::start(kind, 3, &[]);
        // etcd refuses membership changes ("unhealthy cluster") until the leader has been
        // connected to every voter for 5 s.
        std::thread::sleep(Duration::from_secs(6));
        let leader = c.wait_leader(Duration::from_secs(20));
        let mut t = Vec::new();
        let ids: Vec<String> = {
            let v = c.ctl(leader, &["member", "list", "-w", "json"]).json();
            let mut byname: Vec<(String, u64)> = v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_string(),
                        m["ID"].as_u64().unwrap(),
                    )
                })
                .collect();
            byname.sort();
            byname.iter().map(|(_, id)| format!("{id:x}")).collect()
        };
        let existing_peer = c.nodes[1].peer_url();
        for args in [
            vec![
                "member",
                "add",
                "dup",
                "--peer-urls",
                existing_peer.as_str(),
            ],
            vec!["member", "promote", ids[1].as_str()],
            vec!["member", "remove", "1234"],
            vec![
                "member",
                "update",
                "1234",
                "--peer-urls",
                "http://127.0.0.1:1",
            ],
            vec!["member", "add", "bad", "--peer-urls", "not-a-url"],
        ] {
            let out = c.ctl(leader, &args);
            t.push(format!(
                "{} -> exit {} {}",
                args.join(" "),
                out.code,
                out.stderr.trim()
            ));
        }
        // A learner joins, is refused a second sibling, then is promoted.
        let learner = c.add_member(true);
        let spare = format!("http://127.0.0.1:{}", free_ports(1)[0]);
        let out = c.ctl(
            leader,
            &["member", "add", "l2", "--learner", "--peer-urls", &spare],
        );
        t.push(format!(
            "second learner -> exit {} {}",
            out.code,
            out.stderr.trim()
        ));
        let caught = eventually(Duration::from_secs(20), || {
            let m = members(&c, leader);
            m.iter()
                .any(|m| m.0 == c.nodes[learner].name && m.3)
                .then_some(())
        });
        assert!(caught.is_some(), "{kind}: learner not listed");
        let learner_id = {
            let v = c.ctl(leader, &["member", "list", "-w", "json"]).json();
            let id = v["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["isLearner"].as_bool() == Some(true))
                .map(|m| m["ID"].as_u64().unwrap())
                .expect("learner id");
            format!("{id:x}")
        };
        let promoted = eventually(Duration::from_secs(20), || {
            let leader = c.wait_leader(Duration::from_secs(10));
            let out = c.ctl(leader, &["member", "promote", &learner_id]);
            out.ok().then_some(())
        });
        assert!(
            promoted.is_some(),
            "{kind}: promote never succeeded\n{}",
            c.logs()
        );
        t.push("promote learner -> ok".into());
        // Remove the promoted member: it stops (its process exits).
        let leader = c.wait_leader(Duration::from_secs(20));
        let out = c.ctl(leader, &["member", "remove", &learner_id]);
        assert!(out.ok(), "{kind}: remove: {out}");
        let gone = eventually(Duration::from_secs(20), || {
            (!c.nodes[learner].is_running()).then_some(())
        });
        assert!(gone.is_some(), "{kind}: the removed member still runs");
        let after = members(&c, leader);
        assert_eq!(after.len(), 3, "{kind}: {after:?}");
        transcripts.push((kind, t));
    }
    if transcripts.len() == 2 {
        let mask = |s: &str| {
            // Request ids / client instance ids in etcdctl's log lines differ per run.
            s.lines()
                .filter(|l| !l.contains("retry_interceptor"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let a: Vec<String> = transcripts[0].1.iter().map(|s| mask(s)).collect();
        let b: Vec<String> = transcripts[1].1.iter().map(|s| mask(s)).collect();
        assert_eq!(
            a, b,
            "membership answers differ (left: etcd, right: corekv)"
        );
    }
}

/// A member cut off from the quorum answers linearizable requests with an error, never
/// with stale data; serializable reads still answer locally.
#[test]
fn a_minority_refuses_linearizable_requests() {
    for kind in reference_then_target() {
        let mut c = Cluster::start(kind, 3, &[]);
        assert!(c.ctl(0, &["put", "x", "1"]).ok());
        let lone = 2;
        eventually(Duration::from_secs(10), || {
            (value_of(&c, lone, "x", true).as_deref() == Some("1")).then_some(())
        })
        .expect("replicated");
        c.kill(0);
        c.kill(1);
        let get = c.ctl(lone, &["get", "x", "--command-timeout=3s"]);
        assert!(
            !get.ok(),
            "{kind}: a minority served a linearizable read: {get}"
        );
        let put = c.ctl(lone, &["put", "x", "2", "--command-timeout=3s"]);
        assert!(!put.ok(), "{kind}: a minority accepted a write: {put}");
        assert_eq!(
            value_of(&c, lone, "x", true).as_deref(),
            Some("1"),
            "{kind}"
        );
    }
}

/// A member started with another cluster token (so another cluster ID) is refused by the
/// cluster's members and never joins it.
#[test]
fn a_member_of_another_cluster_is_refused() {
    let mut c = Cluster::start(Kind::Corekv, 3, &[]);
    let ports = free_ports(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let me = format!("http://127.0.0.1:{}", ports[1]);
    let cluster = format!("intruder={me},m0={}", c.nodes[0].peer_url());
    let log = dir.path().join("intruder.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(corekv_bin())
        .args([
            "--name=intruder",
            &format!("--data-dir={}", dir.path().join("data").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{}", ports[0]),
            &format!("--advertise-client-urls=http://127.0.0.1:{}", ports[0]),
            &format!("--listen-peer-urls={me}"),
            &format!("--initial-advertise-peer-urls={me}"),
            &format!("--initial-cluster={cluster}"),
            "--initial-cluster-token=another-cluster",
            "--cores=1",
        ])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn intruder");
    let refused = eventually(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
        text.contains("cluster ID mismatch").then_some(())
    });
    // SAFETY: the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        refused.is_some(),
        "m0 did not refuse the intruder:\n{}",
        c.logs()
    );
    // The intruder dials m0 itself if m0 does not dial it first (lower id dials).
    let told = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("cluster ID mismatch").then_some(())
    });
    let intruder_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        told.is_some(),
        "the intruder was not told why:\n{intruder_log}"
    );
    assert_eq!(members(&c, 0).len(), 3);
    let leader = c.wait_leader(Duration::from_secs(10));
    assert!(c.ctl(leader, &["put", "still", "fine"]).ok());
}

/// Maintenance.MoveLeader hands leadership to the member asked for.
#[test]
fn move_leader_transfers_leadership() {
    for kind in reference_then_target() {
        let mut c = Cluster::start(kind, 3, &[]);
        let leader = c.wait_leader(Duration::from_secs(20));
        let target = (leader + 1) % 3;
        let id = c
            .leader_seen_by(target)
            .map(|(_, me)| me)
            .expect("target id");
        let out = etcdctl_at(
            &c.nodes[leader].endpoint(),
            &["move-leader", &format!("{id:x}")],
            None,
        );
        assert!(out.ok(), "{kind}: move-leader: {out}");
        let now = c.wait_leader(Duration::from_secs(10));
        assert_eq!(now, target, "{kind}: leadership did not move");
        // Asking a follower is refused as etcd refuses it.
        let follower = (target + 1) % 3;
        let out = c.ctl(follower, &["move-leader", &format!("{id:x}")]);
        assert!(!out.ok(), "{kind}: a follower moved the leader: {out}");
    }
}

/// Peer TLS (https peer URLs with --peer-auto-tls): the members form a cluster over TLS,
/// a member added later joins over TLS, and a plaintext peer gets nothing.
#[test]
fn peers_talk_over_tls() {
    for kind in reference_then_target() {
        let mut c = Cluster::start_with_scheme(kind, 3, &["--peer-auto-tls"], "https");
        let follower = c.follower();
        assert!(c.ctl(follower, &["put", "tls", "on"]).ok(), "{kind}");
        for i in 0..3 {
            assert_eq!(
                value_of(&c, i, "tls", false).as_deref(),
                Some("on"),
                "{kind} m{i}"
            );
        }
        let table = c.ctl(0, &["member", "list"]);
        assert_eq!(
            table.stdout.matches("https://127.0.0.1:").count(),
            3,
            "{table}"
        );
        if kind == Kind::Corekv {
            let new = c.add_member(false);
            let ok = eventually(Duration::from_secs(20), || {
                (value_of(&c, new, "tls", true).as_deref() == Some("on")).then_some(())
            });
            assert!(ok.is_some(), "the TLS member added later did not catch up");
        }
        // A plaintext Hello to a TLS peer port gets no answer frame.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", c.nodes[0].peer_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        use std::io::{Read, Write};
        let hello = [31u32.to_le_bytes().to_vec(), vec![1], b"CKVP".to_vec()].concat();
        let _ = s.write_all(&hello);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(
            n == 0 || buf[0] == 0x15 || buf[0] == 0x16,
            "{kind}: a plaintext peer got a plaintext answer: {:?}",
            &buf[..n]
        );
    }
}
