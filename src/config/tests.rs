//! Table-driven tests for command-line, environment and config-file handling.

use super::build::DEFAULT_QUOTA_BYTES;
use super::flags::FLAGS;
use super::*;
use std::path::{Path, PathBuf};

/// Online cores assumed by [`load`], so `--cores` checks do not depend on the machine.
const ONLINE: usize = 4;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Action, ConfigError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_cores(&args, &env, ONLINE, &fake_resolve)
}

/// Host names the tests' resolver knows; any other is "no such host" (tests never use DNS).
fn fake_resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    let ip = match host {
        "peer-a.test" | "also-a.test" => [10, 0, 0, 1],
        "peer-b.test" => [10, 0, 0, 2],
        _ => return Err(format!("lookup {host}: no such host")),
    };
    Ok((ip, port).into())
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
    match load(args, env) {
        Ok(Action::Run(config)) => config,
        other => panic!("{args:?} {env:?}: expected a config, got {other:?}"),
    }
}

fn error(args: &[&str], env: &[(&str, &str)]) -> String {
    match load(args, env) {
        Err(e) => e.to_string(),
        other => panic!("{args:?} {env:?}: expected an error, got {other:?}"),
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn join(urls: &[Url]) -> String {
    urls.iter()
        .map(Url::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn assert_contains(haystack: &str, needle: &str, context: &str) {
    assert!(
        haystack.contains(needle),
        "{context}: {haystack:?} does not contain {needle:?}"
    );
}

/// Captures log records of the current thread (tests run on their own threads).
mod capture {
    use std::cell::RefCell;
    use std::sync::Once;

    thread_local! {
        static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            LINES.with(|l| {
                l.borrow_mut()
                    .push(format!("{} {}", record.level(), record.args()))
            });
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;
    static INIT: Once = Once::new();

    /// Runs `f` and returns its result with the warnings it logged.
    pub fn warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
        INIT.call_once(|| {
            log::set_logger(&CAPTURE).expect("no other logger in the test binary");
            log::set_max_level(log::LevelFilter::Trace);
        });
        LINES.with(|l| l.borrow_mut().clear());
        let result = f();
        let lines = LINES.with(|l| l.take());
        (
            result,
            lines
                .into_iter()
                .filter(|l| l.starts_with("WARN"))
                .collect(),
        )
    }
}

/// A uniquely named file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "corekv-config-test-{}-{n}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp config file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_match_etcd() {
    let expected = Config {
        name: "default".into(),
        data_dir: PathBuf::from("default.corekv"),
        listen_client_urls: vec![url("http://localhost:2379")],
        advertise_client_urls: vec![url("http://localhost:2379")],
        listen_peer_urls: vec![url("http://localhost:2380")],
        initial_advertise_peer_urls: vec![url("http://localhost:2380")],
        initial_cluster: vec![("default".into(), url("http://localhost:2380"))],
        initial_cluster_state: ClusterState::New,
        initial_cluster_token: "etcd-cluster".into(),
        discovery: Discovery {
            fallback: "proxy".into(),
            proxy_failure_wait_ms: 5000,
            proxy_refresh_interval_ms: 30000,
            proxy_dial_timeout_ms: 1000,
            ..Default::default()
        },
        snapshot_count: 100_000,
        heartbeat_interval_ms: 100,
        election_timeout_ms: 1000,
        quota_backend_bytes: 2 * 1024 * 1024 * 1024,
        max_request_bytes: 1_572_864,
        max_txn_ops: 128,
        log_level: LogLevel::Info,
        listen_metrics_urls: vec![],
        // Port + 1 is the peer port with etcd's defaults: the next free one up.
        listen_binary_urls: vec![url("http://localhost:2381")],
        listen_binary_urls_derived: true,
        cores: ONLINE,
        sequencer_cpu: None,
        lease_checkpoint_interval_ms: 300_000,
        auto_compaction_mode: "periodic".into(),
        auto_compaction_retention: "0".into(),
        auto_compaction_revision_interval_ms: 300_000,
        auth_token: "simple".into(),
        auth_token_ttl_secs: 300,
        bcrypt_cost: 10,
        client_tls: TlsSettings::default(),
        peer_tls: TlsSettings::default(),
    };
    assert_eq!(run(&[], &[]), expected);
    assert_eq!(
        expected.auto_compaction(),
        None,
        "auto-compaction is off by default"
    );
    assert_eq!(DEFAULT_QUOTA_BYTES, 2_147_483_648);
}

#[test]
fn public_load_defaults_to_all_online_cores() {
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match Config::load(vec![], vec![]) {
        Ok(Action::Run(config)) => assert_eq!(config.cores, online),
        other => panic!("expected a config, got {other:?}"),
    }
}

type Getter = fn(&Config) -> String;

/// One sample value per flag (except --config-file), and how to read it back.
const SAMPLES: &[(&str, &str, Getter)] = &[
    ("name", "n9", |c| c.name.clone()),
    ("data-dir", "/var/lib/kv", |c| {
        c.data_dir.display().to_string()
    }),
    (
        "listen-client-urls",
        "http://10.0.0.1:1234,http://[::1]:99",
        |c| join(&c.listen_client_urls),
    ),
    (
        "advertise-client-urls",
        "https://kv.example.com:2379",
        |c| join(&c.advertise_client_urls),
    ),
    ("listen-peer-urls", "http://0.0.0.0:7001", |c| {
        join(&c.listen_peer_urls)
    }),
    (
        "initial-advertise-peer-urls",
        "http://127.0.0.1:7001",
        |c| join(&c.initial_advertise_peer_urls),
    ),
    ("initial-cluster", "default=http://localhost:2380", |c| {
        c.initial_cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",")
    }),
    ("initial-cluster-state", "new", |c| {
        format!("{:?}", c.initial_cluster_state).to_lowercase()
    }),
    ("initial-cluster-token", "tok-1", |c| {
        c.initial_cluster_token.clone()
    }),
    ("snapshot-count", "42", |c| c.snapshot_count.to_string()),
    (
        "discovery",
        "http://127.0.0.1:1/v2/keys/discovery/tok",
        |c| c.discovery.url.clone(),
    ),
    ("discovery-fallback", "exit", |c| {
        c.discovery.fallback.clone()
    }),
    ("discovery-proxy", "http://127.0.0.1:3128", |c| {
        c.discovery.proxy.clone()
    }),
    ("discovery-srv", "example.com", |c| c.discovery.srv.clone()),
    ("proxy-failure-wait", "700", |c| {
        c.discovery.proxy_failure_wait_ms.to_string()
    }),
    ("proxy-refresh-interval", "800", |c| {
        c.discovery.proxy_refresh_interval_ms.to_string()
    }),
    ("proxy-dial-timeout", "900", |c| {
        c.discovery.proxy_dial_timeout_ms.to_string()
    }),
    ("heartbeat-interval", "50", |c| {
        c.heartbeat_interval_ms.to_string()
    }),
    ("election-timeout", "2000", |c| {
        c.election_timeout_ms.to_string()
    }),
    ("quota-backend-bytes", "1048576", |c| {
        c.quota_backend_bytes.to_string()
    }),
    ("max-request-bytes", "10", |c| {
        c.max_request_bytes.to_string()
    }),
    ("max-txn-ops", "5", |c| c.max_txn_ops.to_string()),
    ("log-level", "debug", |c| {
        format!("{:?}", c.log_level).to_lowercase()
    }),
    ("listen-metrics-urls", "http://127.0.0.1:9000", |c| {
        join(&c.listen_metrics_urls)
    }),
    ("listen-binary-urls", "http://127.0.0.1:9001", |c| {
        join(&c.listen_binary_urls)
    }),
    ("cores", "1", |c| c.cores.to_string()),
    ("sequencer-cpu", "1", |c| {
        c.sequencer_cpu.map_or("auto".into(), |n| n.to_string())
    }),
    ("lease-checkpoint-interval", "1500", |c| {
        c.lease_checkpoint_interval_ms.to_string()
    }),
    ("auto-compaction-retention", "5m", |c| {
        c.auto_compaction_retention.clone()
    }),
    ("auto-compaction-mode", "revision", |c| {
        c.auto_compaction_mode.clone()
    }),
    ("auto-compaction-revision-interval", "2500", |c| {
        c.auto_compaction_revision_interval_ms.to_string()
    }),
    ("auth-token", "jwt,pub-key=p.pem,sign-method=ES256", |c| {
        c.auth_token.clone()
    }),
    ("auth-token-ttl", "42", |c| {
        c.auth_token_ttl_secs.to_string()
    }),
    ("bcrypt-cost", "4", |c| c.bcrypt_cost.to_string()),
    ("peer-cert-file", "", |c| {
        format!("{:?}", c.peer_tls.cert_file).replace("None", "")
    }),
    ("peer-trusted-ca-file", "/etc/ca.pem", |c| {
        c.peer_tls
            .trusted_ca_file
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    }),
];

/// The TLS flags only valid together (a cert needs its key, client-cert-auth a CA) and
/// Go boolean flags (no `--flag value` form): `https_client_urls_need_a_certificate...`
/// covers them.
const TLS_FLAGS_TESTED_TOGETHER: &[&str] = &[
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "auto-tls",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-auto-tls",
];

/// Flags that are only valid with another one: `dns_discovery_flags` covers them.
const FLAGS_NEEDING_ANOTHER: &[&str] = &["discovery-srv-name"];

#[test]
fn samples_cover_every_flag() {
    for spec in FLAGS.iter().filter(|f| {
        f.name != "config-file"
            && !TLS_FLAGS_TESTED_TOGETHER.contains(&f.name)
            && !FLAGS_NEEDING_ANOTHER.contains(&f.name)
    }) {
        assert!(
            SAMPLES.iter().any(|(f, _, _)| *f == spec.name),
            "no sample for --{}",
            spec.name
        );
    }
}

#[test]
fn every_flag_in_every_go_syntax() {
    for (flag, value, get) in SAMPLES {
        let forms: [Vec<String>; 4] = [
            vec![format!("--{flag}={value}")],
            vec![format!("--{flag}"), value.to_string()],
            vec![format!("-{flag}={value}")],
            vec![format!("-{flag}"), value.to_string()],
        ];
        for args in &forms {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(get(&run(&args, &[])), *value, "{args:?}");
        }
    }
}

#[test]
fn every_flag_from_corekv_and_etcd_environment() {
    for (flag, value, get) in SAMPLES {
        let suffix = flag.to_uppercase().replace('-', "_");
        for prefix in ["COREKV_", "ETCD_"] {
            let key = format!("{prefix}{suffix}");
            assert_eq!(get(&run(&[], &[(&key, value)])), *value, "{key}");
        }
    }
}

#[test]
fn environment_precedence() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("ETCD_NAME", "e")], "e"),
        (&[("COREKV_NAME", "c")], "c"),
        (&[("ETCD_NAME", "e"), ("COREKV_NAME", "c")], "c"),
        (&[("COREKV_NAME", "c"), ("ETCD_NAME", "e")], "c"),
        (&[("COREKV_NAME", ""), ("ETCD_NAME", "e")], "e"),
        (&[("ETCD_NAME", "")], "default"),
        (&[("PATH", "/bin"), ("ETCDCTL_API", "3")], "default"),
    ];
    for (env, name) in cases {
        let config = run(&[], env);
        assert_eq!(config.name, *name, "{env:?}");
        assert_eq!(
            config.data_dir,
            PathBuf::from(format!("{name}.corekv")),
            "{env:?}"
        );
        assert_eq!(
            config.initial_cluster,
            vec![(name.to_string(), url("http://localhost:2380"))]
        );
    }
}

