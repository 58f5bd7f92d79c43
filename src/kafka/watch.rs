//! Topic watch: ends the reads of a topic that was deleted, or that Kafka's ACLs no longer let
//! the proxy see, within seconds, by asking Kafka's metadata about each topic being read.
//
// librdkafka notices a deleted topic only at a metadata refresh, and no sooner than its topic
// propagation time (`topic.metadata.propagation.max.ms`, 30 s) after the client started; for
// partitions routed to a session's batch queue it reports the loss only in its log. So the proxy
// asks itself. One watcher per proxy, with a client of its own (its look-ups never queue with a
// session's setup), looks up every topic that a session or tail reader reads, `INTERVAL` apart:
// at most `PER_ROUND` topics a round, the others on the following rounds, so the look-ups per
// second stay bounded however many topics are read. A topic reported missing is looked up again
// on the next round, and only two answers in a row end its reads: one broker's stale metadata
// does not. An unreachable Kafka ends nothing (sessions ride out an outage).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{stream, StreamExt};
use rdkafka::consumer::BaseConsumer;
use tokio::sync::mpsc;

use super::consumer::RebalanceEvent;
use super::metadata::lookup_partitions;
use super::{KafkaAdapterError, LogContext};
use crate::protocol::{ErrorCode, ProtocolError};

/// Time between two rounds of look-ups.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Most topics looked up in one round (besides those missing in the last one).
const PER_ROUND: usize = 256;

/// Look-ups of one round running at once.
const CONCURRENCY: usize = 8;

/// Answers in a row that say a topic is gone before its reads end.
const CONFIRMATIONS: u8 = 2;

#[derive(Default)]
struct Entry {
    /// Where each reader (a session or a tail reader) hears that the topic is gone, by id.
    readers: HashMap<u64, mpsc::UnboundedSender<RebalanceEvent>>,
    /// Answers in a row that said the topic is gone.
    misses: u8,
}

#[derive(Default)]
struct Watched {
    topics: HashMap<String, Entry>,
    next_id: u64,
    /// Where the next round starts in the sorted topic names.
    cursor: usize,
    /// Whether the watcher task runs; it stops when no topic is watched.
    running: bool,
}

impl Watched {
    /// The topics to look up now: last round's suspects, then up to `PER_ROUND` from the cursor.
    fn next_round(&mut self) -> Vec<String> {
        let mut round: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, e)| e.misses > 0)
            .map(|(t, _)| t.clone())
            .collect();
        let mut names: Vec<&String> = self.topics.keys().collect();
        names.sort_unstable();
        let n = names.len();
        let take = PER_ROUND.min(n);
        for i in 0..take {
            let t = names[(self.cursor + i) % n];
            if !round.contains(t) {
                round.push(t.clone());
            }
        }
        self.cursor = (self.cursor + take) % n.max(1);
        round
    }

    /// Takes Kafka's answer about `topic`; tells its readers once it is gone for sure.
    fn answer(&mut self, topic: &str, answer: Result<Vec<i32>, KafkaAdapterError>) {
        let Some(entry) = self.topics.get_mut(topic) else {
            return;
        };
        let gone = match answer {
            Ok(_) => {
                entry.misses = 0;
                return;
            }
            Err(KafkaAdapterError::UnknownTopic(_)) => ProtocolError::new(
                ErrorCode::UnknownTopic,
                format!("topic {topic:?} no longer exists"),
            ),
            Err(KafkaAdapterError::Forbidden(_)) => ProtocolError::new(
                ErrorCode::Forbidden,
                format!("Kafka no longer lets the proxy read topic {topic:?}"),
            ),
            // Kafka unreachable or slow: librdkafka retries, and so do the next rounds.
            Err(_) => return,
        };
        entry.misses += 1;
        if entry.misses < CONFIRMATIONS {
            return;
        }
        tracing::warn!(
            topic,
            reads = entry.readers.len(),
            reason = %gone.message,
            "a topic being read is gone; its reads end"
        );
        for (_, tx) in entry.readers.drain() {
            let _ = tx.send(RebalanceEvent::Lost(gone.clone()));
        }
        self.topics.remove(topic);
    }
}

/// The proxy's topic watch (see the module's comment).
pub struct TopicWatch {
    client: Arc<BaseConsumer<LogContext>>,
    log: LogContext,
    watched: Arc<Mutex<Watched>>,
}

/// Keeps topics watched for one reader; dropping it stops that.
pub struct Watching {
    watched: Weak<Mutex<Watched>>,
    id: u64,
    topics: Vec<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(w) = self.watched.upgrade() else {
            return;
        };
        let Ok(mut w) = w.lock() else {
            return;
        };
        for t in &self.topics {
            if let Some(e) = w.topics.get_mut(t) {
                e.readers.remove(&self.id);
                if e.readers.is_empty() {
                    w.topics.remove(t);
                }
            }
        }
    }
}

