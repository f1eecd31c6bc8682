//! corekvutl: offline tool for corekv data directories (in the spirit of etcd's etcdutl).
//!
//! ```text
//! corekvutl wal verify --data-dir D [-w table|json]
//! corekvutl wal dump   --data-dir D [--start-index N] [--limit N] [-w simple|json]
//! corekvutl db info    (--data-dir D | --db FILE) [-w table|json]
//! corekvutl defrag     (--data-dir D | --db FILE) [-w table|json]
//! corekvutl snapshot status  FILE [-w table|json]
//! corekvutl snapshot restore FILE --data-dir D [--name N] [--initial-cluster ...] [...]
//! ```
//! Exit codes: 0 success, 1 a failed check or operation, 2 bad usage.

mod bbolt;
mod cli;
mod cluster;
mod db;
mod describe;
mod etcd_snapshot;
mod output;
mod progress;
mod snapshot;
mod wal;
mod walread;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{flag, switch, CliError, Flag, Parsed, WRITE_OUT};

const MAIN_USAGE: &str = "\
corekvutl: offline tool for corekv data directories (in the spirit of etcdutl)

Usage:
  corekvutl wal verify --data-dir DIR [-w table|json]
  corekvutl wal dump   --data-dir DIR [--start-index N] [--limit N] [-w simple|json]
  corekvutl db info    (--data-dir DIR | --db FILE) [-w table|json]
  corekvutl defrag     (--data-dir DIR | --db FILE) [-w table|json]
  corekvutl snapshot status  FILE [-w table|json]
  corekvutl snapshot restore FILE --data-dir DIR [--name NAME] [--initial-cluster ...]
                             [--initial-cluster-token T] [--initial-advertise-peer-urls URLS]
                             [--skip-hash-check] [-w table|json]

Commands:
  wal verify   check every WAL segment and record without modifying anything
  wal dump     print the WAL's records, one line each
  db info      size, shape and integrity of the key-space file (<data-dir>/member/snap/db)
  defrag       rewrite the key-space file compactly (offline: the server must be stopped)
  snapshot status   hash, revision, keys and size of a corekv or etcd snapshot file
  snapshot restore  create a new data dir from a corekv or etcd snapshot file

Run `corekvutl COMMAND --help` for a command's flags.
Exit status: 0 success, 1 a failed check or operation, 2 bad usage.
";

const WAL_USAGE: &str = "\
Usage:
  corekvutl wal verify --data-dir DIR [-w table|json]
  corekvutl wal dump   --data-dir DIR [--start-index N] [--limit N] [-w simple|json]

Run `corekvutl wal verify --help` or `corekvutl wal dump --help` for details.
";

const WAL_VERIFY_USAGE: &str = "\
Usage: corekvutl wal verify --data-dir DIR [-w table|json]

Checks the WAL in DIR/member/wal without modifying anything (it may run while a server
is up): segment headers, record checksums, metadata copies, the torn-tail rule; then
decodes every record (raft entries, hard and conf states, the request inside each entry)
and checks that entry indexes are contiguous once overwritten entries are resolved, as
the server's recovery does. A torn tail (a write cut short by a crash, which the server
drops at start) is reported but is not a failure.

Flags:
  --data-dir DIR          the member's data directory (as given to corekv --data-dir)
  -w, --write-out FORMAT  table (default) or json

Exit status: 0 sound, 1 damaged (the error names the segment file and byte offset), 2 bad usage.
";

const WAL_DUMP_USAGE: &str = "\
Usage: corekvutl wal dump --data-dir DIR [--start-index N] [--limit N] [-w simple|json]

Prints the WAL's records in write order, one per line: the metadata (member, cluster,
name) first, then entries (index, term, type, decoded request), hard states and conf
states. Keys and values are escaped (printable ASCII as is, \\ as \\\\, other bytes \\xNN);
values longer than 64 bytes are cut, with their full length shown. Entries replaced by a
later entry with the same index (raft log truncation) are marked `overwritten`.
If the WAL is damaged, the records before the damage are printed and the exit status is 1.

Flags:
  --data-dir DIR          the member's data directory
  --start-index N         skip entries with an index below N (and other records before
                          the first entry shown)
  --limit N               print at most N records (after the metadata line)
  -w, --write-out FORMAT  simple (default) or json (one JSON object per line)
";

const DB_USAGE: &str = "\
Usage:
  corekvutl db info   (--data-dir DIR | --db FILE) [-w table|json]
  corekvutl db defrag (--data-dir DIR | --db FILE) [-w table|json]   (same as `corekvutl defrag`)
