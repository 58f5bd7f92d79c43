//! The answers of produce: `ack`, `acks` (answers=batch) and `error` frames, and the HTTP
//! results.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::super::ProtocolError;

/// `{"type":"ack","id":ID,"partition":P,"offset":N}`.
pub fn ack_frame(id: &Value, partition: i32, offset: i64) -> String {
    let mut s = String::with_capacity(64);
    push_ack_frame(&mut s, id, partition, offset);
    s
}

/// `ack_frame`, appended to `s` (so a buffer can be reused).
pub fn push_ack_frame(s: &mut String, id: &Value, partition: i32, offset: i64) {
    s.push_str("{\"type\":\"ack\",\"id\":");
    push_json(s, id);
    s.push_str(",\"partition\":");
    push_int(s, partition.into());
    s.push_str(",\"offset\":");
    push_int(s, offset);
    s.push('}');
}

/// Appends `v` in decimal without `fmt`: a socket writes up to a million acks a second.
fn push_int(s: &mut String, v: i64) {
    let mut digits = [0u8; 20];
    for &d in super::super::decimal(v, &mut digits) {
        s.push(char::from(d));
    }
}

/// Records one `acks` frame answers at most, so a frame stays small for any client.
pub const MAX_BATCH_RECORDS: u64 = 1000;

/// Bytes of client ids one `acks` frame carries at most (ids are any JSON string or number).
const MAX_BATCH_ID_BYTES: usize = 64 * 1024;

/// One `acks` frame (`answers=batch`): consecutive records, all stored, answered together.
///
/// `{"type":"acks","first":F,"last":L,"runs":[[P,O,N],...]}` answers the records numbered F to
/// L (sequence numbers, as in `ack` frames without a client id). Each run `[P,O,N]` covers the
/// next N of them, stored in partition P at offsets O, O+1, ..., O+N-1; the runs' N add up to
/// L-F+1. When any of the records gave an `id`, `"ids":[...]` lists each record's id (its own,
/// or its sequence number), in order.
#[derive(Debug, Default)]
pub struct AcksBatch {
    first: u64,
    count: u64,
    /// `(partition, first offset, records)`.
    runs: Vec<(i32, i64, u64)>,
    /// The `ids` array's elements so far, comma-separated; `None` until a record has an id.
    ids: Option<String>,
}

impl AcksBatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records in the batch (at most `MAX_BATCH_RECORDS`).
    pub fn len(&self) -> u32 {
        // Bounded by `MAX_BATCH_RECORDS` through `is_full`; saturates rather than wraps.
        u32::try_from(self.count).unwrap_or(u32::MAX)
    }

    /// Whether the frame should be sent before another record joins it.
    pub fn is_full(&self) -> bool {
        self.count >= MAX_BATCH_RECORDS
            || self
                .ids
                .as_ref()
                .is_some_and(|s| s.len() >= MAX_BATCH_ID_BYTES)
    }

    /// Adds the next record; `false` (and nothing added) when it does not follow the last one,
    /// so the caller sends this frame first.
    pub fn push(&mut self, seq: u64, id: Option<&Value>, partition: i32, offset: i64) -> bool {
        if self.count == 0 {
            self.first = seq;
        } else if seq != self.first + self.count {
            return false;
        }
        match id {
            Some(id) => {
                let ids = self.ids.get_or_insert_with(|| {
                    // Records before the first id are named by their sequence numbers.
                    let mut s = String::new();
                    for k in 0..self.count {
                        let _ = write!(s, "{},", self.first + k);
                    }
                    s
                });
                push_json(ids, id);
                ids.push(',');
            }
            None => {
                if let Some(ids) = &mut self.ids {
                    let _ = write!(ids, "{seq},");
                }
            }
        }
        match self.runs.last_mut() {
            Some((p, o, n)) if *p == partition && o.checked_add(*n as i64) == Some(offset) => {
                *n += 1
            }
            _ => self.runs.push((partition, offset, 1)),
        }
        self.count += 1;
        true
    }

    /// Appends the frame to `s` and empties the batch; nothing when it is empty.
    pub fn take_frame(&mut self, s: &mut String) {
        if self.count == 0 {
            return;
        }
        let _ = write!(
            s,
            "{{\"type\":\"acks\",\"first\":{},\"last\":{},\"runs\":[",
            self.first,
            self.first + self.count - 1
        );
        for (i, (p, o, n)) in self.runs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            push_int(s, (*p).into());
            s.push(',');
            push_int(s, *o);
            s.push(',');
            push_int(s, i64::try_from(*n).unwrap_or(i64::MAX));
            s.push(']');
        }
        s.push(']');
        if let Some(ids) = self.ids.take() {
            s.push_str(",\"ids\":[");
            s.push_str(ids.strip_suffix(',').unwrap_or(&ids));
            s.push(']');
        }
        s.push('}');
        self.runs.clear();
        self.count = 0;
    }
}

/// `{"type":"error","id":ID,"code":"...","message":"..."}`.
pub fn error_frame(id: &Value, error: &ProtocolError) -> String {
    error.frame_with_id(Some(id))
}

fn push_json(s: &mut String, v: &Value) {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => push_int(s, i),
            None => {
                let _ = write!(s, "{n}");
            }
        },
        other => s.push_str(&serde_json::to_string(other).unwrap_or_else(|_| "null".into())),
    }
}

/// One record's result in an HTTP answer: `{"id"?,"partition","offset"}` or `{"id"?,"error"}`.
#[derive(Debug, Serialize)]
pub struct HttpResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<HttpErrorBody<'a>>,
}

#[derive(Debug, Serialize)]
pub struct HttpErrorBody<'a> {
    pub code: &'static str,
    pub message: &'a str,
}

pub fn http_result<'a>(
    id: Option<&'a Value>,
    outcome: &'a Result<(i32, i64), ProtocolError>,
) -> HttpResult<'a> {
    match outcome {
        Ok((p, o)) => HttpResult {
            id,
            partition: Some(*p),
            offset: Some(*o),
            error: None,
        },
        Err(e) => HttpResult {
            id,
            partition: None,
            offset: None,
            error: Some(HttpErrorBody {
                code: e.code.name(),
                message: &e.message,
            }),
        },
    }
}

/// The HTTP status of a batch: 200 when every record was stored, 207 when any failed.
pub fn http_batch_status<'a>(
    outcomes: impl IntoIterator<Item = &'a Result<(i32, i64), ProtocolError>>,
) -> u16 {
    if outcomes.into_iter().all(Result::is_ok) {
        200
    } else {
        207
    }
}