#[test]
fn command_line_beats_environment() {
    let env = [
        ("COREKV_NAME", "c"),
        ("ETCD_NAME", "e"),
        ("ETCD_SNAPSHOT_COUNT", "7"),
    ];
    let (config, warnings) = capture::warnings(|| run(&["--name", "cli"], &env));
    assert_eq!(config.name, "cli");
    assert_eq!(
        config.snapshot_count, 7,
        "env still applies to flags not on the command line"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("COREKV_NAME") && w.contains("--name")),
        "{warnings:?}"
    );
}

#[test]
fn last_occurrence_of_a_flag_wins() {
    assert_eq!(run(&["--name", "a", "-name=b"], &[]).name, "b");
}

#[test]
fn unknown_etcd_environment_variables_warn_and_are_ignored() {
    let env = [("ETCD_ENABLE_V2", "true"), ("COREKV_NO_SUCH_THING", "x")];
    let (config, warnings) = capture::warnings(|| run(&[], &env));
    assert_eq!(config.name, "default");
    for key in ["ETCD_ENABLE_V2", "COREKV_NO_SUCH_THING"] {
        assert!(
            warnings.iter().any(|w| w.contains(key)),
            "{key} not warned: {warnings:?}"
        );
    }
}

#[test]
fn bad_environment_value_names_variable_flag_and_value() {
    for key in ["COREKV_SNAPSHOT_COUNT", "ETCD_SNAPSHOT_COUNT"] {
        let message = error(&[], &[(key, "abc")]);
        for needle in [key, "--snapshot-count", "\"abc\""] {
            assert_contains(&message, needle, key);
        }
    }
}

