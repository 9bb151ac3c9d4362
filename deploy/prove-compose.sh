#!/usr/bin/env bash
# Proves README "Deploying with Docker" on a machine with Docker and its
# compose plugin: builds the image, follows the README's procedure step by
# step against a stand-in upstream (cloudsim from this checkout's .venv,
# `make install-test`), brings up `sonae serve` and `sonae worker` with
# compose.yaml, and checks that /healthz answers on web.port, /readyz says
# ready once the register is loaded, the health check passes, and the
# containers run as the image's uid with a read-only root.
# Leaves nothing behind (containers, volume, the temporary /etc/sonae).
#
#   deploy/prove-compose.sh
#   SONAE_WARD_CA=/path/ca.pem deploy/prove-compose.sh   behind a TLS-intercepting proxy
#   SONAE_DEBIAN_BASE=mirror.example/debian:bookworm-slim deploy/prove-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

[ -x .venv/bin/sonae ] || fail "no .venv: run 'make install-test' first (the stand-in upstream is cloudsim)"
docker compose version >/dev/null 2>&1 || fail "no 'docker compose': install docker.io and the compose plugin"

work=$(mktemp -d /tmp/sonae-compose.XXXXXX)
etc=$work/etc
project=sonaeproof$$
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SONAE_ETC_DIR=$etc COMPOSE_PROJECT_NAME=$project
cloudsim_pid=
cleanup() {
    docker compose down --volumes --timeout 10 >/dev/null 2>&1 || true
    [ -n "$cloudsim_pid" ] && kill "$cloudsim_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say "the image (docker build)"
build_args=()
[ -n "${SONAE_DEBIAN_BASE:-}" ] && build_args+=(--build-arg "DEBIAN_BASE=$SONAE_DEBIAN_BASE")
[ -n "${SONAE_WARD_CA:-}" ] && build_args+=(--secret "id=ward_ca,src=$SONAE_WARD_CA")
docker build -q "${build_args[@]}" -t sonae:latest . >/dev/null
docker image ls sonae:latest --format 'sonae:latest {{.Size}}'
docker run --rm sonae:latest sh -c '! python3 -c "import cloudsim" 2>/dev/null' || fail "cloudsim is in the production image"

say "a stand-in upstream: cloudsim on 127.0.0.1"
.venv/bin/sonae cloudsim serve --residents 2000 --port 0 --admin-port 0 --change-rate 0 \
    --state-dir "$work/cloud" --ready-file "$work/cloud.json" >"$work/cloudsim.log" 2>&1 &
cloudsim_pid=$!
for _ in $(seq 120); do [ -s "$work/cloud.json" ] && break; sleep 1; done
[ -s "$work/cloud.json" ] || fail "cloudsim did not start: $(tail -3 "$work/cloudsim.log")"
upstream() { python3 -c "import json, sys; print(json.load(open('$work/cloud.json'))['$1'])"; }

say "/etc/sonae (README step 1): owned by the image's uid, the configuration"
install -d -m 0700 -o 10001 -g 10001 "$etc"
(umask 077; upstream token >"$etc/upstream.token")
install -m 0644 printing/specimen-seal.png "$etc/seal.png"
cat >"$etc/sonae.toml" <<EOF
[municipality]
code = "131113"
prefecture = "東京都"
name = "大田区"
mayor = "大田区長　見本　太郎"

[upstream]
url = "$(upstream url)"
token_file = "/etc/sonae/upstream.token"
public_key = "$(upstream public_key)"
allow_insecure_http = true   # cloudsim on loopback; a ward's upstream is https

[security]
key_file = "/etc/sonae/master.key"
signing_key_file = "/etc/sonae/signing.key"

[printing]
official_seal_image = "/etc/sonae/seal.png"

[web]
host = "127.0.0.1"
port = $port
public_base_url = "https://sonae.proof.lg.jp"
EOF
chown 10001:10001 "$etc"/*

say "the keys, written by the image's uid (README)"
docker run --rm -v "$etc:/etc/sonae" sonae:latest sonae key init /etc/sonae/master.key
docker run --rm -v "$etc:/etc/sonae" sonae:latest sonae key init /etc/sonae/signing.key
stat -c '%n %U(%u) %a' "$etc/master.key" "$etc/signing.key"

say "sonae doctor (before the register and the first supervisor: it names what is missing)"
docker compose run --rm -T serve sonae doctor && fail "doctor passed with no register loaded and no supervisor"

say "sonae sync full, the first supervisor"
docker compose run --rm -T serve sonae sync full
docker compose run --rm -T serve sonae user add kakaricho --name "係長" --role supervisor --password "proof-$(date +%s)-pw"

say "docker compose up -d"
docker compose up -d
for _ in $(seq 60); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 1; done
curl -fsS "http://127.0.0.1:$port/healthz" || fail "/healthz did not answer on web.port $port"
echo
curl -fsS -o /dev/null -w '/readyz %{http_code}\n' "http://127.0.0.1:$port/readyz" || fail "/readyz is not ready"
login=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$port/counter/")
echo "/counter/ → $login"
case $login in 302*login*) ;; *) fail "/counter/ did not ask for a login";; esac

say "the containers: uid, read-only root, health"
for service in serve worker; do
    id=$(docker compose ps -q "$service")
    [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] || fail "$service is not running: $(docker compose logs --tail 5 "$service")"
    echo "$service: uid $(docker exec "$id" id -u), read-only root $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id")"
    docker exec "$id" sh -c 'touch /opt/sonae/x 2>/dev/null' && fail "$service can write its root filesystem"
done
docker compose exec -T serve sonae health || fail "the compose health check (sonae health) fails"
# The stand-in upstream speaks plain http on loopback, which doctor rightly
# calls a problem; nothing else may be one.
problems=$(docker compose exec -T serve sonae doctor | grep '^PROBLEM' || true)
echo "${problems:-no problems}"
[ "$(echo "$problems" | grep -vc 'upstream.url http://127.0.0.1' || true)" = 0 ] \
    || fail "doctor still finds problems once the register and a supervisor exist"

say "PASSED: docker compose up serves /healthz on web.port $port"
