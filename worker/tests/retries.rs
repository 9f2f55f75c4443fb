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

// Forty deliveries of jobs whose lease is 300 ms ask at once to come back:
// each is due 100 ms later. The worker takes eight at a time; before, it took
// the rest one batch per scan of abandoned entries (a second apart: five
// seconds for forty). A full batch now means "scan again at once".
#[tokio::test]
async fn many_deliveries_retried_at_once_all_come_back_when_due() {
    let server = RedisServer::start();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    const JOBS: usize = 40;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await
        .unwrap();
    for n in 0..JOBS {
        let _: String = redis::cmd("XADD")
            .arg(keys::JOB_STREAM)
            .arg("*")
            .arg(entry::JOB_ID)
            .arg(format!("job-{n}"))
            .arg(entry::RUN_ID)
            .arg("run-retries-test")
            .arg(entry::PAYLOAD)
            .arg(r#"{"leaseMs":300}"#)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
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
        drained < Duration::from_millis(2_500),
        "{JOBS} retries took {drained:?} to come back (due 100 ms after they asked)"
    );
}
