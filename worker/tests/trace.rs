//! The trace of a delivery: what the handler sent to Redis through `ctx.redis`
//! and the context's helpers, the keys it wrote as they stood when the effect
//! stalled (a paused holder), and how it returned, written to `trace:<jobId>`
//! when the job asked for it, and nothing when it did not.

use std::time::Duration;

use lab_schema::trace::{Step, Trace, Traced};
use lab_schema::{entry, keys};
use lab_testkit::RedisServer;
use redis::AsyncCommands;
use worker::{Config, Handler, Job, JobContext, JobError, Worker};

/// Exercise 2's reference, in short: a lease, the effect, then done.
struct Leasing;

impl Handler for Leasing {
    async fn handle(&self, ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
        let key = format!("processed:test:{}", job.job_id);
        let lease = format!("processing:{}", ctx.lease_token(job));
        let claimed: bool = redis::cmd("SET")
            .arg(&key)
            .arg(&lease)
            .arg("NX")
            .arg("PX")
            .arg(ctx.lease_ms)
            .query_async(&mut ctx.redis)
            .await?;
        if !claimed {
            let _: Option<String> = ctx.redis.get(&key).await?;
            return Err(ctx.retry_later("held"));
        }
        ctx.apply_side_effect(job).await?;
        ctx.compare_and_set(&key, &lease, "done", 60).await?;
        Ok(())
    }
}

async fn enqueue(
    redis: &mut redis::aio::MultiplexedConnection,
    job_id: &str,
    payload: &str,
    traced: bool,
) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys::JOB_STREAM)
        .arg("*")
        .arg(entry::JOB_ID)
        .arg(job_id)
        .arg(entry::RUN_ID)
        .arg("run-trace-test")
        .arg(entry::PAYLOAD)
        .arg(payload);
    if traced {
        cmd.arg(entry::TRACE).arg("1");
    }
    let _: String = cmd.query_async(redis).await.unwrap();
}

#[tokio::test]
async fn a_traced_delivery_records_the_handlers_commands_and_the_claim_of_a_paused_holder() {
    let server = RedisServer::start();
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let config = Config {
        redis_url: server.url(),
        consumer: "w-trace".into(),
        read_block: Duration::from_millis(20),
        lease_ms: 3000,
        effect_delay: Duration::from_millis(1),
        ..Config::default()
    };
    let mut worker = Worker::connect(Leasing, config).await.unwrap();
    // The effect stalls 1 ms: the keys are read as the paused holder left them.
    enqueue(&mut redis, "job-traced", r#"{"stallMs":[1]}"#, true).await;
    enqueue(&mut redis, "job-plain", "{}", false).await;
    worker.step().await.unwrap();
    worker.step().await.unwrap();

    let items: Vec<String> = redis
        .lrange(keys::trace("job-traced"), 0, -1)
        .await
        .unwrap();
    assert_eq!(items.len(), 1, "one delivery, one trace");
    let trace: Trace = serde_json::from_str(&items[0]).unwrap();
    assert_eq!((trace.worker.as_str(), trace.attempt), ("w-trace", 1));
    let commands: Vec<String> = trace
        .commands()
        .map(|(_, args, _)| args.join(" "))
        .collect();
    assert!(
        commands[0].starts_with("SET processed:test:job-traced processing:w-trace/")
            && commands[0].ends_with(" NX PX 3000"),
        "{commands:?}"
    );
    assert!(commands[1].starts_with("compare_and_set processed:test:job-traced processing:"));
    assert_eq!(
        commands.len(),
        2,
        "the plumbing's own commands are not the handler's: {commands:?}"
    );
    let at_effect = trace.keys_at(Step::Effect);
    let [(key, Some(value), pttl)] = at_effect.as_slice() else {
        panic!("one key at the effect: {:?}", trace.render());
    };
    assert_eq!(*key, "processed:test:job-traced");
    assert!(value.starts_with("processing:"));
    assert!((1..=3000).contains(pttl), "{pttl}");
    let steps: Vec<Step> = trace.steps().map(|(s, _)| s).collect();
    assert_eq!(
        steps,
        [
            Step::Delivered,
            Step::Effect,
            Step::EffectSent,
            Step::Returned
        ]
    );
    assert!(trace.lines.iter().any(
        |l| matches!(&l.what, Traced::Step { step: Step::Returned, detail } if detail == "Ok(())")
    ));

    let plain: i64 = redis.exists(keys::trace("job-plain")).await.unwrap();
    assert_eq!(plain, 0, "a job that did not ask is not traced");
}