const FULL_FILE: &str = "\
name: filenode
data-dir: /tmp/filenode-data
listen-client-urls: http://127.0.0.1:12379,http://[::1]:12379
advertise-client-urls: http://127.0.0.1:12379
listen-peer-urls: http://127.0.0.1:12380
initial-advertise-peer-urls: http://127.0.0.1:12380
initial-cluster: filenode=http://127.0.0.1:12380
initial-cluster-state: 'new'
initial-cluster-token: file-token
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
quota-backend-bytes: 4294967296
max-request-bytes: 2097152
max-txn-ops: 64
log-level: warn
listen-metrics-urls: http://127.0.0.1:12381
cores: 2
";

fn full_file_config() -> Config {
    Config {
        name: "filenode".into(),
        data_dir: PathBuf::from("/tmp/filenode-data"),
        listen_client_urls: vec![url("http://127.0.0.1:12379"), url("http://[::1]:12379")],
        advertise_client_urls: vec![url("http://127.0.0.1:12379")],
        listen_peer_urls: vec![url("http://127.0.0.1:12380")],
        initial_advertise_peer_urls: vec![url("http://127.0.0.1:12380")],
        initial_cluster: vec![("filenode".into(), url("http://127.0.0.1:12380"))],
        initial_cluster_state: ClusterState::New,
        initial_cluster_token: "file-token".into(),
        discovery: Discovery {
            fallback: "proxy".into(),
            proxy_failure_wait_ms: 5000,
            proxy_refresh_interval_ms: 30000,
            proxy_dial_timeout_ms: 1000,
            ..Default::default()
        },
        snapshot_count: 5000,
        heartbeat_interval_ms: 50,
        election_timeout_ms: 500,
        quota_backend_bytes: 4_294_967_296,
        max_request_bytes: 2_097_152,
        max_txn_ops: 64,
        log_level: LogLevel::Warn,
        listen_metrics_urls: vec![url("http://127.0.0.1:12381")],
        // 12380 and 12381 are the peer and metrics ports.
        listen_binary_urls: vec![url("http://127.0.0.1:12382"), url("http://[::1]:12382")],
        listen_binary_urls_derived: true,
        cores: 2,
        sequencer_cpu: None,
        lease_checkpoint_interval_ms: 300_000,
        // etcd's config-file default, not the flag's.
        auto_compaction_mode: String::new(),
        auto_compaction_retention: "0".into(),
        auto_compaction_revision_interval_ms: 300_000,
        auth_token: "simple".into(),
        auth_token_ttl_secs: 300,
        bcrypt_cost: 10,
        client_tls: TlsSettings::default(),
        peer_tls: TlsSettings::default(),
    }
}

#[test]
fn config_file_is_read_in_every_way_it_can_be_named() {
    let file = TempFile::new(FULL_FILE);
    let p = file.path();
    let eq = format!("--config-file={p}");
    let single = format!("-config-file={p}");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (&["--config-file", p], &[]),
        (&[&eq], &[]),
        (&["-config-file", p], &[]),
        (&[&single], &[]),
        (&[], &[("COREKV_CONFIG_FILE", p)]),
        (&[], &[("ETCD_CONFIG_FILE", p)]),
    ];
    for (args, env) in cases {
        assert_eq!(run(args, env), full_file_config(), "{args:?} {env:?}");
    }
}

#[test]
fn config_file_ignores_flags_and_environment_with_a_warning() {
    let file = TempFile::new(FULL_FILE);
    let args = [
        "--name",
        "ignored",
        "--config-file",
        file.path(),
        "--snapshot-count",
        "1",
    ];
    let env = [("COREKV_MAX_TXN_OPS", "9"), ("ETCD_LOG_LEVEL", "debug")];
    let (config, warnings) = capture::warnings(|| run(&args, &env));
    assert_eq!(config, full_file_config());
    let warning = warnings
        .iter()
        .find(|w| w.contains("ignoring"))
        .expect("an ignored-flags warning");
    for needle in [
        "--name",
        "--snapshot-count",
        "COREKV_MAX_TXN_OPS",
        "ETCD_LOG_LEVEL",
    ] {
        assert_contains(warning, needle, "ignored-flags warning");
    }
    let (_, quiet) = capture::warnings(|| run(&["--config-file", file.path()], &[]));
    assert!(
        quiet.is_empty(),
        "no flags to ignore, yet warned: {quiet:?}"
    );
}

#[test]
fn config_file_partial_values_and_yaml_forms() {
    let cases: &[(&str, Getter, &str)] = &[
        (
            "name: solo\n",
            |c| c.data_dir.display().to_string(),
            "solo.corekv",
        ),
        (
            "name: solo\n",
            |c| format!("{}={}", c.initial_cluster[0].0, c.initial_cluster[0].1),
            "solo=http://localhost:2380",
        ),
        ("", |c| c.name.clone(), "default"),
        ("name: ~\n", |c| c.name.clone(), "default"),
        (
            "listen-client-urls: [http://a:1, 'http://b:2']\n",
            |c| join(&c.listen_client_urls),
            "http://a:1,http://b:2",
        ),
        (
            "snapshot-count: '77'\n",
            |c| c.snapshot_count.to_string(),
            "77",
        ),
        (
            "quota-backend-bytes: 0\n",
            |c| c.quota_backend_bytes.to_string(),
            "2147483648",
        ),
    ];
    for (yaml, get, want) in cases {
        let file = TempFile::new(yaml);
        assert_eq!(
            get(&run(&["--config-file", file.path()], &[])),
            *want,
            "{yaml:?}"
        );
    }
}

