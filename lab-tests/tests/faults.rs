//! Fault tests of the lab; students need not edit this file. Each runs against
//! a real redis-server and real worker processes: poisoned jobs (the
//! max-deliveries cap), malformed queue entries written by hand, the records'
//! expiry, a Redis restart in the middle of a load, a password on Redis, no
//! keyspace-wide command on any request path, a hundred clients, a worker
//! killed mid-load. Each test says in one comment what it shows.
//!
//! Worker output goes to a log file per test; `TEST_LOG=1` prints it at the end.

use std::time::{Duration, Instant};

use demo_runner::Scenario;
use lab_schema::{RECORD_TTL_SECS, keys};
use lab_testkit::RedisOptions;
use lab_tests::{Stack, get_json, starter_worker};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;

/// The fields of a queue entry written by hand.
type Fields = Vec<(&'static str, Vec<u8>)>;

/// Every entry of the dead-letter stream, as text fields.
async fn dead_letters(
    redis: &mut redis::aio::MultiplexedConnection,
) -> Vec<std::collections::HashMap<String, String>> {
    let reply: StreamRangeReply = redis.xrange_all(keys::DEAD_LETTER_STREAM).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            entry
                .map
                .iter()
                .map(|(k, v)| {
                    let text = redis::from_redis_value_ref::<String>(v).unwrap_or_default();
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

// A job whose process_job fails on every delivery (its record is corrupted, so
// HINCRBY fails) is retried --max-deliveries times, then moved to jobs:dead with
// the reason and counted in its run; the good jobs of the run are processed, the
// run drains, and nothing is left pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_always_fails_is_dead_lettered_after_max_deliveries() {
    let mut stack = Stack::start().await;
    let run_id = "poison";
    for job_id in ["good-1", "poison-1", "good-2"] {
        stack.submit(job_id, run_id).await;
    }
    let mut redis = stack.redis().await;
    let _: () = redis
        .hset(keys::job("poison-1"), "processAttempts", "not-a-number")
        .await
        .unwrap();
    stack.spawn_worker(
        &starter_worker(),
        &[
            "--max-deliveries",
            "3",
            "--claim-idle-ms",
            "1000",
            "--effect-delay-ms",
            "0",
        ],
    );

    let run = stack.wait_drained(run_id, Duration::from_secs(20)).await;
    assert_eq!(
        (
            run.total_submissions,
            run.processed_deliveries,
            run.dead_lettered
        ),
        (3, 2, 1),
        "{run:?}"
    );
    assert_eq!(run.observed_effects_total, 2);
    assert_eq!(run.lost_effects, 0);

    let dead = dead_letters(&mut redis).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["entry.jobId"], "poison-1");
    assert_eq!(dead[0]["entry.runId"], run_id);
    assert_eq!(
        dead[0]["deliveries"], "4",
        "3 failed deliveries, then moved"
    );
    assert!(
        dead[0]["reason"].contains("failed on each of its 3 deliveries"),
        "{dead:?}"
    );
    let job = stack.job("poison-1").await;
    assert_eq!(
        (job.status.as_str(), job.dead_lettered),
        ("dead-lettered", 1)
    );

    let stream_len: u64 = redis.xlen(keys::JOB_STREAM).await.unwrap();
    let pending: redis::streams::StreamPendingReply = redis
        .xpending(keys::JOB_STREAM, keys::WORKER_GROUP)
        .await
        .unwrap();
    assert_eq!((stream_len, pending.count()), (0, 0));
    // The worker logs the move right after it (the run counted it first).
    stack
        .wait_for("the dead letter's log line", Duration::from_secs(5), || {
            let log = stack.worker_log(0);
            async move { log.contains("queue entry moved to jobs:dead") }
        })
        .await;
    let log = stack.worker_log(0);
    assert_eq!(
        log.matches("process_job failed: not acknowledged").count(),
        3,
        "{log}"
    );
}

// Malformed entries written into the stream by hand (no jobId, ids that break the
// id rule, bytes that are not text) are moved to jobs:dead with the reason and
// logged; the worker keeps going and processes the good submissions around them,
// and no run counts the malformed entries.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_stream_entries_are_set_aside_and_the_worker_keeps_going() {
    let mut stack = Stack::start().await;
    let mut redis = stack.redis().await;
    stack.submit("before", "hand").await;
    let malformed: Vec<(&str, Fields)> = vec![
        ("field jobId is missing", vec![("runId", b"hand".to_vec())]),
        (
            "field runId is missing",
            vec![("jobId", b"no-run".to_vec())],
        ),
        (
            "jobId contains ' '",
            vec![("jobId", b"a b".to_vec()), ("runId", b"hand".to_vec())],
        ),
        (
            "jobId contains '*'",
            vec![("jobId", b"job*".to_vec()), ("runId", b"hand".to_vec())],
        ),
        (
            "jobId contains '\\n'",
            vec![("jobId", b"a\nb".to_vec()), ("runId", b"hand".to_vec())],
        ),
        (
            "jobId must not be empty",
            vec![("jobId", b"".to_vec()), ("runId", b"hand".to_vec())],
        ),
        (
            "runId contains '['",
            vec![("jobId", b"ok".to_vec()), ("runId", b"r[1".to_vec())],
        ),
        (
            "field jobId is missing or not text",
            vec![("jobId", vec![0xff, 0xfe]), ("runId", b"hand".to_vec())],
        ),
    ];
    for (_, fields) in &malformed {
        let _: String = redis.xadd(keys::JOB_STREAM, "*", fields).await.unwrap();
    }
    stack.submit("after", "hand").await;
    stack.spawn_worker(&starter_worker(), &["--effect-delay-ms", "0"]);

    let run = stack.wait_drained("hand", Duration::from_secs(20)).await;
    assert_eq!(
        (
            run.total_submissions,
            run.processed_deliveries,
            run.dead_lettered
        ),
        (2, 2, 0),
        "{run:?}"
    );
    let start = Instant::now();
    let dead = loop {
        let dead = dead_letters(&mut redis).await;
        if dead.len() >= malformed.len() || start.elapsed() > Duration::from_secs(10) {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), malformed.len(), "{dead:?}");
    // The worker logs each move right after it.
    let moves = malformed.len();
    stack
        .wait_for("a log line per dead letter", Duration::from_secs(5), || {
            let log = stack.worker_log(0);
            async move { log.matches("queue entry moved to jobs:dead").count() >= moves }
        })
        .await;
    let log = stack.worker_log(0);
    for (expected, _) in &malformed {
        assert!(
            dead.iter().any(|d| d["reason"].contains(expected)),
            "no dead letter says {expected:?}: {dead:?}"
        );
    }
    assert_eq!(
        log.matches("queue entry moved to jobs:dead").count(),
        malformed.len(),
        "{log}"
    );
    let stream_len: u64 = redis.xlen(keys::JOB_STREAM).await.unwrap();
    assert_eq!(stream_len, 0);
}

// The records of a run expire RECORD_TTL_SECS after their last write (a long class
// does not fill Redis); the student's claims keep their own TTL.
#[tokio::test(flavor = "multi_thread")]
async fn run_records_expire() {
    let mut stack = Stack::start().await;
    stack.spawn_worker(&starter_worker(), &["--effect-delay-ms", "0"]);
    stack.submit("ttl-1", "ttl-run").await;
    stack.submit("ttl-1", "ttl-run").await;
    stack.wait_drained("ttl-run", Duration::from_secs(20)).await;
    let mut redis = stack.redis().await;
    for key in [
        keys::job("ttl-1"),
        keys::run("ttl-run"),
        keys::run_jobs("ttl-run"),
        keys::ledger("ttl-run"),
    ] {
        let ttl: i64 = redis.ttl(&key).await.unwrap();
        assert!(
            ttl > RECORD_TTL_SECS as i64 - 60 && ttl <= RECORD_TTL_SECS as i64,
            "{key} has TTL {ttl}"
        );
    }
}

/// The JSON answer of one request and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or_default();
    (status, body, started.elapsed())
}

