//! Quotas and abuse limits: concurrent sessions per principal, produce rates per principal
//! (token buckets shared by all of a principal's sockets and requests), and failed
//! authentications per client address. Every table here is bounded (docs/SECURITY.md, "Quotas
//! and abuse limits").

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Principal;
use crate::config::security;
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ProtocolError};

/// Client addresses whose failed authentications are remembered at most; when full, windows
/// that ended are dropped first, then the oldest tenth.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Idle produce rates kept before the table is pruned of those nobody uses and that refilled.
const PRUNE_RATES_AT: usize = 1024;

/// The window failed authentications are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A refusal the client should retry after a while: 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub error: ProtocolError,
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// The quotas of one proxy. Cloning shares the tables.
#[derive(Clone)]
pub struct Quotas {
    limits: security::Quotas,
    sessions: Arc<Mutex<HashMap<String, usize>>>,
    rates: Arc<Mutex<HashMap<String, Arc<Mutex<Rate>>>>>,
    failures: Arc<Mutex<Failures>>,
    metrics: Arc<Metrics>,
}

/// Locks a table; one a panicking holder left behind is still consistent (counters only).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key a principal's quotas are kept under: `kind:name` (`user:alice`); every anonymous
/// request shares `anonymous`, and every shared-password request `password`, whatever Basic
/// user name it sent (that name proves nothing).
fn key(p: &Principal) -> String {
    match p.kind {
        super::Kind::Anonymous => "anonymous".into(),
        super::Kind::Password => "password".into(),
        _ => p.to_string(),
    }
}

impl Quotas {
    pub fn new(limits: security::Quotas, metrics: Arc<Metrics>) -> Quotas {
        let failures = Failures::new(limits.auth_failures_per_minute, MAX_TRACKED_ADDRESSES);
        Quotas {
            limits,
            sessions: Arc::default(),
            rates: Arc::default(),
            failures: Arc::new(Mutex::new(failures)),
            metrics,
        }
    }

    /// Takes one of the principal's `maxSessionsPerPrincipal` session slots (`None` without the
    /// limit), or refuses with `limit_reached` (429). The slot is free again when dropped.
    pub fn session(&self, p: &Principal) -> Result<Option<SessionSlot>, ProtocolError> {
        let max = self.limits.sessions_per_principal;
        if max == 0 {
            return Ok(None);
        }
        let key = key(p);
        let mut table = lock(&self.sessions);
        let n = table.entry(key.clone()).or_insert(0);
        if *n >= max {
            self.metrics.access.sessions_refused.fetch_add(1, Relaxed);
            return Err(ProtocolError::new(
                ErrorCode::LimitReached,
                format!("{key} has too many sessions open (maxSessionsPerPrincipal = {max})"),
            ));
        }
        *n += 1;
        Ok(Some(SessionSlot {
            key,
            table: self.sessions.clone(),
        }))
    }

    /// The principal's produce rate (`None` without produce quotas): one bucket per principal,
    /// shared by all of its produce sockets and HTTP requests.
    pub fn produce_rate(&self, p: &Principal) -> Option<RateLimit> {
        let (records, bytes) = (
            self.limits.produce_records_per_sec,
            self.limits.produce_bytes_per_sec,
        );
        if records == 0 && bytes == 0 {
            return None;
        }
        let now = Instant::now();
        let mut table = lock(&self.rates);
        let key = key(p);
        if !table.contains_key(&key) && table.len() >= PRUNE_RATES_AT {
            // A bucket nobody holds that refilled is the same as a new one.
            table.retain(|_, r| Arc::strong_count(r) > 1 || !lock(r).full(now));
        }
        let rate = table
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(Rate::new(records, bytes, now))))
            .clone();
        Some(RateLimit {
            rate,
            metrics: self.metrics.clone(),
        })
    }

    /// Refuses a request from `ip` before authentication when that address failed more than
    /// `authFailuresPerMinute` times in its current window.
    pub fn auth_allowed(&self, ip: IpAddr) -> Result<(), Limited> {
        let Some(wait) = lock(&self.failures).blocked(ip, Instant::now()) else {
            return Ok(());
        };
        self.metrics.access.auth_blocked.fetch_add(1, Relaxed);
        Err(Limited {
            error: ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "too many failed authentications from this address (authFailuresPerMinute \
                     = {}); retry after the Retry-After seconds",
                    self.limits.auth_failures_per_minute
                ),
            ),
            retry_after: wait,
        })
    }

    /// Counts a failed authentication from `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        self.metrics.access.auth_failures.fetch_add(1, Relaxed);
        lock(&self.failures).failed(ip, Instant::now());
    }
}

