//! The queue plumbing, one delivery at a time: each test drives a
//! `worker::Worker` with `step()` against its own real `redis-server` and looks
//! at Redis right after. Students need not edit this file.
//!
//! The handler here is the test's own (not an exercise's): it does what the
//! job's payload says (`ok`, `retry`, `dead`, `fail`), so every path of the
//! plumbing can be reached on purpose. Nothing sleeps: a test that needs an
//! entry to become "abandoned" sets `claim_idle` to zero or polls `step()`
//! until a deadline.

use std::time::{Duration, Instant};

use lab_schema::{entry, keys};
use lab_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use worker::{Config, Handled, Handler, Job, JobContext, JobError, Source, Step, Worker};

/// Does what the job's payload says.
struct Scripted;

impl Handler for Scripted {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        match job.payload.as_str() {
            "ok" => Ok(()),
            "retry" => Err(ctx.retry_later("the test asked to come back")),
            "dead" => Err(ctx.dead_letter("the test says this can never succeed")),
            p if p.contains(r#""retry""#) => Err(ctx.retry_later("the test asked to come back")),
            _ => {
                Err(anyhow::anyhow!("the test's handler failed (lease {} ms)", ctx.lease_ms).into())
            }
        }
    }
}

/// A worker named `consumer` on `redis`, with short waits.
fn config(redis: &RedisServer, consumer: &str) -> Config {
    Config {
        redis_url: redis.url(),
        consumer: consumer.to_string(),
        read_block: Duration::from_millis(20),
        claim_idle: Duration::from_secs(60),
        lease_ms: 300,
        max_deliveries: 3,
        ..Config::default()
    }
}

async fn connection(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Adds one job to the queue, as the API does; returns its entry id.
async fn enqueue(redis: &mut MultiplexedConnection, job_id: &str, payload: &str) -> String {
    redis::cmd("XADD")
        .arg(keys::JOB_STREAM)
        .arg("*")
        .arg(entry::JOB_ID)
        .arg(job_id)
        .arg(entry::RUN_ID)
        .arg("run-queue-test")
        .arg(entry::PAYLOAD)
        .arg(payload)
        .query_async(redis)
        .await
        .unwrap()
}

/// (consumer, delivery count) of the entry while it is pending; `None` once acknowledged.
async fn pending(redis: &mut MultiplexedConnection, id: &str) -> Option<(String, u64)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg(id)
        .arg(id)
        .arg(1)
        .query_async(redis)
        .await
        .unwrap();
    rows.into_iter().next().map(|r| (r.1, r.3))
}

/// Steps `worker` until it delivers something, or panics after `limit`.
async fn step_until_delivered<H: Handler>(worker: &mut Worker<H>, limit: Duration) -> Step {
    let deadline = Instant::now() + limit;
    loop {
        let step = worker.step().await.unwrap();
        if step != Step::Idle {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was delivered within {limit:?}"
        );
    }
}

fn handled(step: &Step) -> (&Handled, Source, u64) {
    match step {
        Step::Delivered {
            handled,
            source,
            deliveries,
            ..
        } => (handled, *source, *deliveries),
        Step::Idle => panic!("expected a delivery, got none"),
    }
}

#[tokio::test]
async fn a_handler_that_succeeds_is_acknowledged_once() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut worker = Worker::connect(Scripted, config(&server, "w-ack"))
        .await
        .unwrap();
    let id = enqueue(&mut redis, "job-ok", "ok").await;

    let step = worker.step().await.unwrap();
    assert_eq!(
        step,
        Step::Delivered {
            delivery_id: id.clone(),
            job_id: Some("job-ok".into()),
            deliveries: 1,
            source: Source::New,
            handled: Handled::Acknowledged,
        }
    );
    // Acknowledged when step() returns: nothing pending, nothing delivered again.
    assert_eq!(pending(&mut redis, &id).await, None);
    assert_eq!(worker.step().await.unwrap(), Step::Idle);
}

