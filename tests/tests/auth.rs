//! Auth (users, roles, permissions, tokens) and TLS, through etcdctl and raw gRPC. Every
//! comparison runs against a real etcd 3.4 first: etcd's observable behaviour, error
//! texts and gRPC codes included, is the specification.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{
    Client, ConnectOptions, DeleteOptions, GetOptions, Permission, PutOptions,
    RoleRevokePermissionOptions, Txn, TxnOp, WatchOptions,
};

/// etcdctl run as `user` (`name:password`), or as nobody.
fn ctl(s: &Server, user: Option<&str>, args: &[&str]) -> CmdOutput {
    let mut all: Vec<&str> = Vec::new();
    let flag;
    if let Some(user) = user {
        flag = format!("--user={user}");
        all.push(&flag);
    }
    all.extend_from_slice(args);
    s.etcdctl(&all)
}

const ROOT: Option<&str> = Some("root:rootpw");
const U1: Option<&str> = Some("u1:pw1");

/// How a step's output is compared between etcd and the target.
#[derive(Clone, Copy)]
enum Compare {
    /// Exit code, stdout and stderr (client warnings normalised, ports masked).
    Everything,
    /// Exit code only (the output holds member IDs, versions or sizes).
    ExitCode,
}

/// The etcdctl session of etcd's auth guide, with every refusal along the way.
const STEPS: &[(Option<&str>, &[&str], Compare)] = &[
    (None, &["role", "get", "root"], Compare::Everything),
    (None, &["role", "add", "r1"], Compare::Everything),
    (None, &["role", "add", "r1"], Compare::Everything),
    (None, &["role", "get", "r1"], Compare::Everything),
    (
        None,
        &["role", "grant-permission", "r1", "readwrite", "a", "b"],
        Compare::Everything,
    ),
    (
        None,
        &["role", "grant-permission", "r1", "read", "--prefix", "p/"],
        Compare::Everything,
    ),
    (
        None,
        &["role", "grant-permission", "r1", "write", "w"],
        Compare::Everything,
    ),
    (None, &["role", "get", "r1"], Compare::Everything),
    (
        None,
        &["role", "revoke-permission", "r1", "zz"],
        Compare::Everything,
    ),
    (None, &["role", "list"], Compare::Everything),
    (None, &["user", "add", "u1:pw1"], Compare::Everything),
    (None, &["user", "add", "u1:pw1"], Compare::Everything),
    (None, &["user", "get", "u1"], Compare::Everything),
    (
        None,
        &["user", "grant-role", "u1", "nope"],
        Compare::Everything,
    ),
    (
        None,
        &["user", "grant-role", "nope", "r1"],
        Compare::Everything,
    ),
    (
        None,
        &["user", "grant-role", "u1", "r1"],
        Compare::Everything,
    ),
    (
        None,
        &["user", "revoke-role", "u1", "nope"],
        Compare::Everything,
    ),
    (None, &["user", "get", "u1"], Compare::Everything),
    (
        None,
        &["user", "add", "nopw", "--no-password"],
        Compare::Everything,
    ),
    (None, &["user", "get", "nopw"], Compare::Everything),
    (None, &["user", "list"], Compare::Everything),
    (None, &["auth", "enable"], Compare::Everything),
    (None, &["user", "add", "root:rootpw"], Compare::Everything),
    // etcdctl adds the root role and grants it when enable says it is missing.
    (None, &["auth", "enable"], Compare::Everything),
    (None, &["auth", "enable"], Compare::Everything),
    (None, &["get", "a"], Compare::Everything),
    (None, &["put", "a", "1"], Compare::Everything),
    (U1, &["put", "a", "1"], Compare::Everything),
    (U1, &["get", "a"], Compare::Everything),
    (U1, &["get", "a", "b"], Compare::Everything),
    (U1, &["get", "a", "c"], Compare::Everything),
    (U1, &["put", "q", "1"], Compare::Everything),
    (U1, &["get", "q"], Compare::Everything),
    (U1, &["get", "p/x"], Compare::Everything),
    (U1, &["get", "--prefix", "p/"], Compare::Everything),
    (U1, &["put", "p/x", "1"], Compare::Everything),
    (U1, &["put", "w", "1"], Compare::Everything),
    (U1, &["put", "w", "2", "--prev-kv"], Compare::Everything),
    (U1, &["get", "w"], Compare::Everything),
    (U1, &["del", "a"], Compare::Everything),
    (U1, &["del", "a", "--prev-kv"], Compare::Everything),
    (U1, &["del", "--prefix", "p/"], Compare::Everything),
    (Some("u1:bad"), &["get", "a"], Compare::Everything),
    (Some("nouser:bad"), &["get", "a"], Compare::Everything),
    (Some("nopw:"), &["get", "a"], Compare::Everything),
    (U1, &["compaction", "1"], Compare::Everything),
    (U1, &["alarm", "list"], Compare::Everything),
    (U1, &["member", "list"], Compare::ExitCode),
    (U1, &["endpoint", "status"], Compare::ExitCode),
    (U1, &["endpoint", "hashkv"], Compare::Everything),
    (U1, &["defrag"], Compare::Everything),
    (None, &["defrag"], Compare::Everything),
    (ROOT, &["endpoint", "hashkv"], Compare::ExitCode),
    (U1, &["user", "list"], Compare::Everything),
    (U1, &["role", "list"], Compare::Everything),
    (U1, &["user", "add", "u2:x"], Compare::Everything),
    (U1, &["role", "add", "r9"], Compare::Everything),
    (U1, &["auth", "disable"], Compare::Everything),
    (ROOT, &["user", "delete", "root"], Compare::Everything),
    (ROOT, &["role", "delete", "root"], Compare::Everything),
    (
        ROOT,
        &["user", "revoke-role", "root", "root"],
        Compare::Everything,
    ),
    (ROOT, &["role", "get", "root"], Compare::Everything),
    (ROOT, &["user", "get", "root"], Compare::Everything),
    (ROOT, &["user", "list"], Compare::Everything),
    (ROOT, &["get", "q"], Compare::Everything),
    (ROOT, &["put", "q", "root-wrote"], Compare::Everything),
    (U1, &["lock", "zz"], Compare::Everything),
    (
        ROOT,
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "--prefix",
            "lk/",
        ],
        Compare::Everything,
    ),
    (U1, &["lock", "lk", "echo", "held"], Compare::Everything),
    (U1, &["elect", "zz", "v"], Compare::Everything),
    (U1, &["watch", "zz"], Compare::Everything),
    (U1, &["user", "get", "u1"], Compare::Everything),
    (U1, &["role", "get", "r1"], Compare::Everything),
    (U1, &["role", "get", "root"], Compare::Everything),
    (
        ROOT,
        &["role", "revoke-permission", "r1", "p/", "p0"],
        Compare::Everything,
    ),
    (U1, &["get", "p/x"], Compare::Everything),
    (
        ROOT,
        &["user", "revoke-role", "u1", "r1"],
        Compare::Everything,
    ),
    (U1, &["get", "a"], Compare::Everything),
    (
        ROOT,
        &["user", "grant-role", "u1", "r1"],
        Compare::Everything,
    ),
    (ROOT, &["role", "delete", "r1"], Compare::Everything),
    (ROOT, &["user", "get", "u1"], Compare::Everything),
    (ROOT, &["user", "delete", "u1"], Compare::Everything),
    (ROOT, &["user", "delete", "u1"], Compare::Everything),
    (U1, &["get", "a"], Compare::Everything),
    (ROOT, &["auth", "disable"], Compare::Everything),
    (ROOT, &["get", "a"], Compare::Everything),
    (None, &["get", "a"], Compare::Everything),
    (None, &["user", "list"], Compare::Everything),
];

