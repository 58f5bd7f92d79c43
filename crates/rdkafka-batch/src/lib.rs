//! Batch reads of a consumer's fetched records through one librdkafka queue.
//!
//! `rdkafka` polls one record per call: every call takes the queue lock, reads the clock twice,
//! wraps the record in an event and clones a waker. A proxy session that forwards a million
//! records a second spends a quarter of its time there. This crate routes the fetch queues of a
//! consumer's partitions into one queue of its own ([`FetchQueue::route`]) and drains it with
//! `rd_kafka_consume_batch_queue`, up to a whole batch per call. Group events (rebalances,
//! commits, errors) stay on the consumer's own queue, which `rdkafka` keeps serving.
//!
//! It is the only crate of kafka-proxy with `unsafe` code, kept small so it can be read whole.
//! The invariants it relies on:
//! - The queue handle is created from, and never outlives, the consumer it belongs to
//!   ([`FetchQueue`] holds an `Arc` of it and destroys the handle first).
//! - Every message `rd_kafka_consume_batch_queue` returns is destroyed exactly once, after the
//!   borrow handed to the caller ended ([`FetchQueue::poll_batch`]).
//! - The wake-up callback's opaque is an `Arc<Notify>` kept alive until the callback is disabled.
//! - [`RawHeaders`] borrows the message whose header list it reads, so it cannot outlive it.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Timestamp};
use tokio::sync::Notify;

/// The librdkafka queue and its wake-up callback; destroyed when the last strong reference goes.
struct Inner {
    queue: *mut rd::rd_kafka_queue_t,
    rk: *mut rd::rd_kafka_t,
    /// Owned by the wake-up callback until `Drop` disables it.
    notify: *const Notify,
}

// SAFETY: librdkafka queues and client handles are thread-safe (every access takes their locks).
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: the callback is disabled before the `Notify` it points to is released. Strong
        // references exist only in a `FetchQueue` (which keeps the consumer alive until this
        // ran) or briefly in `Router::route`, which runs inside the consumer's own callbacks.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            drop(Arc::from_raw(self.notify));
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// A consumer-owned queue that receives the records of every partition routed to it.
pub struct FetchQueue<K> {
    inner: Arc<Inner>,
    notify: Arc<Notify>,
    buf: Vec<*mut rd::rd_kafka_message_t>,
    // After `inner`: the consumer is released only after the queue handle.
    _consumer: Arc<K>,
}

// SAFETY: the raw message pointers in `buf` are only used inside `poll_batch`, which takes
// `&mut self`; the rest is `Inner` (thread-safe) and an `Arc`.
unsafe impl<K: Send + Sync> Send for FetchQueue<K> {}
unsafe impl<K: Send + Sync> Sync for FetchQueue<K> {}

/// Routes partitions to a [`FetchQueue`] from a consumer callback (a rebalance). It holds no
/// strong reference, so a consumer context may keep one without a reference cycle.
#[derive(Clone)]
pub struct Router {
    inner: Weak<Inner>,
}

