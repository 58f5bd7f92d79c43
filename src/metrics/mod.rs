//! Counters, the live session registry behind `/metrics` and `/admin/sessions`, and the seed-style
//! periodic stats log.
//!
//! Hot paths only touch per-session atomics; labels stay low-cardinality: no topic or group labels
//! on Prometheus series except `kafka_proxy_group_lag`, bounded to `MAX_LAG_GROUPS` groups the
//! proxy serves (per-group detail is in the admin API and the stats log).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Most groups `kafka_proxy_group_lag` has series for (docs/PROTOCOL.md, "Admin API"), so a
/// client naming many groups cannot blow up the scrape.
pub const MAX_LAG_GROUPS: usize = 100;

mod session;
pub use session::{AssignedPartition, SessionMeta, SessionStats};

struct Entry {
    meta: SessionMeta,
    stats: Arc<SessionStats>,
    started: Instant,
}

/// Refusals of the access layer: authorization and quotas.
#[derive(Debug, Default)]
pub struct AccessCounters {
    /// Requests denied by the ACL rules (403 `forbidden` before the upgrade).
    pub denied: AtomicU64,
    /// Failed authentications (401).
    pub auth_failures: AtomicU64,
    /// Requests refused before authentication because their address failed too often (429).
    pub auth_blocked: AtomicU64,
    /// Sessions refused by `maxSessionsPerPrincipal` (429).
    pub sessions_refused: AtomicU64,
    /// HTTP produce requests refused by the produce rate (429).
    pub produce_refused: AtomicU64,
    /// Times a produce socket stopped being read for its principal's produce rate.
    pub produce_throttled: AtomicU64,
}

/// Process-wide metrics.
#[derive(Default)]
pub struct Metrics {
    next_id: AtomicU64,
    /// `kafka_proxy_group_lag` rows from the last background refresh, and how many served
    /// groups were left out by `MAX_LAG_GROUPS`.
    group_lag: Mutex<(Vec<GroupLag>, usize)>,
    sessions: Mutex<HashMap<u64, Entry>>,
    pub connections_total: AtomicU64,
    pub rejected_total: AtomicU64,
    pub http_produce_requests: AtomicU64,
    pub access: AccessCounters,
    /// Totals of sessions that have ended, so counters never go backwards.
    closed: SessionStats,
}

/// Removes the session from the registry when the session ends.
pub struct SessionGuard {
    id: u64,
    metrics: Arc<Metrics>,
    pub stats: Arc<SessionStats>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.metrics.sessions.lock() {
            s.remove(&self.id);
        }
        let c = &self.metrics.closed;
        c.received
            .fetch_add(self.stats.received.load(Relaxed), Relaxed);
        c.sent.fetch_add(self.stats.sent.load(Relaxed), Relaxed);
        c.frames.fetch_add(self.stats.frames.load(Relaxed), Relaxed);
        c.bytes.fetch_add(self.stats.bytes.load(Relaxed), Relaxed);
        c.produced
            .fetch_add(self.stats.produced.load(Relaxed), Relaxed);
        c.produce_errors
            .fetch_add(self.stats.produce_errors.load(Relaxed), Relaxed);
    }
}

#[derive(Debug, Serialize)]
pub struct SessionReport {
    pub id: u64,
    #[serde(flatten)]
    pub meta: SessionMeta,
    pub age_secs: u64,
    pub received: u64,
    pub sent: u64,
    pub bytes: u64,
    pub buffered_bytes: usize,
    pub buffered_bytes_max: usize,
    pub unacked: usize,
    pub paused: bool,
    pub throttled: bool,
    pub produced: u64,
    pub produce_errors: u64,
    /// Records the client acknowledged (`commit=ack`); for an event stream, records written.
    pub acked: u64,
    /// Partitions assigned now (consume and tail sessions).
    pub assigned: Vec<AssignedPartition>,
    /// Sum of the assigned partitions' known lags, filled in by the admin API from Kafka.
    pub lag: Option<i64>,
    /// An operator asked the session to close; it is closing.
    pub closing: bool,
}

