//! A run's numbers are final only when every delivery attempt that started has
//! returned. Students need not edit this file.
//!
//! A worker paused (SIGSTOP) for longer than the claim idle time has its
//! deliveries handed to the other worker, which acknowledges them: the run is
//! drained, but the paused worker will still apply its effects when it
//! resumes. The summary must not call those jobs lost, and the scenario must
//! wait for the paused attempts (or say, on its timeout, which are still out).

use std::time::Duration;

use demo_runner::Scenario;
use lab_schema::Exercise;
use lab_testkit::solution_worker;
use lab_tests::{Stack, scratch_dir, text};

// Exercise 1's solution, one worker paused mid-effect past the claim idle time
// during duplicate-load: the scenario waits for the paused attempts, and once
// the worker resumes every job has exactly one effect and none is called lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_is_waited_for_not_counted_as_lost() {
    let stack = two_solution_workers().await;
    let api_url = stack.api_url.clone();
    let load = tokio::spawn(async move {
        let scenario = Scenario::DuplicateLoad(demo_runner::DuplicateLoad {
            jobs: 40,
            copies: 2,
        });
        demo_runner::run_scenario(&api_url, &scenario, Duration::from_secs(60), false).await
    });
    // Pause worker-2 while it holds deliveries mid-effect, for 4 claim idle times.
    let run_id = pause_mid_attempt(&stack).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = stack.run(&run_id).await;
    println!("while paused: {during:?}");
    assert!(!during.settled, "attempts were still out: {during:?}");
    assert_eq!(during.lost_effects, 0, "{during:?}");
    stack.signal_worker(1, "CONT");

    let result = load.await.unwrap().expect("the scenario ran");
    let run = &result.summary;
    println!("after resuming: {run:?}");
    assert!(run.drained && run.settled, "{run:?}");
    assert_eq!(run.attempts_in_flight, 0);
    assert_eq!(run.lost_effects, 0, "{run:?}");
    assert_eq!(run.observed_effects_total, 40, "{run:?}");
    assert_eq!(run.duplicate_effects, 0, "{run:?}");
}

/// Two workers with exercise 1's solution, a 400 ms effect and a 1 s claim idle time.
async fn two_solution_workers() -> Stack {
    let binary = solution_worker(Exercise::DuplicateDelivery);
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(
            &binary,
            &["--effect-delay-ms", "400", "--claim-idle-ms", "1000"],
        );
    }
    stack
}

/// Pauses worker-2 (SIGSTOP) once it holds an attempt of the run, and returns
/// the run's id. The attempt is looked for again once the worker is stopped
/// (it may have finished it in between); if it is gone, the worker resumes and
/// the next one is awaited.
async fn pause_mid_attempt(stack: &Stack) -> String {
    loop {
        let run_id = stack.wait_attempt_on("run:load-*", "worker-2").await;
        stack.signal_worker(1, "STOP");
        if stack.holds_an_attempt(&run_id, "worker-2").await {
            return run_id;
        }
        stack.signal_worker(1, "CONT");
    }
}

// A worker that stays paused: the scenario gives up at its timeout with exit 1
// and names the attempts still out and their worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_does_not_settle_says_which_attempts_are_out() {
    let stack = two_solution_workers().await;
    let dir = scratch_dir("unsettled");
    let api_url = stack.api_url.clone();
    let demo = tokio::spawn(async move {
        lab_tests::demo_in(
            &dir,
            &[
                "--api-url",
                &api_url,
                "--timeout",
                "8",
                "duplicate-load",
                "20",
                "2",
            ],
        )
        .await
    });
    pause_mid_attempt(&stack).await;
    let out = demo.await.unwrap();
    stack.signal_worker(1, "CONT");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("settled=false"), "{stdout}");
    assert!(stdout.contains("# not settled:"), "{stdout}");
    assert!(
        stderr.contains("the run did not settle within 8s")
            && stderr.contains("still out")
            && stderr.contains("on worker-2")
            && stderr.contains("paused, stuck or killed?"),
        "{stderr}"
    );
}
