//! Wrapper mode: `dockreg [flags] -- <app command>` starts the app as a child, so no
//! supervisor is needed in the container. Signals are forwarded to the app; as PID 1 every
//! orphan is reaped; on SIGTERM/SIGINT the sidekick first deregisters, waits `--drain` so
//! HAProxy stops sending new requests, then passes the signal on and exits with the app's
//! status.

use anyhow::{bail, Context as _, Result};
use std::process::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The app child process.
pub struct App {
    pid: libc::pid_t,
    status: Option<i32>,
    sigchld: Signal,
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
fn decode(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

impl App {
    /// Starts `command` with the sidekick's stdio and environment.
    pub fn start(command: &[String]) -> Result<App> {
        let Some((program, args)) = command.split_first() else {
            bail!("no app command after --");
        };
        // Listen for SIGCHLD before the child exists, so its exit cannot be missed.
        let sigchld = signal(SignalKind::child()).context("installing the SIGCHLD handler")?;
        let child = Command::new(program)
            .args(args)
            .spawn()
            .with_context(|| format!("starting the app {program:?}"))?;
        let pid = child.id() as libc::pid_t;
        // The child is reaped below with waitpid (the std handle would never wait for it).
        drop(child);
        tracing::info!(pid, command = ?command, "app started");
        Ok(App {
            pid,
            status: None,
            sigchld,
        })
    }

    /// Reaps every exited child (orphans too, when PID 1); records the app's status.
    fn reap(&mut self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid with a valid pointer to a c_int; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.pid {
                self.status = Some(decode(status));
            }
        }
    }

    /// Waits until the app exits; returns its status.
    pub async fn wait(&mut self) -> i32 {
        loop {
            self.reap();
            if let Some(s) = self.status {
                return s;
            }
            self.sigchld.recv().await;
        }
    }

    /// The app's status if it has exited.
    pub fn try_status(&mut self) -> Option<i32> {
        self.reap();
        self.status
    }

    /// Sends `sig` to the app.
    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }
}

/// Signals forwarded to the app as they arrive (SIGTERM and SIGINT are handled apart: they
/// deregister first).
pub fn forwarded_signals() -> Result<Vec<(libc::c_int, Signal)>> {
    [
        (libc::SIGHUP, SignalKind::hangup()),
        (libc::SIGUSR1, SignalKind::user_defined1()),
        (libc::SIGUSR2, SignalKind::user_defined2()),
        (libc::SIGQUIT, SignalKind::quit()),
        (libc::SIGWINCH, SignalKind::window_change()),
    ]
    .into_iter()
    .map(|(n, k)| Ok((n, signal(k).context("installing a signal handler")?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_status_and_signals_reach_the_caller() {
        let mut app = App::start(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        assert_eq!(app.wait().await, 7);
        let mut app = App::start(&["sleep".into(), "30".into()]).unwrap();
        assert_eq!(app.try_status(), None);
        app.signal(libc::SIGTERM);
        assert_eq!(app.wait().await, 128 + libc::SIGTERM);
    }

    #[test]
    fn missing_command_is_an_error() {
        assert!(App::start(&[]).is_err());
    }
}