#[test]
fn empty_config_file_flag_means_no_file() {
    assert_eq!(run(&["--config-file=", "--name", "x"], &[]).name, "x");
}

#[test]
fn config_file_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "enable-v2: true\n",
            &["unknown key \"enable-v2\"", "supported keys: name,"],
        ),
        (
            "config-file: other.yaml\n",
            &["unknown key \"config-file\""],
        ),
        (
            "snapshot-count: lots\n",
            &["invalid value \"lots\" for snapshot-count in config file"],
        ),
        (
            "listen-client-urls: http://localhost\n",
            &["listen-client-urls", "missing port"],
        ),
        ("log-level: {a: 1}\n", &["log-level", "expected a string"]),
        ("- name\n", &["expected a mapping"]),
        ("name: [unclosed\n", &["invalid YAML"]),
        (
            "heartbeat-interval: 0\n",
            &["--heartbeat-interval must be greater than 0"],
        ),
        ("name: a\nname: b\n", &["invalid YAML"]),
    ];
    for (yaml, needles) in cases {
        let file = TempFile::new(yaml);
        let message = error(&["--config-file", file.path()], &[]);
        for needle in needles.iter() {
            assert_contains(&message, needle, yaml);
        }
        if message.starts_with("config file") || message.starts_with("invalid value") {
            assert_contains(&message, file.path(), yaml);
        }
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let path = std::env::temp_dir().join(format!(
        "corekv-config-test-{}-missing.yaml",
        std::process::id()
    ));
    let path = path.to_str().unwrap();
    let message = error(&["--config-file", path], &[]);
    assert_contains(&message, "cannot read config file", path);
    assert_contains(&message, path, path);
}

#[test]
fn validation_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "x", "--initial-cluster", "default=http://localhost:2380"],
            "couldn't find local name \"x\" in the initial cluster configuration"),
        (&["--initial-cluster", ""], "couldn't find local name \"default\" in the initial cluster configuration"),
        (&["--name", "n1", "--initial-cluster", "n1=http://a:1", "--initial-advertise-peer-urls", "http://b:2"],
            "--initial-cluster has n1=http://a:1 but missing from --initial-advertise-peer-urls=http://b:2"),
        (&["--name", "n1", "--initial-cluster", "n1=http://a:1", "--initial-advertise-peer-urls", "http://a:1,http://b:2"],
            "--initial-advertise-peer-urls has http://b:2 but missing from --initial-cluster=n1=http://a:1,n1=http://b:2"),
        (&["--initial-cluster", "default=http://localhost:2380,default=http://localhost:2380"],
            "--initial-cluster lists the URL http://localhost:2380 more than once"),
        (&["--discovery-srv", "example.com", "--initial-cluster", "default=http://localhost:2380"],
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\""),
        (&["--discovery", "http://127.0.0.1:1/v2/keys/d/t", "--initial-cluster", "default=http://localhost:2380"],
            "multiple discovery or bootstrap flags are set."),
        (&["--discovery", "http://127.0.0.1:1/v2/keys/d/t", "--discovery-srv", "example.com"],
            "multiple discovery or bootstrap flags are set."),
        (&["--discovery-srv-name", "dev"], "couldn't find local name \"default\" in the initial cluster configuration"),
        (&["--initial-cluster", "default=http://127.0.0.1:2380"],
            "--initial-cluster has default=http://127.0.0.1:2380 but missing from --initial-advertise-peer-urls=http://localhost:2380 (resolved urls: \"http://localhost:2380\" != \"http://127.0.0.1:2380\")"),
        (&["--initial-cluster", "default=http://peer-b.test:2380", "--initial-advertise-peer-urls", "http://peer-a.test:2380"],
            "--initial-cluster has default=http://peer-b.test:2380 but missing from --initial-advertise-peer-urls=http://peer-a.test:2380 (resolved urls: \"http://10.0.0.1:2380\" != \"http://10.0.0.2:2380\")"),
        (&["--initial-cluster", "default=http://nowhere.test:2380"],
            "(failed to resolve \"http://nowhere.test:2380\" (lookup nowhere.test: no such host))"),
        (&["--discovery-fallback", "maybe"], "expected \"exit\" or \"proxy\""),
        (&["--heartbeat-interval", "0"], "--heartbeat-interval must be greater than 0"),
        (&["--heartbeat-interval", "300"],
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
        (&["--election-timeout", "499"],
            "--election-timeout[499ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        (&["--election-timeout", "50001"], "--election-timeout[50001ms] is too long"),
        (&["--max-txn-ops", "0"], "--max-txn-ops must be greater than 0"),
        (&["--max-request-bytes", "0"], "--max-request-bytes must be greater than 0"),
        (&["--lease-checkpoint-interval", "0"], "--lease-checkpoint-interval must be greater than 0"),
        (&["--name", ""], "--name must not be empty"),
        (&["--data-dir", ""], "--data-dir must not be empty"),
        (&["--listen-client-urls", ""], "--listen-client-urls must list at least one URL"),
        (&["--advertise-client-urls", ""], "--advertise-client-urls must list at least one URL"),
        (&["--listen-peer-urls", ""], "--listen-peer-urls must list at least one URL"),
        (&["--initial-advertise-peer-urls", "", "--initial-cluster", "default=http://a:1"],
            "--initial-advertise-peer-urls must list at least one URL"),
    ];
    for (args, want) in cases {
        assert_contains(&error(args, &[]), want, &format!("{args:?}"));
    }
}

