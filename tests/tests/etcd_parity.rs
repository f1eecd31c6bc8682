//! Scripted etcdctl scenarios run against a real etcd and the server under
//! test side by side; exit codes, stdout and stderr must match exactly after
//! normalising what legitimately differs (header cluster_id/member_id/raft_term
//! values, the client's log timestamps/instance ids, port numbers).
//!
//! With COREKV_TEST_TARGET=etcd this compares two etcd instances, which
//! validates the scenarios and the normalisation themselves.
//!
//! Note: etcdctl 3.4 has no `--count-only` (it arrived in 3.5); count_only is
//! covered through etcd-client in kv_client.rs.

mod common;

use common::*;

/// One etcdctl invocation: a shell-like command line and optional stdin.
struct Step {
    cmd: String,
    stdin: Option<Vec<u8>>,
    /// Label shown instead of the stdin bytes (for big inputs).
    stdin_label: Option<String>,
}

fn c(cmd: &str) -> Step {
    Step {
        cmd: cmd.to_string(),
        stdin: None,
        stdin_label: None,
    }
}

fn with_stdin(cmd: &str, stdin: &str) -> Step {
    Step {
        cmd: cmd.to_string(),
        stdin: Some(stdin.as_bytes().to_vec()),
        stdin_label: None,
    }
}

/// `etcdctl txn` (optionally with extra flags such as `-w json`) reading
/// compares, success ops and failure ops from stdin (each block ends with an
/// empty line).
fn txn(flags: &str, compares: &[&str], success: &[&str], failure: &[&str]) -> Step {
    let mut s = String::new();
    for block in [compares, success, failure] {
        for l in block {
            s.push_str(l);
            s.push('\n');
        }
        s.push('\n');
    }
    let cmd = if flags.is_empty() {
        "txn".to_string()
    } else {
        format!("txn {flags}")
    };
    with_stdin(&cmd, &s)
}

fn big_stdin(cmd: &str, byte: u8, len: usize) -> Step {
    Step {
        cmd: cmd.to_string(),
        stdin: Some(vec![byte; len]),
        stdin_label: Some(format!("<{len} bytes of {:?}>", byte as char)),
    }
}

/// Runs `steps` against a fresh etcd and a fresh server under test and
/// compares every step; reports all differing steps at once.
/// Where the server under test is asked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    /// A single-member server.
    Single,
    /// A follower of a 3-member cluster (writes forwarded, reads by ReadIndex).
    Follower,
}

/// The server under test: one process, or a cluster asked through a follower.
enum Subject {
    Single(Server),
    Follower(common::cluster::Cluster, usize),
}

