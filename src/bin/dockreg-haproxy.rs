//! `dockreg-haproxy`: the watcher that keeps HAProxy's backends in step with etcd.
//!
//! Exit status: 0 after a clean stop (SIGTERM, SIGINT) or a successful `--once`/`--dry-run`;
//! 2 for a usage error (clap's own parse errors, a config file error, and the flag checks
//! after parsing); 1 for a runtime failure. A fatal error is shown once.

use clap::CommandFactory;
use dockreg::core::config::parse_args;
use dockreg::core::process::{init_logging, shutdown_signal};
use dockreg::watcher::{run, WatcherArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: WatcherArgs = match parse_args(WatcherArgs::command()) {
        Ok((args, _)) => args,
        Err(done) => return done,
    };
    init_logging(args.log_format, args.log_level.as_deref());
    match run(args, shutdown_signal()).await {
        Ok(code) => code,
        Err(fatal) => fatal.report(WatcherArgs::command()),
    }
}