#[test]
fn dns_discovery_flags() {
    // The cluster comes from DNS when the member starts: none is set yet.
    let c = run(
        &[
            "--discovery-srv",
            "corekv.test",
            "--discovery-srv-name",
            "dev",
        ],
        &[],
    );
    assert_eq!(c.discovery.srv, "corekv.test");
    assert_eq!(c.discovery.srv_name, "dev");
    assert!(c.initial_cluster.is_empty());
    for name_flag in [
        &["--discovery-srv-name=dev"][..],
        &["-discovery-srv-name", "dev"],
    ] {
        let args = [&["--discovery-srv", "corekv.test"][..], name_flag].concat();
        assert_eq!(run(&args, &[]).discovery.srv_name, "dev", "{args:?}");
    }
    for key in ["COREKV_DISCOVERY_SRV_NAME", "ETCD_DISCOVERY_SRV_NAME"] {
        let c = run(&["--discovery-srv", "corekv.test"], &[(key, "dev")]);
        assert_eq!(c.discovery.srv_name, "dev", "{key}");
    }
    // A cluster from the environment is a second bootstrap flag too; an empty one is not.
    let conflict = error(
        &["--discovery-srv", "corekv.test"],
        &[("ETCD_INITIAL_CLUSTER", "default=http://localhost:2380")],
    );
    assert_contains(&conflict, "multiple discovery or bootstrap flags", "env");
    assert!(run(
        &["--discovery-srv", "corekv.test", "--initial-cluster", ""],
        &[]
    )
    .initial_cluster
    .is_empty());
    // etcd's config file cannot tell its default cluster from one written out: dropped.
    let file = TempFile::new(
        "discovery-srv: corekv.test\ninitial-cluster: default=http://localhost:2380\n",
    );
    assert!(run(&["--config-file", file.path()], &[])
        .initial_cluster
        .is_empty());
    let file = TempFile::new(
        "discovery-srv: corekv.test\ninitial-cluster: default=http://localhost:2381\n",
    );
    let conflict = error(&["--config-file", file.path()], &[]);
    assert_contains(&conflict, "multiple discovery or bootstrap flags", "file");
}

#[test]
fn advertised_urls_match_the_cluster_by_address() {
    // Different names, one address: accepted, as etcd resolves before it compares.
    let c = run(
        &[
            "--initial-cluster",
            "default=http://peer-a.test:2380",
            "--initial-advertise-peer-urls",
            "http://also-a.test:2380",
        ],
        &[],
    );
    assert_eq!(c.initial_cluster[0].1, url("http://peer-a.test:2380"));
    run(
        &[
            "--initial-cluster",
            "default=http://10.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://peer-a.test:2380",
        ],
        &[],
    );
}

#[test]
fn validation_boundaries_pass() {
    let cases: &[&[&str]] = &[
        &["--election-timeout", "500"],
        &["--election-timeout", "50000"],
        &["--heartbeat-interval", "1", "--election-timeout", "5"],
        &["--max-txn-ops", "1", "--max-request-bytes", "1"],
        &[
            "--initial-advertise-peer-urls",
            "http://a:1,http://b:2",
            "--initial-cluster",
            "default=http://b:2,default=http://a:1",
        ],
        &["--name", "x"],
    ];
    for args in cases {
        run(args, &[]);
    }
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--snapshot-count", "ten"],
            "expected a non-negative integer",
        ),
        (
            &["--heartbeat-interval=-5"],
            "expected a non-negative integer",
        ),
        (
            &["--election-timeout", "1.5"],
            "expected a non-negative integer",
        ),
        (
            &["--quota-backend-bytes", "-1"],
            "expected a non-negative integer",
        ),
        (
            &["--max-request-bytes", "1MB"],
            "expected a non-negative integer",
        ),
        (
            &["--max-txn-ops", "99999999999999999999999"],
            "number too large",
        ),
        (
            &["--log-level", "verbose"],
            "expected one of debug, info, warn, error, panic, fatal",
        ),
        (
            &["--initial-cluster-state", "old"],
            "expected \"new\" or \"existing\"",
        ),
        (
            &["--listen-client-urls", "localhost:2379"],
            "expected scheme://host:port",
        ),
        (
            &["--listen-client-urls", "http://localhost"],
            "missing port",
        ),
        (
            &["--advertise-client-urls", "ftp://a:1"],
            "unsupported URL scheme \"ftp\"",
        ),
        (
            &["--listen-peer-urls", "http://a:1/path"],
            "must not contain a path",
        ),
        (
            &["--initial-advertise-peer-urls", "http://a:99999"],
            "invalid port \"99999\"",
        ),
        (
            &["--listen-metrics-urls", "http://::1:2379"],
            "must be enclosed in brackets",
        ),
        (
            &["--listen-client-urls", "http://a:1,,http://b:2"],
            "URL \"\"",
        ),
        (
            &["--initial-cluster", "n1"],
            "\"n1\" is not of the form name=url",
        ),
        (
            &["--initial-cluster", "=http://a:1"],
            "is not of the form name=url",
        ),
        (&["--initial-cluster", "n1=http://a"], "missing port"),
        (&["--cores", "0"], "must be at least 1"),
        (&["--cores", "5"], "this machine has only 4 online cores"),
        (&["--cores", "x"], "expected a non-negative integer"),
    ];
    for (args, why) in cases {
        let (flag, value) = match args {
            [arg] => arg.split_once('=').unwrap(),
            [flag, value] => (*flag, *value),
            _ => unreachable!(),
        };
        let message = error(args, &[]);
        let context = format!("{args:?}");
        assert_contains(
            &message,
            &format!("invalid value {value:?} for {flag}: "),
            &context,
        );
        assert_contains(&message, why, &context);
    }
}

#[test]
fn command_line_syntax_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown flag: --bogus"),
        (&["-bogus=1"], "unknown flag: --bogus"),
        (
            &["--name", "x", "--enable-v2", "true"],
            "unknown flag: --enable-v2",
        ),
        (&["--name"], "flag needs an argument: --name"),
        (&["-data-dir"], "flag needs an argument: --data-dir"),
        (&["positional"], "unexpected argument \"positional\""),
        (&["--", "extra"], "unexpected argument \"extra\""),
        (&["---name=x"], "bad flag syntax: ---name=x"),
        (&["--=x"], "bad flag syntax: --=x"),
        (&["-"], "bad flag syntax: -"),
        (
            &["--version=maybe"],
            "invalid boolean value \"maybe\" for --version",
        ),
    ];
    for (args, want) in cases {
        assert_contains(&error(args, &[]), want, &format!("{args:?}"));
    }
    assert_eq!(run(&["--name", "x", "--"], &[]).name, "x");
}

