//! The worker's command line. Plumbing: students need not edit this file;
//! the exercise is `worker/src/job.rs`.

use clap::Parser;

/// Consumes the job queue with at-least-once delivery and runs each job's exercise handler (`process_job`).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Redis holding the queue and the job records.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Deliveries processed at the same time by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Simulated latency of the side effect (sending the email), in milliseconds.
    #[arg(long, env = "EFFECT_DELAY_MS", default_value_t = 200)]
    effect_delay_ms: u64,
    /// Lifetime of an idempotency claim (`processed:<pipeline>:<jobId>`), in seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    idempotency_ttl_secs: u64,
    /// How long a `processing` lease lasts (exercise 2), in milliseconds: longer than the side effect.
    #[arg(long, env = "LEASE_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    lease_ms: u64,
    /// The provider, exercise 3's payment gateway.
    #[arg(long, env = "PROVIDER_URL", default_value = "http://127.0.0.1:8090")]
    provider_url: String,
    /// Name of the business pipeline; part of the idempotency key (letters, digits, . _ -).
    #[arg(long, env = "PIPELINE", default_value = "email", value_parser = parse_pipeline)]
    pipeline: String,
    /// A delivery left unacknowledged this long (its worker died) is redelivered to another worker.
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    claim_idle_ms: u64,
    /// Deliveries of one queue entry before it is moved to the dead-letter stream `jobs:dead`.
    #[arg(long, env = "WORKER_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_deliveries: u64,
    /// Name of this consumer in the group (default: worker-<host>-<pid>).
    #[arg(long, env = "WORKER_NAME", value_parser = parse_name)]
    name: Option<String>,
    /// Threads of this process. One is the fastest: deliveries spend their time
    /// waiting for Redis, and one thread never hands work to another (run more
    /// worker processes to use more cores).
    #[arg(long, env = "WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Print the fingerprint of each exercise file this binary was built from, and exit.
    #[arg(long)]
    print_code: bool,
}

/// A pipeline name must not contain `:`, so `processed:<pipeline>:<jobId>` stays unambiguous.
fn parse_pipeline(name: &str) -> Result<String, String> {
    lab_schema::validate_pipeline(name)?;
    Ok(name.to_string())
}

/// A consumer name follows the id rule (it ends up in Redis fields and log lines).
fn parse_name(name: &str) -> Result<String, String> {
    lab_schema::validate_id("name", name)?;
    Ok(name.to_string())
}

/// Parses the command line and runs the worker until SIGTERM or Ctrl-C.
pub fn main() -> anyhow::Result<()> {
    lab_runtime::service::init_tracing();
    let args = Args::parse();
    if args.print_code {
        for (file, fingerprint) in crate::Handler::code(&crate::Exercises).files {
            println!("{file} #{fingerprint}");
        }
        return Ok(());
    }
    let config = crate::Config {
        redis_url: args.redis_url,
        concurrency: args.concurrency as usize,
        effect_delay: std::time::Duration::from_millis(args.effect_delay_ms),
        idempotency_ttl_secs: args.idempotency_ttl_secs,
        lease_ms: args.lease_ms,
        provider_url: args.provider_url,
        pipeline: args.pipeline,
        claim_idle: std::time::Duration::from_millis(args.claim_idle_ms),
        max_deliveries: args.max_deliveries,
        consumer: args.name.unwrap_or_else(crate::default_consumer_name),
        ..crate::Config::default()
    };
    lab_runtime::service::block_on_threads(
        Some(args.threads as usize),
        crate::run(
            crate::Exercises,
            config,
            lab_runtime::service::shutdown_signal(),
        ),
    )
}
