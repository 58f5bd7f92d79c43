//! Metadata look-ups: partitions (cached for produce), watermarks, readiness, and where a
//! consume request starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    blocking, is_unavailable, Kafka, KafkaAdapterError, LOOKUP_TIMEOUT, PARTITION_CACHE_MAX,
    PARTITION_CACHE_TTL,
};
use crate::protocol::consume::{Assignment, StartAt};

impl Kafka {
    /// Partition ids of `topic`, or `UnknownTopic`.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaAdapterError> {
        let meta = self.meta.clone();
        let topic = topic.to_string();
        blocking(move || {
            let md = meta
                .fetch_metadata(Some(&topic), LOOKUP_TIMEOUT)
                .map_err(|e| {
                    if is_unavailable(&e) {
                        KafkaAdapterError::Unavailable(e.to_string())
                    } else {
                        KafkaAdapterError::Kafka(e)
                    }
                })?;
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

    /// Like `partitions`, but reuses a list fetched within `PARTITION_CACHE_TTL`.
    pub async fn partitions_cached(&self, topic: &str) -> Result<Arc<[i32]>, KafkaAdapterError> {
        if let Ok(cache) = self.partition_cache.lock() {
            if let Some((at, ps)) = cache.get(topic) {
                if at.elapsed() < PARTITION_CACHE_TTL {
                    return Ok(ps.clone());
                }
            }
        }
        let ps: Arc<[i32]> = self.partitions(topic).await?.into();
        if let Ok(mut cache) = self.partition_cache.lock() {
            if cache.len() >= PARTITION_CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < PARTITION_CACHE_TTL);
                if cache.len() >= PARTITION_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(topic.to_string(), (Instant::now(), ps.clone()));
        }
        Ok(ps)
    }

    /// Low and high watermarks of one partition.
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), KafkaAdapterError> {
        let meta = self.meta.clone();
        let topic = topic.to_string();
        blocking(move || Ok(meta.fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT)?)).await
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
        let ok = blocking(move || {
            // This client has no group, so errors queue on its main queue: drain them here.
            let _ = meta.poll(Duration::ZERO);
            Ok(meta
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| !md.brokers().is_empty())
                .unwrap_or(false))
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
    /// the committed offset.
    pub async fn resolve_start(
        &self,
        topics: &[String],
        assignment: &Assignment,
        start: &StartAt,
    ) -> Result<StartPlan, KafkaAdapterError> {
        let mut all: Vec<(String, i32)> = Vec::new();
        for t in topics {
            let ps = self.partitions(t).await?;
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
                for (t, p) in &all {
                    let wanted = match start {
                        StartAt::Offset(o) => Some(*o),
                        StartAt::Offsets(per) => {
                            per.iter().find(|(pp, _)| pp == p).map(|(_, o)| *o)
                        }
                        _ => None,
                    };
                    let Some(offset) = wanted else { continue };
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
                    plan.insert((t.clone(), *p), Offset::Offset(offset));
                }
                if let StartAt::Offsets(per) = start {
                    for (p, _) in per {
                        if !all.iter().any(|(_, ap)| ap == p) {
                            let ps = self.partitions(&topics[0]).await?;
                            return Err(KafkaAdapterError::UnknownPartition(
                                topics[0].clone(),
                                *p,
                                ps.len(),
                            ));
                        }
                    }
                }
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
