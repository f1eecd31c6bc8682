//! Merging the value sources, and reading etcd-style YAML config files.

use super::flags::{self, env_name, FlagSpec, Raw, RawMap, Source};
use super::ConfigError;
use serde_yaml::Value;
use std::path::Path;

/// Merges command-line and environment values (the command line wins).
///
/// When `--config-file` is set (on the command line or in the environment)
/// the file is the only source, as in etcd; the other values are ignored with
/// a warning.
pub(super) fn resolve_sources(cli: RawMap, env: RawMap) -> Result<RawMap, ConfigError> {
    let mut merged = env;
    for (flag, raw) in cli {
        if let Some(old) = merged.insert(flag, raw) {
            log::warn!(
                "recognized environment variable {}, but unused: shadowed by corresponding flag --{flag}",
                env_name(&old)
            );
        }
    }
    match merged.remove("config-file") {
        Some(raw) if !raw.value.is_empty() => {
            warn_ignored(&merged);
            read(Path::new(&raw.value))
        }
        _ => Ok(merged),
    }
}

/// Warns that `ignored` (flags and variables other than the config file) are unused.
fn warn_ignored(ignored: &RawMap) {
    if ignored.is_empty() {
        return;
    }
    let mut names: Vec<String> = ignored
        .iter()
        .map(|(flag, raw)| origin_name(flag, raw))
        .collect();
    names.sort();
    log::warn!(
        "--config-file is set: ignoring command-line flags and environment variables, as etcd does: {}",
        names.join(", ")
    );
}

/// `--flag` or the environment variable's name.
fn origin_name(flag: &str, raw: &Raw) -> String {
    match &raw.source {
        Source::Env(key) => key.clone(),
        _ => format!("--{flag}"),
    }
}

/// Reads a YAML config file with etcd's keys into raw values.
pub(super) fn read(path: &Path) -> Result<RawMap, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    parse(&text, path)
}

/// Parses the YAML text of the config file at `path`.
///
/// One default differs from the flag's, as in etcd: a file without
/// `auto-compaction-mode` gets etcd's embedded default "" rather than the flag's
/// "periodic" (a whole-number retention then leaves compaction off, a duration is refused).
pub(super) fn parse(text: &str, path: &Path) -> Result<RawMap, ConfigError> {
    let mut values = parse_keys(text, path)?;
    values.entry("auto-compaction-mode").or_insert_with(|| Raw {
        value: String::new(),
        source: Source::File(path.to_path_buf()),
    });
    Ok(values)
}

fn parse_keys(text: &str, path: &Path) -> Result<RawMap, ConfigError> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| fail(path, format!("invalid YAML: {e}")))?;
    let map = match doc {
        Value::Null => return Ok(RawMap::new()),
        Value::Mapping(map) => map,
        _ => {
            return Err(fail(
                path,
                "expected a mapping of etcd config-file keys".into(),
            ))
        }
    };
    let mut values = RawMap::new();
    for (key, value) in map {
        if let Some(prefix) = transport_security_prefix(&key) {
            read_transport_security(prefix, &value, path, &mut values)?;
            continue;
        }
        let spec = key_spec(&key).ok_or_else(|| fail(path, unknown_key(&key)))?;
        let text =
            scalar_text(&value).map_err(|why| fail(path, format!("key {}: {why}", spec.name)))?;
        if let Some(text) = text {
            values.insert(
                spec.name,
                Raw {
                    value: text,
                    source: Source::File(path.to_path_buf()),
                },
            );
        }
    }
    Ok(values)
}

/// etcd's config file nests the TLS flags: `client-transport-security` holds `cert-file`,
/// `key-file`, `trusted-ca-file`, `client-cert-auth`, `auto-tls` (the client flags);
/// `peer-transport-security` the same names for the `--peer-*` flags.
fn transport_security_prefix(key: &Value) -> Option<&'static str> {
    match key.as_str()? {
        "client-transport-security" => Some(""),
        "peer-transport-security" => Some("peer-"),
        _ => None,
    }
}

const TRANSPORT_SECURITY_KEYS: [&str; 5] = [
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "auto-tls",
];

fn read_transport_security(
    prefix: &str,
    value: &Value,
    path: &Path,
    values: &mut RawMap,
) -> Result<(), ConfigError> {
    let section = format!("{prefix}transport-security");
    let map = match value {
        Value::Null => return Ok(()),
        Value::Mapping(map) => map,
        _ => return Err(fail(path, format!("key {section}: expected a mapping"))),
    };
    for (key, value) in map {
        let name = key
            .as_str()
            .filter(|k| TRANSPORT_SECURITY_KEYS.contains(k))
            .ok_or_else(|| {
                fail(
                    path,
                    format!(
                        "unknown key {key:?} in {section} (supported keys: {})",
                        TRANSPORT_SECURITY_KEYS.join(", ")
                    ),
                )
            })?;
        let spec = flags::lookup(&format!("{prefix}{name}")).expect("every TLS key is a flag");
        let text =
            scalar_text(value).map_err(|why| fail(path, format!("key {section}.{name}: {why}")))?;
        if let Some(text) = text {
            values.insert(
                spec.name,
                Raw {
                    value: text,
                    source: Source::File(path.to_path_buf()),
                },
            );
        }
    }
    Ok(())
}

/// The flag a config-file key names (`config-file` itself is not a key).
fn key_spec(key: &Value) -> Option<&'static FlagSpec> {
    match key {
        Value::String(k) if k != "config-file" => flags::lookup(k),
        _ => None,
    }
}

fn unknown_key(key: &Value) -> String {
    let key = match key {
        Value::String(k) => format!("{k:?}"),
        other => format!("{other:?}"),
    };
    let known: Vec<&str> = flags::FLAGS
        .iter()
        .map(|f| f.name)
        .filter(|n| *n != "config-file")
        .collect();
    format!("unknown key {key} (supported keys: {})", known.join(", "))
}

/// A YAML value as flag text; `None` for null (use the default). Lists are joined with commas.
fn scalar_text(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Sequence(items) => {
            let items: Result<Vec<String>, String> = items.iter().map(item_text).collect();
            Ok(Some(items?.join(",")))
        }
        other => item_text(other).map(Some),
    }
}

fn item_text(value: &Value) -> Result<String, String> {
    match value {
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err("expected a string, a number or a list of strings".into()),
    }
}

fn fail(path: &Path, why: String) -> ConfigError {
    ConfigError(format!("config file {}: {why}", path.display()))
}
