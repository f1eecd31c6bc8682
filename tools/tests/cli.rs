//! Usage text and exit codes.

mod common;

use common::tool;

#[test]
fn help_goes_to_stdout_with_exit_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["wal", "--help"],
        &["wal", "verify", "--help"],
        &["wal", "dump", "-h"],
        &["db", "info", "--help"],
        &["defrag", "--help"],
        &["db", "defrag", "--help"],
    ] {
        let out = tool(args);
        out.expect_code(0);
        assert!(out.stdout.contains("Usage"), "{args:?}:\n{out}");
        assert!(out.stderr.is_empty(), "{args:?}:\n{out}");
    }
    let out = tool(&["--help"]);
    for cmd in ["wal verify", "wal dump", "db info", "defrag"] {
        assert!(
            out.stdout.contains(&format!("corekvutl {cmd}")),
            "{cmd}:\n{out}"
        );
    }
    assert!(tool(&["wal", "dump", "--help"])
        .stdout
        .contains("--start-index"));
}

#[test]
fn bad_usage_exits_2_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "missing command"),
        (&["frobnicate"], "unknown command"),
        (&["wal"], "needs a subcommand"),
        (&["wal", "fix"], "unknown wal subcommand"),
        (&["db"], "needs a subcommand"),
        (&["wal", "verify"], "--data-dir is required"),
        (&["wal", "verify", "--data-dir"], "needs a value"),
        (
            &["wal", "verify", "--data-dir", "d", "--bogus"],
            "unknown flag --bogus",
        ),
        (
            &["wal", "verify", "--data-dir", "d", "-w", "yaml"],
            "unsupported output format",
        ),
        (
            &["wal", "dump", "--data-dir", "d", "-w", "table"],
            "unsupported output format",
        ),
        (
            &["wal", "dump", "--data-dir", "d", "--limit", "ten"],
            "non-negative integer",
        ),
        (
            &["wal", "dump", "--data-dir", "d", "--start-index=-1"],
            "non-negative integer",
        ),
        (
            &["wal", "dump", "--data-dir", "d", "extra"],
            "unexpected argument",
        ),
        (&["db", "info"], "--data-dir or --db is required"),
        (&["db", "info", "--data-dir", "d", "--db", "f"], "not both"),
        (
            &["defrag", "--start-index", "3", "--db", "f"],
            "unknown flag --start-index",
        ),
    ];
    for (args, want) in cases {
        let out = tool(args);
        out.expect_code(2);
        assert!(out.stderr.contains(want), "{args:?}: want {want:?}:\n{out}");
        assert!(
            out.stderr.contains("Usage"),
            "{args:?}: usage shown:\n{out}"
        );
        assert!(out.stdout.is_empty(), "{args:?}:\n{out}");
    }
}
