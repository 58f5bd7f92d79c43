//! Topics and consumer groups as Kafka knows them, for the admin API: partitions with
//! watermarks, the group list, and one group's committed offsets and lag, read without joining.

use std::collections::{BTreeMap, HashMap};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{base_config, blocking, Kafka, KafkaAdapterError, LogContext, LOOKUP_TIMEOUT};

/// A partition: where its leader is and which offsets it holds.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The earliest offset still held; `None` when Kafka did not answer for it.
    pub low: Option<i64>,
    /// The next offset to be written (high watermark).
    pub high: Option<i64>,
}

/// A topic with its partitions.
#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    pub topic: String,
    /// Kafka's own topics (`__consumer_offsets`, `__transaction_state`, ...).
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// A consumer group as the group list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: String,
    /// Kafka's state name: `Stable`, `Empty`, `PreparingRebalance`, `CompletingRebalance`,
    /// `Dead`, ...
    pub state: String,
    /// `consumer` for Kafka consumers; other protocols (Connect) use groups too.
    pub protocol_type: String,
    /// The assignor in use (`range`, `cooperative-sticky`, ...); empty without members.
    pub protocol: String,
    pub members: usize,
}

/// A member of a group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// Partitions assigned to it; empty when the assignment is not in the consumer protocol.
    pub assignment: Vec<TopicPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A partition a group has committed to or is assigned.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The committed offset (the next record the group reads); `None`: nothing committed.
    pub committed: Option<i64>,
    pub high: Option<i64>,
    /// `high - committed`; `None` when either is unknown.
    pub lag: Option<i64>,
    /// The member it is assigned to, if any.
    pub member_id: Option<String>,
}

/// One group: its members, and committed offset, high watermark and lag per partition.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub summary: GroupSummary,
    pub members_detail: Vec<GroupMember>,
    pub partitions: Vec<PartitionLag>,
    /// Sum of the known lags.
    pub total_lag: i64,
    /// Partitions assigned to a member with no committed offset (their lag is `None`).
    pub partitions_without_commit: usize,
}

impl From<&rdkafka::groups::GroupInfo> for GroupSummary {
    fn from(g: &rdkafka::groups::GroupInfo) -> Self {
        GroupSummary {
            group: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            protocol: g.protocol().to_string(),
            members: g.members().len(),
        }
    }
}

/// Whether a topic is one of Kafka's own.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