// Redis restarted (clean shutdown, append-only file on, as ./lab runs it) in the
// middle of a duplicate-load: while it is away the API answers 503 JSON within
// its timeout, the demo-runner retries the refused submissions, the workers
// reconnect with backoff, and every submission that got a 202 is processed.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restart_mid_load_loses_nothing_accepted() {
    let mut stack = Stack::start_with(RedisOptions {
        persistent: true,
        ..RedisOptions::default()
    })
    .await;
    for _ in 0..2 {
        stack.spawn_worker(
            &starter_worker(),
            &[
                "--effect-delay-ms",
                "5",
                "--claim-idle-ms",
                "1000",
                "--concurrency",
                "32",
            ],
        );
    }
    let (jobs, copies) = (1500, 2);
    let api_url = stack.api_url.clone();
    let load = tokio::spawn(async move {
        let scenario = Scenario::DuplicateLoad(demo_runner::DuplicateLoad { jobs, copies });
        demo_runner::run_scenario(&api_url, &scenario, Duration::from_secs(120), false).await
    });
    // Restart once the load is well under way (a few hundred keys written).
    let mut redis = stack.redis().await;
    let start = Instant::now();
    loop {
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut redis).await.unwrap();
        if size >= 300 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the load never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| stack.redis.stop());
    let down_at = Instant::now();
    let http = reqwest::Client::new();
    let (status, body, took) = timed(
        http.post(format!("{}/jobs", stack.api_url))
            .json(&serde_json::json!({ "jobId": "while-down" })),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "redis_unavailable");
    assert!(took < Duration::from_secs(3), "the 503 took {took:?}");
    let (status, _, ready_took) = timed(http.get(format!("{}/readyz", stack.api_url))).await;
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_millis(700).saturating_sub(down_at.elapsed())).await;
    tokio::task::block_in_place(|| stack.redis.start_again());
    let downtime = down_at.elapsed();

    let summary = load
        .await
        .unwrap()
        .expect("the scenario ran through the restart");
    let run = &summary.summary;
    let submitted = run.measured.submitted().expect("a load sends jobs");
    let (accepted, retries) = (submitted.accepted, submitted.submit_retries);
    println!(
        "redis restart: down {downtime:?}; POST /jobs 503 in {took:?}, readyz 503 in {ready_took:?}; \
         accepted={accepted} total_submissions={} processed={} submit_retries={retries} \
         attempts={} effects={}",
        run.total_submissions,
        run.processed_deliveries,
        run.observed_attempts_total,
        run.observed_effects_total
    );
    assert!(run.drained && run.settled, "{run:?}");
    assert_eq!(accepted, u64::from(jobs * copies));
    assert!(
        retries > 0,
        "the restart refused no submission: it came too late"
    );
    assert!(run.total_submissions >= accepted, "{run:?}");
    assert_eq!(run.processed_deliveries, run.total_submissions, "{run:?}");
    assert_eq!(run.dead_lettered, 0);
    assert_eq!(run.unique_jobs, u64::from(jobs));
    assert_eq!(run.lost_effects, 0);
    for index in 0..2 {
        assert!(stack.worker_running(index), "worker {index} died");
        let log = stack.worker_log(index);
        assert!(log.contains("redis reachable again"), "{log}");
        let retry_lines = log.matches("retrying").count();
        assert!(
            retry_lines < 40,
            "{retry_lines} retry lines: a flood\n{log}"
        );
    }
}