extern "C" fn wake(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Arc<Notify>` pointer set in `FetchQueue::new`; `Inner::drop`
    // disables this callback before releasing it.
    let notify = unsafe { &*(opaque as *const Notify) };
    notify.notify_one();
}

impl<K> FetchQueue<K> {
    /// A new, empty queue on `consumer`. Nothing arrives until partitions are routed to it.
    pub fn new<C>(consumer: Arc<K>) -> Self
    where
        K: Consumer<C>,
        C: ConsumerContext,
    {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live consumer handle; the queue is destroyed (`Inner::drop`) while
        // the consumer is still held.
        let queue = unsafe { rd::rd_kafka_queue_new(rk) };
        let notify = Arc::new(Notify::new());
        let opaque = Arc::into_raw(notify.clone());
        // SAFETY: `queue` is valid; `opaque` stays alive until the callback is disabled.
        unsafe { rd::rd_kafka_queue_cb_event_enable(queue, Some(wake), opaque as *mut c_void) };
        FetchQueue {
            inner: Arc::new(Inner {
                queue,
                rk,
                notify: opaque,
            }),
            notify,
            buf: Vec::new(),
            _consumer: consumer,
        }
    }

    /// A handle that routes partitions to this queue while it exists.
    pub fn router(&self) -> Router {
        Router {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Resolves once records may be waiting. A wake-up is never lost: it is kept until awaited.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Makes the next [`ready`](Self::ready) resolve at once: for a caller that stopped
    /// draining before the queue was empty (librdkafka wakes only on new arrivals).
    pub fn kick(&self) {
        self.notify.notify_one();
    }

    /// Takes up to `max` records already in the queue (never waits) and hands each to `f`, in
    /// queue order, then releases them. Returns how many were taken.
    pub fn poll_batch(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> usize {
        if max == 0 {
            return 0;
        }
        self.buf.clear();
        self.buf.reserve(max);
        // SAFETY: `buf` has room for `max` pointers; librdkafka writes `n <= max` of them.
        let n = unsafe {
            let n =
                rd::rd_kafka_consume_batch_queue(self.inner.queue, 0, self.buf.as_mut_ptr(), max);
            if n <= 0 {
                return 0;
            }
            let n = (n as usize).min(max);
            self.buf.set_len(n);
            n
        };
        for &m in &self.buf {
            // SAFETY: each pointer is a live message returned above, destroyed only after the
            // borrow passed to `f` ended.
            f(Record { m: unsafe { &*m } });
        }
        for m in self.buf.drain(..) {
            // SAFETY: destroyed once; no borrow of it is left.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        n
    }
}

impl Router {
    /// Sends the records of `topic`/`partition` to the queue from now on, and moves what its
    /// fetch queue already holds there. Call it before the partition is assigned so that no
    /// record takes the consumer's own queue, and again after every assignment: librdkafka
    /// clears the forward when a partition stops, but keeps the application's claim on it, so
    /// an unrouted partition would fetch into a queue nobody reads. Routing twice is harmless.
    /// Returns false when the queue is gone or librdkafka refused (a NUL byte in the name).
    pub fn route(&self, topic: &str, partition: i32) -> bool {
        self.forward(topic, partition, true)
    }

    /// Stops sending `topic`/`partition` here: call it when the partition is revoked, before
    /// it is unassigned. librdkafka's maintainers advise it for forwarded partition queues
    /// (librdkafka#1335): a forward left on a stopped partition can keep a later assignment of
    /// it from delivering. Returns false when the queue is gone or the name has a NUL byte.
    pub fn unroute(&self, topic: &str, partition: i32) -> bool {
        self.forward(topic, partition, false)
    }

    /// Forwards the partition's queue to this queue (`on`), or removes its forward.
    fn forward(&self, topic: &str, partition: i32, on: bool) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        let to = if on {
            inner.queue
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `inner.rk` and `inner.queue` are live while `inner` is; the partition queue
        // handle is destroyed right after forwarding (the forward holds its own reference);
        // forwarding to NULL removes the forward.
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(inner.rk, name.as_ptr(), partition);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, to);
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }
}

/// One record borrowed from a [`FetchQueue`] batch.
pub struct Record<'a> {
    m: &'a rd::rd_kafka_message_t,
}

impl Record<'_> {
    /// The consume error this entry carries instead of a record, if any.
    pub fn error(&self) -> Option<KafkaError> {
        if self.m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            None
        } else {
            Some(KafkaError::MessageConsumption(RDKafkaErrorCode::from(
                self.m.err,
            )))
        }
    }

    /// A copy that outlives the batch.
    pub fn detach(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic().to_string(),
            self.timestamp(),
            self.partition(),
            self.offset(),
            self.headers().map(BorrowedHeaders::detach),
        )
    }

    /// The record's headers as raw bytes (see [`RawHeaders`]).
    pub fn raw_headers(&self) -> RawHeaders<'_> {
        raw_headers(self.m)
    }

    fn bytes(&self, ptr: *const c_void, len: usize) -> Option<&[u8]> {
        if ptr.is_null() {
            None
        } else {
            // SAFETY: librdkafka guarantees `len` readable bytes at a non-null payload/key for
            // the life of the message, which outlives this borrow.
            Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
        }
    }
}

impl Message for Record<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        self.bytes(self.m.key, self.m.key_len)
    }

    fn payload(&self) -> Option<&[u8]> {
        self.bytes(self.m.payload, self.m.len)
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // Records are read-only here.
        None
    }

    fn topic(&self) -> &str {
        if self.m.rkt.is_null() {
            return "";
        }
        // SAFETY: a message's topic handle and its name live as long as the message.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.m.rkt)) }
            .to_str()
            .unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.m.partition
    }

    fn offset(&self) -> i64 {
        self.m.offset
    }

    fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        let ptr = self.m as *const rd::rd_kafka_message_t;
        // SAFETY: reads the live message's timestamp fields only.
        let ts = unsafe { rd::rd_kafka_message_timestamp(ptr, &mut kind) };
        match kind {
            _ if ts == -1 => Timestamp::NotAvailable,
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ts)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ts)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => {
                Timestamp::NotAvailable
            }
        }
    }

    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut hdrs = std::ptr::null_mut();
        let ptr = self.m as *const rd::rd_kafka_message_t as *mut rd::rd_kafka_message_t;
        // SAFETY: librdkafka parses the headers into the message on first use (its own lazy
        // cache, owned by the message); `BorrowedHeaders` is a zero-sized view of that list,
        // exactly as `rdkafka` builds it for its own messages.
        unsafe {
            let err = rd::rd_kafka_message_headers(ptr, &mut hdrs);
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
                return None;
            }
            Some(&*(hdrs as *const BorrowedHeaders))
        }
    }
}

/// A message's headers as raw bytes: `(name, value)`, a `None` value for a null one.
///
/// `rdkafka`'s `Headers` turns each name into `&str` with `unwrap()`, which panics on a name
/// that is not UTF-8; Kafka does not check names, and a non-Java producer can write any bytes.
pub struct RawHeaders<'a> {
    hdrs: *const rd::rd_kafka_headers_t,
    next: usize,
    count: usize,
    _message: PhantomData<&'a rd::rd_kafka_message_t>,
}

/// The headers of a message that `rdkafka` handed out (the consumer's own queue).
pub fn message_raw_headers<'a>(m: &'a BorrowedMessage<'_>) -> RawHeaders<'a> {
    // SAFETY: a `BorrowedMessage` points to a live message for as long as it is borrowed.
    raw_headers(unsafe { &*(m.ptr() as *const rd::rd_kafka_message_t) })
}

fn raw_headers(m: &rd::rd_kafka_message_t) -> RawHeaders<'_> {
    let mut hdrs = std::ptr::null_mut();
    let ptr = m as *const rd::rd_kafka_message_t as *mut rd::rd_kafka_message_t;
    // SAFETY: librdkafka parses the headers into the message on first use and owns the list
    // for the message's life; the count reads that list only.
    let count = unsafe {
        let err = rd::rd_kafka_message_headers(ptr, &mut hdrs);
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            hdrs = std::ptr::null_mut();
            0
        } else {
            rd::rd_kafka_header_cnt(hdrs)
        }
    };
    RawHeaders {
        hdrs,
        next: 0,
        count,
        _message: PhantomData,
    }
}

impl<'a> Iterator for RawHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.count {
            let idx = self.next;
            self.next += 1;
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: `idx` < the list's count; the list lives as long as the message ('a).
            let err = unsafe {
                rd::rd_kafka_header_get_all(self.hdrs, idx, &mut name, &mut value, &mut size)
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                continue;
            }
            // SAFETY: librdkafka's header names are NUL-terminated and values `size` bytes
            // long, both owned by the list for the message's life.
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            let value = (!value.is_null())
                .then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
            return Some((name, value));
        }
        None
    }
}

/// Hands freed heap memory back to the operating system (glibc's `malloc_trim(0)`); `false`
/// where there is no such call (other C libraries) or nothing was released.
///
/// librdkafka allocates through the C library's `malloc`, whatever allocator Rust uses, and
/// glibc keeps what a burst of clients freed in per-thread heaps: after a storm of sessions the
/// proxy's RSS stays near its peak until the heaps are trimmed.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` only walks glibc's own arenas under their locks; any thread may
        // call it at any time.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
