//! End-to-end tests of the lab: a real redis-server, the API in-process, real
//! worker processes (the starter and the reference fix), and the demo-runner's
//! scenarios. Each test says in one comment what it shows.
//!
//! Worker output goes to a log file per worker; `TEST_LOG=1` prints it at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use demo_runner::{Scenario, ScenarioRun};
use lab_schema::Exercise;
use lab_schema::{EventKind, JobView, RunEvents, RunSummary, keys};
use lab_testkit::solution_worker;
use lab_tests::{Stack, get_json, starter_worker};
use redis::AsyncCommands;

fn load(jobs: u32, copies: u32) -> Scenario {
    Scenario::DuplicateLoad(demo_runner::DuplicateLoad { jobs, copies })
}

fn observe() -> Scenario {
    Scenario::DuplicateObserve(demo_runner::DuplicateObserve {
        copies: 3,
        interval_ms: 100,
    })
}

/// The five numbers the class compares: unique jobs, submissions, attempts, effects, skips.
fn numbers(summary: &ScenarioRun) -> [u64; 5] {
    let r = &summary.summary;
    [
        r.unique_jobs,
        r.total_submissions,
        r.observed_attempts_total,
        r.observed_effects_total,
        r.duplicate_skips,
    ]
}

/// Two workers, as the lab runs them, with a short effect latency.
async fn stack_with_two(binary: &Path) -> Stack {
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(binary, &["--effect-delay-ms", "50"]);
    }
    stack
}

// The starter reproduces the bug: every duplicate delivery applies the side effect again.
#[tokio::test(flavor = "multi_thread")]
async fn starter_applies_every_duplicate() {
    let stack = stack_with_two(&starter_worker()).await;

    let summary = stack.scenario(load(8, 2)).await;
    assert!(summary.summary.drained);
    assert_eq!(numbers(&summary), [8, 16, 16, 16, 0]);
    assert_eq!(summary.summary.duplicate_effects, 8);
    assert_eq!(summary.summary.lost_effects, 0);

    let observed = stack.scenario(observe()).await;
    assert_eq!(numbers(&observed), [1, 3, 3, 3, 0]);
    let job = stack.job(observed.summary.measured.job_id().unwrap()).await;
    assert_eq!((job.effects, job.status.as_str()), (3, "completed"));
    assert_eq!(job.idempotency.as_deref(), Some("not-implemented"));
}

// The reference fix (the patch, applied and built): one effect per job, every duplicate skipped
// and recorded, and the claim keys are in Redis.
#[tokio::test(flavor = "multi_thread")]
async fn reference_fix_gives_one_effect_per_job() {
    let stack = stack_with_two(&solution_worker(Exercise::DuplicateDelivery)).await;

    let summary = stack.scenario(load(8, 2)).await;
    assert!(summary.summary.drained);
    assert_eq!(numbers(&summary), [8, 16, 16, 8, 8]);
    assert_eq!(summary.summary.duplicate_effects, 0);
    assert_eq!(summary.summary.lost_effects, 0);

    let observed = stack.scenario(observe()).await;
    assert_eq!(numbers(&observed), [1, 3, 3, 1, 2]);
    let job_id = observed.summary.measured.job_id().unwrap().to_string();
    let job = stack.job(&job_id).await;
    assert_eq!((job.effects, job.duplicate_skips), (1, 2));

    let mut redis = stack.redis().await;
    let claim: Option<String> = redis.get(keys::processed("email", &job_id)).await.unwrap();
    assert_eq!(claim.as_deref(), Some("1"));
    let ttl: i64 = redis.ttl(keys::processed("email", &job_id)).await.unwrap();
    assert!(
        ttl > 86_000,
        "the claim carries the default TTL of a day, got {ttl}"
    );
    let claims = lab_testkit::scan_keys(&mut redis, "processed:email:*")
        .await
        .unwrap();
    assert_eq!(claims.len(), 9, "8 load jobs + 1 observed job");
}

