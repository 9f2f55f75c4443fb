//! Deliveries that asked to be retried later, in the worker's real loop
//! (`worker::run`, many deliveries at once) against its own `redis-server`.
//! Students need not edit this file.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_schema::{entry, keys};
use lab_testkit::RedisServer;
use worker::{Config, Handler, Job, JobContext, JobError};

/// "Not yet" the first time it sees a job, done the second time (counted).
struct OnceNotYet {
    seen: Mutex<HashSet<String>>,
    done: Arc<AtomicUsize>,
}

impl Handler for OnceNotYet {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        let first = self.seen.lock().unwrap().insert(job.job_id.clone());
        if first {
            return Err(ctx.retry_later("the test asked to come back"));
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Entries still unacknowledged.
async fn unacknowledged(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .query_async(redis)
        .await
        .unwrap();
    summary.0
}

// Eighty deliveries of jobs whose lease is 300 ms ask at once to come back:
// each is due 100 ms later. The worker takes eight at a time; before, it took
// the rest one batch per scan of abandoned entries (a second apart: ten
// seconds for eighty). A full batch now means "scan again at once". The bound,
// 5 s, leaves room for a loaded machine and is still half the old way's time.
#[tokio::test]
async fn many_deliveries_retried_at_once_all_come_back_when_due() {
    let server = RedisServer::start();
    const JOBS: usize = 80;
    let mut redis = fresh_queue(&server, JOBS, r#"{"leaseMs":300}"#).await;
    let config = Config {
        redis_url: server.url(),
        consumer: "w-retries".to_string(),
        concurrency: 8,
        // The workers' own lease (3 s) would put retries a second apart.
        lease_ms: 3_000,
        claim_idle: Duration::from_secs(60),
        effect_delay: Duration::ZERO,
        ..Config::default()
    };
    let done = Arc::new(AtomicUsize::new(0));
    let handler = OnceNotYet {
        seen: Mutex::new(HashSet::new()),
        done: done.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(handler, config, async {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let limit = Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < JOBS {
        assert!(
            started.elapsed() < limit,
            "{} of {JOBS} retries came back within {limit:?}",
            done.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed();
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    assert_eq!(unacknowledged(&mut redis).await, 0, "all acknowledged");
    assert!(
        drained < Duration::from_millis(5_000),
        "{JOBS} retries took {drained:?} to come back (due 100 ms after they asked)"
    );
}

/// One delivery the handler saw: the job, the failures it arrived with, its
/// first failure's time, when.
type Seen = (String, u32, Option<u64>, Instant);

/// Fails each job's first attempts, asking for a retry after `delays[n]` at
/// its n-th failure; succeeds once they are used up. Writes down every
/// delivery: the job, the failures it arrived with, its first failure, when.
struct FailThenSucceed {
    delays: Vec<Duration>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Handler for FailThenSucceed {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        self.seen.lock().unwrap().push((
            job.job_id.clone(),
            job.failures,
            job.first_failed_ms,
            Instant::now(),
        ));
        match self.delays.get(job.failures as usize) {
            Some(&delay) => Err(ctx.retry_in(delay, "the test's failure")),
            None => Ok(()),
        }
    }
}

/// A queue with its group and `jobs` jobs (`job-<n>`) of one run, each with `payload`.
async fn fresh_queue(
    server: &RedisServer,
    jobs: usize,
    payload: &str,
) -> redis::aio::MultiplexedConnection {
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await
        .unwrap();
    for n in 0..jobs {
        let _: String = redis::cmd("XADD")
            .arg(keys::JOB_STREAM)
            .arg("*")
            .arg(entry::JOB_ID)
            .arg(format!("job-{n}"))
            .arg(entry::RUN_ID)
            .arg("run-retries-test")
            .arg(entry::PAYLOAD)
            .arg(payload)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    redis
}

fn config(server: &RedisServer, name: &str) -> Config {
    Config {
        redis_url: server.url(),
        consumer: name.to_string(),
        concurrency: 8,
        claim_idle: Duration::from_secs(1),
        effect_delay: Duration::ZERO,
        ..Config::default()
    }
}

/// Waits until `seen` has `n` deliveries (at most 10 s).
async fn until_seen(seen: &Mutex<Vec<Seen>>, n: usize) {
    let started = Instant::now();
    while seen.lock().unwrap().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} of {n} deliveries within 10 s",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// A failed attempt scheduled again comes back when due, not at the claim idle
// time (1 s here): 1.5 s later, at once, 300 ms later. The count of failures
// and the first failure's time come with the entry; nothing is left behind.
#[tokio::test]
async fn a_scheduled_retry_comes_back_when_due_with_its_count() {
    let server = RedisServer::start();
    let mut redis = fresh_queue(&server, 1, "{}").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = FailThenSucceed {
        delays: [1500, 0, 300].map(Duration::from_millis).to_vec(),
        seen: seen.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(handler, config(&server, "w-1"), async {
        let _ = stopped.await;
    }));
    until_seen(&seen, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    worker.await.unwrap().unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one delivery per attempt: {seen:?}");
    let failures: Vec<u32> = seen.iter().map(|s| s.1).collect();
    assert_eq!(failures, [0, 1, 2, 3]);
    assert_eq!(seen[0].2, None);
    let first_failed = seen[1]
        .2
        .expect("the first failure's time travels with the job");
    assert!(seen[2..].iter().all(|s| s.2 == Some(first_failed)));
    let gaps: Vec<u128> = seen
        .windows(2)
        .map(|w| w[1].3.duration_since(w[0].3).as_millis())
        .collect();
    // Never early; late by at most 500 ms (a loaded machine), well short of
    // what another second's scan would add.
    assert!((1500..2000).contains(&gaps[0]), "due 1.5 s later: {gaps:?}");
    assert!(gaps[1] < 500, "due at once: {gaps:?}");
    assert!((300..800).contains(&gaps[2]), "due 300 ms later: {gaps:?}");

    assert_eq!(unacknowledged(&mut redis).await, 0);
    let left: u64 = redis::cmd("ZCARD")
        .arg(keys::RETRY_SET)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(left, 0, "the retry set is empty");
    let scheduled: u64 = redis::cmd("HGET")
        .arg(keys::job("job-0"))
        .arg("retriesScheduled")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(scheduled, 3);
}

// Two workers move due retries at the same time: each retry goes back to the
// queue once, by whichever gets there first, and runs once.
#[tokio::test]
async fn two_workers_move_each_due_retry_exactly_once() {
    const JOBS: usize = 60;
    let server = RedisServer::start();
    let mut redis = fresh_queue(&server, JOBS, "{}").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    let mut stops = Vec::new();
    for name in ["w-a", "w-b"] {
        let handler = FailThenSucceed {
            delays: vec![Duration::from_millis(200), Duration::ZERO],
            seen: seen.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        workers.push(tokio::spawn(worker::run(
            handler,
            config(&server, name),
            async {
                let _ = stopped.await;
            },
        )));
    }
    until_seen(&seen, 3 * JOBS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for stop in stops {
        let _ = stop.send(());
    }
    for worker in workers {
        worker.await.unwrap().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3 * JOBS, "no attempt ran twice");
    for n in 0..JOBS {
        let mut failures: Vec<u32> = seen
            .iter()
            .filter(|s| s.0 == format!("job-{n}"))
            .map(|s| s.1)
            .collect();
        failures.sort();
        assert_eq!(failures, [0, 1, 2], "job-{n}");
    }
    assert_eq!(unacknowledged(&mut redis).await, 0);
}
