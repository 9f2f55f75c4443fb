#!/usr/bin/env bash
# regen.sh: rewrites the output blocks of this exercise's README.md with what the
# starter and the reference fix print today. Students need not run or edit this file.
#
# It runs the handout test (demo-runner/tests/handout.rs) with REGEN_HANDOUT=1:
# a real redis-server, the API, two starter workers, then two workers built with
# exercises/01-duplicate-delivery/solution.patch. Review the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if cargo nextest --version >/dev/null 2>&1; then
  REGEN_HANDOUT=1 cargo nextest run --workspace -E 'test(handout_outputs_match_the_code)'
else
  REGEN_HANDOUT=1 cargo test --workspace --test handout -- handout_outputs_match_the_code
fi
git --no-pager diff --stat -- exercises/01-duplicate-delivery/README.md
