//! Exercise 6's jobs: "send the order email", as the web frontend submits it.
//! Students need not edit this file.
//!
//! The payload carries the business identity of the email (the order and the
//! action: `confirmation`, `shipped`, `refund`, ...), the customer, and the
//! noise every real client request adds: its own request id, when it was
//! sent, and a retry counter. The frontend gives every retry a NEW `jobId`,
//! a new request id and a new time; only the order and the action say which
//! email it is.
//!
//! ```json
//! {"orderId": "ord-1042", "action": "confirmation", "customer": "cus-77",
//!  "requestId": "req-5f2a91", "requestedAtMs": 1796000000000, "retry": 1}
//! ```
//!
//! `POST /jobs` refuses an exercise 6 payload that breaks these rules (400
//! `invalid_payload`), and the worker dead-letters one that reached the queue
//! another way. Order ids, actions and customers are letters, digits and `-`
//! only, so a separator such as `:` can never occur inside them.

use serde_json::{Value, json};

/// The payload's fields.
pub mod field {
    pub const ORDER_ID: &str = "orderId";
    pub const ACTION: &str = "action";
    pub const CUSTOMER: &str = "customer";
    pub const REQUEST_ID: &str = "requestId";
    pub const REQUESTED_AT_MS: &str = "requestedAtMs";
    pub const RETRY: &str = "retry";
}

/// The longest order id, action or customer, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// One order email, read from a job's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEmail {
    /// The order, e.g. `ord-1042`.
    pub order_id: String,
    /// Which email of the order, e.g. `confirmation` or `shipped`.
    pub action: String,
    /// The customer who gets it, e.g. `cus-77`.
    pub customer: String,
    /// The client's id of this request: new on every retry.
    pub request_id: String,
    /// When the client sent this request (Unix ms): new on every retry.
    pub requested_at_ms: u64,
    /// How many times the client had tried before this request (0: the first).
    pub retry: u32,
}

impl OrderEmail {
    /// Reads and checks a payload; the error says which rule it broke.
    pub fn from_payload(payload: &Value) -> Result<OrderEmail, String> {
        let Some(fields) = payload.as_object() else {
            return Err("the payload must be a JSON object".to_string());
        };
        let name = |key: &str| -> Result<String, String> {
            let text = fields
                .get(key)
                .ok_or_else(|| format!("{key} is required for an order email"))?
                .as_str()
                .ok_or_else(|| format!("{key} must be a string"))?;
            validate_name(key, text)?;
            Ok(text.to_string())
        };
        let request_id = match fields.get(field::REQUEST_ID) {
            None => String::new(),
            Some(Value::String(text)) if text.len() <= crate::MAX_ID_LEN => text.clone(),
            Some(_) => {
                return Err(format!(
                    "{} must be a string of at most {} bytes",
                    field::REQUEST_ID,
                    crate::MAX_ID_LEN
                ));
            }
        };
        let number = |key: &str| -> Result<u64, String> {
            match fields.get(key) {
                None => Ok(0),
                Some(value) => value
                    .as_u64()
                    .ok_or_else(|| format!("{key} must be a whole number >= 0")),
            }
        };
        let retry = number(field::RETRY)?;
        Ok(OrderEmail {
            order_id: name(field::ORDER_ID)?,
            action: name(field::ACTION)?,
            customer: name(field::CUSTOMER)?,
            request_id,
            requested_at_ms: number(field::REQUESTED_AT_MS)?,
            retry: u32::try_from(retry)
                .map_err(|_| format!("{} is too large: {retry}", field::RETRY))?,
        })
    }

    /// [`OrderEmail::from_payload`] of a payload's JSON text.
    pub fn from_text(payload: &str) -> Result<OrderEmail, String> {
        let value: Value = serde_json::from_str(payload)
            .map_err(|err| format!("the payload is not JSON: {err}"))?;
        OrderEmail::from_payload(&value)
    }

    /// The payload that sends this email.
    pub fn to_payload(&self) -> Value {
        json!({
            field::ORDER_ID: self.order_id,
            field::ACTION: self.action,
            field::CUSTOMER: self.customer,
            field::REQUEST_ID: self.request_id,
            field::REQUESTED_AT_MS: self.requested_at_ms,
            field::RETRY: self.retry,
        })
    }

    /// Which email this is, for people: `ord-1042 confirmation` (a space
    /// cannot occur in either part).
    pub fn identity(&self) -> String {
        format!("{} {}", self.order_id, self.action)
    }
}

