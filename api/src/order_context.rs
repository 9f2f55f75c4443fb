//! What exercise 4's student file (`idempotency.rs`) is given and hands back:
//! the request, the refusals, the stored answer, and the context with its Redis
//! connection. Plumbing: students need not edit this file.
//!
//! `orders.rs` (the route) builds these and calls `idempotency.rs`;
//! `idempotency.rs` uses them and never the route, so the two files do not
//! import each other.

use std::time::Duration;

use axum::http::HeaderMap;
use lab_runtime::trace::{Shared, TracedConnection};
use lab_schema::orders::IDEMPOTENCY_KEY;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `begin`, `finish` and `release` are given besides the request, as
/// exercises 1 to 3 get a `JobContext`.
pub struct OrderContext {
    /// A Redis connection: `redis::cmd("SET")...query_async(&mut ctx.redis)`.
    /// (It writes down each command you send and its reply: that is how
    /// `verify` sees what your code did.)
    pub redis: TracedConnection,
    /// How long a stored answer is kept, in seconds (`ORDER_KEY_TTL_SECS`, 24 h
    /// by default; `GET /idempotency` publishes it).
    pub answer_ttl_secs: u64,
    /// How long a reservation lives while its request is in flight, in seconds
    /// (60): far longer than any request takes, and short enough that a key
    /// whose API process died mid-request frees itself within a minute.
    pub in_flight_secs: u64,
}

/// [`OrderContext::in_flight_secs`].
pub use lab_schema::orders::IN_FLIGHT_SECS;

impl OrderContext {
    /// `recorder`: where the request's trace goes.
    pub fn new(redis: ConnectionManager, answer_ttl: Duration, recorder: Shared) -> OrderContext {
        OrderContext {
            redis: TracedConnection::new(redis, Some(recorder)),
            answer_ttl_secs: answer_ttl.as_secs(),
            in_flight_secs: IN_FLIGHT_SECS,
        }
    }
}

/// What `idempotency::begin` is given about the request.
pub struct OrderRequest<'a> {
    /// Who is calling: the account of `Authorization: Bearer <account>`.
    pub caller: &'a str,
    /// The `Idempotency-Key` header.
    pub key: KeyHeader,
    /// The order, parsed: a JSON object (its keys in the order they came).
    pub body: &'a Value,
    /// The body's bytes exactly as they came.
    pub raw_body: &'a [u8],
}

/// The `Idempotency-Key` header of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHeader {
    /// No such header.
    Missing,
    /// Present but unusable: why (empty, too long, not visible ASCII, sent twice).
    Malformed(String),
    /// The key: 1 to 255 visible ASCII characters (a quoted key, as the IETF
    /// draft writes it, `"8e03978e"`, comes without its quotes).
    Valid(String),
}

/// Why `begin` refuses a request; the plumbing answers the status and error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400 `idempotency_key_missing`.
    MissingKey,
    /// 400 `idempotency_key_malformed`, with the reason.
    MalformedKey(String),
    /// 409 `idempotency_key_in_flight` (with `Retry-After: 1`): the first
    /// request with this key has not finished.
    InFlight,
    /// 422 `idempotency_key_reused`: the key was used for another order.
    Mismatch,
}

/// An answer as it is sent, so that it can be stored and sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The HTTP status, e.g. 201.
    pub status: u16,
    /// The exact JSON text of the body.
    pub body: String,
}

impl KeyHeader {
    /// Reads `Idempotency-Key` from the request's headers.
    pub fn of(headers: &HeaderMap) -> KeyHeader {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return KeyHeader::Missing;
        };
        if values.next().is_some() {
            return KeyHeader::Malformed("Idempotency-Key is sent more than once".into());
        }
        let mut bytes = value.as_bytes();
        // The draft's form is a quoted string: "abc" is the key abc.
        if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
            bytes = &bytes[1..bytes.len() - 1];
        }
        if bytes.is_empty() {
            return KeyHeader::Malformed("Idempotency-Key is empty".into());
        }
        if let Some(problem) = lab_schema::provider::key_problem(bytes) {
            return KeyHeader::Malformed(problem);
        }
        KeyHeader::Valid(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The key, when it is usable.
    pub fn valid(&self) -> Option<&str> {
        match self {
            KeyHeader::Valid(key) => Some(key),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn key(values: &[&[u8]]) -> KeyHeader {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
        }
        KeyHeader::of(&headers)
    }

    #[test]
    fn the_key_header_is_read_bare_or_quoted_and_refused_when_unusable() {
        assert_eq!(key(&[]), KeyHeader::Missing);
        assert_eq!(key(&[b"abc-1"]), KeyHeader::Valid("abc-1".into()));
        // The IETF draft writes the key as a quoted string.
        assert_eq!(key(&[b"\"8e03978e\""]), KeyHeader::Valid("8e03978e".into()));
        let malformed = |values: &[&[u8]]| matches!(key(values), KeyHeader::Malformed(_));
        assert!(malformed(&[b""]));
        assert!(malformed(&[b"\"\""]));
        assert!(malformed(&[b"my key"]));
        assert!(malformed(&[&[b'k'; 256]]));
        assert!(malformed(&[b"a", b"b"]));
        assert_eq!(key(&[&[b'k'; 255]]), KeyHeader::Valid("k".repeat(255)));
    }
}
