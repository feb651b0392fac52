//! Wrapper mode: `dockreg [flags] -- <app command>` starts the app as a child, so no
//! supervisor is needed in the container. Signals are forwarded to the app; as PID 1 every
//! orphan is reaped; on SIGTERM/SIGINT the sidekick first deregisters, waits `--drain` so
//! HAProxy stops sending new requests, then passes the signal on and exits with the app's
//! status. Which signals are forwarded, and which stop the sidekick: [`super::signals`].
//!
//! `waitpid` and `kill` go through `rustix`'s safe wrappers, so this needs no `unsafe`.

use anyhow::{bail, Context as _, Result};
use rustix::process::{kill_process, wait, Pid, Signal, WaitOptions, WaitStatus};
use std::process::Command;
use tokio::signal::unix::{signal, SignalKind};

/// The app child process.
pub(crate) struct App {
    pid: Pid,
    status: Option<i32>,
    sigchld: tokio::signal::unix::Signal,
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
fn decode(status: WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        128 + sig
    } else {
        1
    }
}

impl App {
    /// Starts `command` with the sidekick's stdio and environment.
    pub(crate) fn start(command: &[String]) -> Result<App> {
        let Some((program, args)) = command.split_first() else {
            bail!("no app command after --");
        };
        // Listen for SIGCHLD before the child exists, so its exit cannot be missed.
        let sigchld = signal(SignalKind::child()).context("installing the SIGCHLD handler")?;
        let child = Command::new(program)
            .args(args)
            .spawn()
            .with_context(|| format!("starting the app {program:?}"))?;
        let pid = Pid::from_child(&child);
        // The child is reaped below with waitpid (the std handle would never wait for it).
        drop(child);
        tracing::info!(pid = pid.as_raw_pid(), command = ?command, "app started");
        Ok(App {
            pid,
            status: None,
            sigchld,
        })
    }

    /// Reaps every exited child (orphans too, when PID 1); records the app's status.
    fn reap(&mut self) {
        // waitpid(-1, WNOHANG): any child, without blocking (rustix's `waitpid(None, ..)` would
        // be waitpid(0, ..), only the own process group: orphans re-parented to PID 1 are
        // not in it). An error (no children left) ends the round as `None` (nothing more to
        // reap) does.
        while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
            if pid == self.pid {
                self.status = Some(decode(status));
            }
        }
    }

    /// Waits until the app exits; returns its status.
    pub(crate) async fn wait(&mut self) -> i32 {
        loop {
            self.reap();
            if let Some(s) = self.status {
                return s;
            }
            self.sigchld.recv().await;
        }
    }

    /// Sends `sig` to the app (unless it has been reaped: its pid may be reused).
    pub(crate) fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            // Like kill(2) before: a failure (the app already gone) is not reported.
            let _ = kill_process(self.pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl App {
        /// The app's status if it has exited.
        fn try_status(&mut self) -> Option<i32> {
            self.reap();
            self.status
        }
    }

    #[tokio::test]
    async fn exit_status_and_signals_reach_the_caller() {
        let mut app = App::start(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        assert_eq!(app.wait().await, 7);
        let mut app = App::start(&["sleep".into(), "30".into()]).unwrap();
        assert_eq!(app.try_status(), None);
        app.signal(Signal::TERM);
        assert_eq!(app.wait().await, 128 + libc::SIGTERM);
    }

    #[test]
    fn missing_command_is_an_error() {
        assert!(App::start(&[]).is_err());
    }
}