// REDIS_URL with a password works for the API, the workers and the demo-runner;
// a wrong password is a prompt 503 from the API and a logged error from the
// worker, which keeps retrying instead of hanging or dying.
#[tokio::test(flavor = "multi_thread")]
async fn redis_with_a_password() {
    let mut stack = Stack::start_with(RedisOptions {
        password: Some("class-secret".to_string()),
        ..RedisOptions::default()
    })
    .await;
    assert!(
        stack
            .redis
            .url()
            .starts_with("redis://:class-secret@127.0.0.1:")
    );
    stack.spawn_worker(&starter_worker(), &["--effect-delay-ms", "0"]);
    let summary = demo_runner::run_scenario(
        &stack.api_url,
        &Scenario::DuplicateLoad(demo_runner::DuplicateLoad { jobs: 5, copies: 2 }),
        Duration::from_secs(30),
        false,
    )
    .await
    .unwrap();
    let run = &summary.summary;
    assert!(summary.summary.drained);
    assert_eq!(
        [
            run.unique_jobs,
            run.total_submissions,
            run.observed_effects_total
        ],
        [5, 10, 10]
    );

    // A wrong password, and no password at all: the API says 503 promptly.
    let port = stack.redis.port();
    let wrong_url = format!("redis://:wrong@127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for (url, path) in [
        (wrong_url.clone(), "/readyz"),
        (wrong_url.clone(), "/jobs"),
        (format!("redis://127.0.0.1:{port}"), "/readyz"),
        (format!("redis://127.0.0.1:{port}"), "/jobs/some-job"),
    ] {
        let api = api::spawn(&url).await.unwrap();
        let request = if path == "/jobs" {
            http.post(format!("{}/jobs", api.url))
                .json(&serde_json::json!({ "jobId": "refused" }))
        } else {
            http.get(format!("{}{path}", api.url))
        };
        let (status, body, took) = timed(request).await;
        assert_eq!(status, 503, "{url} {path}: {body}");
        assert_eq!(body["error"]["code"], "redis_unavailable", "{url} {path}");
        assert!(took < Duration::from_secs(3), "{url} {path} took {took:?}");
    }

    let worker = stack.workers.len();
    stack.spawn_worker_on(&starter_worker(), &wrong_url, &[]);
    let start = Instant::now();
    let log = loop {
        let log = stack.worker_log(worker);
        if log.contains("redis unavailable; retrying") || start.elapsed() > Duration::from_secs(10)
        {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.contains("redis unavailable; retrying"), "{log}");
    assert!(
        log.contains("Password authentication failed"),
        "the log says why: {log}"
    );
    assert!(stack.worker_running(worker), "the worker keeps retrying");
}

// No request path and no worker step runs a command that walks the whole keyspace
// (KEYS, SCAN, FLUSHALL, ...): after a load through the real API and workers,
// INFO commandstats lists none of them.
#[tokio::test(flavor = "multi_thread")]
async fn no_keyspace_wide_command_on_any_path() {
    let mut stack = Stack::start().await;
    let mut redis = stack.redis().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis)
        .await
        .unwrap();
    for _ in 0..2 {
        stack.spawn_worker(
            &starter_worker(),
            &["--effect-delay-ms", "0", "--claim-idle-ms", "200"],
        );
    }
    for scenario in [
        Scenario::DuplicateLoad(demo_runner::DuplicateLoad {
            jobs: 50,
            copies: 3,
        }),
        Scenario::DuplicateObserve(demo_runner::DuplicateObserve {
            copies: 2,
            interval_ms: 50,
        }),
    ] {
        let summary =
            demo_runner::run_scenario(&stack.api_url, &scenario, Duration::from_secs(30), false)
                .await
                .unwrap();
        assert!(summary.summary.drained);
        let run_id = &summary.summary.run_id;
        let _: serde_json::Value = get_json(format!("{}/runs/{run_id}", stack.api_url)).await;
    }
    let _: serde_json::Value = get_json(format!("{}/jobs/never", stack.api_url)).await;
    let _: serde_json::Value = get_json(format!("{}/readyz", stack.api_url)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // a claim round of each worker
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .unwrap();
    let used: Vec<&str> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(
        used.contains(&"xadd") && used.contains(&"xreadgroup"),
        "{stats}"
    );
    for forbidden in [
        "keys",
        "scan",
        "flushall",
        "flushdb",
        "randomkey",
        "dbsize",
        "sort",
    ] {
        assert!(!used.contains(&forbidden), "{forbidden} was used: {used:?}");
    }
    println!("commands used: {}", used.join(" "));
}

// 100 clients submitting duplicates for 3 s against one API and two workers: every
// answer is a 202 (the only documented answer to a valid submission while Redis is
// up), every accepted submission is processed, and the run drains.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_clients_get_only_documented_answers_and_everything_drains() {
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(
            &starter_worker(),
            &["--effect-delay-ms", "0", "--concurrency", "32"],
        );
    }
    let scenario = Scenario::Load(demo_runner::Load {
        clients: 100,
        duration_secs: 3,
        jobs: 200,
        interval_ms: 0,
    });
    let summary =
        demo_runner::run_scenario(&stack.api_url, &scenario, Duration::from_secs(60), false)
            .await
            .unwrap();
    let run = &summary.summary;
    let lab_schema::Measured::Load(load) = &run.measured else {
        panic!("load measured {:?}", run.measured);
    };
    let accepted = load.submitted.accepted;
    let statuses = load.statuses.clone();
    println!(
        "load: {} requests/s, statuses {statuses}, accepted={accepted} processed={}",
        load.requests_per_sec, run.processed_deliveries
    );
    assert!(summary.summary.drained, "{run:?}");
    assert!(accepted > 100, "only {accepted} submissions in 3 s");
    assert_eq!(statuses, format!("202:{accepted}"));
    assert_eq!(load.connection_errors, 0);
    assert_eq!(run.total_submissions, accepted);
    assert_eq!(run.processed_deliveries, accepted);
    assert_eq!(run.unique_jobs, 200);
    assert_eq!(run.lost_effects, 0);
}

