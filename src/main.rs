//! corekv: an etcd-compatible key-value server, thread-per-core.
//!
//! The write path, in file order: `shard.rs` (a core receives a request from its network
//! runtime) -> `sequencer.rs` (raft, WAL append + fdatasync, apply, publish) -> back to
//! the waiting request. `recovery.rs` rebuilds state on start; `config/` reads etcd's flags.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod cores;
mod lessor;
mod logger;
mod recovery;
mod sequencer;
mod shard;
mod store_writer;
mod watch;

use std::sync::Arc;

use config::{Action, Config};
use corekv_net::shard_api::{ClusterInfo, MemberInfo, ShardClient};
use corekv_raft::{NodeOptions, RaftNode};

/// Requests queued from a core's network runtime to its shard before handlers wait.
const SHARD_QUEUE_DEPTH_MAX: usize = 4096;
/// Publications queued to a shard before the sequencer waits for it.
const PUBLICATION_QUEUE_DEPTH_MAX: usize = 1024;
/// Raft entries kept in memory behind the applied index.
const RAFT_ENTRIES_KEPT_MAX: u64 = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Config::load(args, std::env::vars().collect()) {
        Ok(Action::Run(config)) => run(config),
        Ok(Action::Help(text)) => print!("{text}"),
        Ok(Action::Version) => println!("{}", config::version_text()),
        Err(err) => {
            eprintln!("corekv: {err}");
            std::process::exit(2);
        }
    }
}

fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
    log::error!("{what}: {err}");
    eprintln!("corekv: {what}: {err}");
    std::process::exit(1);
}

fn run(config: Config) {
    logger::init(config.log_level.to_log_filter());
    let signals = block_termination_signals();
    let identity = recovery::Identity {
        member_id: config.member_id(),
        cluster_id: config.cluster_id(),
        name: config.name.clone(),
    };
    let recovered = recovery::open(&config.data_dir, identity)
        .unwrap_or_else(|e| fatal("cannot open data dir", e));
    let cluster = Arc::new(cluster_info(&config, &recovered.identity));

    let cpus = cores::allowed_cpus();
    let cpus: Vec<usize> = cpus.into_iter().take(config.cores).collect();
    let listeners = bind_all(&config, cpus.len());

    let heartbeat_ms = config.heartbeat_interval_ms;
    let raft = RaftNode::new(
        NodeOptions {
            id: recovered.identity.member_id,
            heartbeat_ticks: 1,
            election_ticks: (config.election_timeout_ms / heartbeat_ms).max(2) as usize,
            entries_kept_max: RAFT_ENTRIES_KEPT_MAX,
        },
        recovered.raft.clone(),
    )
    .unwrap_or_else(|e| fatal("cannot start raft", e));

    let (seq_tx, seq_rx) = flume::bounded(sequencer::QUEUE_DEPTH_MAX);
    let initial = sequencer::Publication {
        seq: 0,
        view: recovered.store.view(),
        raft_term: recovered.raft.hard_state.term,
        events: Default::default(),
    };
    let mut publication_txs = Vec::new();
    let mut shard_clients = Vec::new();
    for (core, cpu) in cpus.iter().copied().enumerate() {
        let (pub_tx, pub_rx) = flume::bounded(PUBLICATION_QUEUE_DEPTH_MAX);
        let (req_tx, req_rx) = flume::bounded(SHARD_QUEUE_DEPTH_MAX);
        publication_txs.push(pub_tx);
        shard_clients.push(ShardClient::new(req_tx, cluster.clone()));
        let setup = shard::ShardSetup {
            core,
            cpu,
            requests: req_rx,
            publications: pub_rx,
            sequencer: seq_tx.clone(),
            initial: initial.clone(),
            max_request_bytes: config.max_request_bytes as usize,
        };
        if let Err(err) = shard::spawn(setup) {
            fatal("cannot start shard executor (glommio)", err);
        }
    }
    drop(seq_tx);

    let size_gauge = cluster.backend_size_bytes.clone();
    let store_link = store_writer::spawn(
        recovered.backend,
        recovered.backend_index,
        cpus[cpus.len() - 1],
        size_gauge,
    )
    .unwrap_or_else(|e| fatal("cannot start the revision store writer", e));
    let seq = sequencer::Sequencer::new(
        raft,
        recovered.wal,
        recovered.store,
        recovered.raft.applied,
        seq_rx,
        publication_txs,
        heartbeat_ms,
    )
    .with_lease_options(sequencer::LeaseOptions::for_election_timeout(
        config.election_timeout_ms,
        std::time::Duration::from_millis(config.lease_checkpoint_interval_ms),
    ))
    .with_store_writer(store_link, recovered.segment_last_index)
    .with_auto_compaction(config.auto_compaction());
    let sequencer_cpu = cpus[0];
    std::thread::Builder::new()
        .name("sequencer".into())
        .spawn(move || {
            let _ = cores::pin_current_thread(sequencer_cpu);
            seq.run();
        })
        .unwrap_or_else(|e| fatal("cannot start sequencer", e));

    for ((core, cpu), (client, core_listeners)) in cpus
        .iter()
        .copied()
        .enumerate()
        .zip(shard_clients.into_iter().zip(listeners))
    {
        spawn_network(core, cpu, client, core_listeners);
    }
    let urls: Vec<String> = config
        .listen_client_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    log::info!(
        "ready to serve client requests on {} with {} cores (member {:x}, cluster {:x})",
        urls.join(","),
        cpus.len(),
        cluster.member_id,
        cluster.cluster_id
    );
    wait_for_termination(signals);
}