// Many copies of one jobId in flight at the same moment (long effect latency, high
// concurrency, two processes): the starter applies all of them, the fix exactly one.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicates_overlap_in_the_worker() {
    for (binary, expected_effects) in [
        (starter_worker(), 20),
        (solution_worker(Exercise::DuplicateDelivery), 1),
    ] {
        let mut stack = Stack::start().await;
        for _ in 0..2 {
            stack.spawn_worker(
                &binary,
                &["--effect-delay-ms", "400", "--concurrency", "32"],
            );
        }
        let summary = stack.scenario(load(1, 20)).await;
        assert!(summary.summary.drained);
        assert_eq!(summary.summary.observed_attempts_total, 20);
        assert_eq!(summary.summary.observed_effects_total, expected_effects);
        assert_eq!(summary.summary.duplicate_skips, 20 - expected_effects);
    }
}

/// Six jobs in flight on a worker whose side effect takes 5 s; that worker is
/// killed (SIGKILL: it acknowledges nothing), then it comes back under its name
/// (as `./lab` and compose restart a dead worker), so its unfinished attempts are
/// known dead. Returns the run's totals once settled, and the stream length.
async fn kill_mid_effect_then_redeliver(binary: &Path) -> (RunSummary, u64) {
    let mut stack = Stack::start().await;
    let slow = stack.spawn_worker(
        binary,
        &["--effect-delay-ms", "5000", "--claim-idle-ms", "1000"],
    );
    let run_id = "redelivery";
    for n in 0..6 {
        stack.submit(&format!("job-{n}"), run_id).await;
    }
    let mut redis = stack.redis().await;
    stack
        .wait_for(
            "6 deliveries in flight",
            Duration::from_secs(10),
            || async { stack.run(run_id).await.observed_attempts_total == 6 },
        )
        .await;
    stack.workers[slow].kill().unwrap(); // SIGKILL: no chance to acknowledge anything
    stack.workers[slow].wait().unwrap();

    stack.spawn_worker(
        binary,
        &[
            "--effect-delay-ms",
            "0",
            "--claim-idle-ms",
            "1000",
            "--name",
            "worker-1",
        ],
    );
    stack
        .wait_for("the run to settle", Duration::from_secs(20), || async {
            let run = stack.run(run_id).await;
            run.drained && run.settled
        })
        .await;
    let run = stack.run(run_id).await;
    let stream_len: u64 = redis.xlen(keys::JOB_STREAM).await.unwrap();
    (run, stream_len)
}

// A worker killed (SIGKILL) with deliveries in flight: after the idle timeout a second
// worker takes the pending entries over, and every accepted submission is processed.
#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_deliveries_are_redelivered() {
    let (run, stream_len) = kill_mid_effect_then_redeliver(&starter_worker()).await;
    assert_eq!((run.total_submissions, run.processed_deliveries), (6, 6));
    assert_eq!(
        run.observed_attempts_total, 12,
        "6 first deliveries + 6 redeliveries"
    );
    assert_eq!(
        run.observed_effects_total, 6,
        "the killed worker applied none"
    );
    assert_eq!(run.lost_effects, 0);
    assert_eq!(
        stream_len, 0,
        "acknowledged entries are removed from the stream"
    );
}

// The guard's trade-off, measured: killed between its claim and its effect, the fixed
// worker leaves claims behind, so the redeliveries are skipped and acknowledged and those
// jobs never get their effect (lost_effects). Every submission is still processed.
#[tokio::test(flavor = "multi_thread")]
async fn fixed_worker_killed_after_its_claim_leaves_jobs_without_effect() {
    let (run, stream_len) =
        kill_mid_effect_then_redeliver(&solution_worker(Exercise::DuplicateDelivery)).await;
    assert_eq!((run.total_submissions, run.processed_deliveries), (6, 6));
    assert_eq!(run.observed_attempts_total, 12);
    assert_eq!(run.duplicate_skips, 6);
    assert_eq!(run.observed_effects_total, 0);
    assert_eq!(run.lost_effects, 6);
    assert_eq!(stream_len, 0);
}