// A worker killed with SIGKILL in the middle of a load, with deliveries in flight
// (its side effect takes 300 ms), and restarted under its name: the other worker
// takes them over after the idle timeout, or the restarted one takes them back
// at its start, and every accepted submission is processed.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_a_load_loses_nothing_accepted() {
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(
            &starter_worker(),
            &["--effect-delay-ms", "300", "--claim-idle-ms", "1000"],
        );
    }
    let api_url = stack.api_url.clone();
    let load = tokio::spawn(async move {
        let scenario = Scenario::Load(demo_runner::Load {
            clients: 4,
            duration_secs: 4,
            jobs: 30,
            interval_ms: 100,
        });
        demo_runner::run_scenario(&api_url, &scenario, Duration::from_secs(60), false).await
    });
    // Killed once it holds a delivery (a fixed delay may find it holding none
    // on a loaded machine), a second into the load at the earliest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run_id = stack.wait_attempt_on("run:load-*", "worker-1").await;
    let killed = &mut stack.workers[0];
    killed.kill().unwrap(); // SIGKILL: it acknowledges nothing of what it holds
    killed.wait().unwrap();
    assert!(
        stack.holds_an_attempt(&run_id, "worker-1").await,
        "worker-1 finished what it held before it was killed"
    );
    // It comes back under its name, as `./lab` and compose's restart policy bring
    // a dead worker back: the attempts it left unfinished are then known dead.
    stack.spawn_worker(
        &starter_worker(),
        &[
            "--effect-delay-ms",
            "300",
            "--claim-idle-ms",
            "1000",
            "--name",
            "worker-1",
        ],
    );

    let summary = load.await.unwrap().expect("the load ran");
    let run = &summary.summary;
    let accepted = run
        .measured
        .submitted()
        .expect("a load sends jobs")
        .accepted;
    println!(
        "worker killed mid-load: accepted={accepted} processed={} attempts={} effects={}",
        run.processed_deliveries, run.observed_attempts_total, run.observed_effects_total
    );
    assert!(summary.summary.drained, "{run:?}");
    assert_eq!(run.total_submissions, accepted);
    assert_eq!(run.processed_deliveries, accepted);
    assert!(
        run.observed_attempts_total > accepted,
        "nothing was in flight on the killed worker: {run:?}"
    );
    assert_eq!(run.lost_effects, 0);
    let logs = stack.worker_log(1) + &stack.worker_log(2);
    assert!(
        logs.contains("redelivering entries")
            || logs.contains("running again what this worker left unacknowledged"),
        "the other worker, or the restarted one, took the killed worker's deliveries over"
    );
}