#[tokio::test]
async fn retry_later_puts_the_delivery_back_without_counting_a_failure() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut config = config(&server, "w-retry");
    // Abandoned entries are taken after 500 ms: the retry comes back after
    // a third of the lease (100 ms), well before that.
    config.claim_idle = Duration::from_millis(500);
    let mut worker = Worker::connect(Scripted, config).await.unwrap();
    let id = enqueue(&mut redis, "job-retry", "retry").await;

    let first = worker.step().await.unwrap();
    let (how, _, deliveries) = handled(&first);
    assert!(matches!(how, Handled::RetryLater { reason } if reason.contains("come back")));
    assert_eq!(deliveries, 1);
    // Still pending for this worker, and its delivery count is not raised by
    // the wait: waiting does not count toward --max-deliveries.
    assert_eq!(pending(&mut redis, &id).await, Some(("w-retry".into(), 0)));

    let started = Instant::now();
    let again = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    let (how, source, deliveries) = handled(&again);
    assert!(matches!(how, Handled::RetryLater { .. }));
    assert_eq!(source, Source::Abandoned);
    assert_eq!(deliveries, 1, "a wait is not a failed delivery");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "came back after {:?}, not soon after the lease's third",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failed_job_that_asks_comes_back_sooner_and_the_failure_still_counts() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    // The claim idle time is a minute: only the payload's 200 ms brings it back.
    let mut worker = Worker::connect(Scripted, config(&server, "w-soon"))
        .await
        .unwrap();
    let id = enqueue(&mut redis, "job-soon", r#"{"redeliverAfterMs":200}"#).await;

    let first = worker.step().await.unwrap();
    assert!(matches!(handled(&first).0, Handled::Failed { .. }));
    let started = Instant::now();
    let again = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    let (how, source, deliveries) = handled(&again);
    assert!(matches!(how, Handled::Failed { .. }));
    assert_eq!(source, Source::Abandoned);
    assert_eq!(deliveries, 2, "a failure counts toward --max-deliveries");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "came back after {:?}, not after the 200 ms it asked for",
        started.elapsed()
    );
    assert_eq!(pending(&mut redis, &id).await.map(|p| p.1), Some(2));
}

