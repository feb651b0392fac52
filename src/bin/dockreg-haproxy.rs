//! `dockreg-haproxy`: the watcher that keeps HAProxy's backends in step with etcd.

use clap::Parser;
use dockreg::watcher::{run, WatcherArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = WatcherArgs::parse();
    dockreg::core::process::init_logging(args.log_format);
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dockreg-haproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
