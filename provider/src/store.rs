//! Every Redis key and script of the provider (the table is in the crate doc).
//! Students need not edit this file.

use std::future::Future;

use lab_schema::RECORD_TTL_SECS;
use lab_schema::provider::LoggedRequest;
use redis::RedisResult;
use redis::aio::ConnectionManager;

use crate::error::ProviderError;
use crate::{LEDGER_MAX_LEN, REDIS_TIMEOUT, REQUEST_LOG_MAX_LEN};

/// `provider:idem:<account>/<key>`: an idempotency key's reservation or stored answer.
pub fn idem(account: &str, key: &str) -> String {
    format!("provider:idem:{account}/{key}")
}

/// `provider:exec:<runId>/<jobId>`: the job's first execution happened.
pub fn exec_marker(run_id: &str, job_id: &str) -> String {
    format!("provider:exec:{run_id}/{job_id}")
}

/// `provider:charged:<runId>/<jobId>`: the job's first charge happened.
pub fn charged_marker(run_id: &str, job_id: &str) -> String {
    format!("provider:charged:{run_id}/{job_id}")
}

/// The number of the last charge.
pub const CHARGE_SEQ: &str = "provider:charge-seq";

/// Every charge, in order (capped).
pub const LEDGER: &str = "provider:ledger";

/// `provider:log:<runId>`: the run's request log.
pub fn request_log(run_id: &str) -> String {
    format!("provider:log:{run_id}")
}

/// The instructor's faults.
pub const FAULTS: &str = "provider:faults";

/// Fields of [`FAULTS`].
pub const OUTAGE_UNTIL_MS: &str = "outageUntilMs";
pub const SLOW_MS: &str = "slowMs";

/// `provider:rate:<account>`: the account's requests in the current second.
pub fn rate(account: &str) -> String {
    format!("provider:rate:{account}")
}

/// `provider:ban:<account>`: the account is banned while this key lives.
pub fn ban(account: &str) -> String {
    format!("provider:ban:{account}")
}

/// The field of a request log entry: the [`LoggedRequest`] as JSON.
pub const LOG_FIELD: &str = "request";

/// The `state` of a key whose answer is stored (a reservation's is `running`,
/// written by [`RESERVE_SCRIPT`]).
pub const DONE: &str = "done";

/// Reserves a key atomically, or tells what holds it.
///
/// KEYS[1] the key; ARGV[1] the request's fingerprint, ARGV[2] its token,
/// ARGV[3] how long the reservation lives (ms). Answers `{"reserved"}`,
/// `{"reused"}` (another fingerprint), `{"running"}`, or
/// `{"done", status, body, chargeId}`.
const RESERVE_SCRIPT: &str = r#"
local found = redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'body', 'chargeId')
if not found[1] then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'reserved'}
end
if found[2] ~= ARGV[1] then
  return {'reused'}
end
if found[1] == 'running' then
  return {'running'}
end
return {'done', found[3] or '', found[4] or '', found[5] or ''}
"#;

/// Deletes a reservation, but only the one this request holds (KEYS[1] the
/// key, ARGV[1] the token): a reservation that expired and was taken by
/// another request is left alone. Answers 1 when deleted.
const RELEASE_SCRIPT: &str = r#"
local found = redis.call('HMGET', KEYS[1], 'state', 'token')
if found[1] == 'running' and found[2] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Counts one request of an account against its budget, atomically.
///
/// KEYS[1] the account's window ([`rate`]: a hash of `window` (Unix second),
/// `count`, `refused`), KEYS[2] its ban ([`ban`]). ARGV[1] now (Unix ms),
/// ARGV[2] the budget per second, ARGV[3] the ban's length (ms). Answers
/// `{"ok", 0}`, `{"limited", ms until the next second}`, `{"banned", ms left}`
/// (banned before this request) or `{"banned-now", ms}` (this request's second
/// had as many requests refused as its budget: the account kept sending
/// through its 429s, and is banned from now).
const RATE_SCRIPT: &str = r#"
local now, budget, ban_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  return {'banned', left}
end
local window = math.floor(now / 1000)
local found = redis.call('HMGET', KEYS[1], 'window', 'count', 'refused')
local count, refused = 0, 0
if tonumber(found[1]) == window then
  count, refused = tonumber(found[2]) or 0, tonumber(found[3]) or 0
