//! One session's live figures and state: counters, assigned partitions with delivered
//! positions, and an operator's close request.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

/// Per-session figures, shared between the session task and the registry.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Records taken from Kafka.
    pub received: AtomicU64,
    /// Records written to the socket.
    pub sent: AtomicU64,
    /// Frames written to the socket.
    pub frames: AtomicU64,
    /// Bytes written to the socket.
    pub bytes: AtomicU64,
    /// Bytes the proxy holds for this session right now (frame being built, queued frames, records
    /// held while paused). Bounded by `sessionBufferBytes`.
    pub buffered_bytes: AtomicUsize,
    /// Largest `buffered_bytes` seen.
    pub buffered_bytes_max: AtomicUsize,
    /// Records delivered and not yet acknowledged (ack mode).
    pub unacked: AtomicUsize,
    /// 1 while fetching is paused for backpressure.
    pub paused: AtomicUsize,
    /// Records produced and acknowledged by Kafka (produce sockets).
    pub produced: AtomicU64,
    /// Records that failed to produce.
    pub produce_errors: AtomicU64,
    /// Milliseconds since the Unix epoch of the last record delivered, 0 if none.
    pub last_delivery_ms: AtomicI64,
    /// 1 while a produce socket is not read because its principal is over its produce rate.
    pub throttled: AtomicUsize,
    /// Records the client acknowledged (`commit=ack` sockets).
    pub acked: AtomicU64,
    /// Records written count as acknowledged: an event stream, whose client cannot acknowledge.
    written_is_acked: AtomicBool,
    /// Partitions assigned now, each with the next offset to deliver once one was delivered.
    assigned: Mutex<Vec<AssignedPartition>>,
    /// An operator asked to close the session (`POST /admin/sessions/{id}/close`): the reason.
    close: CloseRequest,
}

/// A partition a session is assigned, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AssignedPartition {
    pub topic: String,
    pub partition: i32,
    /// The next offset to deliver: one past the last record written to the socket; `None` until
    /// the session delivered a record of the partition.
    pub position: Option<i64>,
    /// High watermark minus `position`, filled in by the admin API from Kafka.
    pub lag: Option<i64>,
}

/// The close request of one session; set once, observed by the socket driver.
#[derive(Debug)]
struct CloseRequest(watch::Sender<Option<String>>);

impl Default for CloseRequest {
    fn default() -> Self {
        CloseRequest(watch::Sender::new(None))
    }
}

impl SessionStats {
    pub fn set_buffered(&self, bytes: usize) {
        self.buffered_bytes.store(bytes, Relaxed);
        self.buffered_bytes_max.fetch_max(bytes, Relaxed);
    }

    /// The client acknowledged `records` more records.
    pub fn acked(&self, records: usize) {
        self.acked.fetch_add(records as u64, Relaxed);
    }

    /// From now on the records written are the records acknowledged: for an event stream, whose
    /// client has no way back, the connection taking an event is as far as delivery is
    /// confirmed (and what `commit=auto` commits).
    pub fn acks_when_written(&self) {
        self.written_is_acked.store(true, Relaxed);
    }

    /// Records acknowledged: by the client (`commit=ack`), or written for an event stream.
    pub fn acked_records(&self) -> u64 {
        if self.written_is_acked.load(Relaxed) {
            self.sent.load(Relaxed)
        } else {
            self.acked.load(Relaxed)
        }
    }

    /// Partitions were assigned to the session.
    pub fn assign(&self, partitions: &[(String, i32)]) {
        if let Ok(mut a) = self.assigned.lock() {
            for (topic, partition) in partitions {
                if !a
                    .iter()
                    .any(|x| x.partition == *partition && &x.topic == topic)
                {
                    a.push(AssignedPartition {
                        topic: topic.clone(),
                        partition: *partition,
                        position: None,
                        lag: None,
                    });
                }
            }
            a.sort_by(|x, y| (&x.topic, x.partition).cmp(&(&y.topic, y.partition)));
        }
    }

