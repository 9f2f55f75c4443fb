//! Exercise 5's scheduled retries with real worker processes that really die
//! (SIGKILL to themselves) at each step of a retry: before the retry is
//! scheduled, right after, and right after a due retry was moved back to the
//! queue. Nothing accepted is lost, nothing runs twice, and the attempt count
//! goes on where it was. Students need not edit this file.

use std::time::Duration;

use lab_schema::exercise::Component;
use lab_schema::provider::{Faults, body};
use lab_schema::{EventKind, Exercise, keys, payload};
use lab_testkit::patched_binary;
use lab_tests::{Stack, Workers};
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_dies_at_any_step_of_a_retry_loses_nothing_and_duplicates_nothing() {
    // A policy that backs off but ignores Retry-After (one of the exercise's
    // wrong fixes): its jobs fail several times within the outage, which is
    // what this test needs (the reference waits out the outage's Retry-After).
    let binary = patched_binary(
        Component::Worker,
        "exercises/05-retry-storm/fixtures/wrong-retry-after-ignored.patch",
    );
    let stack = Stack::with_two(Workers::Binary(&binary)).await;
    let api = stack.client();
    let crashes = [
        payload::BEFORE_SCHEDULE,
        payload::AFTER_SCHEDULE,
        payload::AFTER_MOVE,
    ];
    // One crash at a time: a process dies with whatever it was doing, so two
    // jobs crashing together could take each other's crash.
    for (n, when) in crashes.iter().enumerate() {
        // The provider is down (503) until the job has crashed its worker and
        // had two retries scheduled after that (the count must go on across the
        // crash): how soon a worker comes back and takes the job depends on the
        // machine, so a fixed outage could end first.
        let outage = |outage_secs| Faults {
            outage_secs,
            slow_ms: 0,
        };
        api.provider_faults(Some(&outage(60))).await.unwrap();
        let run_id = format!("retries-crash-{when}");
        api.submit_to(
            Exercise::RetryStorm,
            &format!("job-{when}"),
            &run_id,
            json!({ body::ACCOUNT: "retries-test", body::CUSTOMER: format!("cus_{n}"), payload::SIMULATE_CRASH: when }),
        )
        .await
        .unwrap();
        let retried_after_crash = || {
            let (api, run_id) = (api.clone(), run_id.clone());
            async move {
                let events = api.events(&run_id).await.unwrap().events;
                let crashed = events.iter().position(|e| e.event == EventKind::Crashed);
                crashed.is_some_and(|at| {
                    let retries = events[at..].iter();
                    retries
                        .filter(|e| e.event == EventKind::RetryScheduled)
                        .count()
                        >= 2
                })
            }
        };
        stack
            .wait_for(
                "two retries after the crash",
                Duration::from_secs(30),
                retried_after_crash,
            )
            .await;
        api.provider_faults(Some(&outage(0))).await.unwrap();
        let run = stack.wait_drained(&run_id, Duration::from_secs(60)).await;
        assert_eq!(
            run.crashes, 1,
            "{when}: the job crashed its worker: {run:?}"
        );
        assert_eq!(run.dead_lettered, 0, "{when}: {run:?}");
        assert_eq!(
            (run.observed_effects_total, run.duplicate_effects),
            (1, 0),
            "{when}: one charge: {run:?}"
        );
    }
    let mut redis = stack.redis().await;
    let scheduled: u64 = redis.zcard(keys::RETRY_SET).await.unwrap();
    assert_eq!(scheduled, 0, "nothing left in the retry set");
    let stream: u64 = redis.xlen(keys::JOB_STREAM).await.unwrap();
    assert_eq!(stream, 0, "nothing left in the queue");

    // The attempt count went on across each crash: the failures each job's
    // retries were scheduled after start at 1 and never go back (a count kept
    // in a worker's memory would start again from 1 after the crash). A crash
    // between an attempt's record and its schedule may record it twice.
    for when in crashes {
        let events = api
            .events(&format!("retries-crash-{when}"))
            .await
            .unwrap()
            .events;
        let job = format!("job-{when}");
        let attempts: Vec<u32> = events
            .iter()
            .filter(|e| e.job_id == job && e.event == EventKind::RetryScheduled)
            .filter_map(|e| {
                e.detail
                    .strip_prefix("attempt ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(attempts.first(), Some(&1), "{job}: {attempts:?}");
        assert!(
            attempts.windows(2).all(|w| w[1] >= w[0]) && attempts.iter().any(|&a| a >= 2),
            "{job}: the attempt count after its crash: {attempts:?}"
        );
        let crashed = events
            .iter()
            .any(|e| e.job_id == job && e.event == EventKind::Crashed && e.detail == when);
        assert!(crashed, "{job} crashed its worker {when}");
    }
}