impl Subject {
    fn start(via: Via) -> Subject {
        match via {
            Via::Single => Subject::Single(Server::start(target_kind())),
            Via::Follower => {
                let mut c = common::cluster::Cluster::start(target_kind(), 3, &[]);
                let f = c.follower();
                Subject::Follower(c, f)
            }
        }
    }
    fn endpoint(&self) -> String {
        match self {
            Subject::Single(s) => s.endpoint(),
            Subject::Follower(c, f) => c.nodes[*f].endpoint(),
        }
    }
    fn ports(&self) -> [(u16, &'static str); 2] {
        match self {
            Subject::Single(s) => [(s.client_port, "client-port"), (s.peer_port, "peer-port")],
            Subject::Follower(c, f) => [
                (c.nodes[*f].client_port, "client-port"),
                (c.nodes[*f].peer_port, "peer-port"),
            ],
        }
    }
    fn is_running(&mut self) -> bool {
        match self {
            Subject::Single(s) => s.is_running(),
            Subject::Follower(c, f) => c.nodes[*f].is_running(),
        }
    }
    fn kind(&self) -> String {
        match self {
            Subject::Single(s) => s.kind.to_string(),
            Subject::Follower(c, _) => format!("{} (through a follower)", c.kind),
        }
    }
}

fn run_parity(name: &str, steps: &[Step], via: Via) {
    let mut reference = Server::start(Kind::Etcd);
    let mut subject = Subject::start(via);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    let rports = [
        (reference.client_port, "client-port"),
        (reference.peer_port, "peer-port"),
    ];
    let sports = subject.ports();
    let mut transcript = String::new();
    let mut diffs = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let args = shell_words(&step.cmd);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = etcdctl_at(&reference.endpoint(), &argv, step.stdin.as_deref());
        let t = etcdctl_at(&subject.endpoint(), &argv, step.stdin.as_deref());
        assert!(
            !r.timed_out,
            "step {i} `{}` timed out against etcd:\n{r}",
            step.cmd
        );
        let nr = normalize_output(&r, &rports);
        let nt = normalize_output(&t, &sports);
        let stdin_desc = match (&step.stdin_label, &step.stdin) {
            (Some(l), _) => format!("  stdin: {l}\n"),
            (None, Some(b)) => format!("  stdin: {:?}\n", String::from_utf8_lossy(b)),
            (None, None) => String::new(),
        };
        transcript.push_str(&format!("[{i}] $ etcdctl {}\n{stdin_desc}{nr}\n", step.cmd));
        if nr != nt {
            diffs.push(format!(
                "[{name} step {i}] $ etcdctl {}\n{stdin_desc}--- etcd (expected):\n{nr}\n--- {} (actual):\n{nt}\n",
                step.cmd,
                subject.kind()
            ));
        }
        assert!(
            reference.is_running(),
            "etcd exited during step {i} `{}`",
            step.cmd
        );
        if !subject.is_running() || std::time::Instant::now() > deadline {
            let why = if subject.is_running() {
                "scenario exceeded its 150 s budget"
            } else {
                "the server under test exited"
            };
            panic!(
                "{name}: {why} at step {i} `{}`; {} differing step(s) so far:\n\n{}",
                step.cmd,
                diffs.len(),
                diffs.join("\n")
            );
        }
    }
    println!("===== {name}: etcd transcript =====\n{transcript}");
    if !diffs.is_empty() {
        panic!(
            "{name}: {} of {} steps differ between etcd and {} \
             (later differences may follow from the first one: revisions diverge):\n\n{}",
            diffs.len(),
            steps.len(),
            subject.kind(),
            diffs.join("\n")
        );
    }
}