#[test]
fn help_and_version_actions() {
    let cases: &[(&[&str], &str)] = &[
        (&["--help"], "help"),
        (&["-h"], "help"),
        (&["-help"], "help"),
        (&["--name", "x", "--help", "--bogus"], "help"),
        (&["--version"], "version"),
        (&["-version"], "version"),
        (&["--version=true"], "version"),
        (&["--version=false"], "run"),
    ];
    for (args, want) in cases {
        let got = match load(args, &[]) {
            Ok(Action::Help(_)) => "help",
            Ok(Action::Version) => "version",
            Ok(Action::Run(_)) => "run",
            Err(e) => panic!("{args:?}: {e}"),
        };
        assert_eq!(got, *want, "{args:?}");
    }
    assert_contains(&version_text(), env!("CARGO_PKG_VERSION"), "version text");
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let Ok(Action::Help(text)) = load(&["--help"], &[]) else {
        panic!("expected help")
    };
    let expected = [
        ("name", "\"default\""),
        ("data-dir", "<name>.corekv"),
        ("listen-client-urls", "\"http://localhost:2379\""),
        ("advertise-client-urls", "\"http://localhost:2379\""),
        ("listen-peer-urls", "\"http://localhost:2380\""),
        ("initial-advertise-peer-urls", "\"http://localhost:2380\""),
        ("initial-cluster", "default=http://localhost:2380"),
        ("initial-cluster-state", "\"new\""),
        ("initial-cluster-token", "\"etcd-cluster\""),
        ("snapshot-count", "\"100000\""),
        ("heartbeat-interval", "\"100\""),
        ("election-timeout", "\"1000\""),
        ("quota-backend-bytes", "\"0\""),
        ("max-request-bytes", "\"1572864\""),
        ("max-txn-ops", "\"128\""),
        ("log-level", "\"info\""),
        ("listen-metrics-urls", "none"),
        ("config-file", "none"),
        ("cores", "all online cores"),
        ("lease-checkpoint-interval", "\"300000\""),
    ];
    for (flag, default) in expected {
        let entry = text
            .split(&format!("  --{flag} <value>\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("--{flag} missing"));
        let entry = entry.lines().next().unwrap_or("");
        assert_contains(
            entry,
            &format!(
                "(default{}",
                if default.starts_with('"') { " " } else { ": " }
            ),
            flag,
        );
        assert_contains(entry, default, flag);
    }
    for needle in ["-h, --help", "--version", "COREKV_<FLAG>", "ETCD_<FLAG>"] {
        assert_contains(&text, needle, "usage");
    }
}

#[test]
fn held_out_invocation_parses() {
    let dir = std::env::temp_dir().join("corekv-held-out-n1");
    let d = dir.to_str().unwrap();
    let (p, q) = ("http://127.0.0.1:23791", "http://127.0.0.1:23801");
    let cluster = format!("n1={q}");
    let args = [
        "--name",
        "n1",
        "--data-dir",
        d,
        "--listen-client-urls",
        p,
        "--advertise-client-urls",
        p,
        "--listen-peer-urls",
        q,
        "--initial-advertise-peer-urls",
        q,
        "--initial-cluster",
        &cluster,
    ];
    let config = run(&args, &[]);
    assert_eq!(config.name, "n1");
    assert_eq!(config.data_dir, dir);
    assert_eq!(config.listen_client_urls, vec![url(p)]);
    assert_eq!(
        config.listen_client_urls[0].socket_addr_string(),
        "127.0.0.1:23791"
    );
    assert_eq!(config.advertise_client_urls, vec![url(p)]);
    assert_eq!(config.listen_peer_urls, vec![url(q)]);
    assert_eq!(config.initial_advertise_peer_urls, vec![url(q)]);
    assert_eq!(config.initial_cluster, vec![("n1".to_string(), url(q))]);
    assert_eq!(config.cores, ONLINE);
    assert!(Path::new(d).is_absolute());
}

#[test]
fn url_parsing_accepts() {
    let cases: &[(&str, Scheme, &str, u16, &str, &str)] = &[
        (
            "http://localhost:2379",
            Scheme::Http,
            "localhost",
            2379,
            "http://localhost:2379",
            "localhost:2379",
        ),
        (
            "https://127.0.0.1:443",
            Scheme::Https,
            "127.0.0.1",
            443,
            "https://127.0.0.1:443",
            "127.0.0.1:443",
        ),
        (
            "http://[::1]:2379",
            Scheme::Http,
            "::1",
            2379,
            "http://[::1]:2379",
            "[::1]:2379",
        ),
        (
            "http://[FE80::1]:1",
            Scheme::Http,
            "fe80::1",
            1,
            "http://[fe80::1]:1",
            "[fe80::1]:1",
        ),
        (
            "HTTP://LocalHost:1",
            Scheme::Http,
            "localhost",
            1,
            "http://localhost:1",
            "localhost:1",
        ),
        (
            "http://0.0.0.0:0",
            Scheme::Http,
            "0.0.0.0",
            0,
            "http://0.0.0.0:0",
            "0.0.0.0:0",
        ),
        (
            "http://kv-1.example_x.com:80",
            Scheme::Http,
            "kv-1.example_x.com",
            80,
            "http://kv-1.example_x.com:80",
            "kv-1.example_x.com:80",
        ),
    ];
    for (text, scheme, host, port, display, addr) in cases {
        let u = url(text);
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (*scheme, *host, *port),
            "{text}"
        );
        assert_eq!(u.to_string(), *display, "{text}");
        assert_eq!(u.socket_addr_string(), *addr, "{text}");
        assert_eq!(text.parse::<Url>(), Ok(u), "{text}");
    }
}

#[test]
fn url_parsing_rejects() {
    let cases: &[(&str, &str)] = &[
        ("localhost:2379", "expected scheme://host:port"),
        ("http://localhost", "missing port"),
        ("http://localhost:", "missing port"),
        ("http://:2379", "missing host"),
        ("http://[::1]", "missing port"),
        ("http://[::1:2379", "missing ']'"),
        ("http://[zz]:1", "invalid IPv6 address \"zz\""),
        ("http://a:1/", "must not contain a path"),
        ("http://a:1?x=1", "must not contain a query or fragment"),
        ("http://u@a:1", "must not contain user information"),
        ("unix://sock:1", "unsupported URL scheme \"unix\""),
        ("http://a:65536", "invalid port \"65536\""),
        ("http://a:x", "invalid port \"x\""),
        ("http://a:+1", "invalid port \"+1\""),
        ("http://a b:1", "invalid host \"a b\""),
        ("http://300.1.1.1:1", "invalid host \"300.1.1.1\""),
    ];
    for (text, want) in cases {
        let message = Url::parse(text).expect_err(text);
        assert_contains(&message, want, text);
    }
}

#[test]
fn url_lists() {
    use super::url::parse_url_list;
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("", Ok("")),
        ("http://a:1", Ok("http://a:1")),
        ("http://a:1, http://b:2", Ok("http://a:1,http://b:2")),
        (
            "http://a:1,,http://b:2",
            Err("URL \"\": expected scheme://host:port"),
        ),
        ("http://a:1,http://b", Err("URL \"http://b\": missing port")),
    ];
    for (text, want) in cases {
        let got = parse_url_list(text).map(|urls| join(&urls));
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
            (Err(got), Err(want)) => assert_contains(&got, want, text),
            (got, _) => panic!("{text}: unexpected {got:?}"),
        }
    }
}

