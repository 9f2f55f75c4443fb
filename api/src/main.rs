//! The lab's HTTP API. Students need not edit this file.
//!
//! Run with: `cargo run -p api -- --listen 127.0.0.1:8080 --redis-url redis://127.0.0.1:6379`

use clap::Parser;

/// Accepts job submissions (POST /jobs), enqueues every one of them, and serves job and run state.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on. Keep it on loopback outside a container.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Redis holding the queue and the job records.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// How long POST /orders keeps an answer for its Idempotency-Key, in seconds (published at GET /idempotency).
    #[arg(long, env = "ORDER_KEY_TTL_SECS", default_value_t = lab_schema::orders::DEFAULT_KEY_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    order_key_ttl_secs: u64,
    /// Print the fingerprint of the exercise file built into this API, then exit.
    #[arg(long)]
    print_code: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lab_runtime::service::init_tracing();
    let args = Args::parse();
    if args.print_code {
        let (file, fingerprint) = api::code();
        println!("{file} #{fingerprint}");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    api::serve(
        listener,
        &args.redis_url,
        std::time::Duration::from_secs(args.order_key_ttl_secs),
        lab_runtime::service::shutdown_signal(),
    )
    .await
}
