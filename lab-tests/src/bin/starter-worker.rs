//! The starter worker, built inside the test crate so the tests run it as a
//! process (`worker::cli::main`, the same code as the `worker` binary).
//! Students need not edit this file.

fn main() -> anyhow::Result<()> {
    worker::cli::main()
}
