//! The live dashboard: one page for the projector, served at `/` and at
//! `/runs/{runId}` in a browser. Students need not edit this file.
//!
//! - The page (`api/assets/dashboard.html`: HTML, CSS and a small script, no
//!   framework, no CDN) is compiled into the binary, so it works offline.
//! - `GET /dashboard/live[/{runId}]` is a Server-Sent Events stream of
//!   snapshots (scoreboard, job grid, events, queue) as JSON. SSE rather than
//!   polling: the browser's `EventSource` reconnects by itself, and a snapshot
//!   is sent only when something changed.
//! - ONE reader of Redis per API process ([`Hub`]): a task reads each watched
//!   run every [`TICK`] and hands the result to every browser watching it
//!   through a `tokio::sync::watch` channel; ten browsers cost what one does. It
//!   runs only while a browser is connected.
//! - The recent runs come from an index written at submit time
//!   ([`recent_runs::KEY`], a sorted set capped at [`recent_runs::KEEP`]): no
//!   keyspace walk.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use lab_schema::{event_log, job_field, keys};
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::ids::RunId;
use crate::metrics::queue_stats;
use crate::routes::{self, recent_runs};
use crate::{AppState, REDIS_TIMEOUT, error::ApiError, summary};

/// The page, compiled in.
const PAGE: &str = include_str!("../assets/dashboard.html");

/// How often the reader refreshes what browsers watch.
pub const TICK: Duration = Duration::from_millis(400);

/// Most job cells a snapshot carries: the jobs that went wrong first, then the
/// others in id order. A run of thousands of jobs keeps a usable grid (and the
/// totals, which count every job).
pub const GRID_MAX: usize = 1_000;

/// Most events a snapshot carries (the newest).
pub const EVENTS_MAX: usize = 600;

/// How long one SSE response lasts. It then ends with a `reconnect` event and
/// the page opens a new one at once (no gap the viewer sees). A graceful
/// shutdown waits for open responses, so this bounds how long an open page can
/// delay it: below compose's 5 s grace period and `./lab down`'s 10 s.
const STREAM_LIFETIME: Duration = Duration::from_secs(3);

