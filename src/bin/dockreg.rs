//! `dockreg`: the registration sidekick (command line only so far).

use clap::Parser;
use dockreg::sidekick::SidekickArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = SidekickArgs::parse();
    if let Err(e) = args.prefix() {
        eprintln!("dockreg: --key: {e}");
        return ExitCode::from(2);
    }
    eprintln!("dockreg: not implemented yet");
    ExitCode::FAILURE
}
