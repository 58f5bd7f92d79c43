//! Produce over HTTP: a request's records are sent together and answered in input order.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Order, QUEUE_FULL_RETRY};
use crate::kafka::producer::{enqueue, Enqueue, Outcome};
use crate::kafka::Kafka;
use crate::protocol::produce::{self as wire, Decoded};
use crate::protocol::{ErrorCode, ProtocolError};

/// Sends every record (all in flight together) and waits for every answer, in input order.
/// A request holds at most `MAX_FRAME_RECORDS` records (the decoder refuses more), so they are
/// not windowed further: that bounds the answers held and the response.
pub async fn produce_all(
    kafka: &Kafka,
    topic: &str,
    partitions: &[i32],
    decoded: Vec<Decoded>,
) -> Vec<(Option<Value>, Outcome)> {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut order = Order::new();
    for d in decoded {
        let r = match d {
            Ok(r) => r,
            Err(e) => {
                order.done(e.seq, e.id, Err(e.error));
                continue;
            }
        };
        if let Some(p) = r.partition.filter(|p| !partitions.contains(p)) {
            let e = wire::unknown_partition(topic, p, partitions.len());
            order.done(r.seq, r.id, Err(e));
            continue;
        }
        loop {
            match enqueue(kafka, topic, &r, order.ticket()) {
                Enqueue::Sent => order.sent(r.seq, r.id.clone()),
                Enqueue::Failed(e) => order.done(r.seq, r.id.clone(), Err(e)),
                Enqueue::Full if Instant::now() < give_up => {
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                    continue;
                }
                Enqueue::Full => order.done(
                    r.seq,
                    r.id.clone(),
                    Err(ProtocolError::new(
                        ErrorCode::KafkaUnavailable,
                        "the producer's queue stayed full; Kafka is not keeping up",
                    )),
                ),
            }
            break;
        }
    }
    let mut answers = Vec::with_capacity(order.len());
    loop {
        order.collect();
        while let Some((_, id, outcome)) = order.pop() {
            answers.push((id, outcome));
        }
        if order.is_empty() {
            return answers;
        }
        // Every sent record gets a report from librdkafka (at the latest after
        // `message.timeout.ms`).
        order.inbox.ready().await;
    }
}