/// The rule of order ids, actions and customers: 1 to [`MAX_NAME_LEN`]
/// letters, digits or `-`.
pub fn validate_name(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if text.chars().count() > MAX_NAME_LEN {
        return Err(format!("{what} is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "{what} contains {bad:?}; allowed are letters, digits and -"
        ));
    }
    Ok(())
}

/// The instructor's demonstration beside exercise 6 (`unique-lock`): an
/// enqueue-time unique lock at the API, as Sidekiq's unique jobs and BullMQ's
/// deduplication offer, in front of a worker with no guard of its own.
///
/// `POST /jobs` with `"uniqueLock": {"mode": "until-executed", "on": "order",
/// "ttlMs": 30000}` for an order email first takes the lock `unique-lock:<orderId>`
/// (or `unique-lock:<orderId>:<action>` with `"on": "email"`) with `SET NX PX`,
/// holding the jobId. Taken: the job is not enqueued, and the answer is `200`
/// with `"deduplicated": true` and the jobId that holds it (a client sees
/// success: the job is dropped silently). Free: the job is enqueued, its
/// payload carrying the lock (`{"key": ..., "mode": ...}`), and the worker
/// releases it when the job starts (`until-executing`) or once it has
/// returned (`until-executed`), if it still holds it. A worker that dies
/// meanwhile leaves it until its TTL.
pub mod unique_lock {
    /// The body field of `POST /jobs`, and the payload field the worker reads.
    pub const FIELD: &str = "uniqueLock";
    pub const UNTIL_EXECUTING: &str = "until-executing";
    pub const UNTIL_EXECUTED: &str = "until-executed";
    /// What the lock is keyed on: the order (one job per order at a time, as
    /// unique jobs are usually keyed: on the record's id), or the email.
    pub const ON_ORDER: &str = "order";
    pub const ON_EMAIL: &str = "email";
    /// The lock's TTL unless the request names one.
    pub const DEFAULT_TTL_MS: u64 = 30_000;

    /// The lock key of an email.
    pub fn key(email: &super::OrderEmail, on: &str) -> String {
        match on {
            ON_EMAIL => format!("unique-lock:{}:{}", email.order_id, email.action),
            _ => format!("unique-lock:{}", email.order_id),
        }
    }

    /// The payload field that picks the demonstration's worker instead of
    /// the student's file: `unguarded` (no guard: the lock is all there is)
    /// or `idempotent` (a claim with a lease, then `done`, keyed on the order
    /// and the action: exercises 2 and 6 together).
    pub const DEMO_WORKER: &str = "demoWorker";
    pub const UNGUARDED: &str = "unguarded";
    pub const IDEMPOTENT: &str = "idempotent";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontend_payload_reads_back() {
        let email = OrderEmail {
            order_id: "ord-1042".into(),
            action: "confirmation".into(),
            customer: "cus-77".into(),
            request_id: "req-5f2a91".into(),
            requested_at_ms: 1_796_000_000_000,
            retry: 1,
        };
        assert_eq!(OrderEmail::from_payload(&email.to_payload()), Ok(email));
        let minimal = json!({"orderId": "o1", "action": "shipped", "customer": "c"});
        let read = OrderEmail::from_payload(&minimal).unwrap();
        assert_eq!((read.retry, read.requested_at_ms), (0, 0));
        assert_eq!(read.identity(), "o1 shipped");
    }

    #[test]
    fn a_bad_payload_says_which_rule_it_broke() {
        let bad = |payload: Value| OrderEmail::from_payload(&payload).unwrap_err();
        assert!(bad(json!({"action": "shipped", "customer": "c"})).contains("orderId is required"));
        assert!(
            bad(json!({"orderId": "o:1", "action": "shipped", "customer": "c"}))
                .contains("orderId contains ':'")
        );
        assert!(
            bad(json!({"orderId": "o1", "action": 3, "customer": "c"}))
                .contains("action must be a string")
        );
        assert!(
            bad(json!({"orderId": "o1", "action": "", "customer": "c"}))
                .contains("action must not be empty")
        );
        assert!(
            bad(json!({"orderId": "o1", "action": "a", "customer": "c", "retry": -1}))
                .contains("retry must be a whole number")
        );
        assert!(bad(json!([1])).contains("JSON object"));
        assert!(OrderEmail::from_text("{").unwrap_err().contains("not JSON"));
    }
}
