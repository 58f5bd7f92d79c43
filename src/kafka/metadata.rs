//! Metadata look-ups: partitions (cached for produce), watermarks, readiness, and where a
//! consume request starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt, TryStreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    blocking, Kafka, KafkaAdapterError, LogContext, LOOKUP_TIMEOUT, PARTITION_CACHE_MAX,
    PARTITION_CACHE_TTL,
};
use crate::protocol::consume::{Assignment, StartAt};

/// How long a topic Kafka reported unknown is answered `UnknownTopic` without asking again, so a
/// flood of requests for a missing topic costs one metadata round trip per this interval. Short:
/// a topic created meanwhile becomes usable after it.
pub const UNKNOWN_TOPIC_TTL: Duration = Duration::from_secs(2);

/// Metadata and watermark look-ups one consume request runs at once.
const LOOKUP_CONCURRENCY: usize = 8;

/// The longest all the look-ups of one consume request may take together; each one alone is
/// bounded by `LOOKUP_TIMEOUT`.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(8);

impl Kafka {
    /// Partition ids of `topic` fresh from Kafka, or `UnknownTopic` (remembered for
    /// `UNKNOWN_TOPIC_TTL`).
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaAdapterError> {
        // An empty list in the cache marks an unknown topic: Kafka never reports a topic
        // without partitions as existing.
        if self.cached(topic).is_some_and(|ps| ps.is_empty()) {
            return Err(KafkaAdapterError::UnknownTopic(topic.to_string()));
        }
        let fetched = self.fetch_partitions(topic).await;
        match &fetched {
            Ok(ps) => self.remember(topic, ps.as_slice().into()),
            Err(KafkaAdapterError::UnknownTopic(_)) => self.remember(topic, Arc::from([])),
            Err(_) => {}
        }
        fetched
    }

    async fn fetch_partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaAdapterError> {
        lookup_partitions(self.meta.clone(), self.log.clone(), topic.to_string()).await
    }

    /// Like `partitions`, but reuses a list fetched within `PARTITION_CACHE_TTL`.
    pub async fn partitions_cached(&self, topic: &str) -> Result<Arc<[i32]>, KafkaAdapterError> {
        match self.cached(topic) {
            Some(ps) if ps.is_empty() => Err(KafkaAdapterError::UnknownTopic(topic.to_string())),
            Some(ps) => Ok(ps),
            None => Ok(self.partitions(topic).await?.into()),
        }
    }

    /// The cached entry of `topic` while it is fresh: an empty list (unknown topic) for
    /// `UNKNOWN_TOPIC_TTL`, partitions for `PARTITION_CACHE_TTL`.
    fn cached(&self, topic: &str) -> Option<Arc<[i32]>> {
        let cache = self.partition_cache.lock().ok()?;
        let (at, ps) = cache.get(topic)?;
        let ttl = if ps.is_empty() {
            UNKNOWN_TOPIC_TTL
        } else {
            PARTITION_CACHE_TTL
        };
        (at.elapsed() < ttl).then(|| ps.clone())
    }