#[tokio::test]
async fn a_job_that_names_its_lease_gets_it_and_waits_a_third_of_it() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut config = config(&server, "w-lease");
    config.claim_idle = Duration::from_secs(5);
    let mut worker = Worker::connect(Scripted, config).await.unwrap();

    // The handler is given the job's lease, not the workers' (300 ms here).
    enqueue(&mut redis, "job-own-lease", r#"{"leaseMs":1500}"#).await;
    let step = worker.step().await.unwrap();
    assert!(
        matches!(handled(&step).0, Handled::Failed { error } if error.contains("lease 1500 ms")),
        "{step:?}"
    );
    enqueue(&mut redis, "job-default-lease", "{}").await;
    let step = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    assert!(
        matches!(handled(&step).0, Handled::Failed { error } if error.contains("lease 300 ms")),
        "{step:?}"
    );

    // "Not yet" comes back after a third of the job's lease (500 ms), not of the workers'.
    enqueue(&mut redis, "job-own-wait", r#"{"leaseMs":1500,"retry":1}"#).await;
    // Timed from before the step: its wait starts inside it, and a slow step
    // would otherwise make the wait look shorter than it was.
    let started = Instant::now();
    let step = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    assert!(
        matches!(handled(&step).0, Handled::RetryLater { .. }),
        "{step:?}"
    );
    let again = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    assert!(
        matches!(handled(&again).0, Handled::RetryLater { .. }),
        "{again:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "came back after {:?}, before a third of the job's lease",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_letter_answer_moves_the_entry_at_once_with_its_reason() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut worker = Worker::connect(Scripted, config(&server, "w-dead"))
        .await
        .unwrap();
    let id = enqueue(&mut redis, "job-dead", "dead").await;

    let step = worker.step().await.unwrap();
    let (how, _, _) = handled(&step);
    assert_eq!(
        how,
        &Handled::DeadLettered {
            reason: "the test says this can never succeed".into()
        }
    );
    assert_eq!(
        pending(&mut redis, &id).await,
        None,
        "acknowledged with the move"
    );
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys::DEAD_LETTER_STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let text = format!("{:?}", dead.ids[0].map);
    assert!(
        text.contains("job-dead") && text.contains("can never succeed"),
        "{text}"
    );
    assert_eq!(worker.step().await.unwrap(), Step::Idle);
}

#[tokio::test]
async fn a_failing_handler_is_redelivered_then_dead_lettered_after_max_deliveries() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut config = config(&server, "w-fail");
    // Every failed delivery is abandoned at once, so the next step takes it again.
    config.claim_idle = Duration::ZERO;
    let mut worker = Worker::connect(Scripted, config).await.unwrap();
    let id = enqueue(&mut redis, "job-fail", "fail").await;

    for n in 1..=3u64 {
        let step = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
        let (how, source, deliveries) = handled(&step);
        assert!(
            matches!(how, Handled::Failed { error } if error.contains("test's handler failed"))
        );
        assert_eq!(deliveries, n);
        let expected = if n == 1 {
            Source::New
        } else {
            Source::Abandoned
        };
        assert_eq!(source, expected);
        assert_eq!(pending(&mut redis, &id).await, Some(("w-fail".into(), n)));
    }
    // The fourth delivery passes --max-deliveries 3: dead-lettered, not run.
    let step = step_until_delivered(&mut worker, Duration::from_secs(5)).await;
    let (how, _, deliveries) = handled(&step);
    assert_eq!(deliveries, 4);
    assert!(
        matches!(how, Handled::DeadLettered { reason } if reason.contains("--max-deliveries 3"))
    );
    assert_eq!(pending(&mut redis, &id).await, None);
}

/// A worker that took an entry and died holds it pending, unacknowledged.
async fn take_and_die(redis: &mut MultiplexedConnection, consumer: &str) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::WORKER_GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(keys::JOB_STREAM)
        .arg(">")
        .query_async(redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crashed_workers_entry_goes_to_another_worker_after_the_claim_idle_time() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut config = config(&server, "w-survivor");
    config.claim_idle = Duration::from_millis(200);
    let mut survivor = Worker::connect(Scripted, config).await.unwrap();
    let id = enqueue(&mut redis, "job-crash", "ok").await;
    // Not before the claim idle time: the holder may only be slow. Timed from
    // before the holder took it, so that slow commands cannot shorten it.
    let started = Instant::now();
    take_and_die(&mut redis, "w-dead-one").await;
    assert_eq!(
        pending(&mut redis, &id).await,
        Some(("w-dead-one".into(), 1))
    );

    let step = step_until_delivered(&mut survivor, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "taken after {:?}",
        started.elapsed()
    );
    let (how, source, deliveries) = handled(&step);
    assert_eq!(
        (how, source, deliveries),
        (&Handled::Acknowledged, Source::Abandoned, 2)
    );
    assert_eq!(pending(&mut redis, &id).await, None);
}

#[tokio::test]
async fn a_worker_restarted_under_its_name_first_finishes_its_own_pending_work() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    // The group exists before the "crash" (the first life created it).
    let first_life = Worker::connect(Scripted, config(&server, "w-phoenix"))
        .await
        .unwrap();
    drop(first_life);
    let id = enqueue(&mut redis, "job-phoenix", "ok").await;
    take_and_die(&mut redis, "w-phoenix").await;
    let later = enqueue(&mut redis, "job-after", "ok").await;

    let mut second_life = Worker::connect(Scripted, config(&server, "w-phoenix"))
        .await
        .unwrap();
    let step = second_life.step().await.unwrap();
    let Step::Delivered {
        delivery_id,
        source,
        handled,
        ..
    } = &step
    else {
        panic!("expected its old entry, got {step:?}");
    };
    assert_eq!(
        (delivery_id, *source, handled),
        (&id, Source::OwnPending, &Handled::Acknowledged)
    );
    // Then new work.
    let step = second_life.step().await.unwrap();
    assert!(
        matches!(&step, Step::Delivered { delivery_id, source: Source::New, .. } if *delivery_id == later),
        "{step:?}"
    );
}

#[tokio::test]
async fn an_entry_that_is_not_a_job_is_dead_lettered_with_why() {
    let server = RedisServer::start();
    let mut redis = connection(&server).await;
    let mut worker = Worker::connect(Scripted, config(&server, "w-bad"))
        .await
        .unwrap();
    let id: String = redis::cmd("XADD")
        .arg(keys::JOB_STREAM)
        .arg("*")
        .arg("what")
        .arg("not a job")
        .query_async(&mut redis)
        .await
        .unwrap();

    let step = worker.step().await.unwrap();
    let Step::Delivered {
        job_id, handled, ..
    } = &step
    else {
        panic!("expected the bad entry, got {step:?}");
    };
    assert_eq!(job_id, &None);
    assert!(
        matches!(handled, Handled::DeadLettered { reason } if reason.contains("jobId")),
        "{handled:?}"
    );
    assert_eq!(pending(&mut redis, &id).await, None);
}