end
count = count + 1
local answer = {'ok', 0}
if count > budget then
  refused = refused + 1
  answer = {'limited', 1000 - now % 1000}
  if refused >= budget then
    redis.call('SET', KEYS[2], now, 'PX', ban_ms)
    answer = {'banned-now', ban_ms}
  end
end
redis.call('HSET', KEYS[1], 'window', window, 'count', count, 'refused', refused)
redis.call('PEXPIRE', KEYS[1], 2000)
return answer
"#;

/// The provider's Lua scripts, built once.
pub struct Scripts {
    reserve: redis::Script,
    release: redis::Script,
    rate: redis::Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            reserve: redis::Script::new(RESERVE_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            rate: redis::Script::new(RATE_SCRIPT),
        }
    }
}

/// What the reservation of a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key was free: this request holds it now.
    Reserved,
    /// The key holds another body's fingerprint.
    Reused,
    /// The key's first request is still running.
    Running,
    /// The key's request finished: its stored answer.
    Done {
        status: u16,
        body: String,
        charge_id: Option<String>,
    },
}

/// What counting a request against its account's budget found ([`RATE_SCRIPT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Within the budget.
    Ok,
    /// Over the budget of this second; the next second starts in `retry_ms`.
    Limited { retry_ms: u64 },
    /// Banned (`now`: by this very request); the ban ends in `retry_ms`.
    Banned { retry_ms: u64, now: bool },
}

/// Runs [`RATE_SCRIPT`] for one request of `account`.
pub async fn count_request(
    redis: &mut ConnectionManager,
    scripts: &Scripts,
    account: &str,
    limits: crate::Limits,
    now_ms: u64,
) -> Result<Rate, ProviderError> {
    let (verdict, ms): (String, u64) = timed(
        scripts
            .rate
            .key(rate(account))
            .key(ban(account))
            .arg(now_ms)
            .arg(limits.per_sec)
            .arg(duration_ms(limits.ban).max(1))
            .invoke_async(redis),
    )
    .await?;
    Ok(match verdict.as_str() {
        "ok" => Rate::Ok,
        "limited" => Rate::Limited { retry_ms: ms },
        "banned" => Rate::Banned {
            retry_ms: ms,
            now: false,
        },
        "banned-now" => Rate::Banned {
            retry_ms: ms,
            now: true,
        },
        other => {
            return Err(ProviderError::Internal(format!(
                "the rate script answered {other:?}"
            )));
        }
    })
}

/// A duration in whole milliseconds (saturating).
pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A Redis call that fails after [`REDIS_TIMEOUT`] instead of hanging.
pub async fn timed<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, ProviderError> {
    Ok(tokio::time::timeout(REDIS_TIMEOUT, call).await??)
}

/// Runs [`RESERVE_SCRIPT`].
pub async fn reserve(
    redis: &mut ConnectionManager,
    scripts: &Scripts,
    key: &str,
    fingerprint: &str,
    token: &str,
    reservation_ms: u64,
) -> Result<Reservation, ProviderError> {
    let answer: Vec<String> = timed(
        scripts
            .reserve
            .key(key)
            .arg(fingerprint)
            .arg(token)
            .arg(reservation_ms.max(1))
            .invoke_async(redis),
    )
    .await?;
    match answer.first().map(String::as_str) {
        Some("reserved") => Ok(Reservation::Reserved),
        Some("reused") => Ok(Reservation::Reused),
        Some("running") => Ok(Reservation::Running),
        Some("done") if answer.len() == 4 => Ok(Reservation::Done {
            status: answer[1].parse().map_err(|_| {
                ProviderError::Internal(format!("{key} holds the status {:?}", answer[1]))
            })?,
            body: answer[2].clone(),
            charge_id: Some(answer[3].clone()).filter(|id| !id.is_empty()),
        }),
        _ => Err(ProviderError::Internal(format!(
            "the reserve script answered {answer:?}"
        ))),
    }
}

/// Runs [`RELEASE_SCRIPT`]: true when the reservation was deleted.
pub async fn release(
    redis: &mut ConnectionManager,
    scripts: &Scripts,
    key: &str,
    token: &str,
) -> Result<bool, ProviderError> {
    let deleted: u64 = timed(scripts.release.key(key).arg(token).invoke_async(redis)).await?;
    Ok(deleted == 1)
}

