//! When to re-read the TLS files while serving: on SIGHUP (what [`crate::run`] listens
//! for when `[server.tls]` is set) and whenever a [`ReloadHandle`] asks (embedders and
//! tests, see [`crate::run_with_reloads`]). Each reload is logged; a failed one keeps the
//! certificates in use.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::{Certificates, TlsError};

type Request = oneshot::Sender<Result<(), TlsError>>;

/// The reload triggers a server listens to.
pub struct Reloads {
    requests: Option<mpsc::Receiver<Request>>,
    sighup: bool,
}

impl Reloads {
    /// Reload on SIGHUP (Unix; never elsewhere).
    pub fn sighup() -> Self {
        Reloads {
            requests: None,
            sighup: true,
        }
    }

    /// Also reload on SIGHUP.
    pub fn and_sighup(mut self) -> Self {
        self.sighup = true;
        self
    }

    /// Serve reload triggers until the returned handle drops. SIGHUP is hooked before
    /// this returns, so a SIGHUP sent once the server answers never finds the default
    /// action (ending the process).
    pub(crate) fn spawn(self, certificates: Arc<Certificates>) -> AbortOnDropHandle<()> {
        let hangup = self.sighup.then(hangups).flatten();
        AbortOnDropHandle::new(tokio::spawn(self.serve(hangup, certificates)))
    }

    async fn serve(mut self, mut hangup: Option<Hangups>, certificates: Arc<Certificates>) {
        loop {
            let reply = tokio::select! {
                Some(()) = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading the TLS certificates");
                    None
                }
                Some(reply) = next_request(&mut self.requests) => Some(reply),
                else => return,
            };
            let outcome = apply(&certificates);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Asks a running server to re-read its TLS files.
#[derive(Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<Request>,
}

impl ReloadHandle {
    /// Reload now; resolves once new handshakes use the new files, or with what is wrong
    /// with them (the server then keeps the previous ones). Also an error when the
    /// server does not serve TLS or has stopped.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let not_serving = || TlsError {
            key: "server.tls",
            message: "the server is not serving TLS (not configured, or stopped)".into(),
        };
        let (reply, outcome) = oneshot::channel();
        self.requests.send(reply).await.map_err(|_| not_serving())?;
        outcome.await.map_err(|_| not_serving())?
    }
}

/// A handle and the [`Reloads`] it triggers (no SIGHUP unless [`Reloads::and_sighup`]).
pub fn reload_channel() -> (ReloadHandle, Reloads) {
    let (requests, receiver) = mpsc::channel(4);
    (
        ReloadHandle { requests },
        Reloads {
            requests: Some(receiver),
            sighup: false,
        },
    )
}

fn apply(certificates: &Certificates) -> Result<(), TlsError> {
    match certificates.reload() {
        Ok(()) => {
            tracing::info!("TLS certificates reloaded: new connections use them");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "TLS reload failed: still serving the previous certificates");
            Err(e)
        }
    }
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = std::convert::Infallible;

#[cfg(unix)]
fn hangups() -> Option<Hangups> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP: no TLS reloads"))
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Option<Hangups> {
    None
}

async fn next_hangup(hangup: &mut Option<Hangups>) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(signals) => signals.recv().await,
        #[cfg(not(unix))]
        Some(never) => match *never {},
        None => std::future::pending().await,
    }
}

async fn next_request(requests: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match requests {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