/// One of a principal's session slots; dropping it frees the slot.
pub struct SessionSlot {
    key: String,
    table: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if let Some(n) = table.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The table holds only principals with sessions open.
                table.remove(&self.key);
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most one second's worth saved up (the burst).
/// Taking more than there is leaves it in debt; it is ready again once the debt is paid, so
/// the long-run rate is exact whatever the sizes taken.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_sec: u64, now: Instant) -> Bucket {
        Bucket {
            rate: per_sec as f64,
            tokens: per_sec as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        self.last = self.last.max(now);
    }

    /// `None` when tokens are left, else how long until some are.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens > 0.0 {
            None
        } else {
            // Debts are small (a frame's worth); a huge one waits "forever", never panics.
            let secs = (-self.tokens / self.rate).max(0.0);
            Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
        }
    }

    pub fn take(&mut self, now: Instant, n: u64) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate
    }
}

/// A principal's produce buckets: records and bytes, each only when limited.
#[derive(Debug)]
pub struct Rate {
    records: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Rate {
    pub fn new(records_per_sec: u64, bytes_per_sec: u64, now: Instant) -> Rate {
        let bucket = |r| (r > 0).then(|| Bucket::new(r, now));
        Rate {
            records: bucket(records_per_sec),
            bytes: bucket(bytes_per_sec),
        }
    }

    /// `None` when both buckets have tokens, else how long until both have.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        let r = self.records.as_mut().and_then(|b| b.wait(now));
        let b = self.bytes.as_mut().and_then(|b| b.wait(now));
        r.max(b)
    }

    pub fn take(&mut self, now: Instant, records: u64, bytes: u64) {
        if let Some(b) = &mut self.records {
            b.take(now, records);
        }
        if let Some(b) = &mut self.bytes {
            b.take(now, bytes);
        }
    }

    fn full(&mut self, now: Instant) -> bool {
        self.records.as_mut().is_none_or(|b| b.full(now))
            && self.bytes.as_mut().is_none_or(|b| b.full(now))
    }
}

/// A handle on a principal's produce rate, held by a produce socket or an HTTP request.
#[derive(Clone)]
pub struct RateLimit {
    rate: Arc<Mutex<Rate>>,
    metrics: Arc<Metrics>,
}

impl RateLimit {
    /// `None` when the principal may produce now, else how long until it may.
    pub fn wait(&self) -> Option<Duration> {
        lock(&self.rate).wait(Instant::now())
    }

    /// Takes what was read: records, and their key and value bytes. Returns how long until the
    /// principal may produce again when that spent the rate (`None`: tokens are left).
    pub fn take(&self, records: u64, bytes: u64) -> Option<Duration> {
        let now = Instant::now();
        let mut rate = lock(&self.rate);
        rate.take(now, records, bytes);
        rate.wait(now)
    }

    /// Counts a produce socket that stopped being read for the rate.
    pub fn throttled(&self) {
        self.metrics.access.produce_throttled.fetch_add(1, Relaxed);
    }

    /// The 429 of an HTTP produce request over the rate, counted.
    pub fn refuse(&self, wait: Duration) -> Limited {
        self.metrics.access.produce_refused.fetch_add(1, Relaxed);
        Limited {
            error: ProtocolError::new(
                ErrorCode::LimitReached,
                "produce rate over this principal's quota (produceRecordsPerSec / \
                 produceBytesPerSec); retry after the Retry-After seconds",
            ),
            retry_after: wait,
        }
    }
}

/// Failed authentications per client address, in fixed one-minute windows that start at an
/// address's first failure.
#[derive(Debug)]
pub struct Failures {
    limit: u32,
    cap: usize,
    table: HashMap<IpAddr, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64, so
/// counting single addresses would let it rotate through them).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Failures {
    /// `limit` failures a window (0: no limit); at most `cap` addresses remembered.
    pub fn new(limit: u32, cap: usize) -> Failures {
        Failures {
            limit,
            cap: cap.max(1),
            table: HashMap::new(),
        }
    }