    /// Partitions were taken from the session.
    pub fn revoke(&self, partitions: &[(String, i32)]) {
        if let Ok(mut a) = self.assigned.lock() {
            a.retain(|x| {
                !partitions
                    .iter()
                    .any(|(t, p)| *p == x.partition && *t == x.topic)
            });
        }
    }

    /// A record frame of `records` records and `bytes` bytes was written to the socket, which
    /// delivered each partition up to the `next` offset given for it (one lock per frame).
    /// Only partitions still assigned move: a frame of a revoked partition changes nothing.
    pub fn wrote<'a>(
        &self,
        records: usize,
        bytes: usize,
        next: impl IntoIterator<Item = ((&'a str, i32), i64)>,
    ) {
        self.sent.fetch_add(records as u64, Relaxed);
        self.frames.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.last_delivery_ms.store(super::now_ms(), Relaxed);
        if let Ok(mut a) = self.assigned.lock() {
            for ((topic, partition), offset) in next {
                if let Some(x) = a
                    .iter_mut()
                    .find(|x| x.partition == partition && x.topic == topic)
                {
                    x.position = Some(x.position.map_or(offset, |p| p.max(offset)));
                }
            }
        }
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<AssignedPartition> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Asks the session to close with `reason`; `false` when it was asked already.
    pub fn request_close(&self, reason: String) -> bool {
        let mut first = false;
        self.close.0.send_if_modified(|r| {
            first = r.is_none();
            if first {
                *r = Some(reason);
            }
            first
        });
        first
    }

    /// Whether an operator asked the session to close.
    pub fn closing(&self) -> bool {
        self.close.0.borrow().is_some()
    }

    /// Resolves with the reason once an operator asks the session to close.
    pub fn close_requested(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.close.0.subscribe();
        async move {
            let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone());
            match reason {
                Ok(r) => r.unwrap_or_default(),
                // The session's stats are gone, so is the session.
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Static description of a session for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMeta {
    pub kind: &'static str,
    pub topics: Vec<String>,
    pub group: Option<String>,
    pub peer: String,
    /// Who the session belongs to (`anonymous` without auth).
    pub principal: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn assigned_partitions_follow_rebalances_and_deliveries() {
        let s = SessionStats::default();
        s.assign(&[tp("b", 0), tp("a", 1), tp("a", 0)]);
        s.assign(&[tp("a", 0)]);
        let order: Vec<_> = s
            .assigned()
            .iter()
            .map(|a| (a.topic.clone(), a.partition))
            .collect();
        assert_eq!(order, vec![tp("a", 0), tp("a", 1), tp("b", 0)]);
        s.wrote(3, 100, [(("a", 0), 7), (("b", 0), 2)]);
        // A frame of a partition no longer assigned moves nothing; positions never go back.
        s.wrote(1, 10, [(("c", 0), 5), (("a", 0), 4)]);
        let a = s.assigned();
        assert_eq!(a[0].position, Some(7));
        assert_eq!(a[1].position, None);
        assert_eq!(a[2].position, Some(2));
        assert_eq!(s.sent.load(Relaxed), 4);
        assert_eq!(s.frames.load(Relaxed), 2);
        assert_eq!(s.bytes.load(Relaxed), 110);
        s.revoke(&[tp("a", 0), tp("b", 0)]);
        assert_eq!(s.assigned().len(), 1);
        s.acked(3);
        assert_eq!(s.acked.load(Relaxed), 3);
        assert_eq!(s.acked_records(), 3);
        // An event stream: what was written is what is acknowledged.
        s.acks_when_written();
        assert_eq!(s.acked_records(), 4);
    }

    #[tokio::test]
    async fn a_close_request_reaches_the_session_once() {
        let s = SessionStats::default();
        let requested = s.close_requested();
        assert!(!s.closing());
        assert!(s.request_close("maintenance".into()));
        assert!(!s.request_close("again".into()), "the first reason stays");
        assert!(s.closing());
        let reason = tokio::time::timeout(std::time::Duration::from_secs(1), requested)
            .await
            .expect("resolves once asked");
        assert_eq!(reason, "maintenance");
        // A session that starts watching after the request sees it too.
        assert_eq!(s.close_requested().await, "maintenance");
    }
}
