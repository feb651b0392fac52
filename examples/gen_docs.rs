//! Generates the man pages and shell completions of both programs from their clap
//! definitions, for the Debian package (`[package.metadata.deb]` in Cargo.toml):
//!
//! ```text
//! cargo run --example gen_docs -- target/docs
//! ```
//!
//! writes `man/dockreg.1`, `man/dockreg-agent.1`, `man/dockreg-haproxy.1` and
//! `completions/{bash,zsh,fish}/…`.

use clap::CommandFactory;
use clap_complete::Shell;
use dockreg::agent::AgentArgs;
use dockreg::sidekick::SidekickArgs;
use dockreg::watcher::WatcherArgs;
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/docs"));
    for cmd in [WatcherArgs::command(), SidekickArgs::command_line()] {
        write_man(&out.join("man"), &cmd)?;
        for (shell, dir) in [
            (Shell::Bash, "bash"),
            (Shell::Zsh, "zsh"),
            (Shell::Fish, "fish"),
        ] {
            let dir = out.join("completions").join(dir);
            std::fs::create_dir_all(&dir)?;
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_string();
            clap_complete::generate_to(shell, &mut cmd, name, &dir)?;
        }
    }
    // `dockreg agent` is a subcommand of `dockreg`: its page is `dockreg-agent(1)`.
    write_man(
        &out.join("man"),
        &AgentArgs::command_line().name("dockreg-agent"),
    )?;
    println!("man pages and completions in {}", out.display());
    Ok(())
}

fn write_man(dir: &Path, cmd: &clap::Command) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{}.1", cmd.get_name())), page)
}