";

const DB_INFO_USAGE: &str = "\
Usage: corekvutl db info (--data-dir DIR | --db FILE) [-w table|json]

Shows the key-space file's figures (page size, page count, file bytes, free pages,
fragmentation = free and free-list pages as a share of the page count, tree depth,
entries, transaction id) and checks the whole file (checksums, key order, page
accounting). The file is DIR/member/snap/db, or FILE. It is opened with an exclusive
lock, so the server must not be running.

Flags:
  --data-dir DIR          the member's data directory
  --db FILE               the database file itself
  -w, --write-out FORMAT  table (default) or json

Exit status: 0 sound, 1 missing, locked or damaged, 2 bad usage.
";

const DEFRAG_USAGE: &str = "\
Usage: corekvutl defrag (--data-dir DIR | --db FILE) [-w table|json]

Rewrites the key-space file with its entries in the fewest pages and no free pages:
writes a compacted copy next to it (FILE.defrag.tmp), trims and fsyncs it, verifies it
against the original, renames it over the original and fsyncs the directory. Offline
only: refuses when a running server holds the data dir (its WAL directory lock) or the
file's lock. Prints the size before and after.

Flags:
  --data-dir DIR          the member's data directory (file DIR/member/snap/db)
  --db FILE               the database file itself
  -w, --write-out FORMAT  table (default) or json
";

const SNAPSHOT_USAGE: &str = "\
Usage:
  corekvutl snapshot status  FILE [-w table|json]
  corekvutl snapshot restore FILE --data-dir DIR [--name NAME] [--initial-cluster ...]
                             [--initial-cluster-token T] [--initial-advertise-peer-urls URLS]
                             [--skip-hash-check] [-w table|json]

Run `corekvutl snapshot status --help` or `corekvutl snapshot restore --help` for details.
";

const SNAPSHOT_STATUS_USAGE: &str = "\
Usage: corekvutl snapshot status FILE [-w table|json]

Shows a snapshot's HASH, REVISION, TOTAL KEYS and TOTAL SIZE, as etcdutl snapshot status
does, after checking it whole. FILE is either
  - a corekv snapshot: a corekv store image (what corekv's Maintenance.Snapshot streams, or a
    copy of DIR/member/snap/db) followed by the 32-byte sha256 of the image, or the image
    alone; or
  - an etcd snapshot: a bbolt file as `etcdctl snapshot save` writes it (followed by its
    sha256), or a copy of an etcd member's member/snap/db.
A trailing sha256 is verified; a mismatch is an error.

  HASH        etcd: etcdutl's hash (CRC-32C over every bucket's name, keys and values);
              corekv: CRC-32C over every key and value of the store's tree, in order
  REVISION    the key space's revision (the one a restore yields)
  TOTAL KEYS  entries in the database (etcd: in all buckets; corekv: records and leases)
  TOTAL SIZE  the database's size up to its high-water mark

The file is never modified (a corekv image is checked in a copy under $TMPDIR).

Flags:
  -w, --write-out FORMAT  table (default) or json

Exit status: 0 sound, 1 missing, unreadable or damaged, 2 bad usage.
";

const SNAPSHOT_RESTORE_USAGE: &str = "\
Usage: corekvutl snapshot restore FILE --data-dir DIR [--name NAME] [--initial-cluster ...]
                                  [--initial-cluster-token T] [--initial-advertise-peer-urls URLS]
                                  [--skip-hash-check] [-w table|json]

Creates a new data directory for a single-member corekv cluster from a corekv or etcd
snapshot (see `corekvutl snapshot status --help` for the formats), as etcdutl snapshot
restore does:
  DIR/member/snap/db  the key space: a corekv snapshot's image as it is, or an etcd
                      snapshot's `key`, `lease` and `meta` buckets converted (revisions,
                      versions, leases and the compacted revision are kept; etcd's members,
                      alarms and auth are not carried over)
  DIR/member/wal      a new WAL naming the member and cluster that `corekv` computes from the
                      same --name, --initial-cluster, --initial-cluster-token and
                      --initial-advertise-peer-urls, with this member as the only voter
The restored member starts a new raft log (the store is marked as holding log index 1,
term 1). Start corekv on DIR with the same flags. Refuses a DIR that exists and is not
empty. The snapshot must end with its sha256 unless --skip-hash-check is given.

