//! Graceful shutdown: one signal shared by the server, feed streams and
//! background tasks of a process.

use std::sync::Arc;

use tokio::sync::watch;

/// A shutdown signal. Clones observe the same signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the signal fires.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// The status that ends a server stream because the process is shutting
    /// down: UNAVAILABLE, so a client can tell a drain from a normal end
    /// and reconnect from the last item it received (`resume` says how).
    pub fn stream_status(resume: &str) -> tonic::Status {
        tonic::Status::unavailable(format!("the service is shutting down; reconnect {resume}"))
    }

    /// Fires the signal on SIGTERM or Ctrl-C (SIGINT).
    pub fn trigger_on_os_signal(&self) {
        let this = self.clone();
        // Registered here, before the task first runs: a SIGTERM arriving
        // right after start (an orchestrator, a test) must drain the
        // process, not kill it with the default disposition.
        let signals = OsSignals::register();
        tokio::spawn(async move {
            signals.recv().await;
            tracing::info!("shutdown requested; draining in-flight calls");
            this.trigger();
        });
    }
}

/// SIGTERM and SIGINT handlers, registered when made.
struct OsSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the first of them.
    async fn recv(self) {
        #[cfg(unix)]
        {
            let (term, int) = (self.term, self.int);
            async fn next(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if term.is_none() && int.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                _ = next(term) => {}
                _ = next(int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn os_signal() {
    OsSignals::register().recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM sent the moment the handler is asked for drains the process
    /// instead of killing it (it used to be registered only once a spawned
    /// task first ran).
    /// On a current-thread runtime the spawned task cannot run before the
    /// (blocking) `kill` below, so only a handler registered up front counts.
    #[cfg(unix)]
    #[tokio::test(flavor = "current_thread")]
    async fn sigterm_right_after_registration_triggers_shutdown() {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_os_signal();
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(std::process::id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), shutdown.wait())
            .await
            .expect("SIGTERM fired the shutdown signal");
        assert!(shutdown.is_triggered());
    }
}
