//! The admin endpoints that read Kafka: topics with watermarks, consumer groups with lag. Their
//! look-ups run a few at a time and their answers are reused briefly, so `/admin` cannot be used
//! to load Kafka or the proxy's blocking pool.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::{admit, json};
use crate::http::gate::Params;
use crate::http::{AppState, HttpError};
use crate::kafka::KafkaAdapterError;
use crate::protocol::{admin as params, validate_topic, ErrorCode, ProtocolError};

/// Admin look-ups that read Kafka at once; more wait their turn.
pub const LOOKUP_CONCURRENCY: usize = 4;

/// How long an admin request waits for a turn before it is refused with 429.
pub const LOOKUP_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// How long an answer read from Kafka is reused for the same request.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Answers kept at most; beyond, expired ones are swept, then all.
const CACHE_MAX: usize = 256;

/// Partitions whose watermarks `GET /admin/topics` reads; the rest are listed without them.
pub const MAX_TOPIC_PARTITIONS: usize = 10_000;

/// A group look-up's requests together (group list, metadata, committed offsets,
/// watermarks; each one is bounded by the Kafka look-up timeout).
pub const GROUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The limit and the short-lived cache of admin look-ups that read Kafka.
pub struct Lookups {
    turns: tokio::sync::Semaphore,
    cache: Mutex<HashMap<String, (Instant, serde_json::Value)>>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            turns: tokio::sync::Semaphore::new(LOOKUP_CONCURRENCY),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Lookups {
    /// Runs `work` in its turn, within `limit`.
    pub async fn run<T>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, KafkaAdapterError>>,
    ) -> Result<T, HttpError> {
        let turn = tokio::time::timeout(LOOKUP_QUEUE_WAIT, self.turns.acquire()).await;
        let Ok(Ok(_turn)) = turn else {
            return Err(HttpError {
                error: ProtocolError::new(
                    ErrorCode::LimitReached,
                    format!(
                        "{LOOKUP_CONCURRENCY} admin look-ups are reading Kafka; try again shortly"
                    ),
                ),
                retry_after: Some(1),
            });
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r.map_err(|e| HttpError::from(ProtocolError::from(e))),
            Err(_) => Err(HttpError::from(ProtocolError::new(
                ErrorCode::KafkaUnavailable,
                format!("Kafka did not answer within {} s", limit.as_secs()),
            ))),
        }
    }

    /// The answer for `key` read within `CACHE_TTL`, else `work`'s, remembered.
    async fn cached(
        &self,
        key: String,
        limit: Duration,
        work: impl Future<Output = Result<serde_json::Value, KafkaAdapterError>>,
    ) -> Result<serde_json::Value, HttpError> {
        if let Some(v) = self.fresh(&key) {
            return Ok(v);
        }
        let v = self.run(limit, work).await?;
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_MAX {
                c.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(key, (Instant::now(), v.clone()));
        }
        Ok(v)
    }

    fn fresh(&self, key: &str) -> Option<serde_json::Value> {
        let c = self.cache.lock().ok()?;
        let (at, v) = c.get(key)?;
        (at.elapsed() < CACHE_TTL).then(|| v.clone())
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, KafkaAdapterError> {
    serde_json::to_value(v).map_err(|e| KafkaAdapterError::Internal(e.to_string()))
}

/// `GET /admin/topics[?internal=true]`.
pub async fn topics(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    let internal = admit(&state, &parts, q, params::parse_topics).await?;
    let kafka = state.kafka.clone();
    let work = async move {
        let (topics, truncated) = kafka.topics(None, internal, MAX_TOPIC_PARTITIONS).await?;
        to_json(serde_json::json!({ "topics": topics, "watermarks_truncated": truncated }))
    };
    let key = format!("topics?internal={internal}");
    let body = state.lookups.cached(key, GROUP_TIMEOUT, work).await?;
    Ok(json(body))
}

/// `GET /admin/topics/{topic}`.
pub async fn topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q, |q: &_| {
        params::parse_none(q)?;
        validate_topic(&name)
    })
    .await?;
    let kafka = state.kafka.clone();
    let key = format!("topic/{name}");
    let work = async move {
        let (mut topics, _) = kafka
            .topics(Some(&name), true, MAX_TOPIC_PARTITIONS)
            .await?;
        match topics.pop() {
            Some(t) => to_json(t),
            None => Err(KafkaAdapterError::UnknownTopic(name)),
        }
    };
    let body = state.lookups.cached(key, GROUP_TIMEOUT, work).await?;
    Ok(json(body))
}

/// `GET /admin/groups`: every group Kafka knows, with the ones this proxy serves marked.
pub async fn groups(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q, params::parse_none).await?;
    let kafka = state.kafka.clone();
    let work = async move { to_json(kafka.groups().await?) };
    let mut body = state
        .lookups
        .cached("groups".into(), GROUP_TIMEOUT, work)
        .await?;
    // Which groups the proxy serves changes by the second: never from the cache.
    let served = state.metrics.served_groups();
    if let Some(list) = body.as_array_mut() {
        for g in list {
            let name = g["group"].as_str().unwrap_or_default().to_string();
            g["served_by_proxy"] = served.contains_key(&name).into();
        }
    }
    Ok(json(serde_json::json!({ "groups": body })))
}

/// `GET /admin/groups/{group}[?topic=a,b]`: members, and per partition the committed offset,
/// the high watermark and the lag.
pub async fn group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    let topics = admit(&state, &parts, q, |q: &_| {
        params::validate_group(&name)?;
        params::parse_group(q)
    })
    .await?;
    let kafka = state.kafka.clone();
    let key = format!("group/{name}?{topics:?}");
    let group = name.clone();
    let work = async move {
        match kafka.group(&group, topics.as_deref()).await? {
            Some(d) => to_json(d),
            None => Ok(serde_json::Value::Null),
        }
    };
    let body = state.lookups.cached(key, GROUP_TIMEOUT, work).await?;
    if body.is_null() {
        return Err(HttpError::from(ProtocolError::new(
            ErrorCode::NotFound,
            format!("Kafka knows no consumer group {name:?} (no members, nothing committed)"),
        )));
    }
    let mut body = body;
    body["served_by_proxy"] = state.metrics.served_groups().contains_key(&name).into();
    Ok(json(body))
}