Flags:
  --data-dir DIR                      the data directory to create (required)
  --name NAME                         this member's name (default \"default\")
  --initial-cluster NAME=URL,...      the initial cluster (default NAME=<each advertised peer URL>)
  --initial-cluster-token TOKEN       default \"etcd-cluster\"
  --initial-advertise-peer-urls URLS  this member's peer URLs (default http://localhost:2380)
  --skip-hash-check                   restore a file without a sha256 (a copied database
                                      file), or without checking the one it has
  -w, --write-out FORMAT              table (default) or json

Exit status: 0 restored, 1 unreadable or damaged snapshot or an unusable DIR, 2 bad usage.
";

const WAL_FLAGS: &[Flag] = &[flag("data-dir", "DIR"), WRITE_OUT];
const DUMP_FLAGS: &[Flag] = &[
    flag("data-dir", "DIR"),
    flag("start-index", "N"),
    flag("limit", "N"),
    WRITE_OUT,
];
const DB_FLAGS: &[Flag] = &[flag("data-dir", "DIR"), flag("db", "FILE"), WRITE_OUT];
const STATUS_FLAGS: &[Flag] = &[WRITE_OUT];
const RESTORE_FLAGS: &[Flag] = &[
    flag("data-dir", "DIR"),
    flag("name", "NAME"),
    flag("initial-cluster", "NAME=URL,..."),
    flag("initial-cluster-token", "TOKEN"),
    flag("initial-advertise-peer-urls", "URLS"),
    switch("skip-hash-check"),
    WRITE_OUT,
];

fn is_help(a: &str) -> bool {
    matches!(a, "-h" | "--help" | "help")
}

