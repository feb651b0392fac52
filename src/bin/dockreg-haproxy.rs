//! `dockreg-haproxy`: the watcher that keeps HAProxy's backends in step with etcd.
//!
//! Exit status: 0 after a clean stop (SIGTERM, SIGINT) or a successful `--once`/`--dry-run`;
//! 2 for a usage error (clap's own parse errors, a config file error, and the flag checks
//! after parsing); 1 for a runtime failure. A fatal error is shown once.

use clap::{CommandFactory, FromArgMatches};
use dockreg::core::config::{get_matches, print_config, ParseError};
use dockreg::core::process::{init_logging, shutdown_signal};
use dockreg::watcher::{run, WatcherArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cmd = WatcherArgs::command();
    let parsed = match get_matches(cmd.clone(), std::env::args_os().collect()) {
        Ok(m) => m,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let args = match WatcherArgs::from_arg_matches(&parsed.matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if args.print_config {
        print!("{}", print_config(&cmd, &parsed));
        return ExitCode::SUCCESS;
    }
    init_logging(args.log_format, args.log_level.as_deref());
    match run(args, shutdown_signal()).await {
        Ok(code) => code,
        Err(fatal) => fatal.report(WatcherArgs::command()),
    }
}
