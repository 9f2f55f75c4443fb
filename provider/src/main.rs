//! The lab's fake payment gateway. Students need not edit this file.
//!
//! Run with: `cargo run -p provider -- --listen 127.0.0.1:8090 --redis-url redis://127.0.0.1:6379`

use std::time::Duration;

use clap::Parser;

/// Charges cards (POST /v1/charges) and honours Idempotency-Key; serves each run's request log.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on. Keep it on loopback outside a container.
    #[arg(long, env = "PROVIDER_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
    /// Redis holding the idempotency keys, the charges and the lab's records.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// How long an idempotency key and its stored answer are kept, in seconds.
    #[arg(long, env = "PROVIDER_KEY_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    key_ttl_secs: u64,
    /// How long a reservation whose request never finished (e.g. the provider
    /// was killed) keeps blocking its key, beyond the request's planned delay, in seconds.
    #[arg(long, env = "PROVIDER_RUNNING_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    running_timeout_secs: u64,
    /// Requests per second and account; over it, 429 rate_limited (0: no limit).
    #[arg(long, env = "PROVIDER_RATE_LIMIT", default_value_t = 100)]
    rate_limit: u64,
    /// How long an account that kept sending through its 429s is banned, in seconds.
    #[arg(long, env = "PROVIDER_BAN_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ban_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lab_runtime::service::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let config = provider::Config {
        key_ttl: Duration::from_secs(args.key_ttl_secs),
        running_timeout: Duration::from_secs(args.running_timeout_secs),
        limits: provider::Limits {
            per_sec: args.rate_limit,
            ban: Duration::from_secs(args.ban_secs),
        },
    };
    provider::serve(
        listener,
        &args.redis_url,
        config,
        lab_runtime::service::shutdown_signal(),
    )
    .await
}