// SIGTERM stops the worker within seconds, after its in-flight deliveries have finished
// and been acknowledged: nothing done is left pending.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_and_acknowledges_in_flight_work() {
    let mut stack = Stack::start().await;
    let index = stack.spawn_worker(&starter_worker(), &["--effect-delay-ms", "1000"]);
    for n in 0..5 {
        stack.submit(&format!("job-{n}"), "graceful").await;
    }
    stack
        .wait_for(
            "5 deliveries in flight",
            Duration::from_secs(10),
            || async { stack.job("job-4").await.process_attempts == 1 },
        )
        .await;
    let pid = stack.workers[index].id().to_string();
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = stack.workers[index].wait().unwrap();
    let took = signalled.elapsed();
    println!("worker stopped {took:?} after SIGTERM, with 5 deliveries in flight");
    assert!(status.success(), "worker exited with {status}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let run = stack.run("graceful").await;
    assert_eq!(
        (run.processed_deliveries, run.observed_effects_total),
        (5, 5)
    );
    assert!(run.drained);
}

/// The tests' chaos: 4 clients for 3 s over 20 jobs of `exercise`, the stack's
/// first worker killed with SIGKILL at a third of the load (Redis is restarted by
/// the test itself).
fn short_chaos(stack: &Stack, exercise: Exercise) -> Scenario {
    Scenario::Chaos(demo_runner::Chaos {
        clients: 4,
        duration_secs: 3,
        jobs: 20,
        interval_ms: 50,
        kill_worker: Some(format!("kill -KILL {}", stack.workers[0].id())),
        restart_redis: None,
        exercise: exercise.number(),
    })
}

// `chaos --exercise N` with the reference of exercises 2, 3 and 5 (a load of
// the exercise's jobs while a worker is killed with SIGKILL and Redis, with
// persistence, restarts): every accepted submission processed, and each job's
// effect (an email, a charge at the provider) made exactly once: none doubled,
// none lost, as each of these exercises promises.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_keeps_one_effect_per_job_with_the_later_references() {
    use lab_testkit::RedisOptions;
    for exercise in [
        Exercise::CrashWindow,
        Exercise::DoubleCharge,
        Exercise::RetryStorm,
    ] {
        let binary = solution_worker(exercise);
        let mut stack = Stack::start_with(RedisOptions {
            persistent: true,
            ..RedisOptions::default()
        })
        .await;
        let args = |name: Option<&'static str>| {
            let mut args = vec![
                "--effect-delay-ms",
                "100",
                "--claim-idle-ms",
                "1000",
                "--lease-ms",
                "1000",
            ];
            if let Some(name) = name {
                args.extend(["--name", name]);
            }
            args
        };
        for _ in 0..2 {
            stack.spawn_worker(&binary, &args(None));
        }
        let scenario = short_chaos(&stack, exercise);
        let client = stack.client();
        let chaos = tokio::spawn(async move {
            demo_runner::run_scenario_with(&client, &scenario, Duration::from_secs(60), false).await
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.spawn_worker(&binary, &args(Some("worker-1")));
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| stack.redis.restart());
        let summary = chaos.await.unwrap().expect("the chaos scenario ran");
        let run = &summary.summary;
        println!(
            "chaos, {exercise} reference: total_submissions={} processed={} effects={} \
             duplicate_effects={} lost_effects={} crashes={}",
            run.total_submissions,
            run.processed_deliveries,
            run.observed_effects_total,
            run.duplicate_effects,
            run.lost_effects,
            run.crashes
        );
        assert!(run.drained, "{exercise}: {run:?}");
        assert_eq!(
            run.processed_deliveries, run.total_submissions,
            "{exercise}: {run:?}"
        );
        assert_eq!(run.unique_jobs, 20, "{exercise}: {run:?}");
        assert_eq!(
            (
                run.observed_effects_total,
                run.duplicate_effects,
                run.lost_effects
            ),
            (20, 0, 0),
            "{exercise}: one effect per job: {run:?}"
        );
    }
}

