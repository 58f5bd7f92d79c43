//! The background refresh behind `kafka_proxy_group_lag`: every `REFRESH_EVERY`, the lag of each
//! group the proxy serves (at most `metrics::MAX_LAG_GROUPS`, by name) on each topic it serves
//! it for, read from Kafka. A scrape only reads the last result, so scraping costs Kafka
//! nothing and a slow Kafka never slows `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::kafka::Kafka;
use crate::metrics::{GroupLag, Metrics, MAX_LAG_GROUPS};
use crate::shutdown::Shutdown;

/// How often the served groups' lag is read from Kafka.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// The longest one group's refresh may take; a group that does not answer keeps no series.
const GROUP_LIMIT: Duration = Duration::from_secs(10);

/// Refreshes the group lag series until shutdown.
pub async fn refresh(kafka: Arc<Kafka>, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let served = metrics.served_groups();
        let omitted = served.len().saturating_sub(MAX_LAG_GROUPS);
        let mut rows = Vec::new();
        // One group at a time: the refresh is background work and must not compete with
        // sessions being set up for Kafka's attention.
        for (group, topics) in served.into_iter().take(MAX_LAG_GROUPS) {
            let read = tokio::time::timeout(GROUP_LIMIT, lag_of(&kafka, &group, &topics)).await;
            match read {
                Ok(Ok(per_topic)) => {
                    rows.extend(per_topic.into_iter().map(|(topic, lag)| GroupLag {
                        group: group.clone(),
                        topic,
                        lag,
                    }))
                }
                Ok(Err(e)) => tracing::debug!(%group, error = %e, "group lag not read"),
                Err(_) => tracing::debug!(%group, "group lag not read in time"),
            }
        }
        metrics.set_group_lag(rows, omitted);
    }
}

/// Per topic, the sum over its partitions with a committed offset of high watermark minus it.
async fn lag_of(
    kafka: &Kafka,
    group: &str,
    topics: &[String],
) -> Result<BTreeMap<String, i64>, crate::kafka::KafkaAdapterError> {
    let mut partitions = Vec::new();
    for t in topics {
        for p in kafka.partitions_cached(t).await?.iter() {
            partitions.push((t.clone(), *p));
        }
    }
    let committed = kafka.committed(group, partitions).await?;
    let marks = kafka
        .watermarks_of(committed.keys().cloned().collect())
        .await?;
    // A topic the group has committed nothing to yet has no series: its lag is not known.
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for (tp, c) in &committed {
        if let Some(high) = marks.get(tp).and_then(|m| m.1) {
            *out.entry(tp.0.clone()).or_default() += (high - c).max(0);
        }
    }
    Ok(out)
}
