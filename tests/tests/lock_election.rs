//! etcd's Lock and Election services, through the Rust `etcd-client` crate and through
//! etcdctl's `lock` and `elect` (which run the same recipes client-side over KV, Lease and
//! Watch). Every body runs against a real etcd first, then against the target.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};

/// Bound for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(5);
/// How long a blocked call is watched to make sure it stays blocked.
const STAYS_BLOCKED: Duration = Duration::from_millis(1500);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {limit:?}"))
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("lease grant").id()
}

/// Locks `name` with `lease` in a task of its own, so the caller can watch it block.
fn spawn_lock(
    c: &Client,
    name: &str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<(Vec<u8>, i64), etcd_client::Error>> {
    let (mut c, name) = (c.clone(), name.to_string());
    tokio::spawn(async move {
        let resp = c
            .lock(name, Some(LockOptions::new().with_lease(lease)))
            .await?;
        Ok((resp.key().to_vec(), resp.header().unwrap().revision()))
    })
}

/// Asserts that a spawned call is still waiting after [`STAYS_BLOCKED`].
async fn assert_blocked<T>(task: &mut tokio::task::JoinHandle<T>, what: &str) {
    let r = tokio::time::timeout(STAYS_BLOCKED, task).await;
    assert!(r.is_err(), "{what} should still be waiting");
}

/// The key a session with `lease` holds under `name` (`name/<lease in hex>`).
fn session_key(name: &str, lease: i64) -> String {
    format!("{name}/{lease:x}")
}

async fn exists(c: &mut Client, key: &[u8]) -> bool {
    c.get(key, None).await.unwrap().count() > 0
}

/// Polls until `key` is gone, bounded by [`PROMPT`].
async fn wait_gone(c: &mut Client, key: &[u8]) {
    let deadline = Instant::now() + PROMPT;
    while exists(c, key).await {
        assert!(
            Instant::now() < deadline,
            "{} still exists after {PROMPT:?}",
            String::from_utf8_lossy(key)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_unlock_and_a_second_locker_waits() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
        let first = within(
            PROMPT,
            "first lock",
            c.lock("mylock", Some(LockOptions::new().with_lease(l1))),
        )
        .await
        .unwrap();
        assert_eq!(first.key(), session_key("mylock", l1).as_bytes());
        // The key is the lock: empty value, on the lease, created by the lock's revision.
        let kv = c.get(first.key(), None).await.unwrap().kvs()[0].clone();
        assert_eq!((kv.value(), kv.lease()), (&b""[..], l1));
        assert_eq!(kv.create_revision(), first.header().unwrap().revision());
        // Locking again with the same lease is the same acquisition.
        let again = within(
            PROMPT,
            "relock",
            c.lock("mylock", Some(LockOptions::new().with_lease(l1))),
        )
        .await
        .unwrap();
        assert_eq!(again.key(), first.key());

        let mut second = spawn_lock(&c, "mylock", l2);
        assert_blocked(&mut second, "second locker").await;
        let unlocked = c
            .unlock(first.key())
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let (key2, rev2) = within(PROMPT, "second lock after unlock", second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key2, session_key("mylock", l2).as_bytes());
        // A waiter answers with the header of its last look, taken after the unlock.
        assert!(
            rev2 >= unlocked,
            "second lock's header {rev2} predates the unlock at {unlocked}"
        );
        c.unlock(key2.clone()).await.unwrap();
        assert!(!exists(&mut c, &key2).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_without_a_lease_runs_on_a_fresh_session_lease() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let resp = within(PROMPT, "lock", c.lock("nolease", None))
            .await
            .unwrap();
        let kv = c.get(resp.key(), None).await.unwrap().kvs()[0].clone();
        assert_ne!(kv.lease(), 0, "the server grants a session lease");
        assert_eq!(resp.key(), session_key("nolease", kv.lease()).as_bytes());
        let ttl = c.lease_time_to_live(kv.lease(), None).await.unwrap();
        assert_eq!(
            ttl.granted_ttl(),
            60,
            "clientv3/concurrency's default session TTL"
        );
        c.unlock(resp.key()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_with_an_unknown_lease_fails() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let err = expect_status(
            c.lock("mylock", Some(LockOptions::new().with_lease(0x1234)))
                .await,
        );
        assert_eq!(
            err,
            (
                "Unknown".to_string(),
                "etcdserver: requested lease not found".to_string()
            )
        );
        assert!(!exists(&mut c, session_key("mylock", 0x1234).as_bytes()).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_holders_lease_releases_the_lock() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
        within(
            PROMPT,
            "first lock",
            c.lock("revoked", Some(LockOptions::new().with_lease(l1))),
        )
        .await
        .unwrap();
        let mut second = spawn_lock(&c, "revoked", l2);
        assert_blocked(&mut second, "second locker").await;
        c.lease_revoke(l1).await.unwrap();
        let (key2, _) = within(PROMPT, "lock after revoke", second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key2, session_key("revoked", l2).as_bytes());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_loses_the_lock_when_its_lease_expires() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        // The "killed" holder: a 2 s lease nobody keeps alive.
        let dead = grant(&mut c, 2).await;
        within(
            PROMPT,
            "first lock",
            c.lock("expiring", Some(LockOptions::new().with_lease(dead))),
        )
        .await
        .unwrap();
        let locked_at = Instant::now();
        let alive = grant(&mut c, 10).await;
        let (mut keeper, mut acks) = c.lease_keep_alive(alive).await.unwrap();
        let keep = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() || acks.message().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let second = spawn_lock(&c, "expiring", alive);
        let (key, _) = within(
            Duration::from_secs(2 + 2),
            "lock after the holder's lease expired",
            second,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(key, session_key("expiring", alive).as_bytes());
        assert!(
            locked_at.elapsed() <= Duration::from_secs(4),
            "acquired {:?} after the first lock",
            locked_at.elapsed()
        );
        assert!(
            exists(&mut c, &key).await,
            "the kept-alive holder keeps its key"
        );
        keep.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_removes_its_key() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
        let first = within(
            PROMPT,
            "first lock",
            c.lock("patience", Some(LockOptions::new().with_lease(l1))),
        )
        .await
        .unwrap();
        let waiter_key = session_key("patience", l2);
        let gave_up = tokio::time::timeout(
            STAYS_BLOCKED,
            c.lock("patience", Some(LockOptions::new().with_lease(l2))),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "the waiter must still be waiting when it gives up"
        );
        // The cancelled waiter's claim is deleted, so it cannot block anyone later.
        wait_gone(&mut c, waiter_key.as_bytes()).await;
        assert!(
            exists(&mut c, first.key()).await,
            "the holder keeps the lock"
        );
    })
    .await;
}

/// The leader key of a campaign response.
fn leader_of(resp: &etcd_client::CampaignResponse) -> LeaderKey {
    resp.leader()
        .expect("campaign response has a leader")
        .clone()
}

/// The current leader's (key, value), bounded in time.
async fn leader_value(c: &mut Client, name: &str) -> (String, String) {
    let resp = within(PROMPT, "leader", c.leader(name)).await.unwrap();
    let kv = resp.kv().expect("leader kv");
    (
        kv.key_str().unwrap().to_string(),
        kv.value_str().unwrap().to_string(),
    )
}

/// The next (key, value) an Observe stream reports, bounded in time.
async fn observed(stream: &mut etcd_client::ObserveStream) -> (String, String) {
    let resp = within(PROMPT, "observe", stream.message())
        .await
        .unwrap()
        .expect("observe stream open");
    let kv = resp.kv().expect("observed kv");
    (
        kv.key_str().unwrap().to_string(),
        kv.value_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_leader_proclaim_observe_resign() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
        let won = within(PROMPT, "campaign", c.campaign("el", "v1", l1))
            .await
            .unwrap();
        let leader1 = leader_of(&won);
        let key1 = session_key("el", l1);
        assert_eq!(
            (leader1.name(), leader1.key(), leader1.lease()),
            (&b"el"[..], key1.as_bytes(), l1)
        );
        assert_eq!(
            leader1.rev(),
            won.header().unwrap().revision(),
            "rev is the key's create revision"
        );
        assert_eq!(
            leader_value(&mut c, "el").await,
            (key1.clone(), "v1".into())
        );

        let mut observer = within(PROMPT, "observe", c.observe("el")).await.unwrap();
        assert_eq!(
            observed(&mut observer).await,
            (key1.clone(), "v1".into()),
            "observe starts with the leader"
        );
        c.proclaim(
            "v1b",
            Some(ProclaimOptions::new().with_leader(leader1.clone())),
        )
        .await
        .unwrap();
        assert_eq!(observed(&mut observer).await, (key1.clone(), "v1b".into()));
        assert_eq!(
            leader_value(&mut c, "el").await,
            (key1.clone(), "v1b".into())
        );

        let mut c2 = c.clone();
        let mut second = tokio::spawn(async move { c2.campaign("el", "v2", l2).await });
        assert_blocked(&mut second, "second candidate").await;
        c.resign(Some(ResignOptions::new().with_leader(leader1.clone())))
            .await
            .unwrap();
        let leader2 = leader_of(
            &within(PROMPT, "second campaign", second)
                .await
                .unwrap()
                .unwrap(),
        );
        let key2 = session_key("el", l2);
        assert_eq!(leader2.key(), key2.as_bytes());
        assert_eq!(
            observed(&mut observer).await,
            (key2.clone(), "v2".into()),
            "observe follows the new leader"
        );

        // The old leader's claim is gone: proclaiming on it fails, resigning is a no-op.
        let err = expect_status(
            c.proclaim(
                "stale",
                Some(ProclaimOptions::new().with_leader(leader1.clone())),
            )
            .await,
        );
        assert_eq!(
            err,
            ("Unknown".to_string(), "election: not leader".to_string())
        );
        c.resign(Some(ResignOptions::new().with_leader(leader1)))
            .await
            .unwrap();
        assert_eq!(
            leader_value(&mut c, "el").await,
            (key2.clone(), "v2".into())
        );
        c.resign(Some(ResignOptions::new().with_leader(leader2)))
            .await
            .unwrap();
        let err = expect_status(c.leader("el").await);
        assert_eq!(
            err,
            ("Unknown".to_string(), "election: no leader".to_string())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_edge_cases() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let err = expect_status(c.leader("nobody").await);
        assert_eq!(
            err,
            ("Unknown".to_string(), "election: no leader".to_string())
        );
        let err = expect_status(c.proclaim("x", None).await);
        assert_eq!(
            err,
            (
                "Unknown".to_string(),
                "\"leader\" field must be provided".to_string()
            )
        );
        let err = expect_status(c.resign(None).await);
        assert_eq!(
            err,
            (
                "Unknown".to_string(),
                "\"leader\" field must be provided".to_string()
            )
        );
        let err = expect_status(c.campaign("el", "v", 0x4321).await);
        assert_eq!(
            err,
            (
                "Unknown".to_string(),
                "etcdserver: requested lease not found".to_string()
            )
        );

        // Campaigning again with the same lease keeps the claim and proclaims the new value.
        let l1 = grant(&mut c, 30).await;
        let first = leader_of(
            &within(PROMPT, "campaign", c.campaign("re", "a", l1))
                .await
                .unwrap(),
        );
        c.put("unrelated", "bump", None).await.unwrap();
        let again = leader_of(
            &within(PROMPT, "re-campaign", c.campaign("re", "b", l1))
                .await
                .unwrap(),
        );
        assert_eq!((again.key(), again.rev()), (first.key(), first.rev()));
        assert_eq!(leader_value(&mut c, "re").await.1, "b");

        // Proclaim runs on a session for the leader key's lease: lease 0 gets a fresh one,
        // and the proclaimed value is attached to it.
        let no_lease = again.clone().with_lease(0);
        c.proclaim("c", Some(ProclaimOptions::new().with_leader(no_lease)))
            .await
            .unwrap();
        let kv = c.get(again.key(), None).await.unwrap().kvs()[0].clone();
        assert_eq!(kv.value(), b"c");
        assert!(
            kv.lease() != 0 && kv.lease() != l1,
            "proclaimed on a new session lease, got {:x}",
            kv.lease()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_waits_for_the_first_leader() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        // etcd sends Observe's response headers only with its first message: open it in a task.
        let mut c2 = c.clone();
        let observer = tokio::spawn(async move {
            let mut stream = c2.observe("later").await.unwrap();
            observed(&mut stream).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let l1 = grant(&mut c, 30).await;
        within(PROMPT, "campaign", c.campaign("later", "first", l1))
            .await
            .unwrap();
        let seen = within(PROMPT, "observer", observer).await.unwrap();
        assert_eq!(seen, (session_key("later", l1), "first".into()));
    })
    .await;
}

/// etcdctl running until killed, its stdout read line by line in a thread.
struct Held {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Held {
    fn start(endpoint: &str, args: &[&str]) -> Held {
        let mut cmd = Command::new(etcdctl_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Held { child, lines }
    }

    #[track_caller]
    fn line(&self) -> String {
        self.lines
            .recv_timeout(ETCDCTL_TIMEOUT)
            .expect("etcdctl printed a line in time")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Killed by its own PID; reaped so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lease ID in a session key `name/<hex>`.
fn lease_of(key: &str) -> i64 {
    let hex = key.rsplit('/').next().unwrap();
    i64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("no lease in {key:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holds_until_killed() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let held = Held::start(&s.endpoint(), &["lock", "mylock"]);
        let key = tokio::task::block_in_place(|| held.line());
        assert!(
            key.starts_with("mylock/"),
            "etcdctl lock prints its key, got {key:?}"
        );
        // etcdctl's client-side mutex and the Lock service share one key layout.
        let l = grant(&mut c, 30).await;
        let mut blocked = spawn_lock(&c, "mylock", l);
        assert_blocked(&mut blocked, "Lock while etcdctl holds the lock").await;
        drop(held);
        // A killed etcdctl leaves its session lease to expire (60 s): revoke it instead.
        c.lease_revoke(lease_of(&key)).await.unwrap();
        let (got, _) = within(PROMPT, "lock after etcdctl is gone", blocked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, session_key("mylock", l).as_bytes());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_holds_until_killed() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let held = Held::start(&s.endpoint(), &["elect", "myelection", "p1"]);
        let (key, value) = tokio::task::block_in_place(|| (held.line(), held.line()));
        assert!(
            key.starts_with("myelection/"),
            "etcdctl elect prints its key, got {key:?}"
        );
        assert_eq!(value, "p1");
        assert_eq!(
            leader_value(&mut c, "myelection").await,
            (key.clone(), "p1".into())
        );
        let observer = Held::start(&s.endpoint(), &["elect", "--listen", "myelection"]);
        let seen = tokio::task::block_in_place(|| (observer.line(), observer.line()));
        assert_eq!(seen, (key.clone(), "p1".into()));
        drop((held, observer));
        c.lease_revoke(lease_of(&key)).await.unwrap();
        let err = expect_status(c.leader("myelection").await);
        assert_eq!(err.1, "election: no leader");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_queue_in_order_and_one_leaving_does_not_jump_it() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let leases = [
            grant(&mut c, 30).await,
            grant(&mut c, 30).await,
            grant(&mut c, 30).await,
            grant(&mut c, 30).await,
        ];
        let first = within(
            PROMPT,
            "first lock",
            c.lock("q", Some(LockOptions::new().with_lease(leases[0]))),
        )
        .await
        .unwrap();
        let mut second = spawn_lock(&c, "q", leases[1]);
        assert_blocked(&mut second, "second").await;
        // The third waits on the one ahead of it; when that one leaves it looks again and
        // finds the holder still there.
        let gave_up = tokio::time::timeout(
            STAYS_BLOCKED,
            c.lock("q", Some(LockOptions::new().with_lease(leases[2]))),
        )
        .await;
        assert!(gave_up.is_err());
        let mut fourth = spawn_lock(&c, "q", leases[3]);
        assert_blocked(&mut fourth, "fourth").await;
        wait_gone(&mut c, session_key("q", leases[2]).as_bytes()).await;
        assert_blocked(&mut fourth, "fourth after the third left").await;

        let unlocked = c
            .unlock(first.key())
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let (key2, rev2) = within(PROMPT, "second", second).await.unwrap().unwrap();
        assert_eq!(key2, session_key("q", leases[1]).as_bytes());
        assert_eq!(
            rev2, unlocked,
            "the waiter's header is that of its look after the unlock"
        );
        assert_blocked(&mut fourth, "fourth while the second holds").await;
        c.unlock(key2).await.unwrap();
        let (key4, _) = within(PROMPT, "fourth", fourth).await.unwrap().unwrap();
        assert_eq!(key4, session_key("q", leases[3]).as_bytes());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_headers_follow_the_writes() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let l1 = grant(&mut c, 30).await;
        let leader = leader_of(
            &within(PROMPT, "campaign", c.campaign("h", "a", l1))
                .await
                .unwrap(),
        );
        let mut observer = within(PROMPT, "observe", c.observe("h")).await.unwrap();
        let first = within(PROMPT, "observe", observer.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            first.header().unwrap().revision(),
            leader.rev(),
            "observe starts with a read at the current revision"
        );
        c.put("noise", "x", None).await.unwrap();
        let proclaimed = c
            .proclaim(
                "b",
                Some(ProclaimOptions::new().with_leader(leader.clone())),
            )
            .await
            .unwrap();
        let at = proclaimed.header().unwrap().revision();
        assert_eq!(at, leader.rev() + 2);
        let update = within(PROMPT, "observe", observer.message())
            .await
            .unwrap()
            .unwrap();
        let kv = update.kv().unwrap();
        assert_eq!(
            (
                kv.value(),
                kv.mod_revision(),
                kv.create_revision(),
                kv.version()
            ),
            (&b"b"[..], at, leader.rev(), 2)
        );
        assert_eq!(update.header().unwrap().revision(), at);
        let leader_resp = c.leader("h").await.unwrap();
        assert_eq!(leader_resp.header().unwrap().revision(), at);
        let resigned = c
            .resign(Some(ResignOptions::new().with_leader(leader.clone())))
            .await
            .unwrap();
        assert_eq!(
            resigned.header().unwrap().revision(),
            at + 1,
            "resign deletes the key"
        );
        let stale = c
            .resign(Some(ResignOptions::new().with_leader(leader)))
            .await
            .unwrap();
        assert_eq!(
            stale.header().unwrap().revision(),
            at + 1,
            "a stale resign changes nothing"
        );
        let unlocked = c.unlock("no/such/key").await.unwrap();
        assert_eq!(
            unlocked.header().unwrap().revision(),
            at + 1,
            "unlocking a missing key changes nothing"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_without_a_lease_and_a_candidate_that_gives_up() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let won = within(PROMPT, "campaign", c.campaign("nl", "v", 0))
            .await
            .unwrap();
        let leader = leader_of(&won);
        assert_ne!(leader.lease(), 0, "the server grants a session lease");
        assert_eq!(leader.key(), session_key("nl", leader.lease()).as_bytes());
        assert_eq!(
            c.lease_time_to_live(leader.lease(), None)
                .await
                .unwrap()
                .granted_ttl(),
            60
        );
        let l2 = grant(&mut c, 30).await;
        let gave_up = tokio::time::timeout(STAYS_BLOCKED, c.campaign("nl", "w", l2)).await;
        assert!(
            gave_up.is_err(),
            "the candidate must still be waiting when it gives up"
        );
        wait_gone(&mut c, session_key("nl", l2).as_bytes()).await;
        assert_eq!(leader_value(&mut c, "nl").await.1, "v");
    })
    .await;
}

/// The server's count of watchers (etcd's debugging gauge, or corekv's).
fn watchers(s: &Server) -> i64 {
    let name = match s.kind {
        Kind::Etcd => "etcd_debugging_mvcc_watcher_total ",
        Kind::Corekv => "corekv_watchers ",
    };
    let text = http_get(&s.addr(), "/metrics")
        .expect("GET /metrics")
        .text();
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name}in /metrics"));
    line[name.len()..]
        .trim()
        .parse::<f64>()
        .expect("gauge value") as i64
}

/// Polls until `ok(watcher count)` holds, bounded by [`PROMPT`]. Each look follows a write:
/// corekv refreshes its gauge when it publishes a batch.
async fn wait_watchers(s: &Server, c: &mut Client, what: &str, ok: impl Fn(i64) -> bool) {
    let deadline = Instant::now() + PROMPT;
    loop {
        c.put("metrics-tick", "", None).await.unwrap();
        let n = tokio::task::block_in_place(|| watchers(s));
        if ok(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} watchers after {PROMPT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_end_leave_no_watcher_behind() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
        within(
            PROMPT,
            "lock",
            c.lock("w", Some(LockOptions::new().with_lease(l1))),
        )
        .await
        .unwrap();
        let gave_up = tokio::time::timeout(
            STAYS_BLOCKED,
            c.lock("w", Some(LockOptions::new().with_lease(l2))),
        )
        .await;
        assert!(gave_up.is_err());
        wait_watchers(s, &mut c, "after the waiter gave up", |n| n == 0).await;
        let mut observer = within(PROMPT, "observe", c.observe("w")).await.unwrap();
        within(PROMPT, "observe", observer.message())
            .await
            .unwrap()
            .unwrap();
        wait_watchers(s, &mut c, "while observing", |n| n > 0).await;
        drop(observer);
        wait_watchers(s, &mut c, "after the observer left", |n| n == 0).await;
    })
    .await;
}