#[test]
fn ids_are_derived_like_etcd() {
    let default_member = member_id(&[url("http://localhost:2380")], "etcd-cluster");
    assert_eq!(
        default_member, 0x8e9e05c52164694d,
        "etcd's default member ID"
    );
    assert_eq!(
        cluster_id(&[default_member]),
        0xcdf818194e3a8c32,
        "etcd's default cluster ID"
    );
    let config = run(&[], &[]);
    assert_eq!(
        (config.member_id(), config.cluster_id()),
        (default_member, 0xcdf818194e3a8c32)
    );

    let (a, b) = (url("http://a:1"), url("http://b:2"));
    assert_eq!(
        member_id(&[a.clone(), b.clone()], "t"),
        member_id(&[b.clone(), a.clone()], "t")
    );
    let one = std::slice::from_ref(&a);
    assert_ne!(member_id(one, "t"), member_id(one, "u"));
    assert_ne!(member_id(&[a], "t"), member_id(&[b], "t"));
    assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
    assert_ne!(cluster_id(&[1, 2]), cluster_id(&[1, 3]));
}

#[test]
fn log_levels_map_to_log_filters() {
    let cases = [
        ("debug", LogLevel::Debug, log::LevelFilter::Debug),
        ("info", LogLevel::Info, log::LevelFilter::Info),
        ("warn", LogLevel::Warn, log::LevelFilter::Warn),
        ("error", LogLevel::Error, log::LevelFilter::Error),
        ("panic", LogLevel::Panic, log::LevelFilter::Error),
        ("fatal", LogLevel::Fatal, log::LevelFilter::Error),
        ("WARN", LogLevel::Warn, log::LevelFilter::Warn),
    ];
    for (text, level, filter) in cases {
        let config = run(&["--log-level", text], &[]);
        assert_eq!(
            (config.log_level, config.log_level.to_log_filter()),
            (level, filter),
            "{text}"
        );
    }
}

#[test]
fn quota_backend_bytes_stores_the_effective_value() {
    let cases = [
        ("0", DEFAULT_QUOTA_BYTES),
        ("1", 1),
        ("8589934592", 8_589_934_592),
    ];
    for (text, want) in cases {
        assert_eq!(
            run(&["--quota-backend-bytes", text], &[]).quota_backend_bytes,
            want,
            "{text}"
        );
    }
    let (config, warnings) =
        capture::warnings(|| run(&["--quota-backend-bytes", "8589934593"], &[]));
    assert_eq!(config.quota_backend_bytes, 8_589_934_593);
    assert!(
        warnings.iter().any(|w| w.contains("maximum recommended")),
        "{warnings:?}"
    );
}

#[test]
fn cores_range() {
    for (text, want) in [("1", 1), ("4", 4)] {
        assert_eq!(run(&["--cores", text], &[]).cores, want);
    }
}

#[test]
fn config_error_displays_its_message() {
    let e = ConfigError("boom".into());
    assert_eq!(e.to_string(), "boom");
}

#[test]
fn https_client_urls_need_a_certificate_and_metrics_stay_plaintext() {
    let msg = error(&["--listen-client-urls", "https://127.0.0.1:2379"], &[]);
    assert_contains(
        &msg,
        "TLS key/cert (--cert-file, --key-file) must be provided",
        "https client URL",
    );
    let msg = error(&["--listen-metrics-urls", "https://127.0.0.1:2381"], &[]);
    assert_contains(&msg, "--listen-metrics-urls", "https metrics URL");
    let msg = error(&["--cert-file", "c.pem"], &[]);
    assert_contains(&msg, "must be given together", "cert without key");
    let msg = error(&["--peer-client-cert-auth"], &[]);
    assert_contains(&msg, "--peer-trusted-ca-file", "client auth without a CA");
    let tls = [
        "--listen-client-urls",
        "https://127.0.0.1:2379",
        "--advertise-client-urls",
        "https://127.0.0.1:2379",
        "--cert-file",
        "c.pem",
        "--key-file",
        "k.pem",
        "--trusted-ca-file",
        "ca.pem",
        "--client-cert-auth",
        "--peer-auto-tls=true",
    ];
    let cfg = run(&tls, &[]);
    assert_eq!(
        cfg.client_tls,
        TlsSettings {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            trusted_ca_file: Some("ca.pem".into()),
            client_cert_auth: true,
            auto_tls: false,
        }
    );
    assert!(cfg.peer_tls.auto_tls && !cfg.peer_tls.client_cert_auth);
    let auto = run(
        &[
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--auto-tls",
        ],
        &[],
    );
    assert!(auto.client_tls.auto_tls);
}

#[test]
fn auth_flags_as_etcd_reads_them() {
    let cfg = run(
        &[
            "--auth-token",
            "jwt,pub-key=p,priv-key=k,sign-method=RS256",
            "--bcrypt-cost",
            "4",
        ],
        &[("ETCD_AUTH_TOKEN_TTL", "42")],
    );
    assert_eq!(cfg.auth_token, "jwt,pub-key=p,priv-key=k,sign-method=RS256");
    assert_eq!((cfg.bcrypt_cost, cfg.auth_token_ttl_secs), (4, 42));
    assert_contains(
        &error(&["--bcrypt-cost", "3"], &[]),
        "4..=31",
        "low bcrypt cost",
    );
    assert_contains(
        &error(&["--auth-token-ttl", "0"], &[]),
        "at least 1",
        "zero TTL",
    );
}

