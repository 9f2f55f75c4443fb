# Container image of the lab (api, provider, worker, demo-runner), used by compose.yml. Students need not edit this file.
#
# One build compiles the whole workspace for all four services. BuildKit cache
# mounts keep the crate registry and cargo's target/ between builds, so after an
# edit of worker/src/job.rs, `docker compose up --build -d` recompiles only the
# worker crate. The base images are build arguments: an offline machine can
# supply local stand-ins with the same names (see docker/standins.sh).
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# A failing step of a pipe fails the build (the warnings step pipes cargo into the demo-runner).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# The crates a class was handed (`./lab crates load`, README "Teaching a class"), if any: the build
# copies them into its cargo cache instead of downloading them. `lab-crate[s]` matches
# nothing when there are none; Cargo.lock is there so that the COPY always has a source.
COPY Cargo.lock lab-crate[s] /crates/
# Only what the build reads, so editing the README or the exercises does not rebuild.
COPY Cargo.toml Cargo.lock ./
COPY lab-schema lab-schema
COPY lab-runtime lab-runtime
COPY api api
COPY provider provider
COPY demo-runner demo-runner
# The test crates are workspace members (cargo reads their manifests); they are not built here.
COPY lab-testkit lab-testkit
COPY lab-tests lab-tests
# The exercise last: editing it invalidates only this layer.
COPY worker worker
# The binaries are copied out of the cached target/ into the image layer. Cargo decides
# what to recompile by file times; touching the worker's sources makes sure the exercise
# is always compiled from exactly what was copied in (the worker crate alone takes seconds).
# Exercise 4's file is in the API: an edit of it recompiles the api crate (and the worker).
# A student file older than the cached build of another version of it (a file reset
# with its old time) is taken as built: the programs say which versions they were built
# from, and `demo-runner code --built` names the files to compile again (as ./lab does).
RUN --mount=type=cache,id=idempotency-lab-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=idempotency-lab-target,target=/src/target \
    { [ ! -d /crates/registry ] || cp -Rn /crates/registry/. /usr/local/cargo/registry/ || true; } \
    && touch worker/src/*.rs \
    && cargo build --release --locked -p api -p provider -p worker -p demo-runner \
    && stale="$(LAB_SOURCE_DIR=/src target/release/demo-runner code --built target/release/worker target/release/api --touch)" \
    && if [ -n "$stale" ]; then cargo build --release --locked -p api -p provider -p worker -p demo-runner; fi \
    && mkdir -p /out /out-share \
    && cp target/release/api target/release/provider target/release/worker target/release/demo-runner /out/ \
    && { cargo build --release --locked -p api -p provider -p worker -p demo-runner 2>&1 >/dev/null \
         | target/release/demo-runner code --warnings >/out-share/warnings.txt; }

# The grader of `./lab grade --docker` (docs/grading.md, "Trust"), built only on demand
# (`docker build --target grader`): the lab's source, the crates, a warm debug build and
# redis-server. Each submission is graded in a container of its own with no network, its
# files mounted read-only, and the student's programs run as the unprivileged user
# `student` (the grader starts them as LAB_STUDENT_UID), under CPU, memory and pid limits.
FROM build AS grader
# Debian bookworm's redis-server and procps, unpinned: a pinned version breaks at its next security update.
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server procps >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10002 --no-create-home --shell /usr/sbin/nologin student \
    && mkdir -m 0711 /var/lib/lab-grader
COPY exercises exercises
# The crates in the image (a grading container has no network), then the grading programs
# and the starter built in the scratch copy's target folder: a submission compiles its crate only.
RUN { [ ! -d /crates/registry ] || cp -Rn /crates/registry/. /usr/local/cargo/registry/ || true; } \
    && cargo fetch --locked \
    && cargo build --locked --quiet --target-dir target/patched-worker/target \
         -p lab-tests --bin grade --bin demo --bin starter-worker \
    && target/patched-worker/target/debug/grade --prepare
# The grader's scratch files (the programs it built, logs, verify's output, Redis's data) in
# a folder the student's programs can enter but neither list nor write: /tmp is theirs.
ENV PATH=/src/target/patched-worker/target/debug:$PATH \
    TMPDIR=/var/lib/lab-grader \
    LAB_STUDENT_UID=10002 \
    LAB_SOURCE_DIR=/src
CMD ["grade", "--help"]

FROM ${RUNTIME_IMAGE}
# Plain HTTP to Redis and between services: the binaries need no TLS or other libraries.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lab
COPY --from=build /out/ /usr/local/bin/
# The compiler's warnings about the students' files at this build: verify prints
# them under a FAIL (a call without its .await? never runs, and only a warning says so).
COPY --from=build /out-share/warnings.txt /usr/local/share/lab/warnings.txt
ENV API_LISTEN=0.0.0.0:8080 \
    LAB_WARNINGS_FILE=/usr/local/share/lab/warnings.txt \
    REDIS_URL=redis://redis:6379 \
    API_URL=http://api:8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
CMD ["api"]
