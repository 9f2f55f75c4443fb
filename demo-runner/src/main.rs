//! The lab's demo-runner binary. Students need not edit this file.
//!
//! Run with: `cargo run -p demo-runner -- duplicate-load 8 2`

fn main() -> std::process::ExitCode {
    demo_runner::main()
}