/// What to run, or which help text to print.
enum Action {
    Help(&'static str),
    Run(&'static str, &'static [Flag], &'static str),
}

fn resolve(args: &[String]) -> Result<(Action, usize), CliError> {
    let word = |i: usize| args.get(i).map(String::as_str);
    let wants_help = |from: usize| {
        args[from.min(args.len())..]
            .iter()
            .any(|a| a == "-h" || a == "--help")
    };
    match word(0) {
        None => Err(CliError::usage("missing command")),
        Some(w) if is_help(w) => Ok((Action::Help(MAIN_USAGE), args.len())),
        Some("version" | "--version") => Ok((
            Action::Help(concat!("corekvutl ", env!("CARGO_PKG_VERSION"), "\n")),
            args.len(),
        )),
        Some("wal") => match word(1) {
            Some("verify") if wants_help(2) => Ok((Action::Help(WAL_VERIFY_USAGE), 2)),
            Some("verify") => Ok((Action::Run("wal verify", WAL_FLAGS, WAL_VERIFY_USAGE), 2)),
            Some("dump") if wants_help(2) => Ok((Action::Help(WAL_DUMP_USAGE), 2)),
            Some("dump") => Ok((Action::Run("wal dump", DUMP_FLAGS, WAL_DUMP_USAGE), 2)),
            Some(w) if is_help(w) => Ok((Action::Help(WAL_USAGE), 2)),
            None => Err(CliError::usage("`wal` needs a subcommand: verify or dump")),
            Some(other) => Err(CliError::usage(format!(
                "unknown wal subcommand {other:?} (verify, dump)"
            ))),
        },
        Some("db") => match word(1) {
            Some("info") if wants_help(2) => Ok((Action::Help(DB_INFO_USAGE), 2)),
            Some("info") => Ok((Action::Run("db info", DB_FLAGS, DB_INFO_USAGE), 2)),
            Some("defrag") if wants_help(2) => Ok((Action::Help(DEFRAG_USAGE), 2)),
            Some("defrag") => Ok((Action::Run("defrag", DB_FLAGS, DEFRAG_USAGE), 2)),
            Some(w) if is_help(w) => Ok((Action::Help(DB_USAGE), 2)),
            None => Err(CliError::usage("`db` needs a subcommand: info or defrag")),
            Some(other) => Err(CliError::usage(format!(
                "unknown db subcommand {other:?} (info, defrag)"
            ))),
        },
        Some("snapshot") => match word(1) {
            Some("status") if wants_help(2) => Ok((Action::Help(SNAPSHOT_STATUS_USAGE), 2)),
            Some("status") => Ok((
                Action::Run("snapshot status", STATUS_FLAGS, SNAPSHOT_STATUS_USAGE),
                2,
            )),
            Some("restore") if wants_help(2) => Ok((Action::Help(SNAPSHOT_RESTORE_USAGE), 2)),
            Some("restore") => Ok((
                Action::Run("snapshot restore", RESTORE_FLAGS, SNAPSHOT_RESTORE_USAGE),
                2,
            )),
            Some(w) if is_help(w) => Ok((Action::Help(SNAPSHOT_USAGE), 2)),
            None => Err(CliError::usage(
                "`snapshot` needs a subcommand: status or restore",
            )),
            Some(other) => Err(CliError::usage(format!(
                "unknown snapshot subcommand {other:?} (status, restore)"
            ))),
        },
        Some("defrag") if wants_help(1) => Ok((Action::Help(DEFRAG_USAGE), 1)),
        Some("defrag") => Ok((Action::Run("defrag", DB_FLAGS, DEFRAG_USAGE), 1)),
        Some(other) => Err(CliError::usage(format!("unknown command {other:?}"))),
    }
}

fn data_dir(p: &Parsed) -> Result<PathBuf, CliError> {
    p.get("data-dir")
        .map(PathBuf::from)
        .ok_or_else(|| CliError::usage("--data-dir is required"))
}

fn db_target(p: &Parsed) -> Result<db::Target, CliError> {
    match (p.get("data-dir"), p.get("db")) {
        (Some(_), Some(_)) => Err(CliError::usage("give either --data-dir or --db, not both")),
        (Some(d), None) => Ok(db::Target::DataDir(PathBuf::from(d))),
        (None, Some(f)) => Ok(db::Target::File(PathBuf::from(f))),
        (None, None) => Err(CliError::usage("--data-dir or --db is required")),
    }
}

fn snapshot_file(p: &Parsed) -> Result<PathBuf, CliError> {
    p.args
        .first()
        .map(PathBuf::from)
        .ok_or_else(|| CliError::usage("the snapshot FILE is required"))
}

fn run(command: &str, p: &Parsed) -> Result<(), CliError> {
    match command {
        "wal verify" => {
            let format = p.write_out(&["table", "json"])?;
            wal::verify(&data_dir(p)?, format)
        }
        "wal dump" => {
            let format = p.write_out(&["simple", "json"])?;
            let args = wal::DumpArgs {
                start_index: p.u64("start-index")?,
                limit: p.u64("limit")?,
                json: format == "json",
            };
            wal::dump(&data_dir(p)?, &args)
        }
        "db info" => {
            let format = p.write_out(&["table", "json"])?;
            db::info(&db_target(p)?, format)
        }
        "defrag" => {
            let format = p.write_out(&["table", "json"])?;
            db::defrag(&db_target(p)?, format)
        }
        "snapshot status" => {
            let format = p.write_out(&["table", "json"])?;
            snapshot::status(&snapshot_file(p)?, format)
        }
        "snapshot restore" => {
            let format = p.write_out(&["table", "json"])?;
            let file = snapshot_file(p)?;
            let data_dir = data_dir(p)?;
            let args = snapshot::RestoreArgs {
                file: &file,
                data_dir: &data_dir,
                member: cluster::Flags {
                    name: p.get("name").unwrap_or(cluster::DEFAULT_NAME),
                    initial_cluster: p.get("initial-cluster"),
                    initial_cluster_token: p
                        .get("initial-cluster-token")
                        .unwrap_or(cluster::DEFAULT_TOKEN),
                    initial_advertise_peer_urls: p
                        .get("initial-advertise-peer-urls")
                        .unwrap_or(cluster::DEFAULT_PEER_URLS),
                },
                skip_hash_check: p.has("skip-hash-check"),
            };
            snapshot::restore(&args, format)
        }
        other => unreachable!("command {other}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (action, used) = match resolve(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corekvutl: {e}\n\n{MAIN_USAGE}");
            return ExitCode::from(2);
        }
    };
    let (name, spec, usage) = match action {
        Action::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Action::Run(name, spec, usage) => (name, spec, usage),
    };
    // The snapshot commands take the FILE as an argument; the others take flags only.
    let parsed = if name.starts_with("snapshot ") {
        cli::parse_with_args(&args[used..], spec, 1)
    } else {
        cli::parse(&args[used..], spec)
    };
    let result = parsed.and_then(|p| run(name, &p));
    match result {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            let synopsis = usage.split("\n\n").next().unwrap_or(usage);
            eprintln!(
                "corekvutl {name}: {m}\n{synopsis}\nRun `corekvutl {name} --help` for details."
            );
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("corekvutl {name}: {m}");
            ExitCode::from(1)
        }
    }
}