    fn remember(&self, topic: &str, ps: Arc<[i32]>) {
        if let Ok(mut cache) = self.partition_cache.lock() {
            // Bounded: a flood of distinct names sweeps expired entries, then starts over.
            if cache.len() >= PARTITION_CACHE_MAX && !cache.contains_key(topic) {
                cache.retain(|_, (at, _)| at.elapsed() < PARTITION_CACHE_TTL);
                if cache.len() >= PARTITION_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(topic.to_string(), (Instant::now(), ps));
        }
    }

    /// Low and high watermarks of one partition.
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), KafkaAdapterError> {
        let meta = self.meta.clone();
        let log = self.log.clone();
        let topic = topic.to_string();
        blocking(move || {
            meta.fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT)
                .map_err(|e| log.lookup_error(e))
        })
        .await
    }

    /// Whether Kafka answers a metadata request; cached for a second.
    pub async fn ready(&self) -> bool {
        let cached = || {
            self.ready.lock().ok().and_then(|g| match *g {
                Some((at, ok)) if at.elapsed() < Duration::from_secs(1) => Some(ok),
                _ => None,
            })
        };
        if let Some(ok) = cached() {
            return ok;
        }
        let _refresh = self.ready_refresh.lock().await;
        if let Some(ok) = cached() {
            return ok;
        }
        let meta = self.meta.clone();
        let log = self.log.clone();
        let ok = blocking(move || {
            // This client has no group, so errors queue on its main queue: drain them here.
            let _ = meta.poll(Duration::ZERO);
            let ok = meta
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| !md.brokers().is_empty())
                .unwrap_or(false);
            if ok {
                log.answered();
            }
            Ok(ok)
        })
        .await
        .unwrap_or(false);
        if let Ok(mut guard) = self.ready.lock() {
            *guard = Some((Instant::now(), ok));
        }
        ok
    }

    /// Validates a consume request against the cluster and resolves where each partition starts.
    /// Returns the start plan: partitions whose first assignment must begin somewhere other than
    /// the committed offset. The look-ups run `LOOKUP_CONCURRENCY` at a time and all of them
    /// within `RESOLVE_TIMEOUT`, so a request naming many topics cannot hold a session for
    /// minutes while Kafka is slow.
    pub async fn resolve_start(
        &self,
        topics: &[String],
        assignment: &Assignment,
        start: &StartAt,
    ) -> Result<StartPlan, KafkaAdapterError> {
        tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve(topics, assignment, start))
            .await
            .unwrap_or_else(|_| {
                Err(self.log.unavailable(format!(
                    "metadata look-ups for {} topic(s) took longer than {} s",
                    topics.len(),
                    RESOLVE_TIMEOUT.as_secs()
                )))
            })
    }

    async fn resolve(
        &self,
        topics: &[String],
        assignment: &Assignment,
        start: &StartAt,
    ) -> Result<StartPlan, KafkaAdapterError> {
        // Collected first: a lazy `map` adapter inside the stream trips the compiler's `Send`
        // proof for the session future (rust-lang/rust#102211).
        let lookups: Vec<_> = topics.iter().map(|t| self.partitions(t)).collect();
        let lists: Vec<Vec<i32>> = stream::iter(lookups)
            .buffered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await?;
        let mut all: Vec<(String, i32)> = Vec::new();
        for (t, ps) in topics.iter().zip(&lists) {
            match assignment {
                Assignment::Group => all.extend(ps.iter().map(|p| (t.clone(), *p))),
                Assignment::Partitions(wanted) => {
                    for w in wanted {
                        if !ps.contains(w) {
                            return Err(KafkaAdapterError::UnknownPartition(
                                t.clone(),
                                *w,
                                ps.len(),
                            ));
                        }
                        all.push((t.clone(), *w));
                    }
                }
            }
        }
        let mut plan = HashMap::new();
        match start {
            StartAt::Committed => {}
            StartAt::Earliest => plan.extend(all.iter().map(|tp| (tp.clone(), Offset::Beginning))),
            StartAt::Latest => plan.extend(all.iter().map(|tp| (tp.clone(), Offset::End))),
            StartAt::Offset(_) | StartAt::Offsets(_) => {
                if let StartAt::Offsets(per) = start {
                    for (p, _) in per {
                        if !all.iter().any(|(_, ap)| ap == p) {
                            return Err(KafkaAdapterError::UnknownPartition(
                                topics[0].clone(),
                                *p,
                                lists.first().map_or(0, Vec::len),
                            ));
                        }
                    }
                }
                let wanted: Vec<_> = all
                    .iter()
                    .filter_map(|(t, p)| {
                        let offset = match start {
                            StartAt::Offset(o) => Some(*o),
                            StartAt::Offsets(per) => {
                                per.iter().find(|(pp, _)| pp == p).map(|(_, o)| *o)
                            }
                            _ => None,
                        }?;
                        Some(async move {
                            let (low, high) = self.watermarks(t, *p).await?;
                            if offset < low || offset > high {
                                return Err(KafkaAdapterError::OffsetOutOfRange {
                                    topic: t.clone(),
                                    partition: *p,
                                    offset,
                                    low,
                                    high,
                                });
                            }
                            Ok(((t.clone(), *p), Offset::Offset(offset)))
                        })
                    })
                    .collect();
                let starts: Vec<_> = stream::iter(wanted)
                    .buffered(LOOKUP_CONCURRENCY)
                    .try_collect()
                    .await?;
                plan.extend(starts);
            }
            StartAt::Timestamp(ts) => {
                let meta = self.meta.clone();
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &all {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*ts))?;
                }
                let resolved =
                    blocking(move || Ok(meta.offsets_for_times(tpl, LOOKUP_TIMEOUT)?)).await?;
                for e in resolved.elements() {
                    if let Err(err) = e.error() {
                        return Err(KafkaAdapterError::Kafka(err));
                    }
                    let off = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        // No record at or after the timestamp: start at the end.
                        _ => Offset::End,
                    };
                    plan.insert((e.topic().to_string(), e.partition()), off);
                }
            }
        }
        Ok(StartPlan {
            partitions: all,
            first_offsets: plan,
        })
    }
}

/// What a session reads and where each partition starts on its first assignment.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// Every (topic, partition) the session may be assigned.
    pub partitions: Vec<(String, i32)>,
    /// Start positions that override the committed offset, consumed on first assignment.
    pub first_offsets: HashMap<(String, i32), Offset>,
}

/// Partition ids of `topic` as `client` reads them from Kafka now, or why not.
pub(super) async fn lookup_partitions(
    meta: Arc<BaseConsumer<LogContext>>,
    log: LogContext,
    topic: String,
) -> Result<Vec<i32>, KafkaAdapterError> {
    blocking(move || {
        let md = meta
            .fetch_metadata(Some(&topic), LOOKUP_TIMEOUT)
            .map_err(|e| log.lookup_error(e))?;
        log.answered();
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| KafkaAdapterError::UnknownTopic(topic.clone()))?;
        match t.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                return Err(KafkaAdapterError::UnknownTopic(topic.clone()))
            }
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                return Err(KafkaAdapterError::Forbidden(topic.clone()))
            }
            Some(e) => {
                return Err(KafkaAdapterError::Kafka(KafkaError::MetadataFetch(
                    e.into(),
                )))
            }
        }
        let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if ps.is_empty() {
            return Err(KafkaAdapterError::UnknownTopic(topic.clone()));
        }
        ps.sort_unstable();
        Ok(ps)
    })
    .await
}