/// The lag of a group the proxy serves on one topic: the sum over the topic's partitions with a
/// committed offset of high watermark minus that offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub lag: i64,
}

impl Metrics {
    pub fn register(self: &Arc<Self>, meta: SessionMeta) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let stats = Arc::new(SessionStats::default());
        self.connections_total.fetch_add(1, Relaxed);
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(
                id,
                Entry {
                    meta,
                    stats: stats.clone(),
                    started: Instant::now(),
                },
            );
        }
        SessionGuard {
            id,
            metrics: self.clone(),
            stats,
        }
    }

    /// Counts a request refused before the upgrade (auth, parameters).
    pub fn reject(&self) {
        self.rejected_total.fetch_add(1, Relaxed);
    }

    /// Counts the records of one HTTP produce request (HTTP requests are not sessions).
    pub fn count_http_produce(&self, produced: u64, errors: u64) {
        self.closed.produced.fetch_add(produced, Relaxed);
        self.closed.produce_errors.fetch_add(errors, Relaxed);
    }

    pub fn active(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn sessions(&self) -> Vec<SessionReport> {
        let Ok(s) = self.sessions.lock() else {
            return Vec::new();
        };
        let mut out: Vec<SessionReport> = s
            .iter()
            .map(|(id, e)| SessionReport {
                id: *id,
                meta: e.meta.clone(),
                age_secs: e.started.elapsed().as_secs(),
                received: e.stats.received.load(Relaxed),
                sent: e.stats.sent.load(Relaxed),
                bytes: e.stats.bytes.load(Relaxed),
                buffered_bytes: e.stats.buffered_bytes.load(Relaxed),
                buffered_bytes_max: e.stats.buffered_bytes_max.load(Relaxed),
                unacked: e.stats.unacked.load(Relaxed),
                paused: e.stats.paused.load(Relaxed) > 0,
                throttled: e.stats.throttled.load(Relaxed) > 0,
                produced: e.stats.produced.load(Relaxed),
                produce_errors: e.stats.produce_errors.load(Relaxed),
                acked: e.stats.acked_records(),
                assigned: e.stats.assigned(),
                lag: None,
                closing: e.stats.closing(),
            })
            .collect();
        out.sort_by_key(|r| r.id);
        out
    }

    /// Asks session `id` to close with `reason`; `None` when no such session is open, else
    /// whether this was the first request.
    pub fn close_session(&self, id: u64, reason: String) -> Option<bool> {
        let s = self.sessions.lock().ok()?;
        Some(s.get(&id)?.stats.request_close(reason))
    }

    /// The groups sessions serve now, with their topics, by name.
    pub fn served_groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Ok(s) = self.sessions.lock() {
            for e in s.values() {
                if let Some(g) = &e.meta.group {
                    let topics = out.entry(g.clone()).or_default();
                    topics.extend(e.meta.topics.iter().cloned());
                    topics.sort();
                    topics.dedup();
                }
            }
        }
        out
    }

    /// Replaces the `kafka_proxy_group_lag` series (`omitted`: served groups left out).
    pub fn set_group_lag(&self, rows: Vec<GroupLag>, omitted: usize) {
        if let Ok(mut g) = self.group_lag.lock() {
            *g = (rows, omitted);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, kafka_ready: bool) -> String {
        let sessions = self.sessions();
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut received, mut sent, mut frames, mut bytes, mut buffered, mut produced, mut perr) =
            (0u64, 0u64, 0u64, 0u64, 0usize, 0u64, 0u64);
        let (mut paused, mut throttled) = (0usize, 0usize);
        for r in &sessions {
            *by_kind.entry(r.meta.kind).or_default() += 1;
            received += r.received;
            sent += r.sent;
            bytes += r.bytes;
            buffered += r.buffered_bytes;
            produced += r.produced;
            perr += r.produce_errors;
            paused += usize::from(r.paused);
            throttled += usize::from(r.throttled);
        }
        if let Ok(s) = self.sessions.lock() {
            frames = s.values().map(|e| e.stats.frames.load(Relaxed)).sum();
        }
        let c = &self.closed;
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "kafka_proxy_kafka_ready",
            "gauge",
            "1 when Kafka answers metadata requests.",
            u8::from(kafka_ready).to_string(),
        );
        metric(
            "kafka_proxy_connections_total",
            "counter",
            "WebSocket sessions accepted.",
            self.connections_total.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_rejected_total",
            "counter",
            "Requests refused before the upgrade (auth, bad parameters, limits).",
            self.rejected_total.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_records_received_total",
            "counter",
            "Records read from Kafka for consume sessions.",
            (received + c.received.load(Relaxed)).to_string(),
        );
        metric(
            "kafka_proxy_records_sent_total",
            "counter",
            "Records written to consume sockets.",
            (sent + c.sent.load(Relaxed)).to_string(),
        );
        metric(
            "kafka_proxy_frames_sent_total",
            "counter",
            "Record frames written to consume sockets.",
            (frames + c.frames.load(Relaxed)).to_string(),
        );
        metric(
            "kafka_proxy_bytes_sent_total",
            "counter",
            "Record frame bytes written to consume sockets.",
            (bytes + c.bytes.load(Relaxed)).to_string(),
        );
        metric(
            "kafka_proxy_buffered_bytes",
            "gauge",
            "Bytes held by the proxy for consume sessions.",
            buffered.to_string(),
        );
        metric(
            "kafka_proxy_paused_sessions",
            "gauge",
            "Consume sessions whose fetching is paused by backpressure.",
            paused.to_string(),
        );
        metric(
            "kafka_proxy_http_produce_requests_total",
            "counter",
            "HTTP produce requests received.",
            self.http_produce_requests.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_records_produced_total",
            "counter",
            "Records produced and acknowledged by Kafka (WebSocket and HTTP).",
            (produced + c.produced.load(Relaxed)).to_string(),
        );
        metric(
            "kafka_proxy_produce_errors_total",
            "counter",
            "Records that failed to produce.",
            (perr + c.produce_errors.load(Relaxed)).to_string(),
        );
        let a = &self.access;
        metric(
            "kafka_proxy_denied_total",
            "counter",
            "Requests denied by the ACL rules (403 forbidden before the upgrade).",
            a.denied.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_auth_failures_total",
            "counter",
            "Failed authentications (401).",
            a.auth_failures.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_produce_throttled_total",
            "counter",
            "Times a produce socket stopped being read for its principal's produce rate.",
            a.produce_throttled.load(Relaxed).to_string(),
        );
        metric(
            "kafka_proxy_throttled_sessions",
            "gauge",
            "Produce sockets not read right now because of their principal's produce rate.",
            throttled.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP kafka_proxy_quota_refused_total Requests refused with 429 by a quota.\n\
             # TYPE kafka_proxy_quota_refused_total counter"
        );
        for (kind, n) in [
            ("sessions", &a.sessions_refused),
            ("produce_rate", &a.produce_refused),
            ("auth_failures", &a.auth_blocked),
        ] {
            let n = n.load(Relaxed);
            let _ = writeln!(
                out,
                "kafka_proxy_quota_refused_total{{kind=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kafka_proxy_sessions Open sessions by kind.\n# TYPE kafka_proxy_sessions gauge"
        );
        for kind in ["seed", "consume", "produce", "tail", "sse", "sse-tail"] {
            let n = by_kind.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "kafka_proxy_sessions{{kind=\"{kind}\"}} {n}");
        }
        self.render_group_lag(&mut out);
        out
    }

    fn render_group_lag(&self, out: &mut String) {
        let Ok(g) = self.group_lag.lock() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP kafka_proxy_group_lag Records the group has not committed yet, per topic, \
             for the groups the proxy serves (at most {MAX_LAG_GROUPS}; refreshed in the \
             background).\n# TYPE kafka_proxy_group_lag gauge"
        );
        for r in &g.0 {
            let _ = writeln!(
                out,
                "kafka_proxy_group_lag{{group=\"{}\",topic=\"{}\"}} {}",
                label(&r.group),
                label(&r.topic),
                r.lag
            );
        }
        let _ = writeln!(
            out,
            "# HELP kafka_proxy_group_lag_omitted_groups Served groups left out of \
             kafka_proxy_group_lag by its bound.\n\
             # TYPE kafka_proxy_group_lag_omitted_groups gauge\n\
             kafka_proxy_group_lag_omitted_groups {}",
            g.1
        );
    }

    /// The seed's periodic stats: one log line per group and topic.
    pub async fn stats_log(self: Arc<Self>, every: Duration) {
        let mut last: HashMap<(String, String), u64> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut groups: BTreeMap<(String, String), (u64, u64, u64, usize)> = BTreeMap::new();
            for r in self.sessions() {
                let group = r.meta.group.clone().unwrap_or_else(|| "-".into());
                for t in &r.meta.topics {
                    let e = groups.entry((group.clone(), t.clone())).or_default();
                    e.0 += r.received;
                    e.1 += r.sent;
                    e.2 += r.received.saturating_sub(r.sent);
                    e.3 += 1;
                }
            }
            for ((group, topic), (received, sent, backlog, sockets)) in &groups {
                let prev = last
                    .get(&(group.clone(), topic.clone()))
                    .copied()
                    .unwrap_or(0);
                let rate = sent.saturating_sub(prev) as f64 / every.as_secs_f64();
                tracing::info!(
                    group = %group,
                    topic = %topic,
                    sockets,
                    received,
                    sent,
                    backlog,
                    msgs_per_sec = format!("{rate:.1}"),
                    "stats"
                );
            }
            last = groups.into_iter().map(|(k, v)| (k, v.1)).collect();
        }
    }
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lag_series_are_escaped_and_replaced_whole() {
        let m = Arc::new(Metrics::default());
        m.set_group_lag(
            vec![GroupLag {
                group: "g\"1\\\n".into(),
                topic: "t".into(),
                lag: 42,
            }],
            3,
        );
        let text = m.render(true);
        assert!(
            text.contains("kafka_proxy_group_lag{group=\"g\\\"1\\\\\\n\",topic=\"t\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("kafka_proxy_group_lag_omitted_groups 3"),
            "{text}"
        );
        m.set_group_lag(Vec::new(), 0);
        assert!(!m.render(true).contains("kafka_proxy_group_lag{"));
    }

    #[test]
    fn sessions_can_be_closed_by_id_and_groups_are_listed() {
        let m = Arc::new(Metrics::default());
        let meta = |group: Option<&str>, topic: &str| SessionMeta {
            kind: "consume",
            topics: vec![topic.into()],
            group: group.map(str::to_string),
            peer: "127.0.0.1:1".into(),
            principal: "anonymous".into(),
        };
        let a = m.register(meta(Some("g"), "t2"));
        let _b = m.register(meta(Some("g"), "t1"));
        let _c = m.register(meta(None, "t3"));
        let id = m.sessions()[0].id;
        assert_eq!(m.close_session(id, "bye".into()), Some(true));
        assert_eq!(m.close_session(id, "bye".into()), Some(false));
        assert!(a.stats.closing());
        assert_eq!(m.close_session(9999, "bye".into()), None);
        let served = m.served_groups();
        assert_eq!(served.len(), 1);
        assert_eq!(served["g"], vec!["t1".to_string(), "t2".to_string()]);
        drop(a);
        assert_eq!(
            m.close_session(id, "bye".into()),
            None,
            "gone with its session"
        );
    }
}