// The chaos scenario (a load while a worker is killed with SIGKILL, and Redis,
// with persistence, restarts): with the starter and with the reference fix, every
// accepted submission is processed; the starter applies duplicates, the fix never
// does (a job whose claim died with the killed worker or with Redis shows in
// lost_effects instead: the guard's trade-off).
#[tokio::test(flavor = "multi_thread")]
async fn chaos_keeps_every_job_and_only_the_guard_keeps_one_effect() {
    use lab_testkit::RedisOptions;
    for (binary, guarded) in [
        (starter_worker(), false),
        (solution_worker(Exercise::DuplicateDelivery), true),
    ] {
        let mut stack = Stack::start_with(RedisOptions {
            persistent: true,
            ..RedisOptions::default()
        })
        .await;
        for _ in 0..2 {
            stack.spawn_worker(
                &binary,
                &["--effect-delay-ms", "100", "--claim-idle-ms", "1000"],
            );
        }
        let scenario = short_chaos(&stack, Exercise::DuplicateDelivery);
        let api_url = stack.api_url.clone();
        let chaos = tokio::spawn(async move {
            demo_runner::run_scenario(&api_url, &scenario, Duration::from_secs(60), false).await
        });
        // The killed worker comes back under its name, as `./lab` and compose's
        // restart policy bring it back: its unfinished attempts are then known dead.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.spawn_worker(
            &binary,
            &[
                "--effect-delay-ms",
                "100",
                "--claim-idle-ms",
                "1000",
                "--name",
                "worker-1",
            ],
        );
        // Redis restarts at two thirds of the load, as `./lab chaos` does it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| stack.redis.restart());
        let summary = chaos.await.unwrap().expect("the chaos scenario ran");
        let run = &summary.summary;
        let accepted = run.measured.submitted().expect("chaos sends jobs").accepted;
        println!(
            "chaos, {}: accepted={accepted} total_submissions={} processed={} attempts={} \
             effects={} duplicate_effects={} lost_effects={} skips={}",
            if guarded { "reference fix" } else { "starter" },
            run.total_submissions,
            run.processed_deliveries,
            run.observed_attempts_total,
            run.observed_effects_total,
            run.duplicate_effects,
            run.lost_effects,
            run.duplicate_skips
        );
        assert!(summary.summary.drained, "{run:?}");
        assert!(run.total_submissions >= accepted);
        assert_eq!(run.processed_deliveries, run.total_submissions);
        assert_eq!(run.unique_jobs, 20);
        // The summary names the fault that ran, and saved (`--save`) it reads back
        // as the chaos it measured, so `compare` shows every key of it.
        assert!(run.to_text().contains("\nworker_killed=true\n"), "{run:?}");
        let saved: lab_schema::summary::SavedSummary =
            serde_json::from_str(&summary.to_saved_json()).unwrap();
        assert_eq!(&saved.summary, run);
        if guarded {
            assert_eq!(run.duplicate_effects, 0, "{run:?}");
            assert_eq!(run.observed_effects_total + run.lost_effects, 20, "{run:?}");
        } else {
            assert_eq!(run.lost_effects, 0, "{run:?}");
            assert!(run.duplicate_effects > 0, "{run:?}");
        }
    }
}

/// A stream entry id `<ms>-<seq>` as numbers, so that `...-10` sorts after `...-9`.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// How many events of each kind: (delivery, effect, duplicate-skip, effect-failed).
fn event_counts(events: &RunEvents) -> (usize, usize, usize, usize) {
    (
        events.count(EventKind::Delivery),
        events.count(EventKind::Effect),
        events.count(EventKind::DuplicateSkip),
        events.count(EventKind::EffectFailed),
    )
}