/// The dashboard's routes, with their own state (the [`Hub`]).
pub fn routes(state: &AppState) -> Router {
    let hub = Arc::new(Hub::new(state.redis.clone()));
    Router::new()
        .route("/", get(page))
        .route("/dashboard/runs", get(get_recent_runs))
        .route("/dashboard/runs/{run_id}", get(get_snapshot))
        .route("/dashboard/live", get(live_latest))
        .route("/dashboard/live/{run_id}", get(live_run))
        .with_state(hub)
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

/// Where `GET /class-report` reads the class report unless `CLASS_REPORT_FILE`
/// says otherwise: `class-report`'s page in `./lab grade`'s folder, from the
/// API's working directory.
pub const CLASS_REPORT_FILE: &str = "lab-output/grades/class-report.html";

/// `GET /class-report`: the class report `./lab demo class-report` wrote (one
/// self-contained page, for the projector), read at each request; 404 with
/// how to make one when there is none yet.
pub async fn class_report(State(state): State<AppState>) -> Response {
    let path = state.class_report.clone();
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await;
    match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(page) => ([(header::CACHE_CONTROL, "no-cache")], Html(page)).into_response(),
        Err(_) => (
            axum::http::StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>No class report yet</title></head><body>\
                 <h1>No class report yet</h1><p>Grade the class, then write the report:</p>\
                 <pre>./lab grade submissions/* --exercise 1\n./lab demo class-report</pre>\
                 <p>(This page reads {}.)</p></body></html>",
                state
                    .class_report
                    .display()
                    .to_string()
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            )),
        )
            .into_response(),
    }
}

/// `GET /runs/{runId}`: the page for a browser (it asks for `text/html`), the
/// run's JSON summary for everyone else (the documented route, unchanged).
pub async fn run_page_or_json(
    state: State<AppState>,
    headers: HeaderMap,
    run_id: RunId,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        page().await
    } else {
        routes::get_run(state, run_id).await.into_response()
    }
}

/// `GET /dashboard/runs`: the recent runs, newest first.
async fn get_recent_runs(State(hub): State<Arc<Hub>>) -> Result<axum::Json<Value>, ApiError> {
    let mut redis = hub.redis.clone();
    let runs = tokio::time::timeout(REDIS_TIMEOUT, recent(&mut redis)).await??;
    Ok(axum::Json(json!({ "runs": runs })))
}

/// `GET /dashboard/runs/{runId}`: one snapshot of a run (the compare view).
async fn get_snapshot(
    State(hub): State<Arc<Hub>>,
    RunId(run_id): RunId,
) -> Result<axum::Json<Value>, ApiError> {
    let mut redis = hub.redis.clone();
    let snapshot =
        tokio::time::timeout(REDIS_TIMEOUT * 5, run_snapshot(&mut redis, &run_id)).await??;
    if snapshot["summary"].is_null() {
        return Err(routes::run_not_found(&run_id));
    }
    Ok(axum::Json(snapshot))
}

/// `GET /dashboard/live`: the queue and the latest run's id, live.
async fn live_latest(
    State(hub): State<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    sse(hub.subscribe(String::new()))
}

/// `GET /dashboard/live/{runId}`: a run's snapshots, live.
async fn live_run(
    State(hub): State<Arc<Hub>>,
    RunId(run_id): RunId,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    sse(hub.subscribe(run_id))
}

/// Every new snapshot of `rx` as one SSE event for [`STREAM_LIFETIME`], then
/// a `reconnect` event, and the end of the response.
fn sse(rx: watch::Receiver<Arc<str>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let until = tokio::time::Instant::now() + STREAM_LIFETIME;
    // State: the receiver (None once the `reconnect` event was sent), and
    // whether its current value was sent yet.
    let stream =
        futures_util::stream::unfold((Some(rx), true), move |(rx, mut first)| async move {
            let mut rx = rx?;
            loop {
                if !first {
                    let changed = tokio::time::timeout_at(until, rx.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        let bye = Event::default().event("reconnect").data("");
                        return Some((Ok(bye), (None, false)));
                    }
                }
                first = false;
                let data = rx.borrow_and_update().clone();
                if !data.is_empty() {
                    let event = Event::default()
                        .retry(Duration::from_millis(500))
                        .data(&*data);
                    return Some((Ok(event), (Some(rx), false)));
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The one reader of Redis of this process, and the browsers it serves.
pub struct Hub {
    redis: ConnectionManager,
    watched: Mutex<Watched>,
    /// Wakes the reader when a browser starts watching something new.
    wake: Notify,
}

/// What the browsers watch, and whether the reader task runs.
#[derive(Default)]
struct Watched {
    /// A runId (or "" for the queue only) -> its latest snapshot, as JSON text.
    snapshots: HashMap<String, watch::Sender<Arc<str>>>,
    reader_running: bool,
}

impl Hub {
    fn new(redis: ConnectionManager) -> Hub {
        Hub {
            redis,
            watched: Mutex::new(Watched::default()),
            wake: Notify::new(),
        }
    }

    /// Watches `key`, starting the reader if it is not running.
    fn subscribe(self: &Arc<Self>, key: String) -> watch::Receiver<Arc<str>> {
        let mut watched = self.watched.lock().expect("hub lock");
        // Something new to read: the reader reads it now rather than at its
        // next tick. (A page reconnecting to what is watched gets the latest
        // snapshot at once, and costs no read.)
        if !watched.snapshots.contains_key(&key) {
            self.wake.notify_one();
        }
        let rx = watched
            .snapshots
            .entry(key)
            .or_insert_with(|| watch::channel(Arc::from("")).0)
            .subscribe();
        if !watched.reader_running {
            watched.reader_running = true;
            tokio::spawn(self.clone().read_loop());
        }
        rx
    }

    /// Reads every watched run each tick; stops when no browser is left.
    async fn read_loop(self: Arc<Self>) {
        let mut redis = self.redis.clone();
        loop {
            let watched: Vec<String> = {
                let mut watched = self.watched.lock().expect("hub lock");
                watched.snapshots.retain(|_, tx| tx.receiver_count() > 0);
                if watched.snapshots.is_empty() {
                    watched.reader_running = false;
                    return;
                }
                watched.snapshots.keys().cloned().collect()
            };
            let common = tokio::time::timeout(REDIS_TIMEOUT, common_part(&mut redis)).await;
            let common = match common {
                Ok(Ok(common)) => Ok(common),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("Redis did not answer in time".to_string()),
            };
            for key in watched {
                let snapshot = match &common {
                    Err(error) => json!({ "ok": false, "error": error, "runId": key }),
                    Ok(common) if key.is_empty() => json!({ "ok": true, "common": common }),
                    Ok(common) => {
                        let run =
                            tokio::time::timeout(REDIS_TIMEOUT * 5, run_snapshot(&mut redis, &key))
                                .await;
                        match run {
                            Ok(Ok(mut run)) => {
                                run["ok"] = json!(true);
                                run["common"] = common.clone();
                                run
                            }
                            Ok(Err(err)) => {
                                json!({ "ok": false, "error": err.to_string(), "runId": key })
                            }
                            Err(_) => {
                                json!({ "ok": false, "error": "Redis did not answer in time", "runId": key })
                            }
                        }
                    }
                };
                let text: Arc<str> = Arc::from(snapshot.to_string());
                let watched = self.watched.lock().expect("hub lock");
                if let Some(tx) = watched.snapshots.get(&key) {
                    tx.send_if_modified(|old| {
                        let changed = **old != *text;
                        if changed {
                            *old = text.clone();
                        }
                        changed
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// The recent runs, newest first: `[{runId, lastSubmitMs}]`.
async fn recent(redis: &mut ConnectionManager) -> redis::RedisResult<Vec<Value>> {
    let runs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(recent_runs::KEY)
        .arg(0)
        .arg(recent_runs::KEEP - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(redis)
        .await?;
    Ok(runs
        .into_iter()
        .map(|(run_id, ms)| json!({ "runId": run_id, "lastSubmitMs": ms as u64 }))
        .collect())
}

/// What every snapshot carries: the queue and the recent runs.
async fn common_part(redis: &mut ConnectionManager) -> redis::RedisResult<Value> {
    let queue = queue_stats(redis).await?;
    let mut runs = recent(redis).await?;
    runs.truncate(30);
    Ok(json!({ "queue": queue, "runs": runs }))
}

/// One run: its summary (the numbers `GET /runs/{runId}` gives), its jobs for
/// the grid and its newest events. `summary` is null for a run never submitted.
pub async fn run_snapshot(
    redis: &mut ConnectionManager,
    run_id: &str,
) -> redis::RedisResult<Value> {
    let Some(summary) = summary::run_summary(redis, run_id).await? else {
        return Ok(json!({ "runId": run_id, "summary": null }));
    };
    let mut job_ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::run_jobs(run_id))
        .query_async(redis)
        .await?;
    job_ids.sort_by_cached_key(|id| natural(id));
    let per_job: Vec<JobRow> = if job_ids.is_empty() {
        Vec::new()
    } else {
        let mut pipe = redis::pipe();
        for job_id in &job_ids {
            pipe.cmd("HMGET")
                .arg(keys::job(job_id))
                .arg(job_field::SUBMISSIONS)
                .arg(job_field::PROCESS_ATTEMPTS)
                .arg(job_field::EFFECTS)
                .arg(job_field::DUPLICATE_SKIPS)
                .arg(job_field::DEAD_LETTERED)
                .arg(job_field::EFFECT_FAILURES)
                .arg(job_field::ACCOUNT)
                .arg(job_field::ORDER_KEY)
                .arg(job_field::ORDER_EMAIL);
        }
        // One HMGET answer per job: the nine fields, absent ones as nil.
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(redis).await?;
        rows.into_iter()
            .map(|mut row| {
                row.resize(9, None);
                let counts =
                    std::array::from_fn(|i| row[i].as_deref().and_then(|v| v.parse().ok()));
                (counts, row[6].take(), row[7].take(), row[8].take())
            })
            .collect()
    };
    let orders = orders_per_request(per_job.iter().map(|(_, account, key, _)| (account, key)));
    // Exercise 6: the cells are the emails (order, action), whatever their jobIds.
    let (job_ids, per_job, emails) = per_email(job_ids, per_job);
    let (mut none, mut one, mut many) = (0u64, 0u64, 0u64);
    let mut wrong = Vec::new();
    let mut right = Vec::new();
    for (job_id, (row, _, _, _)) in job_ids.iter().zip(per_job) {
        let [s, a, e, k, d, f] = row.map(|v| v.unwrap_or(0));
        match e {
            0 => none += 1,
            1 => one += 1,
            _ => many += 1,
        }
        let cell = json!({ "id": job_id, "s": s, "a": a, "e": e, "k": k, "d": d, "f": f });
        if e == 1 {
            right.push(cell)
        } else {
            wrong.push(cell)
        }
    }
    let wrong_total = wrong.len();
    let mut jobs: Vec<Value> = wrong.into_iter().chain(right).take(GRID_MAX).collect();
    jobs.sort_by_cached_key(|job| natural(job["id"].as_str().unwrap_or("")));
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys::events(run_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(EVENTS_MAX)
        .query_async(redis)
        .await?;
    let events: Vec<Value> = reply
        .ids
        .iter()
        .rev()
        .map(|entry| {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            let time_ms: u64 = entry
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            json!({
                "t": time_ms,
                "kind": field(event_log::KIND),
                "job": field(event_log::JOB_ID),
                "worker": field(event_log::CONSUMER),
                "detail": field(event_log::DETAIL),
            })
        })
        .collect();
    Ok(json!({
        "runId": run_id,
        "summary": summary,
        "jobsTotal": job_ids.len(),
        "wrongTotal": wrong_total,
        "counts": { "none": none, "one": one, "many": many },
        "orders": orders,
        "emails": emails,
        "jobs": jobs,
        "events": events,
    }))
}

/// Exercise 4 judged as it teaches it: orders per client request. A run's jobs
/// are orders when `POST /orders` made them (they name their caller). A request
/// is its caller and its `Idempotency-Key`; every order beyond the first of one
/// request is an extra order, and an order made without a key could never be
/// recognised as a retry. `null` for a run of jobs (exercises 1 to 3).
fn orders_per_request<'a>(
    jobs: impl Iterator<Item = (&'a Option<String>, &'a Option<String>)>,
) -> Value {
    let mut per_request: std::collections::HashMap<(&str, &str), u64> = Default::default();
    let (mut orders, mut without_key) = (0u64, 0u64);
    for (account, key) in jobs {
        let Some(account) = account else { continue };
        orders += 1;
        match key {
            Some(key) => *per_request.entry((account, key)).or_default() += 1,
            None => without_key += 1,
        }
    }
    if orders == 0 {
        return Value::Null;
    }
    let extra: u64 = per_request.values().map(|n| n - 1).sum();
    json!({
        "orders": orders,
        "requests": per_request.len(),
        "extra": extra,
        "withoutKey": without_key,
    })
}

/// Per job: the six counts, the caller and the key of an order (exercise 4),
/// and the order email it asks for (exercise 6).
type JobRow = (
    [Option<u64>; 6],
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Exercise 6 judged as it teaches it: emails per (order, action). When the
/// run's jobs are order emails, their rows are summed per email (the grid
/// shows one cell per email, named `<orderId> <action>`), and the figures say
/// how many emails were sent more than once, and how many not at all (yet).
/// Otherwise the rows are unchanged and the figures `null`.
fn per_email(job_ids: Vec<String>, rows: Vec<JobRow>) -> (Vec<String>, Vec<JobRow>, Value) {
    if rows.iter().all(|(_, _, _, email)| email.is_none()) {
        return (job_ids, rows, Value::Null);
    }
    let mut ids: Vec<String> = Vec::new();
    let mut sums: Vec<[u64; 6]> = Vec::new();
    let mut jobs = 0u64;
    for (counts, _, _, email) in rows {
        let Some(email) = email else { continue };
        jobs += 1;
        let i = ids.iter().position(|id| *id == email).unwrap_or_else(|| {
            ids.push(email);
            sums.push([0; 6]);
            ids.len() - 1
        });
        for (sum, count) in sums[i].iter_mut().zip(counts) {
            *sum += count.unwrap_or(0);
        }
    }
    // Column 2 of a row is its effects: the emails sent.
    let figures = json!({
        "jobs": jobs,
        "emails": ids.len(),
        "sent": sums.iter().map(|c| c[2]).sum::<u64>(),
        "duplicate": sums.iter().map(|c| c[2].saturating_sub(1)).sum::<u64>(),
        "neverSent": sums.iter().filter(|c| c[2] == 0).count(),
    });
    let rows = sums
        .into_iter()
        .map(|sum| (sum.map(Some), None, None, None))
        .collect();
    (ids, rows, figures)
}

/// Sorts `job-2` before `job-10`: the digit runs compare as numbers.
fn natural(id: &str) -> Vec<(u8, u64, String)> {
    let mut parts = Vec::new();
    let mut rest = id;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            let n = rest[..digits].parse().unwrap_or(u64::MAX);
            parts.push((1, n, String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            parts.push((0, 0, rest[..text].to_string()));
            rest = &rest[text..];
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_as_a_person_counts() {
        let mut ids = vec!["job-10", "job-2", "job-1", "a"];
        ids.sort_by_cached_key(|id| natural(id));
        assert_eq!(ids, ["a", "job-1", "job-2", "job-10"]);
    }
}
