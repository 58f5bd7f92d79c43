//! Graceful shutdown: one signal that every task can wait on, and a tracker of live sessions.
//!
//! As in mini-redis, each session holds a clone of a tracker token; the server waits until all
//! are dropped or the grace period ends.

use tokio::sync::{mpsc, watch};

/// Broadcasts "stop" to every task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been triggered (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// Each session holds one; `Drained::wait` returns when every clone is gone.
#[derive(Clone, Debug)]
pub struct SessionToken {
    _tx: mpsc::Sender<()>,
}

pub struct Drained {
    rx: mpsc::Receiver<()>,
}

pub fn tracker() -> (SessionToken, Drained) {
    let (tx, rx) = mpsc::channel(1);
    (SessionToken { _tx: tx }, Drained { rx })
}

impl Drained {
    pub async fn wait(mut self) {
        // recv returns None once all senders are dropped.
        let _ = self.rx.recv().await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
