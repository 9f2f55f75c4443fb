//! Waiting, written once: [`poll_until`] polls until a condition holds or a
//! deadline passes, and [`wait_settled`] waits for a run's numbers to be final.
//! Students need not edit this file.

use std::future::Future;
use std::time::{Duration, Instant};

use lab_schema::RunSummary;
use lab_schema::summary::plural;

use crate::client::Api;
use crate::report::Progress;

/// How often the scenarios and checks poll the API while waiting.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(50);

/// Calls `read` every [`POLL_EVERY`] until `done` holds for what it returned or
/// `deadline` passes. Returns the last value and whether `done` held.
pub(crate) async fn poll_until<T, F, Fut>(
    deadline: Instant,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<(T, bool)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    loop {
        let value = read().await?;
        if done(&value) {
            return Ok((value, true));
        }
        if Instant::now() >= deadline {
            return Ok((value, false));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The run's numbers are final: its `expected` submissions are all recorded,
/// every one was processed (or dead-lettered) and no delivery attempt is still out.
pub(crate) fn is_settled(run: &RunSummary, expected: u64) -> bool {
    run.drained && run.settled && run.total_submissions >= expected
}

/// Polls the run, with a progress display, until it has settled (see
/// [`is_settled`]) or `deadline` passes; returns the last totals.
pub(crate) async fn wait_settled(
    api: &Api,
    run_id: &str,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<RunSummary> {
    let progress = std::sync::Mutex::new(Progress::new("processed", expected));
    let (run, _) = poll_until(
        deadline,
        || async {
            let run = api.run(run_id).await?;
            let done = run.processed_deliveries + run.dead_lettered;
            progress.lock().unwrap().update(done);
            Ok(run)
        },
        |run| is_settled(run, expected),
    )
    .await?;
    progress.lock().unwrap().finish();
    Ok(run)
}

/// Why a run has not settled, for a person: which attempts are still out, on
/// which worker, and whether that worker is alive.
pub(crate) async fn not_settled_reason(api: &Api, run: &RunSummary) -> String {
    if !run.drained {
        return format!(
            "{} of {} submissions processed",
            run.processed_deliveries, run.total_submissions
        );
    }
    let Ok(attempts) = api.attempts(&run.run_id).await else {
        return format!(
            "every submission was processed, but {} still out",
            plural(run.attempts_in_flight, "delivery attempt")
        );
    };
    let mut workers: Vec<(String, u64, u64, Option<u64>)> = Vec::new();
    for attempt in &attempts.in_flight {
        match workers.iter_mut().find(|w| w.0 == attempt.consumer) {
            Some(w) => {
                w.1 += 1;
                w.2 = w.2.max(attempt.age_ms);
            }
            None => workers.push((
                attempt.consumer.clone(),
                1,
                attempt.age_ms,
                attempt.heartbeat_age_ms,
            )),
        }
    }
    let parts: Vec<String> = workers
        .iter()
        .map(|(consumer, n, oldest, heartbeat)| {
            let beat = match heartbeat {
                Some(ms) if *ms > 5_000 => format!(
                    "; its last heartbeat was {:.1}s ago: paused, stuck or killed?",
                    *ms as f64 / 1000.0
                ),
                Some(_) => "; it is alive".to_string(),
                None => String::new(),
            };
            format!(
                "{} on {consumer} (the oldest started {:.1}s ago{beat})",
                plural(*n, "attempt"),
                *oldest as f64 / 1000.0
            )
        })
        .collect();
    format!(
        "every submission was processed, but {} still out: {}",
        plural(attempts.in_flight.len() as u64, "delivery attempt"),
        parts.join("; ")
    )
}
