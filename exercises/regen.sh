#!/usr/bin/env bash
# regen.sh: rewrites the output blocks of every exercise's README.md with what the
# starter and the reference solution print today. Students need not run or edit this file.
#
# It runs the handout test (lab-tests/tests/handout.rs) with REGEN_HANDOUT=1: for each
# exercise, a real redis-server, the API and two starter workers, then two workers built
# with the exercise's solution.patch, run the commands each `<!-- output: ... -->` marker
# names. Review the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  REGEN_HANDOUT=1 cargo nextest run -p lab-tests --test handout -E 'test(handout_outputs_match_the_code)'
else
  REGEN_HANDOUT=1 cargo test -p lab-tests --test handout -- handout_outputs_match_the_code
fi
git --no-pager diff --stat -- 'exercises/*/README.md'