impl Kafka {
    /// Every topic (or just `only`) with partitions and watermarks, Kafka's own topics only with
    /// `internal`. Watermarks are read for at most `max_partitions` partitions (in topic order);
    /// the rest have none and `truncated` says so.
    pub async fn topics(
        &self,
        only: Option<&str>,
        internal: bool,
        max_partitions: usize,
    ) -> Result<(Vec<TopicInfo>, bool), KafkaAdapterError> {
        let meta = self.meta.clone();
        let log = self.log.clone();
        let wanted = only.map(str::to_string);
        let mut topics = blocking(move || {
            let md = meta
                .fetch_metadata(wanted.as_deref(), LOOKUP_TIMEOUT)
                .map_err(|e| log.lookup_error(e))?;
            log.answered();
            let mut out = Vec::new();
            for t in md.topics() {
                match t.error() {
                    None => {}
                    Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                        if wanted.is_some() {
                            return Err(KafkaAdapterError::Forbidden(t.name().to_string()));
                        }
                        continue;
                    }
                    Some(_) if wanted.is_some() => {
                        return Err(KafkaAdapterError::UnknownTopic(t.name().to_string()))
                    }
                    Some(_) => continue,
                }
                if t.partitions().is_empty() {
                    continue;
                }
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions()
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                        low: None,
                        high: None,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                out.push(TopicInfo {
                    topic: t.name().to_string(),
                    internal: is_internal(t.name()),
                    partitions,
                });
            }
            Ok(out)
        })
        .await?;
        if let Some(name) = only {
            if topics.is_empty() {
                return Err(KafkaAdapterError::UnknownTopic(name.to_string()));
            }
        } else if !internal {
            topics.retain(|t| !t.internal);
        }
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let mut wanted = Vec::new();
        for t in &topics {
            for p in &t.partitions {
                wanted.push((t.topic.clone(), p.partition));
            }
        }
        let truncated = wanted.len() > max_partitions;
        wanted.truncate(max_partitions);
        let marks = self.watermarks_of(wanted).await?;
        for t in &mut topics {
            for p in &mut t.partitions {
                if let Some((low, high)) = marks.get(&(t.topic.clone(), p.partition)) {
                    p.low = *low;
                    p.high = *high;
                }
            }
        }
        Ok((topics, truncated))
    }

    /// Low and high watermarks of many partitions in two batched requests per broker (Kafka's
    /// ListOffsets for "earliest" and "latest"), instead of two round trips per partition. A
    /// partition Kafka answered with an error has `None`.
    pub async fn watermarks_of(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<WatermarkMap, KafkaAdapterError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let meta = self.meta.clone();
        let log = self.log.clone();
        blocking(move || {
            let mut out: WatermarkMap = HashMap::new();
            for (at, earliest) in [(Offset::Beginning, true), (Offset::End, false)] {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &partitions {
                    tpl.add_partition_offset(t, *p, at)?;
                }
                let answered = meta
                    .offsets_for_times(tpl, LOOKUP_TIMEOUT)
                    .map_err(|e| log.lookup_error(e))?;
                for e in answered.elements() {
                    let v = match (e.error(), e.offset()) {
                        (Ok(()), Offset::Offset(o)) if o >= 0 => Some(o),
                        _ => None,
                    };
                    let slot = out
                        .entry((e.topic().to_string(), e.partition()))
                        .or_default();
                    if earliest {
                        slot.0 = v;
                    } else {
                        slot.1 = v;
                    }
                }
            }
            log.answered();
            Ok(out)
        })
        .await
    }

    /// Every group Kafka knows (from every broker), whether or not this proxy serves it.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, KafkaAdapterError> {
        let meta = self.meta.clone();
        let log = self.log.clone();
        let mut groups = blocking(move || {
            let list = meta
                .fetch_group_list(None, LOOKUP_TIMEOUT)
                .map_err(|e| log.lookup_error(e))?;
            Ok(list
                .groups()
                .iter()
                .map(GroupSummary::from)
                .collect::<Vec<_>>())
        })
        .await?;
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// One group: its state and members, and per partition its committed offset, high watermark
    /// and lag. `topics` limits the partitions to those topics; by default every non-internal
    /// topic is asked for (Kafka does not list a group's committed partitions through the calls
    /// librdkafka offers), and the partitions shown are those with a commit or an assigned
    /// member, as `kafka-consumer-groups --describe` shows them. `None` when Kafka knows
    /// nothing of the group (no members, nothing committed).
    pub async fn group(
        &self,
        group: &str,
        topics: Option<&[String]>,
    ) -> Result<Option<GroupDetail>, KafkaAdapterError> {
        let meta = self.meta.clone();
        let log = self.log.clone();
        let name = group.to_string();
        let (summary, members) = blocking(move || {
            let list = meta
                .fetch_group_list(Some(&name), LOOKUP_TIMEOUT)
                .map_err(|e| log.lookup_error(e))?;
            let Some(g) = list.groups().iter().find(|g| g.name() == name) else {
                return Ok((None, Vec::new()));
            };
            let consumer = g.protocol_type() == "consumer";
            let members = g
                .members()
                .iter()
                .map(|m| GroupMember {
                    member_id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    assignment: m
                        .assignment()
                        .filter(|_| consumer)
                        .and_then(parse_assignment)
                        .unwrap_or_default(),
                })
                .collect();
            Ok((Some(GroupSummary::from(g)), members))
        })
        .await?;
        let partitions = match topics {
            Some(ts) => {
                let mut all = Vec::new();
                for t in ts {
                    for p in self.partitions(t).await? {
                        all.push((t.clone(), p));
                    }
                }
                all
            }
            None => {
                let (all, _) = self.topics(None, false, 0).await?;
                all.iter()
                    .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), p.partition)))
                    .collect()
            }
        };
        let committed = self.committed(group, partitions).await?;
        let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
        for m in &members {
            for tp in &m.assignment {
                owner.insert((tp.topic.clone(), tp.partition), m.member_id.clone());
            }
        }
        let mut shown: Vec<(String, i32)> = committed.keys().cloned().collect();
        shown.extend(owner.keys().cloned());
        shown.sort();
        shown.dedup();
        let summary = match summary {
            Some(s) if s.state != "Dead" || !shown.is_empty() => s,
            _ if !shown.is_empty() => GroupSummary {
                group: group.to_string(),
                state: "Unknown".into(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: 0,
            },
            _ => return Ok(None),
        };
        let marks = self.watermarks_of(shown.clone()).await?;
        let mut total_lag = 0;
        let mut without = 0;
        let partitions = shown
            .into_iter()
            .map(|(topic, partition)| {
                let key = (topic, partition);
                let committed = committed.get(&key).copied();
                let high = marks.get(&key).and_then(|m| m.1);
                let lag = match (committed, high) {
                    (Some(c), Some(h)) => Some((h - c).max(0)),
                    _ => None,
                };
                total_lag += lag.unwrap_or(0);
                without += usize::from(committed.is_none());
                let member_id = owner.get(&key).cloned();
                let (topic, partition) = key;
                PartitionLag {
                    topic,
                    partition,
                    committed,
                    high,
                    lag,
                    member_id,
                }
            })
            .collect();
        Ok(Some(GroupDetail {
            summary,
            members_detail: members,
            partitions,
            total_lag,
            partitions_without_commit: without,
        }))
    }

    /// The offsets `group` has committed for `partitions` (those with a commit only), read by a
    /// short-lived client with that group id that never joins the group, so the group's members
    /// and assignment are untouched.
    pub async fn committed(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<HashMap<(String, i32), i64>, KafkaAdapterError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let mut cc = base_config(&self.config);
        cc.set("client.id", "kafka-proxy-admin")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let log = self.log.clone();
        blocking(move || {
            let reader: BaseConsumer<LogContext> = log.redactor().create(&cc, log.clone())?;
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition(t, *p);
            }
            let answered = reader
                .committed_offsets(tpl, LOOKUP_TIMEOUT)
                .map_err(|e| log.lookup_error(e))?;
            log.answered();
            let out = answered
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => {
                        Some(((e.topic().to_string(), e.partition()), o))
                    }
                    _ => None,
                })
                .collect();
            // Leaves nothing behind: the client never joined, so closing it is quick.
            drop(reader);
            Ok(out)
        })
        .await
    }
}

