//! The signals the sidekick handles: SIGTERM and SIGINT stop it ([`stop_signal`], the future
//! the binary hands to [`run`](fn@super::run)); in wrapper mode a few others are forwarded to the
//! app as they arrive ([`forwarded_signals`]).

use anyhow::{Context as _, Result};
use rustix::process::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// The signal that asked the sidekick to stop. In wrapper mode it is passed on to the app once
/// the key is gone and the drain is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (`docker stop`).
    Term,
    /// SIGINT (Ctrl-C).
    Int,
}

impl StopSignal {
    /// The signal to pass on to the app.
    pub(crate) fn signal(self) -> Signal {
        match self {
            StopSignal::Term => Signal::TERM,
            StopSignal::Int => Signal::INT,
        }
    }
}

/// Resolves with the first SIGTERM or SIGINT; an error if their handlers cannot be installed.
///
/// The handlers are installed when the future is first polled, not when it is created:
/// [`run`](fn@super::run) polls it once its main loop starts (after discovery, the app's start and
/// the etcd connection), so until then both signals keep their default effect.
pub async fn stop_signal() -> Result<StopSignal> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => StopSignal::Term,
        _ = int.recv() => StopSignal::Int,
    })
}

/// Signals forwarded to the app as they arrive (SIGTERM and SIGINT are handled apart: they
/// deregister first).
pub(crate) fn forwarded_signals() -> Result<Vec<(Signal, tokio::signal::unix::Signal)>> {
    [
        (Signal::HUP, SignalKind::hangup()),
        (Signal::USR1, SignalKind::user_defined1()),
        (Signal::USR2, SignalKind::user_defined2()),
        (Signal::QUIT, SignalKind::quit()),
        (Signal::WINCH, SignalKind::window_change()),
    ]
    .into_iter()
    .map(|(n, k)| Ok((n, signal(k).context("installing a signal handler")?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_numbers_are_the_platforms() {
        // What is forwarded and passed on is the signal that arrived, number for number.
        assert_eq!(StopSignal::Term.signal().as_raw(), libc::SIGTERM);
        assert_eq!(StopSignal::Int.signal().as_raw(), libc::SIGINT);
        let forwarded: Vec<i32> = forwarded_signals()
            .unwrap()
            .iter()
            .map(|(n, _)| n.as_raw())
            .collect();
        assert_eq!(
            forwarded,
            [
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGUSR2,
                libc::SIGQUIT,
                libc::SIGWINCH
            ]
        );
    }
}
