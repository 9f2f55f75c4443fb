#!/usr/bin/env bash
# Builds local stand-ins for the base images that Dockerfile and compose.yml name, for a
# machine that cannot reach an image registry (CI here). Students need not run or edit this.
#
#   debian:bookworm-slim   a Debian bookworm root file system (debootstrap --variant=minbase)
#   redis:7-bookworm       that system plus Debian's redis-server and redis-tools
#   rust:1-slim-bookworm   that system plus gcc and THIS machine's Rust toolchain; it also
#                          carries this machine's CA bundle (SSL_CERT_FILE), so cargo inside
#                          a build container reaches the crate registry through the same proxy
#
# Needs root, debootstrap and a running Docker engine (DOCKER_HOST). Images that already
# exist are kept; STANDINS_REBUILD=1 rebuilds them. The debootstrap tree is cached in
# $STANDINS_CACHE (default target/docker-standins).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-/usr/bin/docker}"
say() { printf 'standins: %s\n' "$*" >&2; }
# These images take the official names: build them only in a private engine, never in the
# Docker of a laptop, where they would stand in for the real images from then on.
case "${DOCKER_HOST:-}" in
  "" | unix:///var/run/docker.sock | unix:///run/docker.sock)
    say "refusing to tag stand-ins in the default Docker engine; set DOCKER_HOST to a private dockerd (docker/compose-test.sh does)"
    exit 1 ;;
esac
CACHE="${STANDINS_CACHE:-$PWD/target/docker-standins}"
REBUILD="${STANDINS_REBUILD:-0}"
mkdir -p "$CACHE"

have_image() { [ "$REBUILD" != 1 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# 1. debian:bookworm-slim from a minbase debootstrap.
if ! have_image debian:bookworm-slim; then
  if [ ! -f "$CACHE/bookworm-minbase.tar" ]; then
    command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    say "debootstrap --variant=minbase bookworm (about a minute)"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase bookworm "$CACHE/rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$CACHE/rootfs/var/cache/apt/archives/"*.deb "$CACHE/rootfs/var/lib/apt/lists/"*
    tar -C "$CACHE/rootfs" -cf "$CACHE/bookworm-minbase.tar.partial" .
    mv "$CACHE/bookworm-minbase.tar.partial" "$CACHE/bookworm-minbase.tar"
    rm -rf "$CACHE/rootfs"
  fi
  say "importing debian:bookworm-slim"
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    "$CACHE/bookworm-minbase.tar" debian:bookworm-slim >/dev/null
fi

# 2. redis:7-bookworm: Debian's Redis 7 with the official image's data directory.
if ! have_image redis:7-bookworm; then
  say "building redis:7-bookworm"
  printf '%s\n' \
    'FROM debian:bookworm-slim' \
    'RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null && rm -rf /var/lib/apt/lists/* && mkdir -p /data' \
    'WORKDIR /data' \
    'EXPOSE 6379' \
    'CMD ["redis-server", "--protected-mode", "no"]' \
    | "$DOCKER" build -q -t redis:7-bookworm - >/dev/null
fi

# 3. rust:1-slim-bookworm with this machine's toolchain (Debian's packaged Rust is too old).
if ! have_image rust:1-slim-bookworm; then
  sysroot="$(rustc --print sysroot)"
  case "$sysroot" in /usr | /usr/local) say "rustc comes from $sysroot, not rustup: install Rust with rustup"; exit 1 ;; esac
  ctx="$CACHE/rust-context"
  say "building rust:1-slim-bookworm from $sysroot ($(rustc --version))"
  rm -rf "$ctx" && mkdir -p "$ctx/toolchain"
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/toolchain/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$ctx/toolchain/"
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/host-ca.crt"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
COPY host-ca.crt /usr/local/share/host-ca.crt
ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo \
    SSL_CERT_FILE=/usr/local/share/host-ca.crt \
    CARGO_HTTP_CAINFO=/usr/local/share/host-ca.crt
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
DOCKERFILE
  "$DOCKER" build -q -t rust:1-slim-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
fi

"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(debian:bookworm-slim|redis:7-bookworm|rust:1-slim-bookworm) ' >&2