fn parity_put_get_and_range_options_on(via: Via) {
    let steps = vec![
        c("get a -w json"),
        c("put a 1"),
        c("put b 2"),
        c("put c 3"),
        c("put a 11"),
        c("get a"),
        c("get a -w json"),
        c("get nosuch"),
        c("get nosuch -w json"),
        c("get a c"),
        c("get a c -w json"),
        c("get a --prefix -w json"),
        c(r#"get "" --prefix --keys-only"#),
        c("get b --from-key"),
        c("get b --from-key -w json"),
        c(r#"get "" --from-key -w json"#),
        c("get a --from-key --limit=2 -w json"),
        c("get a --from-key --limit=1"),
        c("get a --from-key --limit=3 -w json"),
        c("get a --from-key --limit=10 -w json"),
        c("get a z --limit=2 -w json"),
        c("get a --from-key --keys-only"),
        c("get a --from-key --keys-only -w json"),
        c("get a --from-key --print-value-only"),
        c("get a --print-value-only -w json"),
        c("get a --consistency=s -w json"),
        c("get a --from-key --consistency=s"),
        c("get a --consistency=l"),
        // Keys and values that are not plain ASCII words.
        c(r#"put "k with space" "v w""#),
        c("put ключ значение"),
        c(r#"put e """#),
        c("get e -w json"),
        c("get e"),
        with_stdin("put multiline", "line1\nline2\n"),
        c("get multiline -w json"),
        c("get multiline"),
        c(r#"get "" --from-key --keys-only"#),
        c(r#"get "" --from-key -w json"#),
        // Past revisions.
        c("get a --rev=1 -w json"),
        c("get a --rev=2 -w json"),
        c("get a --rev=2"),
        c("get a --rev=5 -w json"),
        c("get a --rev=0 -w json"),
        c("get a --rev=-1 -w json"),
        c(r#"get "" --from-key --rev=3 -w json"#),
        c(r#"get "" --from-key --rev=4 --keys-only"#),
        // put --prev-kv
        c("put a 111 --prev-kv"),
        c("put a 1111 --prev-kv -w json"),
        c("put new1 x --prev-kv -w json"),
        c("put new2 x --prev-kv"),
        c("put new2 y -w json"),
        // --ignore-value / --ignore-lease
        c("put missing --ignore-value"),
        c("put missing --ignore-value -w json"),
        c("put a --ignore-value -w json"),
        c("get a -w json"),
        c("put a --ignore-value --prev-kv -w json"),
        c("put missing v --ignore-lease"),
        c("put a v2 --ignore-lease -w json"),
        c("get a -w json"),
        // Unknown lease.
        c("put k v --lease=1234abcd"),
        // Empty keys.
        c(r#"put "" x"#),
        c(r#"get """#),
        c(r#"del """#),
        // Nothing above that failed may have consumed a revision.
        c("get a -w json"),
        c(r#"get "" --from-key --keys-only -w json"#),
    ];
    run_parity("put_get_and_range_options", &steps, via);
}

fn parity_sorting_on(via: Via) {
    // Data chosen so that no sort target has ties (etcd's sort is not stable).
    // versions: s/c=1 s/a=2 s/d=3 s/b=4; create: c<a<d<b; mod: c<a<d<b;
    // values: b=0 c=3 a=5 d=7.
    let mut steps = vec![
        c("put s/c 3"),
        c("put s/a 4"),
        c("put s/d 1"),
        c("put s/b 2"),
        c("put s/a 5"),
        c("put s/d 6"),
        c("put s/d 7"),
        c("put s/b 8"),
        c("put s/b 9"),
        c("put s/b 0"),
        c("put t 1"),
    ];
    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        steps.push(c(&format!("get s/ --prefix --sort-by={target}")));
        steps.push(c(&format!(
            "get s/ --prefix --sort-by={target} --order=ASCEND --keys-only"
        )));
        steps.push(c(&format!(
            "get s/ --prefix --sort-by={target} --order=DESCEND -w json"
        )));
        // Limit applies after sorting; `more` and `count` refer to the range.
        steps.push(c(&format!(
            "get s/ --prefix --sort-by={target} --order=DESCEND --limit=2 -w json"
        )));
        steps.push(c(&format!(
            "get s/ --prefix --sort-by={target} --limit=1 -w json"
        )));
    }
    steps.extend([
        c("get s/ --prefix --order=DESCEND"),
        c("get s/ --prefix --order=ASCEND --limit=3 -w json"),
        c("get s/ --prefix --order=DESCEND --limit=4 --keys-only -w json"),
        c(r#"get "" --from-key --sort-by=MODIFY --order=DESCEND --limit=2 -w json"#),
        c("get s/ --prefix --sort-by=VALUE --order=DESCEND --rev=8 -w json"),
        c("get s/ --prefix --sort-by=VERSION --order=DESCEND --print-value-only"),
    ]);
    run_parity("sorting", &steps, via);
}

fn parity_deletes_on(via: Via) {
    let steps = vec![
        c("put p/1 a"),
        c("put p/2 b"),
        c("put p/3 c"),
        c("put p/4 d"),
        c("put q 1"),
        c("put r 1"),
        // No-op deletes do not consume a revision.
        c("del nosuch"),
        c("del nosuch -w json"),
        c("del nosuch --prev-kv -w json"),
        c("del nosuch zzz -w json"),
        c("get r -w json"),
        c("del p/1"),
        c("del p/1 -w json"),
        c("get p/1 --rev=2 -w json"),
        c("del p/ --prefix --prev-kv"),
        c("put p/x 1"),
        c("put p/y 2"),
        c("del p/ --prefix --prev-kv -w json"),
        c("get p/ --prefix -w json"),
        c("put q 2"),
        c("del q --from-key -w json"),
        c(r#"get "" --from-key -w json"#),
        // Re-create after delete: new create_revision, version restarts at 1.
        c("put q 9"),
        c("get q -w json"),
        c("put q 10"),
        c("get q -w json"),
        c("get q --rev=8 -w json"),
        c("get q --rev=13 -w json"),
        c("put m1 1"),
        c("put m2 1"),
        c("put m3 1"),
        c("del m1 m3 -w json"),
        c("get m --prefix -w json"),
        c("del m --prefix --prev-kv"),
        c("del m --prefix"),
        c(r#"del "" --prefix --prev-kv -w json"#),
        c(r#"get "" --from-key -w json"#),
        c(r#"del "" --from-key -w json"#),
        c("put z 1 -w json"),
        c("get z --rev=3 -w json"),
    ];
    run_parity("deletes", &steps, via);
}

fn parity_txn_on(via: Via) {
    let mut steps = vec![
        c("put k v"),
        c("put n 10"),
        txn(
            "",
            &[r#"value("k") = "v""#],
            &["put k2 x", "get k"],
            &["put k3 y"],
        ),
        txn(
            "-w json",
            &[r#"value("k") = "v""#],
            &["put k2 x2", "get k"],
            &["put k3 y"],
        ),
        txn(
            "",
            &[r#"value("k") = "nope""#],
            &["put k2 x"],
            &["put k3 y", "get k3"],
        ),
        txn(
            "-w json",
            &[r#"value("k") != "v""#],
            &["put k2 x"],
            &["put k3 y2 --prev-kv"],
        ),
        // Value comparison is on bytes: "10" < "9".
        txn("-w json", &[r#"value("n") < "9""#], &["get n"], &["get k"]),
        txn("-w json", &[r#"value("n") > "9""#], &["get n"], &["get k"]),
        // version / create / mod comparisons.
        txn("-w json", &[r#"version("k") = "1""#], &["get k"], &[]),
        txn("-w json", &[r#"version("k2") = "2""#], &["get k2"], &[]),
        txn(
            "-w json",
            &[r#"version("k2") > "1""#, r#"version("k2") < "3""#],
            &["get k2"],
            &[],
        ),
        txn("-w json", &[r#"create("k") = "2""#], &["get k"], &[]),
        txn(
            "-w json",
            &[r#"create("k") != "2""#],
            &["get k"],
            &["get n"],
        ),
        txn("-w json", &[r#"mod("k2") > "4""#], &["get k2"], &[]),
        txn("-w json", &[r#"mod("k2") < "4""#], &["get k2"], &["get k"]),
        // Missing keys compare as version/create/mod 0; a value compare on a
        // missing key is always false, even with !=.
        txn(
            "-w json",
            &[r#"version("missing") = "0""#],
            &["put made 1"],
            &[],
        ),
        txn(
            "-w json",
            &[r#"create("missing") = "0""#, r#"mod("missing") = "0""#],
            &["get missing"],
            &[],
        ),
        txn(
            "-w json",
            &[r#"value("missing") != "x""#],
            &["get k"],
            &["get n"],
        ),
        txn(
            "-w json",
            &[r#"value("missing") = """#],
            &["get k"],
            &["get n"],
        ),
        txn(
            "-w json",
            &[r#"version("made") = "0""#],
            &["put made 2"],
            &["get made"],
        ),
        // Multiple compares are ANDed.
        txn(
            "-w json",
            &[r#"value("k") = "v""#, r#"value("n") = "11""#],
            &["get k"],
            &["get n"],
        ),
        // Read-only and empty txns do not consume a revision.
        txn("-w json", &[], &["get k", "get n"], &[]),
        c("get k -w json"),
        txn("-w json", &[], &[], &[]),
        txn("", &[], &[], &[]),
        txn("-w json", &[], &["del nothing"], &[]),
        c("get k -w json"),
        // Reads inside a txn see the txn's earlier writes; nested response
        // headers carry the revision at which each op ran.
        txn(
            "-w json",
            &[],
            &[
                "get z",
                "put z 1",
                "get z",
                "get k --prefix",
                "del k3 --prev-kv",
                "get k3",
                "put z2 1 --prev-kv",
                "get z --prefix --keys-only",
            ],
            &[],
        ),
        txn(
            "",
            &[],
            &["put z 2 --prev-kv", "get z", "del z2", "get z --prefix"],
            &[],
        ),
        c(r#"get "" --from-key -w json"#),
        // Duplicate / overlapping writes in one branch are rejected.
        txn("", &[], &["put d 1", "put d 2"], &[]),
        txn("-w json", &[], &["put d 1", "del d"], &[]),
        txn("", &[], &["put d 1", "del c e"], &[]),
        txn("", &[], &["del d --prefix", "put da 1"], &[]),
        txn("", &[], &["put d 1", "del c d"], &[]),
        // ...but deleting a key twice, or writing it in both branches, is fine.
        txn("-w json", &[], &["del k", "del k"], &[]),
        txn(
            "-w json",
            &[r#"value("k") = "v""#],
            &["put d 1"],
            &["put d 2"],
        ),
        txn("", &[], &["get d", "put d 3", "get d"], &[]),
        // Invalid ops.
        txn("", &[], &[r#"put "" x"#], &[]),
        txn("", &[], &["get k --rev=1000"], &[]),
        txn(
            "",
            &[r#"value("k") = "v""#],
            &["put k 1"],
            &["put k3 1 --lease=1234abcd"],
        ),
        txn(
            "",
            &[r#"value("k") = "v""#],
            &["put k3 1 --lease=1234abcd"],
            &["put k 1"],
        ),
        txn("", &[], &["put k3 --ignore-value"], &[]),
        c("get d -w json"),
    ];
    // 128 ops is the default limit; 129 is too many.
    let ops128: Vec<String> = (0..128).map(|i| format!("put t{i:03} v")).collect();
    let ops129: Vec<String> = (0..129).map(|i| format!("put u{i:03} v")).collect();
    let r128: Vec<&str> = ops128.iter().map(|s| s.as_str()).collect();
    let r129: Vec<&str> = ops129.iter().map(|s| s.as_str()).collect();
    steps.push(txn("", &[], &r129, &[]));
    steps.push(txn("", &[], &[], &r129));
    steps.push(txn("", &[], &r128, &[]));
    steps.push(c("get t --prefix --keys-only --limit=3 -w json"));
    steps.push(c("get t127 -w json"));
    run_parity("txn", &steps, via);
}

fn parity_compaction_and_errors_on(via: Via) {
    let steps = vec![
        c("put a 1"),
        c("put a 2"),
        c("put a 3"),
        c("put a 4"),
        c("put a 5"),
        c("put b 1"),
        c("get a --rev=3"),
        c("get a --rev=8"),
        c("get a --rev=100 -w json"),
        c("compact 4"),
        c("get a --rev=3"),
        c("get a --rev=3 -w json"),
        c("get a --rev=4 -w json"),
        c("get a --rev=7"),
        c("get a --rev=8"),
        c(r#"get "" --from-key --rev=2 --keys-only"#),
        c("compact 4"),
        c("compact 2"),
        c("compact 100"),
        c("compact 6 --physical"),
        c("get a --rev=5"),
        c("get a -w json"),
        txn("", &[], &["get a --rev=5"], &[]),
        txn("-w json", &[], &["get a --rev=6"], &[]),
        // Errors did not consume revisions.
        c("get b -w json"),
        // Request size limit (etcd: --max-request-bytes 1.5 MiB).
        big_stdin("put big", b'x', 1024 * 1024 * 16 / 10),
        big_stdin("put mid", b'y', 1_400_000),
        c("get mid --keys-only -w json"),
        c("get b -w json"),
        c("del mid"),
        c("get mid --rev=8 --keys-only -w json"),
        c("compact 9"),
        c("get mid --rev=8 --keys-only"),
        c(r#"get "" --from-key -w json"#),
    ];
    run_parity("compaction_and_errors", &steps, via);
}

// Each scenario on a single member, and through a follower of a 3-member cluster.

#[test]
fn parity_put_get_and_range_options() {
    parity_put_get_and_range_options_on(Via::Single);
}

#[test]
fn parity_put_get_and_range_options_through_a_follower() {
    parity_put_get_and_range_options_on(Via::Follower);
}

#[test]
fn parity_sorting() {
    parity_sorting_on(Via::Single);
}

#[test]
fn parity_sorting_through_a_follower() {
    parity_sorting_on(Via::Follower);
}

#[test]
fn parity_deletes() {
    parity_deletes_on(Via::Single);
}

#[test]
fn parity_deletes_through_a_follower() {
    parity_deletes_on(Via::Follower);
}

#[test]
fn parity_txn() {
    parity_txn_on(Via::Single);
}

#[test]
fn parity_txn_through_a_follower() {
    parity_txn_on(Via::Follower);
}

#[test]
fn parity_compaction_and_errors() {
    parity_compaction_and_errors_on(Via::Single);
}

#[test]
fn parity_compaction_and_errors_through_a_follower() {
    parity_compaction_and_errors_on(Via::Follower);
}
