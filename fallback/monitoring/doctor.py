"""`sonae doctor`: is this box ready for its first start, and if not, what
to fix — one line per finding.

Each check is a function of the configuration that returns findings; none
writes anything (the operational database is opened read-only, and only if
it exists), so the doctor can run before the first start and as often as
IT likes. `run_checks` runs them all in the order the first run meets them.

The worker runs the same checks every alerts.doctor_interval_minutes
(`run_doctor_job`) and keeps the findings, which `/readyz` and the IT
dashboard show: the upstream and CUPS checks reach over the network, so a
request never runs them itself.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from fallback import access, disk
from fallback.cli_support import listen_problem
from fallback.clock import ntp_status
from fallback.config import Config, ConfigError, config_path, parse_config_file
from fallback.keys import lost_master_key_problem, ops_key
from fallback.mirror.registry import snapshot_store
from fallback.mirror.syncing import token_folder_message, upstream_from_config
from fallback.ops import Transaction, now_iso, open_ops
from fallback.staff.users import list_users
from printing.glyphs import IPAEX_MINCHO, IPAMJ_MINCHO
from sync import crypto
from sync.contract import CONTRACT_VERSION, ContractError, public_key_from_b64, verify_manifest
from sync.errors import SnapshotOutdated, SyncError
from sync.schema import SCHEMA_VERSION
from sync.store import SnapshotStore

OK, PROBLEM, UNKNOWN = "ok", "problem", "unknown"


@dataclass(frozen=True)
class Finding:
    check: str  # which check: "configuration", "keys", …
    status: str  # OK, PROBLEM or UNKNOWN (cannot be told from here)
    message: str  # one line: what is fine, or what to fix

    @property
    def line(self) -> str:
        return f"{self.status.upper():8} {self.check:14} {self.message}"


def _ok(check: str, message: str) -> list[Finding]:
    return [Finding(check, OK, message)]


# --- the user ------------------------------------------------------------------


def running_user(config: Config) -> list[Finding]:
    """Permissions are judged as the process that runs the doctor sees them,
    so it must be the appliance's own user."""
    if os.geteuid() == 0:
        return [Finding("user", PROBLEM, "the doctor runs as root, which reads every file: run it as the appliance's user "
                                         "(runuser -u sonae -- sonae doctor) so that permissions are checked as the services meet them")]
    return _ok("user", f"checking as {access.running_as()}, the user the services run as")


# --- configuration ---------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# What deploy/sonae.toml.example leaves for the ward to fill in.
PLACEHOLDER_NAME = "○○"


def _is_placeholder(url: str) -> bool:
    """An address under a domain reserved for examples (example.lg.jp,
    example.com, *.example: RFC 2606), as the example configuration has."""
    return "example" in (urlparse(url).hostname or "").split(".")


def configuration(config: Config, env: Mapping[str, str] | None = None) -> list[Finding]:
    """The file itself, the ward's municipality, and the address printed on
    certificates."""
    env = os.environ if env is None else env
    findings = []
    raw: dict = {}
    if config.source is None:
        findings.append(Finding("configuration", PROBLEM, f"no configuration file: write {config_path(env)} "
                                                          "(from deploy/sonae.toml.example) or set SONAE_CONFIG"))
    else:
        # Unknown keys never get this far: load_config refuses them, and
        # `sonae doctor` prints that refusal as its one line.
        raw = parse_config_file(config.source) or {}
    municipality = raw.get("municipality", {})
    unset = [key for key in ("code", "name", "prefecture", "mayor")
             if key not in municipality and f"SONAE_MUNICIPALITY_{key.upper()}" not in env]
    if unset:
        findings.append(Finding("configuration", PROBLEM, f"municipality.{', municipality.'.join(unset)} not set: certificates would "
                                                          f"carry the example ward ({config['municipality']['name']}); set them in [municipality]"))
    mayor = config["municipality"]["mayor"]
    if PLACEHOLDER_NAME in mayor:
        findings.append(Finding("configuration", PROBLEM, f"municipality.mayor is the example's placeholder ({mayor}): "
                                                          "set the mayor's name as certificates print it (e.g. 大田区長　鈴木　晶雅)"))
    base_url = config["web"]["public_base_url"]
    host = urlparse(base_url).hostname or ""
    if _is_loopback(host):
        findings.append(Finding("configuration", PROBLEM, f"web.public_base_url is {base_url}, which only this box can open: "
                                                          "set the address residents use to verify certificates (printed in every QR code)"))
    elif _is_placeholder(base_url):
        findings.append(Finding("configuration", PROBLEM, f"web.public_base_url is the example's placeholder {base_url}: "
                                                          "set the ward's address residents use to verify certificates (printed in every QR code)"))
    if not findings:
        return _ok("configuration", f"{config.source}: every key known, {config['municipality']['name']}, certificates point at {base_url}")
    return findings


