//! The lab's worker binary: parses the command line and runs the consumer.
//! Students need not edit this file; the exercise is `worker/src/job.rs`.
//!
//! Run with: `cargo run -p worker -- --redis-url redis://127.0.0.1:6379 --concurrency 8`

fn main() -> anyhow::Result<()> {
    worker::cli::main()
}
