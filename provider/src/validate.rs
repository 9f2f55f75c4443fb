//! The headers and body of `POST /v1/charges`, checked into a [`ChargeRequest`].
//! Students need not edit this file.
//!
//! Every refusal is a clear 4xx JSON error and happens before Redis is
//! touched, so a refused request records nothing. The checks run in this
//! order: account (401), `Idempotency-Key`, `Lab-*` headers, content type (415),
//! size (413), JSON, then the body's fields one by one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use lab_runtime::headers::single_header;
use lab_schema::provider::{
    DECLINED_CUSTOMER, IDEMPOTENCY_KEY, LAB_DELIVERY_ID, LAB_JOB_ID, LAB_PIPELINE, LAB_RUN_ID,
    body, error_code, simulate,
};
use lab_schema::validate_id;
use serde_json::{Map, Value};

use crate::error::ProviderError;
use crate::{MAX_BODY_BYTES, MAX_SIMULATED_MS, fingerprint};

/// Smallest and largest accepted `amountCents`.
pub const MIN_AMOUNT_CENTS: u64 = 1;
pub const MAX_AMOUNT_CENTS: u64 = 1_000_000;
/// Longest accepted `customer`, in characters.
pub const MAX_CUSTOMER_CHARS: usize = 128;
/// Longest accepted `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// What `Lab-Delivery-Id` and `Lab-Pipeline` are when not sent.
pub const UNNAMED: &str = "-";

/// The lab's tracing headers: where a charge is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHeaders {
    pub run_id: String,
    pub job_id: String,
    pub delivery_id: String,
    pub pipeline: String,
}

/// The body's `simulate` object (every field absent: no fault).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Simulate {
    pub slow_ms: u64,
    pub first_request_ms: u64,
    pub fail_first: bool,
    pub drop_answer: bool,
    pub drop_before_charge: bool,
}

/// A charge request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// From `Authorization: Bearer <account>`; idempotency keys are scoped per account.
    pub account: String,
    pub idempotency_key: Option<String>,
    pub lab: LabHeaders,
    pub customer: String,
    pub amount_cents: u64,
    pub currency: String,
    pub simulate: Simulate,
    /// SHA-256 of the body's canonical JSON (64 hex digits).
    pub fingerprint: String,
}

impl ChargeRequest {
    /// The customer whose card is always declined.
    pub fn is_declined(&self) -> bool {
        self.customer == DECLINED_CUSTOMER
    }
}

/// Checks everything, in the documented order.
pub fn charge_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ChargeRequest, ProviderError> {
    let account = account(headers)?;
    let idempotency_key = idempotency_key(headers)?;
    let lab = lab_headers(headers)?;
    let value = json_object_body(headers, body)?;
    let Value::Object(fields) = &value else {
        unreachable!("json_object_body returns objects only")
    };
    let customer = customer(fields)?;
    let amount_cents = amount_cents(fields)?;
    let currency = currency(fields)?;
    description(fields)?;
    let simulate = simulate(fields)?;
    Ok(ChargeRequest {
        account,
        idempotency_key,
        lab,
        customer,
        amount_cents,
        currency,
        simulate,
        fingerprint: fingerprint::fingerprint(&value),
    })
}

/// `Authorization: Bearer <account>`, the account valid by [`validate_id`]; else 401.
pub fn account(headers: &HeaderMap) -> Result<String, ProviderError> {
    let unauthenticated = |m: String| ProviderError::Unauthenticated(m);
    let value = single_header(headers, header::AUTHORIZATION.as_str())
        .map_err(unauthenticated)?
        .ok_or_else(|| {
            unauthenticated("the Authorization header is required: Bearer <account>".into())
        })?;
    let account = lab_schema::provider::bearer_account(value).map_err(unauthenticated)?;
    Ok(account.to_string())
}

/// `Idempotency-Key`: absent, or 1 to [`MAX_KEY_LEN`](lab_schema::provider::MAX_KEY_LEN) visible ASCII characters, once.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ProviderError> {
    let invalid = |m: String| ProviderError::bad_request(error_code::INVALID_IDEMPOTENCY_KEY, m);
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid(
            "Idempotency-Key is sent more than once; send one key".into(),
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(invalid(
            "Idempotency-Key is empty; send a key or leave the header out".into(),
        ));
    }
    if let Some(problem) = lab_schema::provider::key_problem(bytes) {
        return Err(invalid(problem));
    }
    // Visible ASCII, so UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// `Lab-Run-Id` and `Lab-Job-Id` (required), `Lab-Delivery-Id` and
/// `Lab-Pipeline` (default `-`), each valid by [`validate_id`].
pub fn lab_headers(headers: &HeaderMap) -> Result<LabHeaders, ProviderError> {
    let invalid = |m: String| ProviderError::bad_request(error_code::INVALID_LAB_HEADER, m);
    let get = |name: &str, required: bool| -> Result<String, ProviderError> {
        match single_header(headers, name).map_err(invalid)? {
            Some(value) => {
                validate_id(&format!("the {name} header"), value).map_err(invalid)?;
                Ok(value.to_string())
            }
            None if required => Err(invalid(format!(
                "the {name} header is required: the lab records the charge under it"
            ))),
            None => Ok(UNNAMED.to_string()),
        }
    };
    Ok(LabHeaders {
        run_id: get(LAB_RUN_ID, true)?,
        job_id: get(LAB_JOB_ID, true)?,
        delivery_id: get(LAB_DELIVERY_ID, false)?,
        pipeline: get(LAB_PIPELINE, false)?,
    })
}

