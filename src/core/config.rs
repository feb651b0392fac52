//! The config file (`--config FILE`, TOML) both programs read, and `--print-config`.
//!
//! Every key is a flag's long name (`min-reload-interval` or `min_reload_interval`), its value
//! what the flag takes: a string, a number, `true`/`false` for a switch, or an array for a flag
//! that repeats (`prefix = ["/web", "/api"]`, `template` and `output` pair up in order). The
//! file is the weakest source: an environment variable beats it, a flag beats both. A key that
//! names no flag, or a value the flag refuses, is an error naming the file, the line and the
//! key. The file's values go in front of the command line's, so clap itself parses and checks
//! them as it does flags.

use clap::parser::ValueSource;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The long names that are not settings (they cannot be in the file).
const NOT_SETTINGS: [&str; 4] = ["config", "print-config", "help", "version"];

/// Flags whose values `--print-config` masks.
const SECRETS: [&str; 1] = ["etcd-password"];

/// A config file error, already naming the file, line and key; exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why the command line and config file could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own error about the command line (it prints and exits itself).
    Clap(clap::Error),
    /// A config file error naming the file, line and key.
    Config(ConfigError),
}

/// The parsed command line and config file.
pub struct Parsed {
    pub matches: clap::ArgMatches,
    /// The long names of the flags the config file set.
    pub from_file: Vec<String>,
}

/// Parses `argv` with `cmd`, the config file its `--config` (or `DOCKREG_CONFIG`) names
/// included; a value from the file that its flag refuses is reported with the file's line.
pub fn get_matches(cmd: clap::Command, argv: Vec<OsString>) -> Result<Parsed, ParseError> {
    let (argv, from_file) = with_config_file(&cmd, argv).map_err(ParseError::Config)?;
    let matches = cmd.try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let blamed = from_file.iter().find(|(long, _)| {
            text.contains(&format!("'--{long} ")) || text.contains(&format!("'--{long}'"))
        });
        match blamed {
            Some((_, at)) => ParseError::Config(ConfigError(format!(
                "{at}: {}",
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            ))),
            None => ParseError::Clap(e),
        }
    })?;
    Ok(Parsed {
        matches,
        from_file: from_file.into_iter().map(|(long, _)| long).collect(),
    })
}

/// Each flag a config file set (long name), and where (`file:line:col: key `k``).
type FileSettings = Vec<(String, String)>;

/// `argv` with the settings of the config file put in front, and for each flag the file set,
/// where (`file:line:col: key `k``); `argv` unchanged without a file. Settings a flag or an
/// environment variable gives are left out.
fn with_config_file(
    cmd: &clap::Command,
    argv: Vec<OsString>,
) -> Result<(Vec<OsString>, FileSettings), ConfigError> {
    let Some(path) = config_path(&argv) else {
        return Ok((argv, Vec::new()));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("--config {}: cannot read: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!("{}: {e}", located(&path, &text, e.span())))
    })?;
    // What the command line and the environment set, to leave those out of the file.
    let given = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .map_err(|e| ConfigError(e.to_string()))?;
    let mut injected: Vec<OsString> = Vec::new();
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let at = || {
            format!(
                "{}: key `{key}`",
                located(&path, &text, key_span(&text, key))
            )
        };
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !NOT_SETTINGS.contains(&long.as_str()))
            .ok_or_else(|| {
                ConfigError(format!(
                    "{}: no such setting (the keys are the flags' long names; see --help)",
                    at()
                ))
            })?;
        if matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{long}");
        from_file.push((long.clone(), at()));
        let switch = !arg.get_action().takes_values();
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match (v, switch) {
                (toml::Value::Boolean(true), true) => injected.push(flag.clone().into()),
                (toml::Value::Boolean(false), true) => {}
                (_, true) => return Err(ConfigError(format!("{}: a switch takes true or false", at()))),
                (toml::Value::String(s), false) => injected.extend([flag.clone().into(), s.into()]),
                (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_), false) => {
                    injected.extend([flag.clone().into(), v.to_string().into()])
                }
                _ => return Err(ConfigError(format!("{}: not a value a flag takes (a string, a number, true/false or an array of them)", at()))),
            }
        }
    }
    let mut out = Vec::with_capacity(argv.len() + injected.len());
    let mut rest = argv.into_iter();
    out.extend(rest.next());
    out.extend(injected);
    out.extend(rest);
    Ok((out, from_file))
}

/// The file `--config` (or `--config=`, or `DOCKREG_CONFIG`) names.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("DOCKREG_CONFIG").map(PathBuf::from)
}

/// `file:line:col` for a byte span of `text` (the file alone when unknown).
fn located(path: &Path, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let before = &text[..r.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{}:{line}:{col}", path.display())
        }
        None => path.display().to_string(),
    }
}

/// Where `key` is set at the top level of `text`.
fn key_span(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let rest = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
        if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
            return Some(at + indent..at + indent + key.len());
        }
        at += line.len();
    }
    None
}

/// Parses the process's command line, config file included, into `T` for `cmd`. `Err` holds
/// the exit status when the program is done: a config file error (printed; 2) or
/// `--print-config` (printed; 0). clap's own errors and `--help` exit the way clap does.
pub fn parse_args<T: clap::FromArgMatches>(
    cmd: clap::Command,
) -> Result<(T, clap::ArgMatches), std::process::ExitCode> {
    parse_args_from(cmd, std::env::args_os().collect())
}

