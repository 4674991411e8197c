//! What an inference request may cost before anything checks it. It is routed first, so a request for
//! an unknown model or version costs nothing but its headers; then its body is read under the
//! host-wide budget of bytes held by requests in flight (raw and decoded), charged before the bytes
//! are read: past the budget a request waits briefly, then gets 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::registry::{Route, RoutingTable};

/// Bytes that requests in flight may hold, host-wide.
#[derive(Clone)]
pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    total: u64,
    wait: Duration,
    /// The part of the budget open streams may hold together (half of it): streams are held open
    /// for as long as their callers like, so without a part of their own enough of them would hold
    /// the whole budget, and every other request would be refused while they stay.
    streams: Arc<Semaphore>,
    streams_total: u64,
}

/// A request's share of the budget, given back when it is dropped (answered, or hung up).
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    /// An open stream's place in the streams' part of the budget.
    _stream: Option<OwnedSemaphorePermit>,
}

impl RequestBudget {
    /// A budget of `total` bytes; a request waits up to `wait` for room.
    pub fn new(total: u64, wait: Duration) -> RequestBudget {
        let total = total.min(Semaphore::MAX_PERMITS as u64).max(1);
        let streams_total = (total / 2).max(1);
        RequestBudget {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
            wait,
            streams: Arc::new(Semaphore::new(streams_total as usize)),
            streams_total,
        }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        self.total - self.bytes.available_permits() as u64
    }

    /// Room for `bytes` more, within the wait, held until the [`Held`] is dropped (what a request
    /// holds that is not read through [`read_body`]: a gRPC stream's messages).
    pub async fn hold(&self, bytes: u64) -> Result<Held, ApiError> {
        Ok(Held {
            _permit: Some(self.permit(bytes).await?),
            _stream: None,
        })
    }

    /// Room for an open stream's `bytes`, held until the [`Held`] is dropped (the stream ends).
    /// Open streams together hold at most half the budget: past that a new stream is refused after
    /// the budget's short wait (503 with `Retry-After`, gRPC's UNAVAILABLE, which clients' retry
    /// policies retry, as for a full budget), so that an open stream's reservation never takes the
    /// other half from requests.
    pub async fn hold_stream(&self, bytes: u64) -> Result<Held, ApiError> {
        let share = bytes.min(self.streams_total).clamp(1, u32::MAX as u64) as u32;
        // The same short wait as a request's: a stream that just ended may not have given its room
        // back yet.
        let acquire = self.streams.clone().acquire_many_owned(share);
        let Ok(Ok(stream)) = tokio::time::timeout(self.wait, acquire).await else {
            metrics::counter!("ferry_streams_refused_total").increment(1);
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: too many open streams: they may hold half of the host's byte budget ({} bytes, \
                     {share} bytes a stream); end one, or try again shortly",
                    self.streams_total
                ),
            );
            e.retry_after = Some(1);
            return Err(e);
        };
        Ok(Held {
            _permit: Some(self.permit(bytes).await?),
            _stream: Some(stream),
        })
    }

    async fn permit(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        // A request larger than the whole budget could never fit; the body limit is checked first,
        // and the budget is at least two largest bodies, so this only rounds.
        let bytes = bytes.min(self.total).min(u32::MAX as u64) as u32;
        let acquire = self.bytes.clone().acquire_many_owned(bytes.max(1));
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("ferry_requests_over_byte_budget_total").increment(1);
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "busy: requests in flight hold the host's budget of {} bytes; try again shortly",
                        self.total
                    ),
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }
}

/// What routing told about a request before its body is read.
pub struct Routed {
    /// Bytes of input the model takes at most (the largest of a split's versions).
    pub max_input_bytes: usize,
}

