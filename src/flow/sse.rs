//! Server-Sent Events, the use case: a consume stream is the consume session (`flow::consume`)
//! on an event stream whose record events carry the stream position as their id; a live stream
//! follows the topic's shared tail reader (`flow::tail`). Nothing here batches or counts: both
//! are the WebSocket endpoints' own loops, driven through `transport::Outbound`.

use std::sync::Arc;

use crate::flow::tail::{follow_on, ReaderHandle};
use crate::flow::{consume, Deps};
use crate::kafka::consumer::Reader;
use crate::kafka::resume::ExactOpen;
use crate::metrics::SessionStats;
use crate::protocol::consume::ConsumeRequest;
use crate::protocol::sse::{Positions, MAX_STREAM_PARTITIONS};
use crate::protocol::ProtocolError;
use crate::transport::sse::SseConn;

/// A consume stream whose consumer is open. Opening comes first so that an unknown topic, a
/// refused position or an unreachable Kafka is still an HTTP status, which a browser's
/// `EventSource` does not retry (it retries a stream that ends).
pub struct Opened {
    req: ConsumeRequest,
    consumer: consume::Opened,
    positions: Positions,
}

/// Opens the consumer of a consume stream, resuming at `resume` (topic, partition, next
/// offset: a `Last-Event-ID`'s positions) where it names a partition.
pub async fn open(
    deps: &Deps,
    req: ConsumeRequest,
    resume: &[(String, i32, i64)],
) -> Result<Opened, ProtocolError> {
    let ExactOpen {
        reader,
        fetch,
        events,
        starts,
    } = Reader::open_exact(&deps.kafka, &req, resume, MAX_STREAM_PARTITIONS).await?;
    // Every partition with a known start is named from the first event on: a partition that
    // sends nothing before a reconnect resumes where it was, not at a later "latest".
    let mut positions = Positions::new(&req.topics);
    for (t, p, at) in &starts {
        positions.set(t, *p, *at);
    }
    Ok(Opened {
        req,
        consumer: (reader, fetch, events),
        positions,
    })
}

/// Serves an opened consume stream until it ends, then commits (`commit=auto`) and closes.
pub async fn serve(mut conn: SseConn, opened: Opened, deps: Deps, stats: Arc<SessionStats>) {
    let Opened {
        req,
        consumer,
        positions,
    } = opened;
    consume::drive(&mut conn, &req, &deps, &stats, consumer, Some(positions)).await;
    stats.set_buffered(0);
}

/// Serves a live stream from the topic's shared reader.
pub async fn follow(
    mut conn: SseConn,
    reader: Arc<ReaderHandle>,
    deps: Deps,
    stats: Arc<SessionStats>,
) {
    follow_on(&mut conn, reader, &stats, &deps).await
}
