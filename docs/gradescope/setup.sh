#!/usr/bin/env bash
# Gradescope's setup script for the lab's autograder (docs/grading.md, "Gradescope"): runs
# once, as root, when Gradescope builds the autograder image. Installs Redis and Rust, then
# builds the grader and the starter, so that grading a submission compiles only its crate.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server curl git build-essential pkg-config
if ! command -v cargo >/dev/null 2>&1; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
export PATH="$HOME/.cargo/bin:$PATH"
cd /autograder/source
./lab grade --prepare