impl TopicWatch {
    pub fn new(client: BaseConsumer<LogContext>, log: LogContext) -> TopicWatch {
        TopicWatch {
            client: Arc::new(client),
            log,
            watched: Arc::default(),
        }
    }

    /// Sends `RebalanceEvent::Lost` to `events` when one of `topics` is gone, until the returned
    /// guard is dropped. Call it inside the runtime (it may start the watcher task).
    pub fn watch(
        &self,
        topics: &[String],
        events: &mpsc::UnboundedSender<RebalanceEvent>,
    ) -> Watching {
        let mut id = 0;
        if let Ok(mut w) = self.watched.lock() {
            id = w.next_id;
            w.next_id += 1;
            for t in topics {
                w.topics
                    .entry(t.clone())
                    .or_default()
                    .readers
                    .insert(id, events.clone());
            }
            if !w.running && !w.topics.is_empty() {
                w.running = true;
                tokio::spawn(run(
                    self.client.clone(),
                    self.log.clone(),
                    Arc::downgrade(&self.watched),
                ));
            }
        }
        Watching {
            watched: Arc::downgrade(&self.watched),
            id,
            topics: topics.to_vec(),
        }
    }
}

/// The watcher: a round of look-ups every `INTERVAL` while any topic is watched.
async fn run(
    client: Arc<BaseConsumer<LogContext>>,
    log: LogContext,
    watched: Weak<Mutex<Watched>>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: a topic is looked up one interval after it is first watched.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(w) = watched.upgrade() else {
            return;
        };
        let round = match w.lock() {
            Ok(mut g) if g.topics.is_empty() => {
                g.running = false;
                return;
            }
            Ok(mut g) => g.next_round(),
            Err(_) => return,
        };
        let lookups: Vec<_> = round
            .into_iter()
            .map(|t| {
                let (client, log) = (client.clone(), log.clone());
                async move {
                    let answer = lookup_partitions(client, log, t.clone()).await;
                    (t, answer)
                }
            })
            .collect();
        let answers: Vec<_> = stream::iter(lookups)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        if let Ok(mut g) = w.lock() {
            for (t, answer) in answers {
                g.answer(&t, answer);
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(topics: &[&str]) -> (Watched, Vec<mpsc::UnboundedReceiver<RebalanceEvent>>) {
        let mut w = Watched::default();
        let mut rxs = Vec::new();
        for (id, t) in topics.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            w.topics
                .entry(t.to_string())
                .or_default()
                .readers
                .insert(id as u64, tx);
            rxs.push(rx);
        }
        (w, rxs)
    }

    #[test]
    fn a_topic_ends_its_reads_after_two_answers_in_a_row_say_it_is_gone() {
        let (mut w, mut rxs) = watched(&["a", "b"]);
        let gone = || Err(KafkaAdapterError::UnknownTopic("a".into()));
        w.answer("a", gone());
        assert!(rxs[0].try_recv().is_err(), "one answer is not enough");
        // It exists after all (a broker's stale metadata): the count starts over.
        w.answer("a", Ok(vec![0]));
        w.answer("a", gone());
        // An unreachable Kafka neither confirms nor clears.
        w.answer("a", Err(KafkaAdapterError::Unavailable("down".into())));
        assert!(rxs[0].try_recv().is_err());
        w.answer("a", gone());
        match rxs[0].try_recv() {
            Ok(RebalanceEvent::Lost(e)) => {
                assert_eq!(e.code, ErrorCode::UnknownTopic);
                assert_eq!(e.message, "topic \"a\" no longer exists");
            }
            other => panic!("expected the loss, got {other:?}"),
        }
        assert!(!w.topics.contains_key("a"));
        assert!(rxs[1].try_recv().is_err(), "b is not affected");
        // Access revoked is forbidden.
        w.answer("b", Err(KafkaAdapterError::Forbidden("b".into())));
        w.answer("b", Err(KafkaAdapterError::Forbidden("b".into())));
        assert!(matches!(
            rxs[1].try_recv(),
            Ok(RebalanceEvent::Lost(e)) if e.code == ErrorCode::Forbidden
        ));
    }

    #[test]
    fn rounds_are_bounded_and_suspects_come_again() {
        let names: Vec<String> = (0..PER_ROUND + 10).map(|i| format!("t{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (mut w, _rxs) = watched(&refs);
        let first = w.next_round();
        assert_eq!(first.len(), PER_ROUND);
        w.answer(
            &first[0],
            Err(KafkaAdapterError::UnknownTopic(first[0].clone())),
        );
        let second = w.next_round();
        // The suspect again, then the rest of the topics from where the first round stopped.
        assert_eq!(second[0], first[0]);
        assert!(second.contains(&names[PER_ROUND + 9]));
        assert!(second.len() <= PER_ROUND + 1);
    }
}