def web_address(config: Config) -> list[Finding]:
    """The counter app can listen on web.host:web.port — or Sonae already
    does (its /healthz answers there)."""
    host, port = config["web"]["host"], config["web"]["port"]
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does: a closing connection does not count
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and _sonae_answers(host, port):
            return _ok("web", f"Sonae already serves on {host}:{port}")
        return [Finding("web", PROBLEM, listen_problem(exc, host, port))]
    return _ok("web", f"the counter app can listen on {host}:{port}")


def _sonae_answers(host: str, port: int) -> bool:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}/healthz"
    try:
        return requests.get(url, timeout=5).json().get("status") == "alive"
    except (requests.RequestException, ValueError, AttributeError):
        return False


# --- keys ------------------------------------------------------------------------


def _key_files(config: Config) -> list[tuple[str, Path, bool]]:
    """(what, path, required) of every secret file the configuration uses."""
    security, upstream = config["security"], config["upstream"]
    files = [("signing key", Path(security["signing_key_file"]), True)]
    if not security["key"]:
        files.insert(0, ("master key", Path(security["key_file"]), True))
    files.append(("session key", Path(security["secret_key_file"]), False))
    if not upstream["token"]:
        files.append(("upstream token", Path(upstream["token_file"]), True))
    return files


def _key_problem(what: str, path: Path, config: Config) -> str | None:
    home = config.home
    if os.path.isdir(path):  # before its permissions: a folder's mode is not what to fix
        folder = token_folder_message(path) if what == "upstream token" else crypto.key_folder_message(path)
        return f"{what} {folder}"
    if access.blocking_path(path):
        return f"{what}: {access.permission_message(path)}"
    if what == "master key" and (lost := lost_master_key_problem(config)):
        return lost
    if not path.exists():
        hint = "write it with `sonae key init " + str(path) + "`" if what != "upstream token" else "put the vendor's bearer token there"
        return f"{what} {path} does not exist: {hint}"
    resolved, state = path.resolve(), home.resolve()
    if resolved == state or state in resolved.parents:
        return f"{what} {path} is inside the state directory {state}: move it (e.g. to /etc/sonae/) so that a copy of the data does not carry it"
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}: run `chmod 600 {path}`"
    if info.st_uid != os.geteuid():
        return (f"{what} {path}: {access.owner_and_mode(path)}, and Sonae runs as {access.running_as()}: "
                f"chown it to that uid")
    if what in ("master key", "signing key"):
        try:
            crypto.read_key_file(path, forbidden_dir=home)
        except crypto.KeyFileError as exc:
            return str(exc)
    return None


def keys(config: Config) -> list[Finding]:
    """Every key file: present, readable by this uid and owned by it, mode
    0600, outside the state directory, and (for the keys) well-formed."""
    findings, fine = [], []
    for what, path, required in _key_files(config):
        if not required and not path.exists() and not access.blocking_path(path):
            continue  # the session key is derived from the master key when its file is absent
        if problem := _key_problem(what, path, config):
            findings.append(Finding("keys", PROBLEM, problem))
        else:
            fine.append(str(path))
    return findings or _ok("keys", f"{', '.join(fine)}: present, mode 0600, owned by {access.running_as()}, outside {config.home}")


def state_directory(config: Config) -> list[Finding]:
    if problem := access.state_problem(config.home):
        return [Finding("state", PROBLEM, problem)]
    return _ok("state", f"{config.home} can be written by {access.running_as()}")


# --- certificates: the 電子公印 and the fonts --------------------------------------


# The 電子公印 prints at printing.official_seal_mm, at most 25 mm: a 300-dpi
# scan of it is ≈ 295 px, a 1200-dpi printer's finest ≈ 1180 px. Under
# 150 px a side (≈ 150 dpi at 25 mm) its ring of characters prints in
# visible steps; over 4000 px a side is finer than any printer by a factor
# of three and costs each render process 4 bytes a pixel decoded (12000 px
# square: ≈ 580 MB) for nothing.
SEAL_MIN_PX, SEAL_MAX_PX = 150, 4000


