#!/usr/bin/env bash
# Build the service image and a PostgreSQL image from a local Debian base, run both
# (host network, loopback only), wait for /healthz, create a tenant, a network and a
# port through the API, check /metrics, and remove everything it started.
#
#   docker/smoke.sh            (root; about 3-6 minutes the first time, then cached layers)
#
# No image registry needed: the base is `debootstrap --variant=minbase bookworm` +
# `docker import` (made once, kept as local/debian:bookworm); the builds reach Debian's
# and PyPI's package servers with `docker build --network host`. A dockerd is started
# (--iptables=false --bridge=none) if none runs, and stopped again at the end.
# Set KEEP_IMAGES=0 to remove the built images too.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${SMOKE_BASE_IMAGE:-local/debian:bookworm}
TAG=ovs-fabric-smoke
PREFIX=ovs-fabric-smoke-$$
WORK=$(mktemp -d /tmp/ovs-fabric-smoke.XXXXXX)
STARTED_DOCKERD=""
started=$(date +%s)

log() { echo "smoke: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cleanup() {
  local status=$?
  docker rm -f "$PREFIX-api" "$PREFIX-db" >/dev/null 2>&1 || true
  docker volume rm "$PREFIX-pgdata" >/dev/null 2>&1 || true
  if [ "${KEEP_IMAGES:-1}" = 0 ]; then
    docker rmi "$TAG/ovs-fabric" "$TAG/postgres" >/dev/null 2>&1 || true
  fi
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    wait "$STARTED_DOCKERD" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  log "$([ $status = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - started )) s"
  exit $status
}
trap cleanup EXIT

need() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

[ "$(id -u)" = 0 ] || { echo "smoke: run as root (dockerd, debootstrap)" >&2; exit 1; }
need docker.io debootstrap curl python3

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { cat "$WORK/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "making the base image $BASE (debootstrap)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

log "building $TAG/postgres and $TAG/ovs-fabric from $BASE"
built=$(date +%s)
docker build -q --network host --build-arg BASE_IMAGE="$BASE" -t "$TAG/postgres" docker/postgres >/dev/null
# pip in the build trusts what the host added to its CAs (a TLS-inspecting proxy's).
extra_ca=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
docker build -q --network host --build-arg BASE_IMAGE="$BASE" --build-arg EXTRA_CA_CERTS="$extra_ca" \
  -t "$TAG/ovs-fabric" -f docker/Dockerfile . >/dev/null

log "images built in $(( $(date +%s) - built )) s"
PG_PORT=$(free_port); API_PORT=$(free_port); OF_PORT=$(free_port); OF_TLS_PORT=$(free_port)
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')

log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
docker run -d --name "$PREFIX-db" --network host -v "$PREFIX-pgdata:/var/lib/postgresql/data" \
  -e POSTGRES_USER=ovsfabric -e POSTGRES_PASSWORD="$PASSWORD" -e POSTGRES_DB=ovsfabric \
  -e PGPORT="$PG_PORT" -e POSTGRES_LISTEN=127.0.0.1 "$TAG/postgres" >/dev/null
for _ in $(seq 1 120); do
  docker exec "$PREFIX-db" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.5
done
docker exec "$PREFIX-db" pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null \
  || { docker logs "$PREFIX-db" >&2; exit 1; }

log "starting the service on 127.0.0.1:$API_PORT"
docker run -d --name "$PREFIX-api" --network host \
  -e OVS_FABRIC_DATABASE_URL="postgresql+psycopg://ovsfabric:$PASSWORD@127.0.0.1:$PG_PORT/ovsfabric" \
  -e OVS_FABRIC_API_HOST=127.0.0.1 -e OVS_FABRIC_API_PORT="$API_PORT" \
  -e OVS_FABRIC_OPENFLOW_LISTEN_HOST=127.0.0.1 -e OVS_FABRIC_OPENFLOW_PORT="$OF_PORT" \
  -e OVS_FABRIC_OPENFLOW_TLS_PORT="$OF_TLS_PORT" \
  -e OVS_FABRIC_ADMIN_TOKEN="$TOKEN" -e OVS_FABRIC_LIBVIRT_ENABLED=false \
  -e OVS_FABRIC_LOG_FORMAT=json "$TAG/ovs-fabric" --debug serve >/dev/null

API="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 120); do
  curl -fs "$API/healthz" >/dev/null && break
  sleep 0.5
done
curl -fsS "$API/healthz" >/dev/null || { docker logs "$PREFIX-api" >&2; exit 1; }
log "/healthz answers"

call() {  # METHOD PATH [JSON]: the response body; fails on an HTTP error
  curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$API/api/v1$2"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

tenant=$(call POST /tenants '{"name": "smoke"}' | field id)
network=$(call POST /networks "{\"tenant_id\": \"$tenant\", \"name\": \"net\", \"type\": \"vxlan\", \"cidr\": \"10.77.0.0/24\"}" | field id)
port=$(call POST /ports "{\"network_id\": \"$network\", \"name\": \"vm1\", \"ips\": [\"10.77.0.10\"]}")
port_id=$(echo "$port" | field id)
[ "$(call GET "/ports/$port_id" | field network_id)" = "$network" ]
log "tenant $tenant, network $network, port $port_id ($(echo "$port" | field mac)) created and read back"
# (Outputs are read whole before grep: `grep -q` closing a pipe early is a failure
# under pipefail.)
metrics=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/metrics")
grep -q '^ovs_fabric_http_request_duration_seconds_count{method="POST",route="/api/v1/ports",status="201"}' <<<"$metrics"
log "/metrics counts the requests"
logs=$(docker logs "$PREFIX-api" 2>&1)
grep -q '"request_id"' <<<"$logs"
log "JSON logs with request ids"