/// Content type JSON (415), at most [`MAX_BODY_BYTES`] (413), a JSON object
/// with no repeated key (400 `invalid_json`).
pub fn json_object_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ProviderError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    lab_runtime::service::require_json(content_type).map_err(|message| {
        ProviderError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_code::UNSUPPORTED_MEDIA_TYPE,
            message,
        )
    })?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ProviderError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_code::BODY_TOO_LARGE,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ProviderError::bad_request(error_code::INVALID_JSON, rejection.body_text())
        }
    })?;
    let value = fingerprint::parse_strict(&body).map_err(|e| {
        ProviderError::bad_request(error_code::INVALID_JSON, format!("request body: {e}"))
    })?;
    if !value.is_object() {
        return Err(ProviderError::bad_request(
            error_code::INVALID_JSON,
            format!(
                "request body must be a JSON object (got {})",
                kind_of(&value)
            ),
        ));
    }
    Ok(value)
}

/// "a string", "null", ... for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn customer(fields: &Map<String, Value>) -> Result<String, ProviderError> {
    let invalid = |m: String| ProviderError::bad_request(error_code::INVALID_CUSTOMER, m);
    let name = body::CUSTOMER;
    let customer = match fields.get(name) {
        None => return Err(invalid(format!("{name} is required"))),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(invalid(format!(
                "{name} must be a string (got {})",
                kind_of(other)
            )));
        }
    };
    let chars = customer.chars().count();
    if chars == 0 || chars > MAX_CUSTOMER_CHARS {
        return Err(invalid(format!(
            "{name} must be 1 to {MAX_CUSTOMER_CHARS} characters (got {chars})"
        )));
    }
    // It ends up in log lines and the ledger: no line breaks or other controls.
    if let Some(bad) = customer.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "{name} contains the control character {bad:?}"
        )));
    }
    Ok(customer.clone())
}

fn amount_cents(fields: &Map<String, Value>) -> Result<u64, ProviderError> {
    let name = body::AMOUNT_CENTS;
    let value = fields.get(name);
    value
        .and_then(Value::as_u64)
        .filter(|n| (MIN_AMOUNT_CENTS..=MAX_AMOUNT_CENTS).contains(n))
        .ok_or_else(|| {
            let got = value.map_or("nothing".to_string(), Value::to_string);
            ProviderError::bad_request(
                error_code::INVALID_AMOUNT,
                format!(
                    "{name} must be an integer from {MIN_AMOUNT_CENTS} to {MAX_AMOUNT_CENTS} (got {got})"
                ),
            )
        })
}

fn currency(fields: &Map<String, Value>) -> Result<String, ProviderError> {
    let name = body::CURRENCY;
    match fields.get(name) {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            Ok(c.clone())
        }
        other => {
            let got = other.map_or("nothing".to_string(), Value::to_string);
            Err(ProviderError::bad_request(
                error_code::INVALID_CURRENCY,
                format!("{name} must be 3 uppercase letters, e.g. \"EUR\" (got {got})"),
            ))
        }
    }
}

fn description(fields: &Map<String, Value>) -> Result<(), ProviderError> {
    let name = body::DESCRIPTION;
    let invalid = |m: String| ProviderError::bad_request(error_code::INVALID_DESCRIPTION, m);
    match fields.get(name) {
        None => Ok(()),
        Some(Value::String(d)) => {
            let chars = d.chars().count();
            if chars > MAX_DESCRIPTION_CHARS {
                Err(invalid(format!(
                    "{name} is {chars} characters long; the limit is {MAX_DESCRIPTION_CHARS}"
                )))
            } else {
                Ok(())
            }
        }
        Some(other) => Err(invalid(format!(
            "{name} must be a string (got {})",
            kind_of(other)
        ))),
    }
}

fn simulate(fields: &Map<String, Value>) -> Result<Simulate, ProviderError> {
    let invalid = |m: String| ProviderError::bad_request(error_code::INVALID_SIMULATE, m);
    let name = body::SIMULATE;
    let object = match fields.get(name) {
        None => return Ok(Simulate::default()),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(invalid(format!(
                "{name} must be an object (got {}); leave it out for no faults",
                kind_of(other)
            )));
        }
    };
    let mut out = Simulate::default();
    for (field, value) in object {
        let millis = || {
            value
                .as_u64()
                .filter(|ms| *ms <= MAX_SIMULATED_MS)
                .ok_or_else(|| {
                    invalid(format!(
                        "{name}.{field} must be an integer from 0 to {MAX_SIMULATED_MS} (got {value})"
                    ))
                })
        };
        let flag = || {
            value.as_bool().ok_or_else(|| {
                invalid(format!(
                    "{name}.{field} must be true or false (got {value})"
                ))
            })
        };
        match field.as_str() {
            simulate::SLOW_MS => out.slow_ms = millis()?,
            simulate::FIRST_REQUEST_MS => out.first_request_ms = millis()?,
            simulate::FAIL_FIRST => out.fail_first = flag()?,
            simulate::DROP_ANSWER => out.drop_answer = flag()?,
            simulate::DROP_BEFORE_CHARGE => out.drop_before_charge = flag()?,
            unknown => {
                return Err(invalid(format!(
                    "{name}.{unknown} is not a known fault; known are {}, {}, {}, {} and {}",
                    simulate::SLOW_MS,
                    simulate::FIRST_REQUEST_MS,
                    simulate::FAIL_FIRST,
                    simulate::DROP_ANSWER,
                    simulate::DROP_BEFORE_CHARGE
                )));
            }
        }
    }
    Ok(out)
}
