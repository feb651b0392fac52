//! `dockreg`: the registration sidekick.

#![forbid(unsafe_code)]

use clap::{parser::ValueSource, Parser};
use dockreg::agent::AgentArgs;
use dockreg::core::config::{parse_args, parse_args_from};
use dockreg::core::process::Fatal;
use dockreg::sidekick::{healthcheck, run, stop_signal, HealthcheckArgs, SidekickArgs};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `dockreg healthcheck`: a Docker HEALTHCHECK asking the running sidekick.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "healthcheck")
    {
        let argv = std::iter::once("dockreg healthcheck".into()).chain(std::env::args_os().skip(2));
        let args = HealthcheckArgs::parse_from(argv);
        return match healthcheck(args.metrics_addr, args.timeout).await {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                println!("{why}");
                ExitCode::FAILURE
            }
        };
    }
    // `dockreg agent`: one agent per host, registering containers from Docker events.
    if std::env::args_os().nth(1).is_some_and(|a| a == "agent") {
        return agent().await;
    }
    let (args, matches): (SidekickArgs, _) = match parse_args(SidekickArgs::command_line()) {
        Ok(parsed) => parsed,
        Err(done) => return done,
    };
    dockreg::core::process::init_logging(args.log_format, args.log_level.as_deref());
    if let Some(done) = etcd_required(&matches, SidekickArgs::command_line) {
        return done;
    }
    // The app's own exit status in wrapper mode; a fatal error is shown once (exit 2 for a
    // usage error, 1 for a runtime failure).
    match run(args, stop_signal()).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(fatal) => fatal.report(SidekickArgs::command_line()),
    }
}

/// `dockreg agent …`: the arguments after `agent`, parsed like the sidekick's (config file,
/// `--print-config`), then the agent until SIGTERM or SIGINT.
async fn agent() -> ExitCode {
    let argv = std::iter::once("dockreg agent".into())
        .chain(std::env::args_os().skip(2))
        .collect();
    let (args, matches): (AgentArgs, _) = match parse_args_from(AgentArgs::command_line(), argv) {
        Ok(parsed) => parsed,
        Err(done) => return done,
    };
    dockreg::core::process::init_logging(args.log_format, args.log_level.as_deref());
    if let Some(done) = etcd_required(&matches, AgentArgs::command_line) {
        return done;
    }
    match dockreg::agent::run(args, dockreg::core::process::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => fatal.report(AgentArgs::command_line()),
    }
}

/// The watcher may default to a local etcd; a sidekick or an agent must be told where etcd
/// is: the usage error (exit 2) when `--etcd` was left at its default.
fn etcd_required(matches: &clap::ArgMatches, command: fn() -> clap::Command) -> Option<ExitCode> {
    (matches.value_source("endpoints") == Some(ValueSource::DefaultValue)).then(|| {
        Fatal::usage(anyhow::anyhow!(
            "--etcd is required (or DOCKREG_ETCD): the etcd endpoints, comma-separated"
        ))
        .report(command())
    })
}
