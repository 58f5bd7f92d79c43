//! Exact starts for resumable streams (Server-Sent Events): a stream's saved position (per
//! partition, the next offset) goes on top of the request's start plan, and every planned start
//! becomes a concrete offset, so the stream can name it in its ids from the first event on.

use futures::{stream, StreamExt, TryStreamExt};
use rdkafka::Offset;
use tokio::sync::mpsc;

use super::consumer::{Fetch, Reader, RebalanceEvent};
use super::metadata::{StartPlan, RESOLVE_TIMEOUT};
use super::Kafka;
use crate::protocol::consume::ConsumeRequest;
use crate::protocol::{ErrorCode, ProtocolError};

/// Watermark look-ups one stream runs at once.
const LOOKUP_CONCURRENCY: usize = 8;

/// A stream's consumer and where each partition with a planned start begins: (topic,
/// partition, offset). Partitions without one start at the group's committed offset.
pub struct ExactOpen {
    pub reader: Reader,
    pub fetch: Fetch,
    pub events: mpsc::UnboundedReceiver<RebalanceEvent>,
    pub starts: Vec<(String, i32, i64)>,
}

impl Reader {
    /// Opens a stream's consumer like [`Reader::open`], reading at most `max_partitions`
    /// partitions, with `resume`'s positions (topic, partition, next offset) instead of the
    /// request's start for the partitions it names. A position outside its partition's range
    /// (records deleted since, or the topic re-created) is `offset_out_of_range`.
    pub async fn open_exact(
        kafka: &Kafka,
        req: &ConsumeRequest,
        resume: &[(String, i32, i64)],
        max_partitions: usize,
    ) -> Result<ExactOpen, ProtocolError> {
        let _turn = kafka.setup_turn().await;
        let mut plan = kafka
            .resolve_start(&req.topics, &req.assignment, &req.start)
            .await?;
        if plan.partitions.len() > max_partitions {
            return Err(ProtocolError::bad_request(format!(
                "this request reads {} partitions; an event stream reads at most {max_partitions} \
                 (its ids name each): name fewer topics or partitions, or use /v1/consume",
                plan.partitions.len()
            )));
        }
        for (t, p, o) in resume {
            if !plan.partitions.iter().any(|(pt, pp)| pt == t && pp == p) {
                return Err(ProtocolError::bad_request(format!(
                    "Last-Event-ID names partition {t}/{p}, which this stream does not read"
                )));
            }
            plan.first_offsets
                .insert((t.clone(), *p), Offset::Offset(*o));
        }
        let starts = tokio::time::timeout(RESOLVE_TIMEOUT, concrete(kafka, &plan, resume))
            .await
            .map_err(|_| {
                ProtocolError::new(
                    ErrorCode::KafkaUnavailable,
                    format!(
                        "watermark look-ups took longer than {} s",
                        RESOLVE_TIMEOUT.as_secs()
                    ),
                )
            })??;
        plan.first_offsets = starts
            .iter()
            .map(|(t, p, o)| ((t.clone(), *p), Offset::Offset(*o)))
            .collect();
        let (reader, fetch, events) = Reader::join(kafka, req, plan).await?;
        Ok(ExactOpen {
            reader,
            fetch,
            events,
            starts,
        })
    }
}

/// Every planned start as an offset: the beginning is the low watermark, the end the high one.
/// Resumed positions are checked against the partition's range.
async fn concrete(
    kafka: &Kafka,
    plan: &StartPlan,
    resume: &[(String, i32, i64)],
) -> Result<Vec<(String, i32, i64)>, ProtocolError> {
    let lookups: Vec<_> = plan
        .first_offsets
        .iter()
        .map(|((t, p), off)| async move {
            let (low, high) = kafka.watermarks(t, *p).await?;
            let at = match *off {
                Offset::Beginning => low,
                Offset::Offset(o) => {
                    let resumed = resume.iter().any(|(rt, rp, _)| rt == t && rp == p);
                    if resumed && !(low..=high).contains(&o) {
                        return Err(ProtocolError::new(
                            ErrorCode::OffsetOutOfRange,
                            format!(
                                "Last-Event-ID resumes {t}/{p} at offset {o}, outside its range \
                                 [{low}, {high}] (records were deleted or the topic was \
                                 re-created); reconnect without it to start afresh"
                            ),
                        ));
                    }
                    o
                }
                // `End`, and anything else librdkafka would resolve to it.
                _ => high,
            };
            Ok::<_, ProtocolError>((t.clone(), *p, at))
        })
        .collect();
    let mut starts: Vec<(String, i32, i64)> = stream::iter(lookups)
        .buffer_unordered(LOOKUP_CONCURRENCY)
        .try_collect()
        .await?;
    starts.sort();
    Ok(starts)
}
