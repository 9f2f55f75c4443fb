//! The demo-runner's command line, built inside the test crate so the tests run
//! the real binary (`demo_runner::main`, the same code). Students need not edit this file.

fn main() -> std::process::ExitCode {
    demo_runner::main()
}