/// Routes `model` / `version` on the current table as the call will, without reading anything.
pub fn route(table: &RoutingTable, model: &str, version: Option<&str>) -> Result<Routed, ApiError> {
    let max_input_bytes = match table.route(model, version)? {
        Route::Version(v) => v.limits.max_input_bytes,
        Route::Split(split) => split
            .targets
            .iter()
            .filter_map(|(_, _, v)| v.as_ref())
            .map(|v| v.limits.max_input_bytes)
            .max()
            .unwrap_or(0),
    };
    Ok(Routed { max_input_bytes })
}

/// Reads `body` (at most `limit` bytes) while holding `charge(raw)` bytes of `budget`: declared
/// lengths are charged before a byte is read, undeclared ones as they arrive.
pub async fn read_body(
    budget: &RequestBudget,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    charge: impl Fn(u64) -> u64,
) -> Result<(Bytes, Held), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut held = match declared {
        Some(n) => Some(budget.permit(charge(n)).await?),
        None => None,
    };
    let mut charged = declared.map_or(0, &charge);
    let mut raw = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if super::connections::is_slow_body(&e) {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, e.to_string())
            } else {
                ApiError::bad_request(format!("the request body could not be read: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if raw.len() + data.len() > limit {
            return Err(too_large());
        }
        raw.extend_from_slice(&data);
        // A body longer than declared (or undeclared): charged for what arrives.
        let due = charge(raw.len() as u64);
        if due > charged {
            let more = budget.permit(due - charged).await?;
            match held.as_mut() {
                Some(permit) => permit.merge(more),
                None => held = Some(more),
            }
            charged = due;
        }
    }
    Ok((
        Bytes::from(raw),
        Held {
            _permit: held,
            _stream: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_streams_hold_at_most_half_the_budget_and_give_it_back() {
        let budget = RequestBudget::new(100, Duration::from_millis(20));
        let first = budget.hold_stream(30).await.unwrap();
        assert_eq!(budget.in_use(), 30);
        // 30 + 30 would be more than half: refused after the wait, holding nothing.
        let refused = budget.hold_stream(30).await.err().unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            refused.message.contains("too many open streams"),
            "{}",
            refused.message
        );
        assert_eq!(budget.in_use(), 30);
        // Requests still have the rest.
        let request = budget.hold(70).await.unwrap();
        drop(request);
        let second = budget.hold_stream(20).await.unwrap();
        drop((first, second));
        assert_eq!(budget.in_use(), 0);
        let again = budget.hold_stream(50).await.unwrap();
        drop(again);
    }

    #[tokio::test]
    async fn a_request_past_the_budget_waits_then_is_refused_and_room_comes_back() {
        let budget = RequestBudget::new(100, Duration::from_millis(20));
        let headers = |n: usize| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, n.into());
            h
        };
        let (bytes, held) = read_body(
            &budget,
            &headers(60),
            Body::from(vec![1u8; 60]),
            1000,
            |n| n,
        )
        .await
        .unwrap();
        assert_eq!(bytes.len(), 60);
        assert_eq!(budget.in_use(), 60);
        let refused = read_body(
            &budget,
            &headers(60),
            Body::from(vec![1u8; 60]),
            1000,
            |n| n,
        )
        .await;
        let e = refused.err().unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        drop(held);
        assert_eq!(budget.in_use(), 0);
        let too_large = read_body(
            &budget,
            &headers(2000),
            Body::from(vec![1u8; 10]),
            1000,
            |n| n,
        )
        .await;
        assert_eq!(
            too_large.err().unwrap().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // Undeclared lengths are charged as they arrive, and held until the request is done.
        let (bytes, held) = read_body(
            &budget,
            &HeaderMap::new(),
            Body::from(vec![1u8; 50]),
            1000,
            |n| 2 * n,
        )
        .await
        .unwrap();
        assert_eq!((bytes.len(), budget.in_use()), (50, 100));
        drop(held);
        let over = read_body(
            &budget,
            &HeaderMap::new(),
            Body::from(vec![1u8; 1001]),
            1000,
            |n| n,
        )
        .await;
        assert_eq!(over.err().unwrap().status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.in_use(), 0);
    }
}