    /// How long until `ip` may try again, when its failures reached the limit this window.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let w = self.table.get(&address_key(ip))?;
        let end = w.start + FAILURE_WINDOW;
        (w.count >= self.limit && now < end).then(|| end - now)
    }

    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let key = address_key(ip);
        if !self.table.contains_key(&key) && self.table.len() >= self.cap {
            self.evict(now);
        }
        let w = self.table.entry(key).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.saturating_duration_since(w.start) >= FAILURE_WINDOW {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        w.count = w.count.saturating_add(1);
    }

    /// Makes room: windows that ended go, then the oldest tenth (so a flood of new addresses
    /// costs one sort per tenth of the table, not one scan per address).
    fn evict(&mut self, now: Instant) {
        self.table
            .retain(|_, w| now.saturating_duration_since(w.start) < FAILURE_WINDOW);
        if self.table.len() < self.cap {
            return;
        }
        let mut starts: Vec<Instant> = self.table.values().map(|w| w.start).collect();
        let n = (self.cap / 10).max(1).min(starts.len() - 1);
        let (_, cut, _) = starts.select_nth_unstable(n);
        let cut = *cut;
        self.table.retain(|_, w| w.start >= cut);
        // Equal starts can keep the table full; drop arbitrary ones then.
        while self.table.len() >= self.cap {
            let Some(k) = self.table.keys().next().copied() else {
                break;
            };
            self.table.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Kind;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_starts_full_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, t0);
        assert_eq!(b.wait(t0), None);
        b.take(t0, 100);
        // Empty: 10 ms for one token.
        assert_eq!(b.wait(t0), Some(Duration::ZERO));
        assert_eq!(b.wait(t0 + ms(10)), None);
        // Debt: 50 over takes 0.5 s to pay back.
        b.take(t0 + ms(10), 51);
        let w = b.wait(t0 + ms(10)).unwrap();
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-9, "{w:?}");
        assert!(b.wait(t0 + ms(505)).is_some());
        assert_eq!(b.wait(t0 + ms(511)), None);
        // Saved up at most one second.
        let later = t0 + Duration::from_secs(60);
        b.take(later, 0);
        assert!(b.full(later));
        b.take(later, 100);
        assert_eq!(b.wait(later), Some(Duration::ZERO));
    }

    #[test]
    fn a_bucket_paces_a_steady_taker_at_its_rate() {
        // A taker that takes 7 whenever allowed, for 10 simulated seconds.
        let t0 = Instant::now();
        let mut b = Bucket::new(200, t0);
        let (mut now, mut taken) = (t0, 0u64);
        let end = t0 + Duration::from_secs(10);
        while now < end {
            match b.wait(now) {
                None => {
                    b.take(now, 7);
                    taken += 7;
                }
                Some(w) => now += w.max(ms(1)),
            }
        }
        // The burst (200) plus 10 s at 200/s, give or take one take.
        assert!((2200..=2207).contains(&taken), "{taken}");
    }

    #[test]
    fn the_rate_waits_for_both_buckets() {
        let t0 = Instant::now();
        let mut r = Rate::new(10, 1000, t0);
        r.take(t0, 1, 3000);
        // Records fine, bytes 2000 in debt: 2 s.
        let w = r.wait(t0).unwrap();
        assert!((w.as_secs_f64() - 2.0).abs() < 1e-9, "{w:?}");
        let mut only_records = Rate::new(10, 0, t0);
        only_records.take(t0, 10, u64::MAX);
        assert!(only_records.wait(t0).is_some());
        assert_eq!(only_records.wait(t0 + ms(200)), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let l = |d| Limited {
            error: ProtocolError::new(ErrorCode::LimitReached, "x"),
            retry_after: d,
        };
        assert_eq!(l(Duration::ZERO).retry_after_secs(), 1);
        assert_eq!(l(ms(1)).retry_after_secs(), 1);
        assert_eq!(l(ms(1000)).retry_after_secs(), 1);
        assert_eq!(l(ms(1001)).retry_after_secs(), 2);
        assert_eq!(l(Duration::from_secs(59)).retry_after_secs(), 59);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_blocked_after_its_failures_until_its_window_ends() {
        let t0 = Instant::now();
        let mut f = Failures::new(3, 100);
        let a = ip("10.0.0.1");
        for i in 0..3 {
            assert_eq!(f.blocked(a, t0), None, "after {i} failures");
            f.failed(a, t0 + ms(i));
        }
        assert_eq!(f.blocked(a, t0 + ms(10)), Some(FAILURE_WINDOW - ms(10)));
        // Other addresses are not affected.
        assert_eq!(f.blocked(ip("10.0.0.2"), t0), None);
        // The window ends a minute after the first failure.
        assert_eq!(f.blocked(a, t0 + FAILURE_WINDOW), None);
        f.failed(a, t0 + FAILURE_WINDOW);
        assert_eq!(f.blocked(a, t0 + FAILURE_WINDOW), None, "a new window");
        // No limit: nothing is kept.
        let mut none = Failures::new(0, 100);
        none.failed(a, t0);
        assert!(none.is_empty());
        assert_eq!(none.blocked(a, t0), None);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut f = Failures::new(2, 100);
        f.failed(ip("2001:db8:1:2::1"), t0);
        f.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(f.blocked(ip("2001:db8:1:2::77"), t0).is_some());
        assert!(f.blocked(ip("2001:db8:1:3::1"), t0).is_none());
        f.failed(ip("::ffff:192.0.2.1"), t0);
        f.failed(ip("192.0.2.1"), t0);
        assert!(f.blocked(ip("192.0.2.1"), t0).is_some());
    }

    #[test]
    fn the_address_table_stays_within_its_cap_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut f = Failures::new(1, 100);
        let addr = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..1000u32 {
            f.failed(addr(i), t0 + ms(u64::from(i)));
            assert!(f.len() <= 100, "{} addresses at {i}", f.len());
        }
        // The newest are remembered, the oldest were evicted.
        let now = t0 + ms(1000);
        assert!(f.blocked(addr(999), now).is_some());
        assert!(f.blocked(addr(950), now).is_some());
        assert!(f.blocked(addr(0), now).is_none());
        // Ended windows go first: a fresh address after a minute evicts only those.
        let later = t0 + FAILURE_WINDOW + ms(950);
        f.failed(addr(5000), later);
        assert!(f.blocked(addr(5000), later).is_some());
        assert!(f.blocked(addr(999), later).is_some());
        assert!(f.len() < 100);
    }

    fn quotas(sessions: usize, records: u64, bytes: u64) -> Quotas {
        Quotas::new(
            security::Quotas {
                sessions_per_principal: sessions,
                produce_records_per_sec: records,
                produce_bytes_per_sec: bytes,
                auth_failures_per_minute: 2,
            },
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn sessions_per_principal_are_counted_by_kind_and_name() {
        let q = quotas(2, 0, 0);
        let alice = Principal::named(Kind::User, "alice");
        let a1 = q.session(&alice).unwrap();
        let _a2 = q.session(&alice).unwrap();
        let e = q.session(&alice).err().unwrap();
        assert_eq!(e.code, ErrorCode::LimitReached);
        assert!(e.message.contains("user:alice"), "{}", e.message);
        // Another principal, and a token of the same name, have their own count.
        assert!(q.session(&Principal::named(Kind::Token, "alice")).is_ok());
        // Shared-password requests share one count whatever the Basic user name.
        let _p1 = q.session(&Principal::named(Kind::Password, "x")).unwrap();
        let _p2 = q.session(&Principal::named(Kind::Password, "y")).unwrap();
        assert!(q.session(&Principal::named(Kind::Password, "z")).is_err());
        drop(a1);
        let _a3 = q.session(&alice).unwrap();
        assert_eq!(q.metrics.access.sessions_refused.load(Relaxed), 2);
        // No limit: nothing is kept.
        assert!(quotas(0, 0, 0).session(&alice).unwrap().is_none());
    }

    #[test]
    fn a_principal_shares_one_rate_across_handles() {
        let q = quotas(0, 10, 0);
        assert!(quotas(0, 0, 0)
            .produce_rate(&Principal::anonymous())
            .is_none());
        let p = Principal::named(Kind::Jwt, "svc");
        let a = q.produce_rate(&p).unwrap();
        let b = q.produce_rate(&p).unwrap();
        // 15 of the 10 a second: half a second of debt.
        assert!(a.take(15, 0).is_some());
        assert!(b.wait().is_some(), "b sees what a took");
        let other = q
            .produce_rate(&Principal::named(Kind::Jwt, "other"))
            .unwrap();
        assert_eq!(other.wait(), None);
    }

    #[test]
    fn idle_full_rates_are_pruned() {
        let q = quotas(0, 10, 0);
        let held = q
            .produce_rate(&Principal::named(Kind::User, "held"))
            .unwrap();
        held.take(1, 0);
        for i in 0..PRUNE_RATES_AT + 10 {
            drop(q.produce_rate(&Principal::named(Kind::User, &format!("u{i}"))));
        }
        let table = lock(&q.rates);
        assert!(table.len() <= PRUNE_RATES_AT, "{}", table.len());
        assert!(table.contains_key("user:held"));
    }
}