#[test]
fn auto_compaction_settings_as_etcd_reads_them() {
    use crate::sequencer::AutoCompaction;
    use std::time::Duration;
    let five_min = Duration::from_secs(300);
    let cases: &[(&[&str], Option<AutoCompaction>)] = &[
        (&[], None),
        (&["--auto-compaction-retention", "0"], None),
        (
            &["--auto-compaction-retention", "1"],
            Some(AutoCompaction::Periodic(Duration::from_secs(3600))),
        ),
        (
            &["--auto-compaction-retention=2s"],
            Some(AutoCompaction::Periodic(Duration::from_secs(2))),
        ),
        (
            &[
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "1.5h",
            ],
            Some(AutoCompaction::Periodic(Duration::from_secs(5400))),
        ),
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1000",
            ],
            Some(AutoCompaction::Revision {
                retention: 1000,
                interval: five_min,
            }),
        ),
        (
            &[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=10",
                "--auto-compaction-revision-interval=200",
            ],
            Some(AutoCompaction::Revision {
                retention: 10,
                interval: Duration::from_millis(200),
            }),
        ),
        (&["--auto-compaction-mode", "revision"], None),
    ];
    for (args, want) in cases {
        assert_eq!(run(args, &[]).auto_compaction(), *want, "{args:?}");
    }
    let env = [
        ("ETCD_AUTO_COMPACTION_MODE", "revision"),
        ("COREKV_AUTO_COMPACTION_RETENTION", "7"),
    ];
    assert_eq!(
        run(&[], &env).auto_compaction(),
        Some(AutoCompaction::Revision {
            retention: 7,
            interval: five_min
        })
    );
}

#[test]
fn bad_auto_compaction_values_are_refused() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--auto-compaction-mode", "daily"],
            &[
                "--auto-compaction-mode",
                "unknown auto-compaction-mode \"daily\"",
            ],
        ),
        (
            &["--auto-compaction-retention", "abc"],
            &[
                "--auto-compaction-retention",
                "time: invalid duration \"abc\"",
            ],
        ),
        (
            &["--auto-compaction-retention", "-1"],
            &["time: missing unit in duration \"-1\""],
        ),
        (&["--auto-compaction-retention", "-1h"], &["negative"]),
        (
            &["--auto-compaction-retention", "5x"],
            &["unknown unit \"x\""],
        ),
        (
            &["--auto-compaction-revision-interval", "soon"],
            &["expected a non-negative integer"],
        ),
    ];
    for (args, needles) in cases {
        let message = error(args, &[]);
        for needle in *needles {
            assert_contains(&message, needle, &format!("{args:?}"));
        }
    }
}

#[test]
fn config_file_auto_compaction_mode_defaults_to_empty_as_in_etcd() {
    use crate::sequencer::AutoCompaction;
    use std::time::Duration;
    // A number without a mode: etcd leaves compaction off.
    let file = TempFile::new("auto-compaction-retention: 1\n");
    let config = run(&["--config-file", file.path()], &[]);
    assert_eq!(
        (
            config.auto_compaction_mode.as_str(),
            config.auto_compaction()
        ),
        ("", None)
    );
    // A duration without a mode: etcd refuses to start ("unsupported compaction mode").
    let file = TempFile::new("auto-compaction-retention: 5m\n");
    assert_contains(
        &error(&["--config-file", file.path()], &[]),
        "unsupported compaction mode",
        "5m without a mode",
    );
    // With the mode, as on the command line.
    let file = TempFile::new("auto-compaction-mode: periodic\nauto-compaction-retention: 5m\n");
    assert_eq!(
        run(&["--config-file", file.path()], &[]).auto_compaction(),
        Some(AutoCompaction::Periodic(Duration::from_secs(300)))
    );
    let file = TempFile::new("auto-compaction-mode: revision\nauto-compaction-retention: 100\nauto-compaction-revision-interval: 50\n");
    assert_eq!(
        run(&["--config-file", file.path()], &[]).auto_compaction(),
        Some(AutoCompaction::Revision {
            retention: 100,
            interval: Duration::from_millis(50)
        })
    );
}

#[test]
fn config_file_nests_tls_settings_as_etcd_does() {
    let text = "\
listen-client-urls: https://127.0.0.1:2379
advertise-client-urls: https://127.0.0.1:2379
auth-token: simple
bcrypt-cost: 6
client-transport-security:
  cert-file: /etc/kv/server.crt
  key-file: /etc/kv/server.key
  trusted-ca-file: /etc/kv/ca.crt
  client-cert-auth: true
peer-transport-security:
  auto-tls: true
";
    let file = TempFile::new(text);
    let arg = format!("--config-file={}", file.path());
    let cfg = run(&[&arg], &[]);
    assert_eq!(cfg.client_tls.cert_file, Some("/etc/kv/server.crt".into()));
    assert_eq!(cfg.client_tls.key_file, Some("/etc/kv/server.key".into()));
    assert!(cfg.client_tls.client_cert_auth);
    assert!(cfg.peer_tls.auto_tls && cfg.peer_tls.cert_file.is_none());
    assert_eq!(cfg.bcrypt_cost, 6);
    let bad = TempFile::new("client-transport-security:\n  nope: 1\n");
    let arg = format!("--config-file={}", bad.path());
    assert_contains(&error(&[&arg], &[]), "unknown key", "unknown nested key");
}

#[test]
fn binary_urls_default_to_each_client_port_plus_one_and_empty_turns_them_off() {
    let c = run(
        &[
            "--listen-client-urls",
            "http://127.0.0.1:4000,http://[::1]:5000",
        ],
        &[],
    );
    assert_eq!(
        c.listen_binary_urls,
        vec![url("http://127.0.0.1:4001"), url("http://[::1]:5001")]
    );
    // Never a port another listen URL of this member uses (on any host).
    let c = run(
        &[
            "--listen-client-urls",
            "http://127.0.0.1:4000",
            "--listen-peer-urls",
            "http://0.0.0.0:4001",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:4001",
            "--initial-cluster",
            "default=http://127.0.0.1:4001",
            "--listen-metrics-urls",
            "http://127.0.0.1:4002",
        ],
        &[],
    );
    assert_eq!(c.listen_binary_urls, vec![url("http://127.0.0.1:4003")]);
    assert!(c.listen_binary_urls_derived);
    let c = run(&["--listen-binary-urls", ""], &[]);
    assert!(c.listen_binary_urls.is_empty());
    assert!(!c.listen_binary_urls_derived);
    let msg = error(&["--listen-client-urls", "http://127.0.0.1:65535"], &[]);
    assert_contains(&msg, "--listen-binary-urls", "no default past port 65535");
}
