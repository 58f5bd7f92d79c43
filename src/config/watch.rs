//! Files the proxy reloads while it runs (TLS certificate, users, tokens, JWKS): one watcher that
//! wakes when any watched file changed (checked every [`POLL`]) or on SIGHUP.
//!
//! Each owner of reloadable files runs its own [`Watcher`]; SIGHUP reaches every one of them. Once
//! any watcher exists, SIGHUP reloads and no longer ends the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the watched files are checked for a change.
pub const POLL: Duration = Duration::from_secs(2);

/// Why a watcher woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A watched file's stamp changed.
    Changed,
    /// `kill -HUP`: reload even when the files look unchanged.
    Hangup,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Changed => "file changed",
            Why::Hangup => "SIGHUP",
        }
    }
}

/// What identifies a file's version: a rewrite, a rename over it or a symlink swap (Kubernetes
/// secrets) changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// Wakes when one of its files changes or on SIGHUP. Needs a tokio runtime.
pub struct Watcher {
    paths: Vec<PathBuf>,
    seen: Vec<Option<Stamp>>,
    hup: Hangup,
    tick: tokio::time::Interval,
}

impl Watcher {
    /// Watches `paths` from their state now on.
    pub fn new(paths: Vec<PathBuf>) -> Watcher {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watcher {
            paths,
            seen,
            hup: hangup(),
            tick,
        }
    }

    /// Resolves at the next change or SIGHUP. The stamps are remembered before it returns, even
    /// if the caller's reload then fails: a bad file is reported once, and the next change (the
    /// rest of a deploy) triggers the next try. Cancel-safe.
    pub async fn next(&mut self) -> Why {
        loop {
            let why = tokio::select! {
                _ = self.tick.tick() => Why::Changed,
                _ = next_hangup(&mut self.hup) => Why::Hangup,
            };
            let now: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
            if why == Why::Hangup || now != self.seen {
                self.seen = now;
                return why;
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files reload on change only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

/// Resolves on the next SIGHUP; never where there is none.
async fn next_hangup(hup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hup {
        if s.recv().await.is_some() {
            return;
        }
    }
    let _ = hup;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wakes_on_a_change_only() {
        let dir = std::env::temp_dir().join(format!("kp-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, "one").unwrap();
        let mut w = Watcher::new(vec![f.clone()]);
        // Unchanged: no wake within a few polls.
        let quiet = tokio::time::timeout(POLL * 3, w.next()).await;
        assert!(quiet.is_err(), "woke without a change");
        std::fs::write(&f, "two, longer").unwrap();
        let why = tokio::time::timeout(POLL * 2, w.next()).await.unwrap();
        assert_eq!(why, Why::Changed);
        // A removed file is a change too (its stamp becomes None).
        std::fs::remove_file(&f).unwrap();
        let why = tokio::time::timeout(POLL * 2, w.next()).await.unwrap();
        assert_eq!(why, Why::Changed);
    }
}