// The run's event log, as GET /runs/{runId}/events serves it: one delivery event per
// delivery, one effect event per ledger entry, one duplicate-skip event per skip, oldest
// first; the log expires; unknown and invalid run ids get their JSON errors.
#[tokio::test(flavor = "multi_thread")]
async fn event_log_records_deliveries_effects_and_skips() {
    let stack = stack_with_two(&solution_worker(Exercise::DuplicateDelivery)).await;
    let summary = stack.scenario(load(4, 3)).await;
    assert_eq!(numbers(&summary), [4, 12, 12, 4, 8]);
    let run_id = &summary.summary.run_id;
    let events: RunEvents = get_json(format!("{}/runs/{run_id}/events", stack.api_url)).await;
    assert_eq!(&events.run_id, run_id);
    assert_eq!(event_counts(&events), (12, 4, 8, 0));
    assert!(
        events
            .events
            .windows(2)
            .all(|w| stream_id(&w[0].id) < stream_id(&w[1].id))
    );
    let skip = events
        .events
        .iter()
        .find(|e| e.event == EventKind::DuplicateSkip)
        .unwrap();
    assert_eq!(skip.detail, format!("processed:email:{}", skip.job_id));
    assert!(!skip.consumer.is_empty() && !skip.delivery_id.is_empty());

    let mut redis = stack.redis().await;
    let ttl: i64 = redis.ttl(keys::events(run_id)).await.unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "the log expires, ttl {ttl}");

    let missing = reqwest::get(format!("{}/runs/no-such-run/events", stack.api_url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_not_found");
    let bad = reqwest::get(format!("{}/runs/bad*id/events", stack.api_url))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// Submits one job whose first effect attempt fails, to two workers with a 1 s
/// claim idle time; returns the job once every delivery is acknowledged, and its events.
async fn effect_fails_once(binary: &Path) -> (JobView, RunEvents) {
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(
            binary,
            &["--effect-delay-ms", "50", "--claim-idle-ms", "1000"],
        );
    }
    let payload = serde_json::json!({ "simulateEffectFailure": "once" });
    stack.submit_with("flaky-1", "flaky", payload).await;
    stack
        .wait_for(
            "the redelivery to be acknowledged",
            Duration::from_secs(20),
            || async { stack.job("flaky-1").await.deliveries_done == 1 },
        )
        .await;
    let events = get_json(format!("{}/runs/flaky/events", stack.api_url)).await;
    (stack.job("flaky-1").await, events)
}

// A payload with simulateEffectFailure=once: the first attempt's effect fails (nothing in
// the ledger), the delivery is not acknowledged, and its redelivery applies the effect.
// With the reference fix too: it releases its claim when the effect fails.
#[tokio::test(flavor = "multi_thread")]
async fn simulated_effect_failure_fails_once_then_the_redelivery_applies_it() {
    for binary in [
        starter_worker(),
        solution_worker(Exercise::DuplicateDelivery),
    ] {
        let (job, events) = effect_fails_once(&binary).await;
        assert_eq!((job.process_attempts, job.effects), (2, 1), "{binary:?}");
        assert_eq!(event_counts(&events), (2, 1, 0, 1), "{binary:?}");
    }
}

// Exercise 2's scenario: the worker process really dies after the claim of the
// last two jobs (and is restarted). Exercise 1's answer, the starter of exercise 2,
// loses both emails; the reference solution sends each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn crash_window_loses_the_crashed_emails_until_the_claim_has_two_states() {
    use lab_tests::Workers;
    let scenario = || {
        Scenario::CrashWindow(demo_runner::CrashWindow {
            jobs: 6,
            copies: 2,
            crashes: 2,
            crash_at: demo_runner::CrashAt::BeforeEffect,
        })
    };
    let starter = Stack::with_two(Workers::Starter).await;
    let before = starter.scenario(scenario()).await.summary;
    drop(starter);
    assert_eq!(
        (
            before.crashes,
            before.lost_effects,
            before.observed_effects_total
        ),
        (2, 2, 4),
        "{before:?}"
    );
    assert!(before.settled, "{before:?}");

    let solution = solution_worker(Exercise::CrashWindow);
    let stack = Stack::with_two(Workers::Binary(&solution)).await;
    let after = stack.scenario(scenario()).await.summary;
    assert_eq!(
        (
            after.crashes,
            after.lost_effects,
            after.observed_effects_total,
            after.duplicate_effects
        ),
        (2, 0, 6, 0),
        "{after:?}"
    );
    let events: RunEvents =
        get_json(format!("{}/runs/{}/events", stack.api_url, after.run_id)).await;
    assert_eq!(events.count(EventKind::Crashed), 2);
    assert!(
        events.count(EventKind::RetryLater) > 0,
        "the redeliveries waited for the lease"
    );
}