// A delivery slower than the claim idle time is not taken for an abandoned one:
// the worker renews the lease of what it has in flight, so neither it nor the
// other worker runs it again, and it is not dead-lettered after max-deliveries.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_delivery_is_not_redelivered_while_it_runs() {
    let mut stack = Stack::start().await;
    for _ in 0..2 {
        stack.spawn_worker(
            &starter_worker(),
            &[
                "--effect-delay-ms",
                "3000",
                "--claim-idle-ms",
                "400",
                "--max-deliveries",
                "2",
            ],
        );
    }
    for n in 1..=3 {
        stack.submit(&format!("slow-{n}"), "slow").await;
    }
    let run = stack.wait_drained("slow", Duration::from_secs(30)).await;
    println!(
        "3 deliveries of 3 s with a 400 ms claim idle: attempts={} effects={} dead_lettered={}",
        run.observed_attempts_total, run.observed_effects_total, run.dead_lettered
    );
    assert_eq!(
        (
            run.processed_deliveries,
            run.observed_attempts_total,
            run.observed_effects_total,
            run.dead_lettered
        ),
        (3, 3, 3, 0),
        "{run:?}"
    );
    for index in 0..2 {
        assert!(
            !stack.worker_log(index).contains("redelivering entries"),
            "worker {index} redelivered an entry still in flight:\n{}",
            stack.worker_log(index)
        );
    }
}