def seal_image(config: Config) -> list[Finding]:
    """Real issuance is refused without a configured 電子公印 image; one
    that would print badly is named too: no transparent background (it is
    printed over the issuer's name, which an opaque background hides) or
    a size no certificate prints well."""
    from PIL import Image, UnidentifiedImageError

    configured = config["printing"]["official_seal_image"]
    if not configured:
        return [Finding("seal", PROBLEM, "no 電子公印 image configured: real issuance is refused without one; "
                                         "set printing.official_seal_image to the ward's seal (PNG)")]
    path = Path(configured)
    if os.path.isdir(path):
        return [Finding("seal", PROBLEM, "printing.official_seal_image " + crypto.folder_not_file(path, "seal image", "put the seal image there"))]
    if access.blocking_path(path):
        return [Finding("seal", PROBLEM, access.permission_message(path))]
    if not path.is_file():
        return [Finding("seal", PROBLEM, f"printing.official_seal_image {path} does not exist: put the seal image there or correct the path")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is judged here, in one line
            with Image.open(path) as image:
                size = image.size
                if problem := _seal_size_problem(path, size):
                    return [Finding("seal", PROBLEM, problem)]
                opaque = image.convert("RGBA").getchannel("A").getextrema()[0] == 255
    except Image.DecompressionBombError as exc:  # PIL will not even open it
        return [Finding("seal", PROBLEM, f"printing.official_seal_image {path} is far larger than any seal ({exc}): "
                                         f"export it with at most {SEAL_MAX_PX} px a side (about 300 to 1200 px)")]
    except (UnidentifiedImageError, OSError) as exc:
        return [Finding("seal", PROBLEM, f"printing.official_seal_image {path} is not an image ({exc}): export the seal as PNG")]
    if opaque:
        return [Finding("seal", PROBLEM, f"printing.official_seal_image {path} has no transparent background: its background would "
                                         "cover the mayor's name printed under it; export the seal as PNG with a transparent background")]
    return _ok("seal", f"電子公印 {path} ({size[0]}×{size[1]} px, transparent background)")


def _seal_size_problem(path: Path, size: tuple[int, int]) -> str | None:
    width, height = size
    if min(size) < SEAL_MIN_PX:
        return (f"printing.official_seal_image {path} is {width}×{height} px, too coarse for a seal printed up to 25 mm: "
                f"export it with at least {SEAL_MIN_PX} px a side (a 300-dpi scan, about 300 px)")
    if max(size) > SEAL_MAX_PX:
        return (f"printing.official_seal_image {path} is {width}×{height} px, far finer than any printer prints a 25-mm seal: "
                f"export it with at most {SEAL_MAX_PX} px a side (about 300 to 1200 px)")
    return None


def fonts(config: Config, required: tuple[Path, ...] = (IPAEX_MINCHO, IPAMJ_MINCHO)) -> list[Finding]:
    missing = [path for path in required if not path.is_file()]
    if missing:
        return [Finding("fonts", PROBLEM, f"{', '.join(map(str, missing))} missing: certificates need them; "
                                          "apt-get install fonts-ipaexfont fonts-ipamj-mincho")]
    return _ok("fonts", "IPAex明朝 and IPAmj明朝 installed")


# --- printing ------------------------------------------------------------------------


def _queues(config: Config) -> dict[str, list[str]]:
    """CUPS queue -> the terminals (or "printing.printer") that name it."""
    queues: dict[str, list[str]] = {}
    for terminal in config["counter"]["terminals"]:
        if terminal.get("queue"):
            queues.setdefault(terminal["queue"], []).append(terminal["id"])
    if config["printing"]["printer"]:
        queues.setdefault(config["printing"]["printer"], []).append("printing.printer")
    return queues


def cups_queues(config: Config) -> list[Finding]:
    queues = _queues(config)
    if not queues:
        return _ok("printers", "no CUPS queue named: the counters print from the browser")
    if shutil.which("lpstat") is None:
        return [Finding("printers", PROBLEM, f"queues {', '.join(queues)} are named but the CUPS client is missing: apt-get install cups-client")]
    findings = []
    for queue, users in queues.items():
        asked = subprocess.run(["lpstat", "-p", queue], capture_output=True, text=True, timeout=30)
        said = (asked.stdout + asked.stderr).strip().splitlines()
        first = said[0] if said else f"exit status {asked.returncode}"
        if asked.returncode != 0:
            findings.append(Finding("printers", PROBLEM, f"queue {queue} ({', '.join(users)}) is not known to the print server "
                                                         f"({first}): add it with lpadmin, or correct counter.terminals"))
        elif "disabled" in first:
            findings.append(Finding("printers", PROBLEM, f"queue {queue} ({', '.join(users)}) is stopped ({first}): cupsenable {queue}"))
    return findings or _ok("printers", f"queues {', '.join(queues)} accept jobs")


# --- the upstream ---------------------------------------------------------------------


def upstream(config: Config) -> list[Finding]:
    """TLS, the public key, an answer, and the manifest: signed by that key,
    in the contract version this Sonae reads."""
    section = config["upstream"]
    url = section["url"]
    if _is_placeholder(url):
        return [Finding("upstream", PROBLEM, f"upstream.url is the example's placeholder {url}: set the vendor's https:// address")]
    findings = []
    if urlparse(url).scheme != "https":
        allowed = " (upstream.allow_insecure_http lets it through: for the demo and tests only)" if section["allow_insecure_http"] else ""
        findings.append(Finding("upstream", PROBLEM, f"upstream.url {url} is not TLS{allowed}: use the vendor's https:// address"))
    try:  # refuses a missing or unreadable public key, and plain http unless allowed
        client = upstream_from_config(config)
    except (ConfigError, ContractError) as exc:
        return [*findings, Finding("upstream", PROBLEM, str(exc))]
    public_key = public_key_from_b64(section["public_key"])
    try:
        client.health()
        manifest = client.manifest()
    except SyncError as exc:
        return [*findings, Finding("upstream", PROBLEM, f"not reachable: {exc}")]
    finally:
        client.close()
    if manifest.get("contract") != CONTRACT_VERSION:
        findings.append(Finding("upstream", PROBLEM, f"the upstream serves contract {manifest.get('contract')!r}, this Sonae reads "
                                                     f"contract {CONTRACT_VERSION}: ask the vendor, or upgrade Sonae"))
    else:
        try:
            verify_manifest(manifest, public_key)
        except ContractError as exc:
            findings.append(Finding("upstream", PROBLEM, f"the newest export: {exc}"))
    return findings or _ok("upstream", f"{url} answers over TLS; its newest export is contract {CONTRACT_VERSION}, signed by the configured key")


# --- the clock and the disk -----------------------------------------------------------


def clock(config: Config, timedatectl: str = "timedatectl") -> list[Finding]:
    """Certificates state their time and the data age is judged by this
    clock: it must follow NTP."""
    answer, why = ntp_status(timedatectl)
    if answer == "yes":
        return _ok("clock", "synchronised by NTP")
    if answer == "no":
        return [Finding("clock", PROBLEM, "not synchronised by NTP: enable it (timedatectl set-ntp true, or the ward's NTP server in "
                                          "/etc/systemd/timesyncd.conf)")]
    return [Finding("clock", UNKNOWN, f"cannot tell whether NTP keeps the clock ({why}): check on the host")]


def _bytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def generation_room(generation_bytes: int, free_bytes: int) -> bool:
    """A full load builds the next generation beside the current one, with
    its scratch database beside it: room for two generations."""
    return free_bytes >= 2 * generation_bytes


def disk_space(config: Config) -> list[Finding]:
    existing = next(p for p in (config.snapshot_dir, *config.snapshot_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    store = SnapshotStore(config.snapshot_dir, key=b"")  # only the CURRENT pointer is read: no key needed
    try:
        current = store.current()
    except SyncError as exc:
        return [Finding("disk", UNKNOWN, f"cannot size a generation ({exc}); {_bytes(free)} free")]
    if current is None:
        return [Finding("disk", UNKNOWN, f"no generation yet to size one by; {_bytes(free)} free on {existing} "
                                         "(1,000,000 residents take about 2.8 GB a generation)")]
    size = sum(path.stat().st_size for path in store.path_of(current).parent.rglob("*") if path.is_file())
    if not generation_room(size, free):
        return [Finding("disk", PROBLEM, f"{_bytes(free)} free on {existing}, a full load needs room for two generations of "
                                         f"{_bytes(size)}: free space or lower sync.keep_generations")]
    return _ok("disk", f"{_bytes(free)} free on {existing}: room for two generations of {_bytes(size)}")


def disk_reserve(config: Config) -> list[Finding]:
    """The room kept back for a full disk (fallback.disk): made, released,
    or not made — and then whether the worker can make it at all."""
    reserve = disk.reserve_state(config)
    path = disk.reserve_path(config)

    def mb(count: int) -> str:  # as disk.reserve_mb counts
        return f"{count / 2**20:,.0f} MB"

    if reserve.size == 0:
        return _ok("disk reserve", "none configured (disk.reserve_mb = 0): a full disk stops issuance at once")
    if reserve.present:
        return _ok("disk reserve", f"{mb(reserve.size)} kept in {path}, given back to the counters when the disk fills")
    if reserve.released is not None:
        return [Finding("disk reserve", PROBLEM, f"released at {reserve.released.get('at')} ({reserve.released.get('why')}): "
                                                 "free space on the disk; the worker makes it again once there is room (runbook 09)")]
    needed = 2 * reserve.size + (config["disk"]["release_below_mb"] << 20)
    free = disk.free_bytes(config)
    if free < needed:
        return [Finding("disk reserve", PROBLEM, f"the {mb(reserve.size)} reserve cannot be made: {mb(free)} free, it needs "
                                                 f"{mb(needed)} (twice the reserve above disk.release_below_mb) — without it a full disk "
                                                 "stops issuance at once: free space, or lower disk.reserve_mb")]
    return [Finding("disk reserve", UNKNOWN, f"not made yet: `sonae worker` makes it ({mb(reserve.size)} in {path}) at its next turn")]


def snapshot_layout(config: Config) -> list[Finding]:
    """After an upgrade that changed the snapshot layout the counters refuse
    the generation built before it until a full load builds a current one:
    said here, before a counter meets it. Anything else that keeps the
    current generation from opening is a problem too; a missing key is the
    keys check's to name."""
    try:
        current = SnapshotStore(config.snapshot_dir, key=b"").current()  # the pointer needs no key
        if current is None:
            return [Finding("snapshot", UNKNOWN, "no generation loaded yet: `sonae sync full` loads the first")]
        snapshot_store(config).open_register().close()
    except crypto.KeyFileError as exc:
        return [Finding("snapshot", UNKNOWN, f"cannot open the current generation without its key: {exc}")]
    except SnapshotOutdated as exc:
        return [Finding("snapshot", PROBLEM, str(exc))]
    except (SyncError, crypto.WrongKeyError, crypto.DiskError, crypto.DatabaseError, OSError) as exc:
        return [Finding("snapshot", PROBLEM, f"the current generation does not open, so the counters cannot search: {exc}; "
                                             "see `sonae snapshot list`")]
    return _ok("snapshot", f"generation {current} opens (snapshot layout {SCHEMA_VERSION})")


# --- accounts ----------------------------------------------------------------------------


def first_supervisor(config: Config) -> list[Finding]:
    """Someone must be able to declare downtime. The operational database is
    read, never created or migrated, here."""
    hint = "create one: sonae user add USERNAME --name NAME --role supervisor"
    if not config.ops_db_path.exists():
        return [Finding("accounts", PROBLEM, f"no supervisor account yet (no operational database): {hint}")]
    try:
        conn = crypto.connect(config.ops_db_path, ops_key(config), readonly=True)
    except (crypto.KeyFileError, crypto.WrongKeyError, crypto.DiskError) as exc:
        return [Finding("accounts", UNKNOWN, f"cannot read the accounts: {exc}")]
    try:
        supervisors = [u.username for u in list_users(conn) if u.role == "supervisor" and not u.disabled]
    except crypto.DatabaseError as exc:
        return [Finding("accounts", UNKNOWN, f"cannot read the accounts: {exc}")]
    finally:
        conn.close()
    if not supervisors:
        return [Finding("accounts", PROBLEM, f"no enabled supervisor account: {hint}")]
    return _ok("accounts", f"supervisor account(s): {', '.join(supervisors)}")


# In the order a first run meets them.
CHECKS: tuple[Callable[[Config], list[Finding]], ...] = (
    running_user, configuration, web_address, keys, state_directory, seal_image, fonts, cups_queues, upstream, clock, disk_space, disk_reserve,
    snapshot_layout,
    first_supervisor,
)


def run_checks(config: Config) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(config)]


STATE_KEY = "doctor"
# Who runs the checks, and whether web.port is free, are questions for
# `sonae doctor` at a console; the worker is the appliance's own user by
# definition, and a /readyz that answers shows the app listens.
SERVICE_CHECKS = tuple(check for check in CHECKS if check not in (running_user, web_address))


@dataclass(frozen=True)
class Checkup:
    at: str
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status != OK]


def run_doctor_job(config: Config) -> Checkup:
    """The worker's regular run of the doctor, kept for /readyz and the
    dashboard."""
    checkup = Checkup(now_iso(), [finding for check in SERVICE_CHECKS for finding in check(config)])
    conn = open_ops(config)
    try:
        with Transaction(conn):
            conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)",
                         (STATE_KEY, json.dumps({"at": checkup.at, "findings": [asdict(f) for f in checkup.findings]}, ensure_ascii=False)))
    finally:
        conn.close()
    return checkup


def latest_checkup(conn) -> Checkup | None:
    """The worker's last run (None before its first)."""
    row = conn.execute("SELECT value FROM monitor_state WHERE key = ?", (STATE_KEY,)).fetchone()
    if row is None:
        return None
    stored = json.loads(row[0])
    return Checkup(stored["at"], [Finding(**f) for f in stored["findings"]])
