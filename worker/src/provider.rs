//! The worker's side of the provider, exercise 3's payment gateway: the charge
//! it sends and what each answer means. Plumbing: students need not edit this
//! file (but may read it).
//!
//! The provider (`provider/`) counts an effect when it charges a card, as a card
//! statement would: from exercise 3 on, effects are counted where they happen.

use std::time::Duration;

use lab_schema::provider as contract;
use serde_json::{Value, json};

use crate::delivery::Job;

/// How long the worker waits for the provider's answer before giving up on it
/// (it then cannot know whether the charge happened).
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// One charge request: its body and, if you set one, its idempotency key.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Sent as the `Idempotency-Key` header when set. `None`: the provider
    /// charges every request it receives.
    pub idempotency_key: Option<String>,
    /// The JSON body: customer, amount, currency, description. Built from the
    /// job, so it is the same on every delivery of the job.
    pub body: Value,
    /// The provider account charged (`Authorization: Bearer <account>`): the
    /// payload's `account`, else the lab's.
    pub(crate) account: String,
}

/// The provider charged the card: now, or earlier (a replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The charge's id at the provider, e.g. `ch_42`.
    pub charge_id: String,
    /// `true` when this is the stored answer of an earlier request with the same
    /// key (`Idempotent-Replayed: true`): no new charge was made now.
    pub replayed: bool,
}

/// Every way a charge request can end without a charge in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// 409: the first request with this idempotency key is still running at the
    /// provider. Nothing is known yet: the charge may still succeed or fail.
    InFlight,
    /// 422: this idempotency key was used before with a DIFFERENT body. A bug in
    /// the caller: retrying the same request can never succeed.
    KeyReused(String),
    /// 402 or another 4xx but 429: refused for good (e.g. the card was declined).
    Declined(String),
    /// 5xx or 429 (too many requests): the provider is down, failed, or asks us
    /// to slow down. Usually nothing was charged (an
    /// outage, a failure before the charge), but a 5xx may come after the charge:
    /// retry with the same key, and the provider answers what really happened.
    Unavailable(String),
    /// No answer at all (the connection dropped, or it timed out): the charge
    /// may or may not have happened. Only a retry with the same key can tell.
    NoAnswer(String),
    /// The request was never sent (a simulated failure, or Redis was unreachable).
    NotSent(String),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::InFlight => write!(
                f,
                "provider answered 409: the first request with this idempotency key is still running"
            ),
            ProviderError::KeyReused(m) => write!(
                f,
                "provider answered 422: the idempotency key was used with another body ({m})"
            ),
            ProviderError::Declined(m) => write!(f, "provider refused the charge: {m}"),
            ProviderError::Unavailable(m) => write!(f, "provider unavailable: {m}"),
            ProviderError::NoAnswer(m) => write!(
                f,
                "no answer from the provider ({m}): the charge may or may not have happened"
            ),
            ProviderError::NotSent(m) => write!(f, "the charge was not sent: {m}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// The charge of a job: the same body on every delivery. The job's payload may
/// name `customer` and `amountCents`; its `provider` object holds the
/// provider's faults for this job (the lab's fault injection).
pub(crate) fn charge_for(job: &Job) -> Charge {
    let payload: Value = serde_json::from_str(&job.payload).unwrap_or(Value::Null);
    let customer = payload
        .get(contract::body::CUSTOMER)
        .and_then(Value::as_str)
        .unwrap_or("cus_lab");
    let amount = payload
        .get(contract::body::AMOUNT_CENTS)
        .and_then(Value::as_u64)
        .unwrap_or(1999);
    let mut body = json!({
        contract::body::CUSTOMER: customer,
        contract::body::AMOUNT_CENTS: amount,
        contract::body::CURRENCY: "EUR",
        contract::body::DESCRIPTION: format!("order {}", job.job_id),
    });
    if let Some(faults) = payload.get("provider").filter(|v| v.is_object()) {
        body[contract::body::SIMULATE] = faults.clone();
    }
    let account = payload
        .get(contract::body::ACCOUNT)
        .and_then(Value::as_str)
        .filter(|a| lab_schema::validate_id("account", a).is_ok())
        .unwrap_or(contract::LAB_ACCOUNT)
        .to_string();
    Charge {
        idempotency_key: None,
        body,
        account,
    }
}

/// The HTTP client of the provider (one per worker process, shared by every delivery).
#[derive(Clone)]
pub(crate) struct ProviderClient {
    http: reqwest::Client,
    charges_url: String,
}

impl ProviderClient {
    pub(crate) fn new(base_url: &str) -> anyhow::Result<ProviderClient> {
        let http = reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(ProviderClient {
            http,
            charges_url: format!(
                "{}{}",
                base_url.trim_end_matches('/'),
                contract::CHARGES_PATH
            ),
        })
    }

    /// Sends `charge` for this delivery of `job` on behalf of `pipeline`; an
    /// answer without a charge keeps its status and `Retry-After`.
    pub(crate) async fn send(
        &self,
        job: &Job,
        pipeline: &str,
        charge: &Charge,
    ) -> Result<Charged, Refused> {
        let mut request = self
            .http
            .post(&self.charges_url)
            .bearer_auth(&charge.account)
            .header(contract::LAB_RUN_ID, &job.run_id)
            .header(contract::LAB_JOB_ID, &job.job_id)
            .header(contract::LAB_DELIVERY_ID, &job.delivery_id)
            .header(contract::LAB_PIPELINE, pipeline)
            .json(&charge.body);
        if let Some(key) = &charge.idempotency_key {
            request = request.header(contract::IDEMPOTENCY_KEY, key);
        }
        let no_answer = |err: reqwest::Error| Refused {
            status: None,
            retry_after: None,
            error: ProviderError::NoAnswer(error_chain(&err)),
        };
        let response = request.send().await.map_err(no_answer)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let replayed = response
            .headers()
            .get(contract::IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let text = response.text().await.map_err(no_answer)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            let charge_id = body
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            return Ok(Charged {
                charge_id,
                replayed,
            });
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        let message = format!("{}: {message}", status.as_u16());
        let error = match status.as_u16() {
            409 => ProviderError::InFlight,
            422 => ProviderError::KeyReused(message),
            429 => ProviderError::Unavailable(message),
            400..=499 => ProviderError::Declined(message),
            _ => ProviderError::Unavailable(message),
        };
        Err(Refused {
            status: Some(status.as_u16()),
            retry_after,
            error,
        })
    }
}

/// A charge request that got no charge: the answer's status and `Retry-After`
/// (both `None` when no answer came), and what that means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) error: ProviderError,
}

/// An error and its causes on one line ("error sending request: connection closed ...").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