fn cluster_info(config: &Config, identity: &recovery::Identity) -> ClusterInfo {
    let member = MemberInfo {
        id: identity.member_id,
        name: identity.name.clone(),
        peer_urls: config
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.to_string())
            .collect(),
        client_urls: config
            .advertise_client_urls
            .iter()
            .map(|u| u.to_string())
            .collect(),
    };
    ClusterInfo {
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        members: vec![member],
        max_request_bytes: config.max_request_bytes as usize,
        max_txn_ops: config.max_txn_ops as usize,
        quota_backend_bytes: config.quota_backend_bytes,
        backend_size_bytes: Default::default(),
    }
}

/// What a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Port {
    /// gRPC and HTTP (--listen-client-urls).
    Client,
    /// HTTP only (--listen-metrics-urls).
    Metrics,
    /// The binary protocol (--listen-binary-urls, docs/protocol.md).
    Binary,
}

/// What each core listens on.
type CoreListeners = Vec<(std::net::TcpListener, Port)>;

/// Binds every client, metrics and binary-protocol URL once per core (SO_REUSEPORT); fails
/// fast on conflicts, except for a binary URL that is only the derived default (a port next
/// to the client port that something else holds): that one is skipped with a warning.
fn bind_all(config: &Config, cores: usize) -> Vec<CoreListeners> {
    let mut all: Vec<CoreListeners> = (0..cores).map(|_| Vec::new()).collect();
    for (urls, port) in [
        (&config.listen_client_urls, Port::Client),
        (&config.listen_metrics_urls, Port::Metrics),
        (&config.listen_binary_urls, Port::Binary),
    ] {
        for url in urls.iter() {
            for (core, mine) in all.iter_mut().enumerate() {
                match corekv_net::serve::bind_reuseport(&url.socket_addr_string()) {
                    Ok(listener) => mine.push((listener, port)),
                    // (Skipped on the first core only: once bound there, the port is ours.)
                    Err(e)
                        if port == Port::Binary
                            && config.listen_binary_urls_derived
                            && core == 0 =>
                    {
                        log::warn!(
                            "not serving the binary protocol on {url} (the default next to the \
                             client port): {e}; set --listen-binary-urls to choose its port"
                        );
                        break;
                    }
                    Err(e) => fatal(&format!("cannot listen on {url}"), e),
                }
            }
        }
    }
    all
}

fn spawn_network(core: usize, cpu: usize, client: ShardClient, listeners: CoreListeners) {
    std::thread::Builder::new()
        .name(format!("net-{core}"))
        .spawn(move || {
            if let Err(err) = cores::pin_current_thread(cpu) {
                log::warn!("cannot pin network thread {core} to cpu {cpu}: {err}");
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| fatal("cannot start network runtime", e));
            let (binary, http): (Vec<_>, Vec<_>) = listeners
                .into_iter()
                .partition(|(_, port)| *port == Port::Binary);
            let served: Vec<_> = http
                .into_iter()
                .map(|(listener, port)| {
                    let router = if port == Port::Client {
                        corekv_net::serve::client_router(client.clone())
                    } else {
                        corekv_net::serve::metrics_router(client.clone())
                    };
                    (listener, router)
                })
                .collect();
            let binary = binary.into_iter().map(|(listener, _)| listener).collect();
            let both = async {
                let binary = corekv_net::binary::serve(binary, client.clone());
                tokio::try_join!(corekv_net::serve::serve(served), binary)
            };
            if let Err(err) = runtime.block_on(both) {
                fatal("network runtime failed", err);
            }
        })
        .unwrap_or_else(|e| fatal("cannot start network thread", e));
}

/// Blocks SIGINT/SIGTERM in this thread before any other starts, so every thread inherits
/// the mask and the main thread alone receives them (with sigwait).
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed, then initialised, sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_termination(set: libc::sigset_t) {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_termination_signals.
    unsafe { libc::sigwait(&set, &mut signal) };
    // Every acknowledged write is already durable, so stopping needs no flush.
    log::info!("received signal {signal}, shutting down");
    std::process::exit(0);
}