// The dead-letter stream is capped: after more than DEAD_LETTER_MAXLEN malformed
// entries it holds about DEAD_LETTER_MAXLEN (the oldest are dropped), so a long
// class cannot fill Redis with them; the queue itself is empty afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_stream_is_capped() {
    let mut stack = Stack::start().await;
    let mut redis = stack.redis().await;
    let total = lab_schema::DEAD_LETTER_MAXLEN + 500;
    let mut pipe = redis::pipe();
    for n in 0..total {
        pipe.xadd(keys::JOB_STREAM, "*", &[("note", n)]).ignore();
    }
    let _: () = pipe.query_async(&mut redis).await.unwrap();
    stack.spawn_worker(&starter_worker(), &["--concurrency", "256"]);
    let start = Instant::now();
    loop {
        let left: u64 = redis.xlen(keys::JOB_STREAM).await.unwrap();
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{left} entries still queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead: u64 = redis.xlen(keys::DEAD_LETTER_STREAM).await.unwrap();
    println!("{total} malformed entries dead-lettered; jobs:dead holds {dead}");
    assert!(
        dead >= lab_schema::DEAD_LETTER_MAXLEN && dead < total,
        "jobs:dead holds {dead} of {total}"
    );
}

// Exercise 6's demonstration, for real: a unique lock at the API lets
// duplicates through (a retry during a slow send when it is released at the
// start, a late retry in both modes) and, released at the end, drops the
// order's next email while a crashed worker holds it; the idempotent worker
// with no lock sends each email exactly once. The workers crash for real.
#[tokio::test(flavor = "multi_thread")]
async fn a_unique_lock_lets_duplicates_through_and_drops_an_email_the_idempotent_worker_does_neither()
 {
    use lab_tests::Workers;
    let stack = Stack::with_two(Workers::Starter).await;
    let run = stack
        .scenario(Scenario::UniqueLock(demo_runner::UniqueLockDemo {
            lock_on: demo_runner::LockOn::Order,
            ttl_secs: 30,
        }))
        .await;
    let table: Vec<Vec<String>> = run
        .narration
        .iter()
        .map(|line| {
            line.split_whitespace()
                .rev()
                .take(3)
                .map(str::to_string)
                .collect()
        })
        .collect();
    let row = |label: &str| {
        let i = run
            .narration
            .iter()
            .position(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}:\n{}", run.narration.join("\n")));
        table[i].clone()
    };
    // Columns, reversed: idempotent worker, until-executed, until-executing.
    assert_eq!(
        row("duplicate emails"),
        ["0", "1", "2"],
        "{:#?}",
        run.narration
    );
    assert_eq!(
        row("emails never sent"),
        ["0", "1", "0"],
        "{:#?}",
        run.narration
    );
    assert_eq!(
        row("  of them retries"),
        ["-", "1", "0"],
        "{:#?}",
        run.narration
    );
    assert_eq!(
        row("  of them other emails"),
        ["-", "1", "0"],
        "{:#?}",
        run.narration
    );
    assert_eq!(
        run.summary.observed_effects_total, 4,
        "the idempotent worker's run: 4 emails"
    );
}