/// [`parse_args`] of the given arguments (the first one is the program's name), e.g. those
/// after a subcommand.
pub fn parse_args_from<T: clap::FromArgMatches>(
    cmd: clap::Command,
    argv: Vec<std::ffi::OsString>,
) -> Result<(T, clap::ArgMatches), std::process::ExitCode> {
    let parsed = match get_matches(cmd.clone(), argv) {
        Ok(p) => p,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("error: {e}");
            return Err(std::process::ExitCode::from(2));
        }
    };
    let args = T::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    if parsed.matches.get_flag("print_config") {
        print!("{}", print_config(&cmd, &parsed));
        return Err(std::process::ExitCode::SUCCESS);
    }
    Ok((args, parsed.matches))
}

/// The effective configuration, as a config file would say it: every setting with its value
/// and where it came from (secrets masked), for `--print-config`.
pub fn print_config(cmd: &clap::Command, parsed: &Parsed) -> String {
    let matches = &parsed.matches;
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if parsed.from_file.iter().any(|l| l == long) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => continue,
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown: Vec<String> = raw
            .iter()
            .map(|v| {
                if SECRETS.contains(&long) {
                    "\"***\"".to_string()
                } else {
                    toml::Value::String(v.clone()).to_string()
                }
            })
            .collect();
        let value = match (!arg.get_action().takes_values(), shown.len()) {
            (true, _) => raw.first().cloned().unwrap_or_else(|| "false".into()),
            (false, 1) => shown[0].clone(),
            (false, _) => format!("[{}]", shown.join(", ")),
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    /// A small command line like the programs'.
    #[derive(Debug, Parser)]
    #[command(name = "t")]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(
            long,
            env = "DOCKREG_TEST_CFG_ETCD",
            default_value = "http://127.0.0.1:2379"
        )]
        etcd: String,
        #[arg(long = "prefix", value_delimiter = ',')]
        prefixes: Vec<String>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
        min_reload_interval: std::time::Duration,
        #[arg(long)]
        once: bool,
        #[arg(long)]
        etcd_password: Option<String>,
    }

    fn parse(file: &str, flags: &[&str]) -> Result<Args, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dockreg.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["t".into(), "--config".into(), path.clone().into()];
        argv.extend(flags.iter().map(OsString::from));
        let p = get_matches(Args::command(), argv).map_err(|e| match e {
            ParseError::Config(c) => c.0.replace(&path.display().to_string(), "FILE"),
            ParseError::Clap(e) => e.to_string(),
        })?;
        Args::from_arg_matches(&p.matches).map_err(|e| e.to_string())
    }

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let a = parse(
            "etcd = \"http://10.0.0.2:2379\"\nprefix = [\"/web\", \"/api\"]\nmin_reload_interval = \"2s\"\nonce = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(a.etcd, "http://10.0.0.2:2379");
        assert_eq!(a.prefixes, ["/web", "/api"]);
        assert_eq!(a.min_reload_interval, std::time::Duration::from_secs(2));
        assert!(a.once);
        let a = parse(
            "etcd = \"http://file:2379\"\nprefix = [\"/web\"]\n",
            &["--etcd", "http://flag:2379", "--prefix", "/x"],
        )
        .unwrap();
        assert_eq!(
            (a.etcd.as_str(), a.prefixes.as_slice()),
            ("http://flag:2379", ["/x".to_string()].as_slice())
        );
    }

    #[test]
    fn the_environment_beats_the_file() {
        // A variable no other test reads.
        std::env::set_var("DOCKREG_TEST_CFG_ETCD", "http://env:2379");
        let a = parse("etcd = \"http://file:2379\"\n", &[]).unwrap();
        std::env::remove_var("DOCKREG_TEST_CFG_ETCD");
        assert_eq!(a.etcd, "http://env:2379");
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = parse("etcd = \"x\"\n\nmin-reload-intervall = \"1s\"\n", &[]).unwrap_err();
        assert!(
            e.starts_with("FILE:3:1: key `min-reload-intervall`: no such setting"),
            "{e}"
        );
        let e = parse("once = true\nmin_reload_interval = \"soon\"\n", &[]).unwrap_err();
        assert!(
            e.starts_with("FILE:2:1: key `min_reload_interval`: "),
            "{e}"
        );
        assert!(e.contains("soon"), "{e}");
        let e = parse("once = \"yes\"\n", &[]).unwrap_err();
        assert!(
            e.contains("FILE:1:1: key `once`: a switch takes true or false"),
            "{e}"
        );
        let e = parse("etcd = \n", &[]).unwrap_err();
        assert!(e.starts_with("FILE:1:"), "{e}");
        let e = parse("config = \"other.toml\"\n", &[]).unwrap_err();
        assert!(e.contains("no such setting"), "{e}");
    }

    #[test]
    fn print_config_says_where_each_value_came_from_and_masks_secrets() {
        let cmd = Args::command();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "once = true\n").unwrap();
        let argv = [
            "t",
            "--config",
            path.to_str().unwrap(),
            "--etcd",
            "http://a:1",
            "--etcd-password",
            "hunter2",
        ];
        let p = get_matches(cmd.clone(), argv.iter().map(OsString::from).collect()).unwrap();
        let text = print_config(&cmd, &p);
        assert!(text.contains("once = true  # file"), "{text}");
        assert!(text.contains("etcd = \"http://a:1\"  # flag"), "{text}");
        assert!(
            text.contains("min-reload-interval = \"500ms\"  # default"),
            "{text}"
        );
        assert!(text.contains("etcd-password = \"***\"  # flag"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        // What it prints reads back as a config file.
        let back: toml::Table = text.parse().unwrap();
        assert_eq!(back["etcd"].as_str(), Some("http://a:1"));
    }
}