/// Watch and lock commands that are refused end at once; one that is not would block.
fn run_step(s: &Server, user: Option<&str>, args: &[&str]) -> CmdOutput {
    let out = ctl(s, user, args);
    assert!(
        !out.timed_out,
        "etcdctl {args:?} as {user:?} did not finish on {}:\n{out}",
        s.kind
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_session_matches_etcd() {
    let mut transcripts: Vec<(Kind, Vec<Normalized>)> = Vec::new();
    for kind in reference_then_target() {
        let s = Server::start(kind);
        let ports = [(s.client_port, "<client>"), (s.peer_port, "<peer>")];
        let mut transcript = Vec::new();
        for (user, args, compare) in STEPS {
            let out = run_step(&s, *user, args);
            let mut n = normalize_output(&out, &ports);
            if let Compare::ExitCode = compare {
                n.stdout.clear();
                n.stderr.clear();
            }
            transcript.push(n);
        }
        transcripts.push((kind, transcript));
    }
    let Some((reference, want)) = transcripts.first() else {
        panic!("no server ran");
    };
    for (kind, got) in &transcripts[1..] {
        for (i, (user, args, _)) in STEPS.iter().enumerate() {
            assert_eq!(
                got[i], want[i],
                "step {i}: etcdctl {args:?} as {user:?}: {kind} differs from {reference}\n--- {reference}:\n{}\n--- {kind}:\n{}",
                want[i], got[i]
            );
        }
    }
}

/// Connects as `name` with `password` (etcd-client authenticates once, at connect).
async fn connect_as(s: &Server, name: &str, password: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_user(name, password)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect([s.endpoint()], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect as {name}: {e}"))
}

/// root (root role) and u1 with role r1: readwrite [a, b), read prefix p/, write w.
async fn set_up_users(s: &Server) {
    let c = s.client().await;
    let mut auth = c.auth_client();
    auth.user_add("root", "rootpw", None).await.unwrap();
    auth.user_grant_role("root", "root").await.unwrap();
    auth.user_add("u1", "pw1", None).await.unwrap();
    auth.role_add("r1").await.unwrap();
    auth.role_grant_permission("r1", Permission::read_write("a").with_range_end("b"))
        .await
        .unwrap();
    auth.role_grant_permission("r1", Permission::read("p/").with_prefix())
        .await
        .unwrap();
    auth.role_grant_permission("r1", Permission::write("w"))
        .await
        .unwrap();
    auth.user_grant_role("u1", "r1").await.unwrap();
    auth.auth_enable().await.unwrap();
}

const DENIED: (&str, &str) = ("PermissionDenied", "etcdserver: permission denied");

fn status(code: &str, message: &str) -> (String, String) {
    (code.to_string(), message.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_space_path_checks_permissions() {
    on_etcd_and_target(async |s: &Server| {
        set_up_users(s).await;
        let mut root = connect_as(s, "root", "rootpw").await;
        let lease = root.lease_grant(60, None).await.unwrap().id();
        root.put("secret", "s", Some(PutOptions::new().with_lease(lease)))
            .await
            .unwrap();
        let mut u1 = connect_as(s, "u1", "pw1").await;
        let denied = status(DENIED.0, DENIED.1);
        // Allowed.
        u1.put("a1", "v", None).await.expect("put inside [a, b)");
        u1.get("a1", None).await.expect("get inside [a, b)");
        u1.get("p/any", None).await.expect("read under p/");
        // Range, put, delete.
        assert_eq!(expect_status(u1.get("secret", None).await), denied);
        assert_eq!(
            expect_status(u1.get("a", Some(GetOptions::new().with_range("c"))).await),
            denied
        );
        assert_eq!(expect_status(u1.put("p/x", "v", None).await), denied);
        assert_eq!(
            expect_status(
                u1.put("w", "v", Some(PutOptions::new().with_prev_key()))
                    .await
            ),
            denied,
            "prev_kv needs read"
        );
        u1.put("w", "v", None).await.expect("write-only key");
        assert_eq!(expect_status(u1.delete("secret", None).await), denied);
        assert_eq!(
            expect_status(
                u1.delete("p/", Some(DeleteOptions::new().with_prefix()))
                    .await
            ),
            denied
        );
        // Txn: compares and both branches, whichever runs.
        let compare_denied = Txn::new()
            .when([etcd_client::Compare::value(
                "secret",
                etcd_client::CompareOp::Equal,
                "s",
            )])
            .and_then([TxnOp::put("a1", "x", None)]);
        assert_eq!(expect_status(u1.txn(compare_denied).await), denied);
        let failure_denied = Txn::new()
            .and_then([TxnOp::put("a1", "x", None)])
            .or_else([TxnOp::delete("secret", None)]);
        assert_eq!(expect_status(u1.txn(failure_denied).await), denied);
        let read_denied = Txn::new().and_then([TxnOp::get("secret", None)]);
        assert_eq!(expect_status(u1.txn(read_denied).await), denied);
        let fine = Txn::new()
            .when([etcd_client::Compare::version(
                "a1",
                etcd_client::CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::get("a1", None)])
            .or_else([TxnOp::put("a2", "y", None)]);
        assert!(u1.txn(fine).await.expect("txn inside [a, b)").succeeded());
        // Attaching to, or revoking, a lease that holds a key the user may not write.
        assert_eq!(
            expect_status(
                u1.put("a3", "v", Some(PutOptions::new().with_lease(lease)))
                    .await
            ),
            denied
        );
        assert_eq!(expect_status(u1.lease_revoke(lease).await), denied);
        root.lease_revoke(lease).await.expect("root revokes");
        // Watch: created and canceled at once with etcd's reason.
        let mut stream = u1.watch("secret", None).await.expect("watch stream");
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a watch response in time")
            .expect("stream ok")
            .expect("a response");
        assert!(resp.created() && resp.canceled(), "{resp:?}");
        assert_eq!(
            resp.cancel_reason(),
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        let mut stream = u1
            .watch("p/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch stream");
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a watch response in time")
            .expect("stream ok")
            .expect("a response");
        assert!(resp.created() && !resp.canceled(), "{resp:?}");
        // Admin APIs are root's.
        let mut auth = u1.auth_client();
        assert_eq!(expect_status(auth.user_list().await), denied);
        // etcd lets a user read itself and its own roles.
        auth.user_get("u1").await.expect("own user");
        auth.role_get("r1").await.expect("own role");
        assert_eq!(expect_status(auth.user_get("root").await), denied);
        assert_eq!(expect_status(auth.role_get("root").await), denied);
        assert_eq!(expect_status(auth.auth_disable().await), denied);
        assert_eq!(
            expect_status(
                auth.role_revoke_permission(
                    "r1",
                    "a",
                    Some(RoleRevokePermissionOptions::new().with_range_end("b"))
                )
                .await
            ),
            denied
        );
        let mut m = u1.maintenance_client();
        assert_eq!(
            expect_status(m.hash_kv(0).await),
            status("Unknown", "auth: permission denied")
        );
        assert_eq!(
            expect_status(m.hash().await),
            status("Unknown", "auth: permission denied")
        );
        m.status().await.expect("status is anyone's");
        // Without any token.
        let mut nobody = s.client().await;
        assert_eq!(
            expect_status(nobody.get("a1", None).await),
            status("InvalidArgument", "etcdserver: user name is empty")
        );
        assert_eq!(
            expect_status(nobody.auth_client().user_list().await),
            status("InvalidArgument", "etcdserver: user name is empty")
        );
    })
    .await;
}

/// One Range with `metadata` set, over plain tonic (etcd-client cannot set metadata).
async fn raw_range(
    endpoint: &str,
    metadata: Option<(&'static str, &str)>,
    key: &str,
) -> Result<(), (String, String)> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .expect("endpoint URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(corekv_engine::pb::PbRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    });
    if let Some((name, value)) = metadata {
        request
            .metadata_mut()
            .insert(name, value.parse().expect("ASCII metadata"));
    }
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Range");
    let codec = tonic_prost::ProstCodec::<
        corekv_engine::pb::PbRangeRequest,
        corekv_engine::pb::PbRangeResponse,
    >::default();
    grpc.unary(request, path, codec)
        .await
        .map(|_| ())
        .map_err(|e| (format!("{:?}", e.code()), e.message().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_either_metadata_key_and_their_expiry() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let opts = ServerOpts {
            extra_args: vec!["--auth-token-ttl".into(), "2".into()],
            ..Default::default()
        };
        let s = Server::start_with(kind, opts);
        set_up_users(&s).await;
        let mut c = s.client().await;
        let token = c
            .auth_client()
            .authenticate("u1".into(), "pw1".into())
            .await
            .expect("authenticate")
            .token()
            .to_string();
        let ep = s.endpoint();
        raw_range(&ep, Some(("token", &token)), "a1")
            .await
            .expect("token metadata");
        raw_range(&ep, Some(("authorization", &token)), "a1")
            .await
            .expect("authorization metadata");
        assert_eq!(
            raw_range(&ep, Some(("token", &token)), "secret").await,
            Err(status(DENIED.0, DENIED.1))
        );
        let invalid = Err(status("Unauthenticated", "etcdserver: invalid auth token"));
        assert_eq!(
            raw_range(&ep, Some(("token", "forged.7")), "a1").await,
            invalid
        );
        // etcd 3.4's simple tokens stand for the current auth revision: a change to users
        // or roles does not make them stale (JWTs do go stale: see the jwt test).
        let fresh = |c: &mut Client| {
            let mut auth = c.auth_client();
            async move {
                auth.authenticate("u1".into(), "pw1".into())
                    .await
                    .expect("authenticate")
                    .token()
                    .to_string()
            }
        };
        let before = fresh(&mut c).await;
        let root = connect_as(&s, "root", "rootpw").await;
        root.auth_client()
            .user_add("u2", "pw2", None)
            .await
            .expect("user add");
        raw_range(&ep, Some(("token", &before)), "a1")
            .await
            .expect("a simple token issued before the change");
        let after = fresh(&mut c).await;
        raw_range(&ep, Some(("token", &after)), "a1")
            .await
            .expect("a token issued after the change");
        // A simple token lives --auth-token-ttl seconds after its last use. etcd checks
        // expiry on a 1 s tick, so the wait leaves it room.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(raw_range(&ep, Some(("token", &token)), "a1").await, invalid);
        println!("=== {kind}: ok ===");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_refusals_match_etcd() {
    on_etcd_and_target(async |s: &Server| {
        let c = s.client().await;
        let mut auth = c.auth_client();
        assert_eq!(
            expect_status(auth.authenticate("root".into(), "x".into()).await),
            status(
                "FailedPrecondition",
                "etcdserver: authentication is not enabled"
            )
        );
        assert_eq!(
            expect_status(auth.auth_enable().await),
            status("FailedPrecondition", "etcdserver: root user does not exist")
        );
        auth.user_add("root", "rootpw", None).await.unwrap();
        assert_eq!(
            expect_status(auth.auth_enable().await),
            status(
                "FailedPrecondition",
                "etcdserver: root user does not have root role"
            )
        );
        assert_eq!(
            expect_status(auth.user_add("", "x", None).await),
            status("InvalidArgument", "etcdserver: user name is empty")
        );
        assert_eq!(
            expect_status(auth.role_add("").await),
            status("InvalidArgument", "etcdserver: role name is empty")
        );
        let no_password = etcd_client::UserAddOptions::new().with_no_pwd();
        auth.user_add("certonly", "", Some(no_password))
            .await
            .unwrap();
        auth.user_grant_role("root", "root").await.unwrap();
        auth.auth_enable().await.unwrap();
        let failed = status(
            "InvalidArgument",
            "etcdserver: authentication failed, invalid user ID or password",
        );
        assert_eq!(
            expect_status(auth.authenticate("root".into(), "wrong".into()).await),
            failed
        );
        assert_eq!(
            expect_status(auth.authenticate("ghost".into(), "x".into()).await),
            failed
        );
        assert_eq!(
            expect_status(auth.authenticate("certonly".into(), "".into()).await),
            status(
                "Unknown",
                "auth: authentication failed, password was given for no password user"
            ),
            "a no-password user cannot log in with a password"
        );
        let token = auth
            .authenticate("root".into(), "rootpw".into())
            .await
            .expect("root logs in");
        assert!(!token.token().is_empty());
        // A changed password: the old one fails, the new one works.
        let root = connect_as(s, "root", "rootpw").await;
        let mut admin = root.auth_client();
        admin
            .user_change_password("root", "rootpw2")
            .await
            .expect("change password");
        // etcd forgets a user's simple tokens when its password changes.
        assert_eq!(
            expect_status(admin.user_list().await),
            status("Unauthenticated", "etcdserver: invalid auth token")
        );
        let mut admin = connect_as(s, "root", "rootpw2").await.auth_client();
        assert_eq!(
            expect_status(admin.user_change_password("ghost", "x").await),
            status("FailedPrecondition", "etcdserver: user name not found")
        );
        assert_eq!(
            expect_status(auth.authenticate("root".into(), "rootpw".into()).await),
            failed
        );
        auth.authenticate("root".into(), "rootpw2".into())
            .await
            .expect("the new password");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_the_switch_survive_a_restart() {
    let mut s = Server::start_target();
    set_up_users(&s).await;
    let before = ctl(&s, ROOT, &["role", "get", "r1"]);
    before.expect_ok("role get");
    s.restart();
    let after = ctl(&s, ROOT, &["role", "get", "r1"]);
    assert_eq!(after.stdout, before.stdout);
    assert_eq!(ctl(&s, U1, &["put", "a", "1"]).stdout.trim(), "OK");
    let refused = ctl(&s, None, &["get", "a"]);
    assert!(
        refused.stderr.contains("etcdserver: user name is empty"),
        "auth stays enabled:\n{refused}"
    );
    let wrong = ctl(&s, Some("u1:nope"), &["get", "a"]);
    assert!(
        wrong
            .stderr
            .contains("authentication failed, invalid user ID or password"),
        "{wrong}"
    );
}

/// A CA, a server certificate for 127.0.0.1 and client certificates named `root` and
/// `u1`, written as PEM files into `dir`. Generated per test: no key is ever committed.
struct TestPki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    /// (certificate, key) of the client named by the map key.
    clients: std::collections::HashMap<&'static str, (std::path::PathBuf, std::path::PathBuf)>,
}

fn make_pki(dir: &std::path::Path) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "corekv test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let mut clients = std::collections::HashMap::new();
    for name in ["root", "u1"] {
        let (cert, key) = leaf(vec![format!("{name}.client")], name);
        clients.insert(
            name,
            (
                write(&format!("{name}.crt"), cert),
                write(&format!("{name}.key"), key),
            ),
        );
    }
    TestPki {
        ca: write("ca.crt", ca.pem()),
        server_cert: write("server.crt", server_cert),
        server_key: write("server.key", server_key),
        clients,
    }
}

/// A server of `kind` serving https only, started and killed by PID here (the harness
/// polls readiness over plaintext).
struct TlsServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    /// --auto-tls: no CA to trust, clients skip verification.
    auto: bool,
}

impl TlsServer {
    fn start(kind: Kind, pki: &TestPki, extra: &[&str]) -> TlsServer {
        TlsServer::start_as(kind, pki, extra, false)
    }

    /// `auto`: serve a certificate of the server's own making (--auto-tls), not the PKI's.
    fn start_as(kind: Kind, pki: &TestPki, extra: &[&str], auto: bool) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let (client, peer) = (
            format!("https://127.0.0.1:{}", ports[0]),
            format!("http://127.0.0.1:{}", ports[1]),
        );
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = std::process::Command::new(server_bin(kind));
        for (k, _) in std::env::vars_os() {
            let k2 = k.to_string_lossy();
            if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
                cmd.env_remove(&k);
            }
        }
        cmd.args(["--name", "n1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("n1={peer}")]);
        if auto {
            cmd.arg("--auto-tls");
        } else {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key);
        }
        cmd.args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("spawn the server");
        let server = TlsServer {
            child,
            port: ports[0],
            dir,
            auto,
        };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let probe = server.ctl(pki, Some("root"), &["get", "readiness-probe"]);
            if probe.ok() {
                return server;
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(server.dir.path().join("server.log"));
                panic!("{kind} did not serve TLS in time:\n{probe}\nlog: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// etcdctl trusting the test CA, with the client certificate `cert` if given.
    fn ctl(&self, pki: &TestPki, cert: Option<&str>, args: &[&str]) -> CmdOutput {
        // etcdctl 3.4 speaks TLS without any TLS file only when told transport security
        // is on.
        let mut all = if self.auto {
            vec![
                "--insecure-transport=false".to_string(),
                "--insecure-skip-tls-verify".to_string(),
            ]
        } else {
            vec![format!("--cacert={}", pki.ca.display())]
        };
        if let Some(name) = cert {
            let (c, k) = &pki.clients[name];
            all.push(format!("--cert={}", c.display()));
            all.push(format!("--key={}", k.display()));
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        etcdctl_at(&self.endpoint(), &all, None)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a plaintext HTTP/1.1 request to the TLS port gets back (bounded in time and size).
fn plaintext_answer(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut answer = vec![0u8; 4096];
    let n = conn.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[test]
fn https_client_urls_serve_tls_and_refuse_plaintext() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let pki_dir = tempfile::tempdir().unwrap();
        let pki = make_pki(pki_dir.path());
        let s = TlsServer::start(kind, &pki, &[]);
        s.ctl(&pki, None, &["put", "k", "v"])
            .expect_ok("put over TLS");
        let got = s.ctl(&pki, None, &["get", "k"]);
        assert_eq!(got.expect_ok("get over TLS").stdout, "k\nv\n");
        let plain = etcdctl_at(&format!("http://127.0.0.1:{}", s.port), &["get", "k"], None);
        assert!(!plain.ok(), "plaintext gRPC must fail on {kind}:\n{plain}");
        let answer = plaintext_answer(s.port);
        assert!(
            !answer.contains("\"health\""),
            "plaintext HTTP got an answer from {kind}: {answer:?}"
        );
        let untrusted = etcdctl_at(&s.endpoint(), &["get", "k"], None);
        assert!(!untrusted.ok(), "a client that does not trust the CA fails");
        println!("=== {kind}: ok ===");
    }
}

#[test]
fn client_certificate_common_name_is_the_user() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let pki_dir = tempfile::tempdir().unwrap();
        let pki = make_pki(pki_dir.path());
        let ca = pki.ca.display().to_string();
        let s = TlsServer::start(
            kind,
            &pki,
            &["--trusted-ca-file", &ca, "--client-cert-auth"],
        );
        let root = Some("root");
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["user", "grant-role", "root", "root"],
            &["user", "add", "u1:pw1"],
            &["role", "add", "r1"],
            &["role", "grant-permission", "r1", "readwrite", "a", "b"],
            &["user", "grant-role", "u1", "r1"],
            &["auth", "enable"],
        ] {
            s.ctl(&pki, root, args).expect_ok(&format!("{args:?}"));
        }
        // No token: the certificate names the caller.
        assert_eq!(s.ctl(&pki, Some("u1"), &["put", "a", "1"]).stdout, "OK\n");
        let denied = s.ctl(&pki, Some("u1"), &["put", "q", "1"]);
        assert!(
            denied
                .stderr
                .contains("Error: etcdserver: permission denied"),
            "{kind}: {denied}"
        );
        let admin = s.ctl(&pki, Some("u1"), &["user", "list"]);
        assert!(
            admin.stderr.contains("permission denied"),
            "{kind}: {admin}"
        );
        assert_eq!(s.ctl(&pki, root, &["put", "q", "1"]).stdout, "OK\n");
        // A token wins over the certificate.
        let with_token = s.ctl(&pki, root, &["--user=u1:pw1", "put", "q", "2"]);
        assert!(
            with_token.stderr.contains("permission denied"),
            "{kind}: {with_token}"
        );
        // No certificate: the handshake fails.
        let anonymous = s.ctl(&pki, None, &["get", "a"]);
        assert!(!anonymous.ok(), "{kind}: {anonymous}");
        println!("=== {kind}: ok ===");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_sign_verify_and_go_stale() {
    // ES256 keys made here (rcgen writes PKCS#8 and SPKI PEM, which etcd 3.4's JWT code
    // does not read, so this runs on the target only).
    let keys = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let (private, public) = (keys.path().join("jwt.key"), keys.path().join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1m",
        public.display(),
        private.display()
    );
    let opts = ServerOpts {
        extra_args: vec!["--auth-token".into(), spec],
        ..Default::default()
    };
    let s = Server::start_with(target_kind(), opts);
    set_up_users(&s).await;
    assert_eq!(ctl(&s, U1, &["put", "a", "1"]).stdout, "OK\n");
    let c = s.client().await;
    let token = c
        .auth_client()
        .authenticate("u1".into(), "pw1".into())
        .await
        .expect("authenticate")
        .token()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let ep = s.endpoint();
    raw_range(&ep, Some(("token", &token)), "a")
        .await
        .expect("the JWT verifies");
    let mut forged = token.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        raw_range(&ep, Some(("token", &forged)), "a").await,
        Err(status("Unauthenticated", "etcdserver: invalid auth token"))
    );
    let root = connect_as(&s, "root", "rootpw").await;
    root.auth_client().role_add("r2").await.expect("role add");
    assert_eq!(
        raw_range(&ep, Some(("token", &token)), "a").await,
        Err(status(
            "InvalidArgument",
            "etcdserver: revision of auth store is old"
        )),
        "a JWT from before an auth change is stale"
    );
    assert_eq!(
        ctl(&s, U1, &["get", "a", "--print-value-only"]).stdout,
        "1\n"
    );
}

#[test]
fn auto_tls_serves_a_generated_certificate() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let pki_dir = tempfile::tempdir().unwrap();
        let pki = make_pki(pki_dir.path());
        let s = TlsServer::start_as(kind, &pki, &[], true);
        s.ctl(&pki, None, &["put", "k", "v"])
            .expect_ok("put over auto TLS");
        let trusting_test_ca = etcdctl_at(
            &s.endpoint(),
            &[&format!("--cacert={}", pki.ca.display()), "get", "k"],
            None,
        );
        assert!(
            !trusting_test_ca.ok(),
            "{kind}: the generated certificate is not the test CA's:\n{trusting_test_ca}"
        );
        let plain = etcdctl_at(&format!("http://127.0.0.1:{}", s.port), &["get", "k"], None);
        assert!(!plain.ok(), "{kind}: plaintext must fail:\n{plain}");
        println!("=== {kind}: ok ===");
    }
}

/// etcdserverpb.AuthStatusRequest (etcd-client has no AuthStatus call).
#[derive(Clone, PartialEq, prost::Message)]
struct AuthStatusRequest {}

/// etcdserverpb.AuthStatusResponse.
#[derive(Clone, PartialEq, prost::Message)]
struct AuthStatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<corekv_engine::pb::PbResponseHeader>,
    #[prost(bool, tag = "2")]
    enabled: bool,
    #[prost(uint64, tag = "3")]
    auth_revision: u64,
}

/// Auth.AuthStatus over plain tonic, with `token` if given: (enabled, auth revision).
async fn auth_status(endpoint: &str, token: Option<&str>) -> Result<(bool, u64), (String, String)> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .expect("endpoint URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(AuthStatusRequest {});
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("token", token.parse().expect("ASCII token"));
    }
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Auth/AuthStatus");
    let codec = tonic_prost::ProstCodec::<AuthStatusRequest, AuthStatusResponse>::default();
    grpc.unary(request, path, codec)
        .await
        .map(|r| {
            let r = r.into_inner();
            assert!(r.header.is_some(), "AuthStatus answers a header");
            (r.enabled, r.auth_revision)
        })
        .map_err(|e| (format!("{:?}", e.code()), e.message().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_status_answers_as_etcd_3_5_does() {
    // etcd 3.4 has no AuthStatus (3.5 added it): recorded here so the difference is a
    // known one. corekv answers it with 3.5's rules (root only once auth is enabled).
    let etcd = Server::start(Kind::Etcd);
    assert_eq!(
        auth_status(&etcd.endpoint(), None).await,
        Err(status(
            "Unimplemented",
            "unknown method AuthStatus for service etcdserverpb.Auth"
        ))
    );
    drop(etcd);
    let s = Server::start_target();
    let ep = s.endpoint();
    assert_eq!(
        auth_status(&ep, None).await,
        Ok((false, 1)),
        "a fresh store"
    );
    set_up_users(&s).await;
    let c = s.client().await;
    let token = |name: &'static str, password: &'static str| {
        let mut auth = c.auth_client();
        async move {
            auth.authenticate(name.into(), password.into())
                .await
                .expect("authenticate")
                .token()
                .to_string()
        }
    };
    let root = token("root", "rootpw").await;
    let u1 = token("u1", "pw1").await;
    // root, root's role, u1, r1, three permissions, r1 to u1: eight changes after 1.
    assert_eq!(auth_status(&ep, Some(&root)).await, Ok((true, 9)));
    assert_eq!(
        auth_status(&ep, Some(&u1)).await,
        Err(status(DENIED.0, DENIED.1))
    );
    assert_eq!(
        auth_status(&ep, None).await,
        Err(status("InvalidArgument", "etcdserver: user name is empty"))
    );
}