/// (low, high) per partition.
pub type WatermarkMap = HashMap<(String, i32), (Option<i64>, Option<i64>)>;

/// The partitions of a member's assignment in Kafka's consumer protocol (`ConsumerProtocol
/// Assignment`: version i16, then `[topic: string, partitions: [i32]]`, then user data; every
/// version starts so). `None` when the bytes are not that.
pub fn parse_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
    }
    let mut r = R(bytes);
    if r.i16()? < 0 {
        return None;
    }
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = std::str::from_utf8(r.take(len)?).ok()?.to_string();
        let n = r.i32()?;
        // Each partition takes 4 bytes: a count larger than what is left is not an assignment.
        if usize::try_from(n).ok()? > r.0.len() / 4 {
            return None;
        }
        for _ in 0..n {
            out.push(TopicPartition {
                topic: topic.clone(),
                partition: r.i32()?,
            });
        }
    }
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_in_the_consumer_protocol_are_read() {
        // version 3, one topic "ab" with partitions 2 and 0, then empty user data.
        let mut b = vec![0, 3, 0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 2];
        b.extend([0, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let got = parse_assignment(&b).expect("an assignment");
        let tp = |p| TopicPartition {
            topic: "ab".into(),
            partition: p,
        };
        assert_eq!(got, vec![tp(0), tp(2)]);
        // Truncated or absurd bytes are not an assignment, and never panic.
        for bad in [&b[..9], &[0, 0, 0, 0, 0, 1, 0, 9][..], &[0xff, 0xff][..]] {
            assert_eq!(parse_assignment(bad), None, "{bad:?}");
        }
        assert_eq!(parse_assignment(&[0, 0, 0, 0, 0, 0]), Some(vec![]));
        assert!(parse_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn kafkas_own_topics_are_internal() {
        assert!(is_internal("__consumer_offsets"));
        assert!(!is_internal("orders"));
        assert!(!is_internal("_private"));
    }
}
