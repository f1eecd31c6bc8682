//! corekv: an etcd-compatible key-value server, thread-per-core.
//!
//! The write path, in file order: the core's network runtime decodes a request
//! (`net/src/grpc`, `net/src/binary`) and sends it through `net/src/shard_api.rs` to
//! `sequencer.rs` (raft, WAL append + fdatasync, apply, publish the new view) -> back to
//! the waiting request. `shard.rs` fans each batch's events out to the core's watchers.
//! `recovery.rs` rebuilds state on start; `config/` reads etcd's flags.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter (linked through the `mimalloc` crate).
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    /// mimalloc's collector: with `force`, frees and purges what it holds but no longer uses.
    fn mi_collect(force: bool);
}
/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e`: 15 in both the v2 and the v3
/// headers libmimalloc-sys bundles.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;
/// How long freed memory stays with mimalloc before it goes back to the OS. The default
/// (10 ms) handed back, and then faulted in and zeroed again, the pages of every batch's
/// replaced tree nodes: under txn-put 4/16, 500 ms gave 16.1-16.4k req/s vs 14.1-15.4k
/// and ~15% less server CPU. MIMALLOC_PURGE_DELAY in the environment still wins.
const PURGE_DELAY_MS: libc::c_long = 500;

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it at each purge decision.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Hands back to the OS what loading the data dir freed. mimalloc purges freed memory
/// only when a thread allocates or frees again, and the thread that loaded the store goes
/// quiet after start: without this, ~100 MiB of a 1,000,000-key load's temporary memory
/// stayed resident.
fn release_startup_memory() {
    // SAFETY: mi_collect takes no pointers; it only walks mimalloc's own structures.
    unsafe { mi_collect(true) };
}

/// Lets mimalloc hand back what this thread freed and no longer uses (after the purge
/// delay), as it would on the thread's next allocation. Threads call this when they go
/// idle: a thread that stops allocating after a burst (a network thread after its clients
/// leave, the store writer between commits, the sequencer without proposals) otherwise
/// keeps those pages resident until it is busy again.
pub(crate) fn release_idle_memory() {
    // SAFETY: mi_collect takes no pointers; it only walks this thread's mimalloc heap.
    unsafe { mi_collect(false) };
}

mod config;
mod cores;
mod discovery;
mod lessor;
mod logger;
mod proxy;
mod recovery;
mod sequencer;
mod shard;
mod srv;
mod store_writer;
mod watch;

use std::sync::Arc;

use config::{Action, Config};
use corekv_net::auth::{AuthGate, AuthOptions, TokenOptions};
use corekv_net::shard_api::{ClusterInfo, MemberInfo, ShardClient};
use corekv_raft::{NodeOptions, RaftNode};

/// How often a network thread drops its cached view (see `forget_cached_view`).
const VIEW_CACHE_FORGET_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Requests queued from a core's network runtime to its shard before handlers wait.
const SHARD_QUEUE_DEPTH_MAX: usize = 4096;
/// Publications queued to a shard before the sequencer waits for it.
const PUBLICATION_QUEUE_DEPTH_MAX: usize = 1024;
/// Raft entries kept in memory behind the applied index.
const RAFT_ENTRIES_KEPT_MAX: u64 = 10_000;

fn main() {
    tune_allocator();
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
    let peer_tls = peer_tls(&config);
    let recovered = match recovery::open(&config.data_dir, identity.clone(), || {
        bootstrap_plan(&config, identity, peer_tls.as_ref())
    }) {
        Ok(recovered) => recovered,
        Err(e) if PROXY_FALLBACK.get().is_some() => {
            return run_proxy(&config, &e, peer_tls, signals)
        }
        Err(e) => fatal("cannot open data dir", e),
    };
    release_startup_memory();
    let auth = auth_gate(&config, &recovered.store);
    let cluster = Arc::new(cluster_info(&config, &recovered.identity, auth));
    let client_tls = client_tls(&config);

    let cpus = cores::allowed_cpus();
    let cpus: Vec<usize> = cpus.into_iter().take(config.cores).collect();
    let listeners = bind_all(&config, cpus.len());

    let heartbeat_ms = config.heartbeat_interval_ms;
    let raft = RaftNode::new(
        NodeOptions {
            id: recovered.identity.member_id,
            heartbeat_ticks: 1,
            election_ticks: (config.election_timeout_ms / heartbeat_ms).max(2) as usize,
            entries_kept_max: config.snapshot_count.clamp(4, RAFT_ENTRIES_KEPT_MAX),
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
        resync: false,
    };
    let latest = std::sync::Arc::new(corekv_net::sequencer_api::LatestView::new(
        initial.view.clone(),
        initial.raft_term,
    ));
    let mut publication_txs = Vec::new();
    let mut shard_clients = Vec::new();
    for (core, cpu) in cpus.iter().copied().enumerate() {
        let (pub_tx, pub_rx) = flume::bounded(PUBLICATION_QUEUE_DEPTH_MAX);
        let (req_tx, req_rx) = flume::bounded(SHARD_QUEUE_DEPTH_MAX);
        let streams_open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        publication_txs.push((pub_tx, streams_open.clone()));
        shard_clients.push(ShardClient::new(
            req_tx,
            seq_tx.clone(),
            latest.clone(),
            cluster.clone(),
        ));
        let setup = shard::ShardSetup {
            core,
            cpu,
            requests: req_rx,
            publications: pub_rx,
            streams_open,
            latest: latest.clone(),
            initial: initial.clone(),
            max_request_bytes: config.max_request_bytes as usize,
        };
        if let Err(err) = shard::spawn(setup) {
            fatal("cannot start shard executor (glommio)", err);
        }
    }
    let peers = start_peers(&config, &recovered, seq_tx.clone(), peer_tls);
    drop(seq_tx);

    let sequencer_cpu = choose_sequencer_cpu(&config, &cpus);
    let size_gauge = cluster.backend_size_bytes.clone();
    let store_link = store_writer::spawn(
        recovered.backend,
        recovered.backend_index,
        // Off the sequencer's CPU when there is another: its commits are long and not on
        // any request's path.
        cpus.iter()
            .rev()
            .copied()
            .find(|cpu| *cpu != sequencer_cpu)
            .unwrap_or(sequencer_cpu),
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
        latest,
        heartbeat_ms,
    )
    .with_lease_options(sequencer::LeaseOptions::for_election_timeout(
        config.election_timeout_ms,
        std::time::Duration::from_millis(config.lease_checkpoint_interval_ms),
    ))
    .with_size_gauge(cluster.backend_size_bytes.clone())
    .with_store_writer(store_link, recovered.segment_last_index)
    .with_auto_compaction(config.auto_compaction())
    .with_request_timeout(std::time::Duration::from_millis(
        5_000 + 2 * config.election_timeout_ms,
    ))
    .reapply_conf_changes(recovered.conf_changes_to_reapply)
    .with_peers(
        peers,
        sequencer::SelfAttributes {
            name: config.name.clone(),
            client_urls: config
                .advertise_client_urls
                .iter()
                .map(|u| u.to_string())
                .collect(),
        },
    );
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
        spawn_network(core, cpu, client, core_listeners, client_tls.clone());
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

/// Set when discovery found the cluster full and --discovery-fallback=proxy: the process
/// becomes a proxy instead of a member.
static PROXY_FALLBACK: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Proxy mode (see `proxy.rs`): forwards client connections to the discovered cluster.
fn run_proxy(
    config: &Config,
    why: &str,
    peer_tls: Option<corekv_net::peer::PeerTls>,
    signals: libc::sigset_t,
) {
    log::info!("{why}; discovery cluster full, falling back to proxy");
    let cluster = discovery::registered_cluster(&config.discovery.url, &config.discovery.proxy)
        .unwrap_or_else(|e| fatal("proxy: cannot read the cluster from discovery", e));
    let peer_urls = Config::parse_initial_cluster(&cluster)
        .unwrap_or_else(|e| fatal("proxy: bad cluster in discovery", e))
        .into_iter()
        .map(|(_, u)| u.to_string())
        .collect();
    let options = proxy::ProxyOptions {
        listen: config
            .listen_client_urls
            .iter()
            .map(|u| u.socket_addr_string())
            .collect(),
        peer_urls,
        refresh_interval: std::time::Duration::from_millis(
            config.discovery.proxy_refresh_interval_ms,
        ),
        dial_timeout: std::time::Duration::from_millis(config.discovery.proxy_dial_timeout_ms),
        failure_wait: std::time::Duration::from_millis(config.discovery.proxy_failure_wait_ms),
        peer_tls,
    };
    // The proxy runs on its own thread; this one waits for SIGINT/SIGTERM, as a member does.
    std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || {
            if let Err(e) = proxy::run(options) {
                fatal("proxy failed", e);
            }
        })
        .unwrap_or_else(|e| fatal("cannot start the proxy", e));
    wait_for_termination(signals);
}

/// How a member with no data yet starts: a new cluster's member derives the membership
/// from --initial-cluster; a member joining a running cluster asks its peers for it and
/// finds itself there by its advertised peer URLs (it must have been added first).
fn bootstrap_plan(
    config: &Config,
    mut identity: recovery::Identity,
    peer_tls: Option<&corekv_net::peer::PeerTls>,
) -> Result<(recovery::Identity, recovery::Bootstrap), String> {
    let mut discovered = config.clone();
    if !config.discovery.srv.is_empty() {
        discovered.initial_cluster = srv_cluster(config);
        let urls = discovered.peer_urls_of(&config.name);
        identity.member_id = config::member_id_of(&urls, &config.initial_cluster_token);
        identity.cluster_id = discovered.cluster_id();
    }
    let config = &discovered;
    if config.initial_cluster_state == config::ClusterState::New {
        let mut discovered = config.clone();
        if !config.discovery.url.is_empty() {
            let self_config: Vec<String> = config
                .initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={u}", config.name))
                .collect();
            let found = discovery::join(
                &config.discovery.url,
                &config.discovery.proxy,
                identity.member_id,
                &self_config.join(","),
            )
            .inspect_err(|e| {
                if e.contains("cluster is full") && config.discovery.fallback == "proxy" {
                    let _ = PROXY_FALLBACK.set(());
                }
            })?;
            log::info!("discovery: the cluster is {found}");
            discovered.initial_cluster = Config::parse_initial_cluster(&found)?;
            identity.cluster_id = discovered.cluster_id();
        }
        let config = &discovered;
        let members = config
            .member_names()
            .iter()
            .map(|name| {
                let urls = config.peer_urls_of(name);
                corekv_engine::membership::Member {
                    id: config::member_id_of(&urls, &config.initial_cluster_token),
                    name: name.to_string(),
                    peer_urls: urls.iter().map(|u| u.to_string()).collect(),
                    client_urls: Vec::new(),
                    is_learner: false,
                }
            })
            .collect();
        return Ok((identity, recovery::Bootstrap::New { members }));
    }
    let mine: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    // This member's own entries are skipped by name too: DNS discovery lists it under the
    // SRV target's host name, which need not be the advertised one.
    let others: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != config.name)
        .map(|(_, u)| u.to_string())
        .filter(|u| !mine.contains(u))
        .collect();
    let (cluster_id, members) =
        corekv_net::peer::query_membership(&others, std::time::Duration::from_secs(5), peer_tls)
            .map_err(|e| format!("cannot fetch the cluster's membership from its members ({e})"))?;
    let me = members
        .iter()
        .find(|m| {
            let mut a = m.peer_urls.clone();
            let mut b = mine.clone();
            a.sort();
            b.sort();
            a == b
        })
        .ok_or_else(|| {
            format!(
                "no member of cluster {cluster_id:x} has this member's peer URLs ({}); add it first \
                 (etcdctl member add {} --peer-urls={})",
                mine.join(","),
                config.name,
                mine.join(",")
            )
        })?;
    let my_id = me.id;
    log::info!(
        "joining cluster {cluster_id:x} as member {my_id:x} ({} members)",
        members.len()
    );
    identity.member_id = my_id;
    identity.cluster_id = cluster_id;
    Ok((identity, recovery::Bootstrap::Join { members }))
}

/// The initial cluster from DNS SRV records (--discovery-srv), checked against this
/// member's advertised peer URLs; a member that cannot bootstrap this way exits, as etcd.
fn srv_cluster(config: &Config) -> Vec<(String, config::Url)> {
    let resolver = corekv_dns::Resolver::from_system()
        .unwrap_or_else(|e| fatal("error setting up initial cluster", e));
    let found = srv::initial_cluster(config, &resolver)
        .unwrap_or_else(|e| fatal("error setting up initial cluster", e));
    let mut discovered = config.clone();
    discovered.initial_cluster = found;
    if let Err(e) = discovered.verify_bootstrap() {
        fatal("the initial cluster from DNS does not fit this member", e);
    }
    discovered.initial_cluster
}

/// Peer TLS when the peer URLs are https: the --peer-cert-file/--peer-key-file pair, or a
/// self-signed certificate with --peer-auto-tls (peers' certificates then go unverified
/// unless --peer-trusted-ca-file names their CA, as in etcd).
fn peer_tls(config: &Config) -> Option<corekv_net::peer::PeerTls> {
    let https = |u: &config::Url| u.scheme == config::Scheme::Https;
    let any_https = config
        .listen_peer_urls
        .iter()
        .chain(&config.initial_advertise_peer_urls)
        .any(https);
    if !any_https {
        return None;
    }
    let tls = &config.peer_tls;
    let urls = config
        .listen_peer_urls
        .iter()
        .chain(&config.initial_advertise_peer_urls);
    let (cert, key) = cert_and_key(tls, urls, "--peer-auto-tls", "peers get");
    let ca = tls.trusted_ca_file.as_ref().map(|p| read_file(p));
    let peer = corekv_net::peer::PeerTls::new(&cert, &key, ca.as_deref(), tls.client_cert_auth)
        .unwrap_or_else(|e| fatal("cannot set up peer TLS", e));
    Some(peer)
}

/// Starts the peer transport on --listen-peer-urls.
fn start_peers(
    config: &Config,
    recovered: &recovery::Recovered,
    sequencer: flume::Sender<sequencer::SequencerMsg>,
    tls: Option<corekv_net::peer::PeerTls>,
) -> Option<corekv_net::peer::PeerTransport> {
    let settings = corekv_net::peer::PeerSettings {
        local_id: recovered.identity.member_id,
        cluster_id: recovered.identity.cluster_id,
        listen: config
            .listen_peer_urls
            .iter()
            .map(|u| u.socket_addr_string())
            .collect(),
        snapshot_dir: recovery::db_path(&config.data_dir)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default(),
        snapshot_bytes_max: config.quota_backend_bytes.max(1 << 30).saturating_mul(2),
        tls,
    };
    let deliver: corekv_net::peer::Deliver = std::sync::Arc::new(move |event| {
        sequencer
            .try_send(sequencer::SequencerMsg::Peer(event))
            .is_ok()
    });
    match corekv_net::peer::PeerTransport::start(settings, deliver) {
        Ok(peers) => Some(peers),
        Err(err) => fatal("cannot listen on --listen-peer-urls", err),
    }
}

/// Tokens, password hashing and permission checks over the store's applied auth state.
fn auth_gate(config: &Config, store: &corekv_engine::mvcc::Store) -> Arc<AuthGate> {
    let simple_ttl = std::time::Duration::from_secs(config.auth_token_ttl_secs);
    let tokens = TokenOptions::parse(&config.auth_token, simple_ttl, |path| std::fs::read(path))
        .unwrap_or_else(|e| fatal("invalid --auth-token", e));
    let options = AuthOptions {
        tokens,
        bcrypt_cost: config.bcrypt_cost,
        client_cert_auth: config.client_tls.client_cert_auth,
    };
    let gate = AuthGate::new(store.auth_shared(), &options)
        .unwrap_or_else(|e| fatal("invalid auth settings", e));
    Arc::new(gate)
}

/// The certificate and key of `tls`: its files, or (--auto-tls / --peer-auto-tls, named by
/// `flag`) a self-signed certificate for the hosts of `urls`.
fn cert_and_key<'a>(
    tls: &config::TlsSettings,
    urls: impl Iterator<Item = &'a config::Url>,
    flag: &str,
    use_: &str,
) -> (Vec<u8>, Vec<u8>) {
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        return (read_file(cert), read_file(key));
    }
    let hosts: Vec<String> = urls.map(|u| u.host.clone()).collect();
    let (cert, key) = corekv_net::tls::self_signed(&hosts).unwrap_or_else(|e| fatal(flag, e));
    log::warn!("{flag}: {use_} a self-signed certificate for {hosts:?}");
    (cert.into_bytes(), key.into_bytes())
}

/// A file the configuration names; the process stops if it cannot be read.
fn read_file(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| fatal(&format!("cannot read {}", path.display()), e))
}

/// The TLS configuration of https client URLs (`None` when every client URL is http):
/// the certificate files, or a self-signed certificate with --auto-tls.
fn client_tls(config: &Config) -> Option<Arc<corekv_net::tls::TlsServerConfig>> {
    let https = |u: &config::Url| u.scheme == config::Scheme::Https;
    if !config.listen_client_urls.iter().any(https) {
        return None;
    }
    let tls = &config.client_tls;
    let urls = config
        .listen_client_urls
        .iter()
        .chain(&config.advertise_client_urls);
    let (cert, key) = cert_and_key(tls, urls, "--auto-tls", "serving");
    let ca = tls
        .trusted_ca_file
        .as_ref()
        .filter(|_| tls.client_cert_auth)
        .map(|p| read_file(p));
    let server = corekv_net::tls::server_config(&cert, &key, ca.as_deref())
        .unwrap_or_else(|e| fatal("cannot set up client TLS", e));
    Some(server)
}

fn cluster_info(
    config: &Config,
    identity: &recovery::Identity,
    auth: Arc<AuthGate>,
) -> ClusterInfo {
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
        auth,
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
/// (listener, what it serves, https?) per listen URL of a core.
type CoreListeners = Vec<(std::net::TcpListener, Port, bool)>;

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
                    Ok(listener) => {
                        mine.push((listener, port, url.scheme == config::Scheme::Https))
                    }
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

/// The CPU for the sequencer: `--sequencer-cpu` when given (it must be one of `cpus`), else
/// the CPU that takes the WAL disk's completion interrupts (every acknowledged write waits
/// for an fdatasync there; waking a thread on another CPU costs an inter-processor
/// interrupt, ~0.09 ms per fdatasync measured on virtio-blk), else the first.
fn choose_sequencer_cpu(config: &Config, cpus: &[usize]) -> usize {
    if let Some(cpu) = config.sequencer_cpu {
        if !cpus.contains(&cpu) {
            fatal(
                "bad --sequencer-cpu",
                format!("cpu {cpu} is not among the cpus this server runs on ({cpus:?})"),
            );
        }
        return cpu;
    }
    match cores::io_completion_cpu(&recovery::wal_dir(&config.data_dir)) {
        Some(cpu) if cpus.contains(&cpu) => {
            log::info!("sequencer on cpu {cpu}: the WAL disk's completion interrupts go there");
            cpu
        }
        _ => cpus[0],
    }
}

fn spawn_network(
    core: usize,
    cpu: usize,
    client: ShardClient,
    listeners: CoreListeners,
    tls: Option<Arc<corekv_net::tls::TlsServerConfig>>,
) {
    std::thread::Builder::new()
        .name(format!("net-{core}"))
        .spawn(move || {
            if let Err(err) = cores::pin_current_thread(cpu) {
                log::warn!("cannot pin network thread {core} to cpu {cpu}: {err}");
            }
            corekv_net::park::install();
            let answers = corekv_net::answer::AnswerInbox::install();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(corekv_net::park::poll_before_park)
                .build()
                .unwrap_or_else(|e| fatal("cannot start network runtime", e));
            let (binary, http): (Vec<_>, Vec<_>) = listeners
                .into_iter()
                .partition(|(_, port, _)| *port == Port::Binary);
            let served: Vec<_> = http
                .into_iter()
                .map(|(listener, port, https)| {
                    let router = if port == Port::Client {
                        corekv_net::serve::client_router(client.clone())
                    } else {
                        corekv_net::serve::metrics_router(client.clone())
                    };
                    (listener, router, tls.clone().filter(|_| https))
                })
                .collect();
            let binary = binary
                .into_iter()
                .map(|(listener, _, _)| listener)
                .collect();
            let both = async {
                // A network thread that stops reading must not pin an old view for good.
                tokio::spawn(async {
                    loop {
                        tokio::time::sleep(VIEW_CACHE_FORGET_INTERVAL).await;
                        corekv_net::sequencer_api::forget_cached_view();
                        release_idle_memory();
                    }
                });
                tokio::spawn(answers.deliver());
                let binary = corekv_net::binary::serve(binary, client.clone());
                tokio::try_join!(corekv_net::serve::serve_with_tls(served), binary)
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
