//! `GET /workers`: which worker processes run now, since when, and the
//! fingerprint of the exercise code each was built from; and the same of this
//! API (exercise 4's file is built into it). Students need not edit this file.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use lab_schema::code::{ALIVE_WITHIN_MS, Code, RunningWorker, RunningWorkers};
use lab_schema::{keys, now_ms, parse_worker_value};

use crate::{AppState, error::ApiError};

/// A worker runs while its registry line names the same process as its code line,
/// it has not crashed, and its heartbeat is recent.
pub async fn get_workers(State(state): State<AppState>) -> Result<Json<RunningWorkers>, ApiError> {
    let mut redis = state.redis.clone();
    let (code, registry): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
        .hgetall(keys::WORKER_CODE)
        .hgetall(keys::WORKERS)
        .query_async(&mut redis)
        .await?;
    let mut running = running(&code, &registry, now_ms());
    running.api = Some(this_api(state.started_ms));
    Ok(Json(running))
}

/// This API process and the fingerprint of the exercise file built into it.
fn this_api(started_ms: u64) -> RunningWorker {
    let (file, fingerprint) = crate::code();
    RunningWorker {
        name: "api".to_string(),
        started_ms,
        heartbeat_age_ms: 0,
        code: BTreeMap::from([(file.to_string(), fingerprint)]),
    }
}

fn running(
    code: &HashMap<String, String>,
    registry: &HashMap<String, String>,
    now: u64,
) -> RunningWorkers {
    let mut workers: Vec<RunningWorker> = code
        .iter()
        .filter_map(|(name, value)| {
            let (instance, files) = value.split_once('|')?;
            let (registered, heartbeat) = parse_worker_value(registry.get(name)?)?;
            let age = now.saturating_sub(heartbeat);
            if registered != instance || age > ALIVE_WITHIN_MS {
                return None;
            }
            // `<pid>-<start unix ms>@<host>` (or without `@<host>`, as older workers wrote it)
            let pid_ms = instance.split('@').next()?;
            let started_ms = pid_ms.rsplit('-').next()?.parse().ok()?;
            Some(RunningWorker {
                name: name.clone(),
                started_ms,
                heartbeat_age_ms: age,
                code: Code::parse(files)
                    .files
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    RunningWorkers { workers, api: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_registered_processes_count() {
        let code = HashMap::from([
            (
                "worker-1".to_string(),
                "7-1000|worker/src/job.rs=3fa9c1".to_string(),
            ),
            (
                "worker-2".to_string(),
                "8-2000|worker/src/job.rs=3fa9c1".to_string(),
            ),
            (
                "worker-3".to_string(),
                "9-3000|worker/src/job.rs=77aa01".to_string(),
            ),
            (
                "worker-4".to_string(),
                "10-4000@class-vm-2|worker/src/job.rs=3fa9c1".to_string(),
            ),
            (
                "worker-5".to_string(),
                "11-5000@class-vm-2|worker/src/job.rs=3fa9c1".to_string(),
            ),
        ]);
        let registry = HashMap::from([
            ("worker-1".to_string(), "7-1000|99000".to_string()),
            // Crashed: the obituary names another "instance".
            ("worker-2".to_string(), "crashed:8-2000|99000".to_string()),
            // Silent for too long.
            ("worker-3".to_string(), "9-3000|1000".to_string()),
            // Its instance names its host.
            (
                "worker-4".to_string(),
                "10-4000@class-vm-2|99000".to_string(),
            ),
            // Stopped cleanly.
            (
                "worker-5".to_string(),
                "stopped:11-5000@class-vm-2|99000".to_string(),
            ),
        ]);
        let found = running(&code, &registry, 100_000);
        assert_eq!(found.workers.len(), 2);
        let one = &found.workers[0];
        assert_eq!((one.name.as_str(), one.started_ms), ("worker-1", 1000));
        assert_eq!(
            (found.workers[1].name.as_str(), found.workers[1].started_ms),
            ("worker-4", 4000)
        );
        assert_eq!(one.fingerprint_of("worker/src/job.rs"), Some("3fa9c1"));
    }
}