/// Adds "store this answer under the key" to `pipe` (no answer kept): state
/// done, the fingerprint, the status, the exact body, the charge, for `ttl_ms`.
pub fn store_answer(
    pipe: &mut redis::Pipeline,
    key: &str,
    fingerprint: &str,
    status: u16,
    body: &str,
    charge_id: Option<&str>,
    ttl_ms: u64,
) {
    pipe.del(key)
        .ignore()
        .hset_multiple(
            key,
            &[
                ("state", DONE),
                ("fp", fingerprint),
                ("status", &status.to_string()),
                ("body", body),
                ("chargeId", charge_id.unwrap_or("")),
            ],
        )
        .ignore()
        .pexpire(key, ttl_ms.max(1) as i64)
        .ignore();
}

/// Adds "append this request to its run's log, keep it capped, push its
/// expiry back" to `pipe` (no answer kept).
pub fn push_request_log(pipe: &mut redis::Pipeline, run_id: &str, request: &LoggedRequest) {
    let key = request_log(run_id);
    let json = serde_json::to_string(request).expect("a LoggedRequest serializes");
    pipe.cmd("XADD")
        .arg(&key)
        .arg("MAXLEN")
        .arg("~")
        .arg(REQUEST_LOG_MAX_LEN)
        .arg("*")
        .arg(LOG_FIELD)
        .arg(json)
        .ignore()
        .expire(&key, RECORD_TTL_SECS as i64)
        .ignore();
}

/// One charge in the provider's ledger.
pub struct LedgerEntry<'a> {
    pub charge_id: &'a str,
    pub account: &'a str,
    /// Empty when the request had no key.
    pub idempotency_key: &'a str,
    pub run_id: &'a str,
    pub job_id: &'a str,
    pub pipeline: &'a str,
    pub delivery_id: &'a str,
    pub amount_cents: u64,
    pub currency: &'a str,
    pub customer: &'a str,
}

/// Adds "append this charge to `provider:ledger`, capped" to `pipe` (no answer kept).
pub fn push_ledger(pipe: &mut redis::Pipeline, entry: &LedgerEntry<'_>) {
    let amount = entry.amount_cents.to_string();
    let fields = [
        ("chargeId", entry.charge_id),
        ("account", entry.account),
        ("idempotencyKey", entry.idempotency_key),
        ("runId", entry.run_id),
        ("jobId", entry.job_id),
        ("pipeline", entry.pipeline),
        ("deliveryId", entry.delivery_id),
        ("amountCents", amount.as_str()),
        ("currency", entry.currency),
        ("customer", entry.customer),
    ];
    let cmd = pipe
        .cmd("XADD")
        .arg(LEDGER)
        .arg("MAXLEN")
        .arg("~")
        .arg(LEDGER_MAX_LEN)
        .arg("*");
    for (field, value) in fields {
        cmd.arg(field).arg(value);
    }
    cmd.ignore();
}

/// The instructor's faults as stored: (outage until, Unix ms; slow ms).
pub async fn read_faults(redis: &mut ConnectionManager) -> Result<(u64, u64), ProviderError> {
    let (until, slow): (Option<u64>, Option<u64>) = timed(
        redis::cmd("HMGET")
            .arg(FAULTS)
            .arg(OUTAGE_UNTIL_MS)
            .arg(SLOW_MS)
            .query_async(redis),
    )
    .await?;
    Ok((until.unwrap_or(0), slow.unwrap_or(0)))
}

/// Replaces the instructor's faults.
pub async fn write_faults(
    redis: &mut ConnectionManager,
    outage_until_ms: u64,
    slow_ms: u64,
) -> Result<(), ProviderError> {
    timed(
        redis::cmd("HSET")
            .arg(FAULTS)
            .arg(OUTAGE_UNTIL_MS)
            .arg(outage_until_ms)
            .arg(SLOW_MS)
            .arg(slow_ms)
            .query_async::<()>(redis),
    )
    .await
}

/// The run's request log, oldest first.
pub async fn read_request_log(
    redis: &mut ConnectionManager,
    run_id: &str,
) -> Result<Vec<LoggedRequest>, ProviderError> {
    let key = request_log(run_id);
    let entries: Vec<(String, Vec<String>)> = timed(
        redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(redis),
    )
    .await?;
    let mut requests = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let json = fields
            .chunks_exact(2)
            .find(|pair| pair[0] == LOG_FIELD)
            .map(|pair| pair[1].as_str());
        match json.map(serde_json::from_str::<LoggedRequest>) {
            Some(Ok(request)) => requests.push(request),
            _ => tracing::warn!(%key, %id, "request log entry not readable: left out"),
        }
    }
    Ok(requests)
}
