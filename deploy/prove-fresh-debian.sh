#!/usr/bin/env bash
# Proves README "Two commands" on a truly fresh, minimal Debian 12: a new
# container of debian:12 (no make, no git, no Python), the README's
# prerequisites line exactly as the README prints it, a clone of this
# repository's HEAD, then `make demo` until the demo answers on :8080 and
# /counter/ asks for a login, then `make test`. The container is not
# privileged: root may not mount there, as in many CI runners, so the
# tests that need a mount say why they skip. Logs go to ./fresh-debian/both/
# (or demo/, test/).
#
#   deploy/prove-fresh-debian.sh
#   SONAE_WARD_CA=/path/ca.pem deploy/prove-fresh-debian.sh   behind a TLS-intercepting proxy
#   SONAE_DEBIAN_IMAGE=mirror.example/debian:12 deploy/prove-fresh-debian.sh
#   deploy/prove-fresh-debian.sh demo    (or test): one of the two commands only
# Takes about as long as `make test` plus the installs (≈ 30 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${SONAE_DEBIAN_IMAGE:-debian:12}
commands=${1:-both}
case $commands in both|demo|test) ;; *) echo "usage: $0 [both|demo|test]" >&2; exit 2;; esac
logs=$PWD/fresh-debian/$commands
rm -rf "$logs" && mkdir -p "$logs"

# The line a reader copies from the README, not a copy of it kept here.
prerequisites=$(grep -o 'apt-get update && apt-get install -y make git[^`]*' README.md | head -1)
[ -n "$prerequisites" ] || { echo "README.md has no prerequisites line (apt-get update && apt-get install -y make git …)" >&2; exit 1; }

ca_mount=()
[ -n "${SONAE_WARD_CA:-}" ] && ca_mount=(-v "$(realpath "$SONAE_WARD_CA"):/ward-ca.crt:ro")

docker run --rm --shm-size 1g -v "$PWD:/src:ro" -v "$logs:/logs" "${ca_mount[@]}" \
    -e PREREQUISITES="$prerequisites" -e COMMANDS="$commands" "$image" bash -euo pipefail -c '
say() { printf "\n== %s\n" "$*" | tee -a /logs/steps.log; }
say "fresh $(. /etc/os-release; echo "$PRETTY_NAME"): make $(command -v make || echo absent), git $(command -v git || echo absent)"
say "the README prerequisites line: $PREREQUISITES"
bash -c "$PREREQUISITES" >/logs/prerequisites.log 2>&1
if [ -f /ward-ca.crt ]; then
    # README "Two commands", behind a TLS-intercepting proxy
    cp /ward-ca.crt /usr/local/share/ca-certificates/ward-ca.crt && update-ca-certificates >/dev/null
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
git clone -q /src /root/sonae && cd /root/sonae
say "clone at $(git log -1 --format="%h %s")"

if [ "$COMMANDS" != test ]; then
say "command 1: make demo"
setsid make demo >/logs/demo.log 2>&1 &
demo=$!
python3 - <<EOF || { tail -30 /logs/demo.log; exit 1; }
import pathlib, time, urllib.request, urllib.error
# The outage day plays first, on the same port; the demo to explore prints
# its address once its own app answers.
log, deadline = pathlib.Path("/logs/demo.log"), time.monotonic() + 2400
while "Sonae demo: http://127.0.0.1:8080/" not in log.read_text(errors="replace"):
    if time.monotonic() > deadline:
        raise SystemExit("the demo did not start within 40 minutes")
    time.sleep(3)
said = log.read_text(errors="replace")
if "issuance log consistent" not in said:
    raise SystemExit("the outage day did not end consistent: " + said[said.rfind(".venv/bin/sonae demo outage"):][:2000])
print(said[said.rfind("The outage day ("):].split("Sonae demo:")[0].strip())
urllib.request.urlopen("http://127.0.0.1:8080/healthz", timeout=10)
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args): return None
try:
    urllib.request.build_opener(NoRedirect).open("http://127.0.0.1:8080/counter/")
    raise SystemExit("/counter/ answered without a login")
except urllib.error.HTTPError as e:
    assert e.code == 302 and "/login" in e.headers["Location"], (e.code, e.headers["Location"])
print("the demo answers on :8080; /counter/ asks for a login")
EOF
grep -E "^(outage day|証明書|the outage day)|issued|refused" /logs/demo.log | head -5 || true
kill -TERM -- -$demo; wait $demo || true
fi

if [ "$COMMANDS" != demo ]; then
say "command 2: make test"
make test >/logs/test.log 2>&1 && status=0 || status=$?
tail -3 /logs/test.log | tee -a /logs/steps.log
say "make test exited $status"
exit $status
fi
'
