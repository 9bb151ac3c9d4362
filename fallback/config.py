"""Configuration: one TOML file plus environment overrides.

The file's path comes from SONAE_CONFIG (default /etc/sonae/sonae.toml); a
missing file means "all defaults". Any key can be overridden by an
environment variable SONAE_<SECTION>_<KEY> (SONAE_UPSTREAM_URL,
SONAE_SYNC_KEEP_GENERATIONS, ...); the value is converted to the type of the
default. State lives under SONAE_HOME (default /var/lib/sonae).

Every key the appliance reads is listed in DEFAULTS below, so this file is
also the reference for what can be configured.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fallback.access import permission_message
from fallback.errors import SonaeError
from printing.model import DEFAULT_CERTIFICATION_TEXTS, DEFAULT_INKAN_ITEMS, INKAN_ITEMS

DEFAULT_CONFIG_PATH = "/etc/sonae/sonae.toml"
DEFAULT_HOME = "/var/lib/sonae"

DEFAULTS: dict[str, dict[str, Any]] = {
    "municipality": {
        "code": "131113",  # 全国地方公共団体コード (6 digits with check digit)
        "prefecture": "東京都",
        "name": "大田区",
        "mayor": "大田区長　鈴木　晶雅",
        # 職務代理者 (地方自治法第152条): while the mayor cannot act, certificates
        # are issued in the acting officer's name. Each entry: from and to
        # (YYYY-MM-DD, both days included) and the name as printed, e.g.
        # { from = "2027-01-10", to = "2027-01-20", name = "大田区長職務代理者　大田区副区長　山田　一郎" }
        "acting_mayors": [],
    },
    "upstream": {
        "url": "https://register.example.lg.jp",
        "token_file": "/etc/sonae/upstream.token",
        "token": "",  # alternative to token_file, normally from SONAE_UPSTREAM_TOKEN
        "public_key": "",  # base64 of the raw Ed25519 public key
        "timeout_s": 10.0,
        # an http:// url is refused unless this is true: for the demo's and
        # the tests' cloudsim on loopback, never for a real upstream
        "allow_insecure_http": False,
    },
    "sync": {
        "full_cron": "0 2 * * *",
        "timezone": "Asia/Tokyo",
        "changes_interval_s": 60,
        "changes_batch": 2500,  # changes a page: one transaction each (sync.changes.apply_changes)
        "keep_generations": 7,
        "max_drop_ratio": 0.05,
        "mirror_individual_number": False,
        "retry_attempts": 5,
        "retry_backoff_s": 30.0,
    },
    "security": {
        "key_file": "/etc/sonae/master.key",
        "key": "",  # base64 master key, normally from SONAE_SECURITY_KEY
        "signing_key_file": "/etc/sonae/signing.key",
        "secret_key_file": "/etc/sonae/session.key",
        "session_idle_minutes": 20,
        "session_absolute_hours": 12,  # a session ends this long after login, however busy
        # Failed logins slow down, never lock: after login_free_failures
        # failures within login_failure_window_minutes, from one source or
        # against one account, each further attempt waits twice as long
        # (1 s, 2 s, 4 s … at most login_max_delay_s). A source that has
        # logged in to an account within login_trusted_source_days is not
        # slowed by other sources' failures on that account, so nobody can
        # keep a supervisor out of their own PC.
        "login_free_failures": 5,
        "login_failure_window_minutes": 15,
        "login_max_delay_s": 300,
        "login_trusted_source_days": 90,
        "view_flag_count": 30,  # residents viewed by one clerk ...
        "view_flag_window_minutes": 10,  # ... within this window is flagged
        # the audit chain's head after every issuance (fallback/anchor.py); put
        # it on another device than SONAE_HOME where the box has one
        "audit_anchor_file": "",  # empty: SONAE_HOME/audit-anchor.json
    },
    "counter": {
        "data_age_warning_hours": 26.0,
        "data_age_hard_limit_hours": 240.0,
        "third_party_during_downtime": False,
        "max_copies": 10,
        "daily_cap_per_requester": 10,
        # certificate type -> maximum data age in hours; older data stops that type
        "kill_switch_hours": {"juminhyo": 0, "kisai": 0, "johyo": 0, "inkan": 0},
        # counter terminals: each has an id printed in the 発行番号, its office
        # and its printer (printer id for the 発行番号, CUPS queue if any)
        "terminals": [
            {"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": ""},
            {"id": "本庁2", "office": "本庁", "printer": "プリンタ002", "queue": ""},
            {"id": "本庁3", "office": "本庁", "printer": "プリンタ003", "queue": ""},
        ],
        "fees_yen": {"juminhyo": 300, "kisai": 300, "johyo": 300, "inkan": 300},
        # the appliance's reserved 発行番号 ranges (never the main system's),
        # first and last, both included. In a pair each box has its own
        # ranges and its own box_id (README "The pair"): ops.db records which
        # box issues from which range on which host, and a box whose range
        # overlaps another's, or a second host under the same box_id, is
        # refused at start — two boxes never hand out the same serial, even
        # both active at once
        "box_id": "1",
        "serial_range": [900001, 999999],
        "drill_serial_range": [800001, 899999],
        # requester types for which a supervisor other than the issuing clerk
        # may approve printing a 支援措置 resident's record; none by default.
        # Only "household" can be listed: agents and third parties are refused
        "support_measure_approvable": [],
        # a serial committed this long ago whose PDF never came (the web
        # server died mid-issuance) is voided by the worker, which looks
        # this often; longer than any render and print wait
        "void_unrendered_after_s": 120,
        # 公用請求 (another public office, 住民基本台帳法第12条の2) pays no fee,
        # as most 手数料条例 exempt it
        "official_fee_exempt": True,
    },
    "printing": {
        "printer": "",  # CUPS queue name; empty: browser printing only
        # the ward's 電子公印 (PNG), printed on every certificate as the
        # standard requires: without it real issuance is refused (never
        # 「公印省略」), /readyz is not ready and the IT dashboard says why.
        # The demo and the tests use printing/specimen-seal.png, marked 見本
        "official_seal_image": "",
        "official_seal_mm": 25.0,  # printed size of the 電子公印 (at most 25 mm square)
        "seal_impression_mm": 15.0,  # printed size of a registered 印影's longer side
        # 認証文 per certificate type ("<type>_household": a whole household);
        # a type left out keeps the standard text shown here
        "certification_texts": dict(DEFAULT_CERTIFICATION_TEXTS),
        # what an item the record leaves blank shows (住所を定めた年月日 of
        # someone who never moved within the ward, an unknown 転入前住所, a
        # 振り仮名 not yet confirmed): the standard prints it blank; some
        # wards print 【空欄】
        "blank_text": "",
        # what the 印鑑登録証明書 prints besides 氏名, 生年月日, 住所 and the
        # 印影, per the ward's 印鑑条例: any of furigana (振り仮名 after the
        # name), former_surname (旧氏), alias (通称), sex (男女の別),
        # seal_number (登録番号), registered_on (登録年月日)
        "inkan_items": list(DEFAULT_INKAN_ITEMS),
        "layout": "renketsu",
        # 地紋 with a hidden 「複写」 under every page, for plain paper; leave
        # off when certificates are printed on 改ざん防止用紙
        "anti_copy_pattern": False,
        "eras": [
            ["明治", "1868-01-25"],
            ["大正", "1912-07-30"],
            ["昭和", "1926-12-25"],
            ["平成", "1989-01-08"],
            ["令和", "2019-05-01"],
        ],
    },
    "probes": {
        "interval_s": 20,
        "timeout_s": 5.0,
        "down_after": 3,
        "up_after": 2,
        "auto_downtime_after_minutes": 0,  # 0: a supervisor always declares
        "batch_deadline": "09:00",
        "synthetic_resident": "",  # resident code read by the synthetic probe
        # a batch still "running" between this time and batch_deadline is
        # normal overnight work; outside that window it is stuck
        "batch_window_start": "20:00",
        "retention_days": 400,  # probe results kept (a year of SLA months)
    },
    "alerts": {
        "webhook_url": "",
        "smtp_host": "",
        "smtp_port": 25,
        "mail_from": "sonae@localhost",
        "mail_to": "",
        "snapshot_max_age_hours": 26.0,
        "feed_stall_minutes": 10,
        "disk_low_percent": 10.0,
        "repeat_minutes": 60,
        "morning_report": "07:30",
        "evaluate_interval_s": 20,
        "webhook_retries": 3,  # attempts after the first; waits 1 s, 2 s, 4 s … between them
        "webhook_timeout_s": 5.0,
        "audit_verify_minutes": 60,  # the full audit-chain check is read-heavy
        "doctor_interval_minutes": 10,  # the worker reruns `sonae doctor`'s checks for /readyz and the dashboard
        # "Authorization: Bearer <token>" opens /metrics beyond what the public
        # notice says and /readyz's reasons and figures; empty: they stay closed
        "metrics_token": "",
    },
    # Space kept back so the counters go on issuing after the disk fills
    # (fallback/disk.py): a file of reserve_mb under SONAE_HOME, deleted when
    # the free space falls below release_below_mb or a write meets a full
    # disk; made again when the disk has room for it twice over. 0: none.
    "disk": {
        "reserve_mb": 256,
        "release_below_mb": 32,
    },
    "sla": {"threshold_percent": 97.5},
    "drills": {
        "yearly_month": 9,  # the ward's yearly downtime drill (Shinagawa: every September)
        # a long-outage drill's synthetic register is dated this many hours
        # before the drill starts, so the age warning and kill switches are practised
        "long_outage_data_age_hours": 72,
        "remind_days_before": 60,  # `sonae drill schedule` starts reminding this many days ahead
    },
    "recovery": {
        "interval_s": 60,  # the worker retries reconciliation this often until upstream answers
    },
    "web": {
        "host": "127.0.0.1",
        "port": 8080,
        "threads": 16,
        # open connections waitress keeps before it stops accepting: far
        # above the counters' needs, so that a LAN host holding half-open
        # connections does not shut them out (waitress's default is 100)
        "connection_limit": 1000,
        # a connection silent this long is closed (waitress's default: 120 s)
        "channel_timeout_s": 30,
        # processes answering requests, each with web.threads threads, all
        # accepting on the one port (fallback.serve): 0 = one per core this
        # process may use; 1 = the server process alone
        "processes": 1,
        # after SIGTERM, a serving process still running this much later
        # (stuck, or stopped) is killed, so that it cannot keep the port;
        # below systemd's TimeoutStopSec (90 s by default)
        "stop_timeout_s": 20.0,
        # processes rendering certificates beside the server (printing.pool):
        # 0 = one per core this process may use; 1 = none, the server's
        # request threads render (a one-core box)
        "render_processes": 0,
        "public_base_url": "http://127.0.0.1:8080",
        # served over HTTPS: true when TLS ends in front of Sonae and every
        # request arrives over it (Secure cookies, HSTS)
        "https": False,
        # the reverse proxy (one address) whose X-Forwarded-For and
        # X-Forwarded-Proto are believed; empty: none
        "trusted_proxy": "",
        "runbooks_dir": "",  # empty: runbooks/ beside the source tree
    },
    # What residents are told during an outage: the ward's policy that the
    # drafted public notice states, and the waiting-time estimate it shows.
    "notice": {
        "convenience_store": True,  # the ward offers コンビニ交付 at all
        # outage components that also stop コンビニ交付 (it reads the same register)
        "convenience_store_needs": ["register", "batch"],
        "moving_one_stop": True,  # point residents to 引越しワンストップサービス (マイナポータル)
        "moves_accepted_for_later": True,  # 転入・転出・転居: accept now, process after recovery; false: come back another day
        "mail_later_at_ward_cost": True,  # what cannot be issued now is mailed later at the ward's cost
        "name_en": "Ota City",  # the ward's name in the English notice
        "contact_section": "戸籍住民課",
        "phone": "",
        "website": "",
        "next_update_minutes": 60,
        "sns_post_chars": 140,
        "refresh_seconds": 60,  # the public page reloads itself this often
        "wait_window_minutes": 30,  # issuance records this recent feed the estimate
        "wait_min_requests": 5,  # fewer requests at an office than this: "no estimate"
    },
    # The 交付申請書 printed pre-filled for a resident (or blank for paper-only work).
    "forms": {
        "template": "",  # a ward's own Jinja/HTML layout; empty: the built-in one
        "title": "住民票の写し・印鑑登録証明書等 交付申請書",
    },
    # The 届出 taken during an outage, written back for the register vendor's
    # bulk import after recovery (fallback/reentry: layout 1).
    "reentry": {
        # the column mapping for the vendor's importer (deploy/reentry-mapping.toml
        # is the default, to copy and edit); empty: the built-in layout 1
        "mapping_file": "",
    },
    # The vendor's planned maintenance windows (fallback/maintenance).
    "maintenance": {
        # the worker prepares a window this long before it starts: pulls and
        # loads the newest export, catches up the feed, checks readiness,
        # drafts the declaration and the notice, and tells IT
        "prepare_hours_before": 12.0,
        "check_interval_s": 300,  # how often the worker looks for a window to prepare
    },
}


class ConfigError(SonaeError):
    """The configuration file or an override cannot be used (the message is
    for IT, in English, as the file's keys are)."""

    status = 500
    code = "configuration"
    title = "設定に誤りがあります"


def _convert(raw: str, default: Any, name: str) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (list, dict)):
            return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {type(default).__name__}") from exc
    return raw


def _nearest(name: str, known, *, prefix: str = "") -> str:
    """'; did you mean X?' for a misspelt name, else the list of known names."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if match:
        return f"; did you mean {prefix}{match[0].upper() if prefix else match[0]}?"
    return f"; known: {', '.join(known)}"


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "a table"}


def _acting_mayors_problem(entries: list) -> str | None:
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) != {"from", "to", "name"}:
            return f"entry {number} must be a table with from, to and name"
        if not isinstance(entry["name"], str) or not entry["name"].strip():
            return f"entry {number}: name must be the acting officer's name as printed"
        try:
            start, end = (dt.date.fromisoformat(str(entry[key])) for key in ("from", "to"))
        except ValueError:
            return f"entry {number}: from and to must be dates (YYYY-MM-DD)"
        if end < start:
            return f"entry {number}: to ({end}) is before from ({start})"
    return None


def _serial_range_problem(bounds: list) -> str | None:
    if len(bounds) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return f"must be [first, last], two whole numbers, not {bounds!r}"
    first, last = bounds
    if not 1 <= first <= last <= 2**63 - 1:
        return f"[{first}, {last}]: first must be at least 1 and at most last"
    return None


def _box_id_problem(box_id: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", box_id):
        return f"{box_id!r}: 1 to 32 letters, digits, '-' or '_' (e.g. \"1\" and \"2\" for a pair)"
    return None


def _process_count_problem(one: str, maximum: int):
    """The check of a number of processes: 0 (one per usable core), 1
    (`one`, in words) or up to `maximum`."""
    def problem(processes: int) -> str | None:
        if not 0 <= processes <= maximum:
            return f"{processes}: 0 (one process per usable core), 1 ({one}) or up to {maximum} processes"
        return None

    return problem


MAX_SERVING_PROCESSES = 64  # each holds ≈ 150 MB resident (the app, its connections)
MAX_RENDER_PROCESSES = 64  # each holds ≈ 120 MB resident (WeasyPrint, fonts), ≈ 65 MB of it its own
_serving_processes_problem = _process_count_problem("the server process alone", MAX_SERVING_PROCESSES)
_render_processes_problem = _process_count_problem("render in the server process", MAX_RENDER_PROCESSES)


def _stop_timeout_problem(seconds: float) -> str | None:
    if not 0 < seconds <= 600:
        return f"{seconds:g}: a number of seconds above 0 and at most 600 (e.g. 20), below systemd's TimeoutStopSec"
    return None


def _connection_limit_problem(limit: int) -> str | None:
    if not 10 <= limit <= 100_000:
        return (f"{limit}: from 10 to 100000 open connections for the box (e.g. 1000): the counters' browsers keep "
                "several each, and every serving process needs its share")
    return None


def _port_problem(port: int) -> str | None:
    """A TCP port: outside 1–65535 the socket layer wraps it (70000 listens
    on 4464) or refuses it as a bad service name; 0 would be a random port
    each start, where the counters and the health check cannot find it."""
    if not 1 <= port <= 65535:
        return f"{port} is not a port: set a fixed port from 1 to 65535 (1024 or above unless Sonae runs as root; e.g. 8080)"
    return None


def _inkan_items_problem(items: list) -> str | None:
    unknown = [item for item in items if item not in INKAN_ITEMS]
    return f"unknown item(s) {', '.join(map(str, unknown))}; known: {', '.join(INKAN_ITEMS)}" if unknown else None


# Keys whose values need more than a type check.
_VALUE_CHECKS = {("municipality", "acting_mayors"): _acting_mayors_problem, ("printing", "inkan_items"): _inkan_items_problem,
                 ("counter", "serial_range"): _serial_range_problem, ("counter", "drill_serial_range"): _serial_range_problem,
                 ("counter", "box_id"): _box_id_problem, ("web", "render_processes"): _render_processes_problem,
                 ("web", "processes"): _serving_processes_problem, ("web", "stop_timeout_s"): _stop_timeout_problem,
                 ("web", "port"): _port_problem, ("web", "connection_limit"): _connection_limit_problem}


def _checked(section: str, key: str, value: Any, *, where: str) -> Any:
    """A value of the right type for a known key: a typo or a wrong type
    would otherwise leave a setting silently at its default (a kill switch
    that never fires)."""
    if key not in DEFAULTS[section]:
        raise ConfigError(f"{where}: [{section}] has no key {key!r}{_nearest(key, DEFAULTS[section])}")
    default = DEFAULTS[section][key]
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {section}.{key} must be {_TYPE_NAMES.get(expected, expected.__name__)}, not {value!r}")
    if expected is dict and default:
        unknown = [k for k in value if k not in default]
        if unknown:
            raise ConfigError(f"{where}: {section}.{key} has no entry {unknown[0]!r}{_nearest(unknown[0], default)}")
    check = _VALUE_CHECKS.get((section, key))
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{where}: {section}.{key}: {problem}")
    return value


def _frozen(value: Any) -> Any:
    """A read-only copy: tables become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """A plain copy of a frozen value: dicts and lists again (JSON, TOML)."""
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


class Config:
    """The merged configuration, read-only once loaded:
    `config["sync"]["keep_generations"]`. Sections and the tables and lists
    in them are frozen (a mapping proxy, tuples), so no code can change a
    setting under the code that reads it; a different configuration is a
    new Config (load_config with another file or environment)."""

    __slots__ = ("_values", "home", "source")

    def __init__(self, values: Mapping[str, Mapping[str, Any]], home: Path, source: Path | None):
        object.__setattr__(self, "_values", _frozen(values))
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "source", source)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the configuration is read-only (tried to set {name})")

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self._values[section]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """A plain, mutable copy (dicts and lists), for JSON or a TOML file."""
        return _thawed(self._values)

    # Paths under SONAE_HOME; each area owns one.
    @property
    def snapshot_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def drill_snapshot_dir(self) -> Path:
        """The drills' synthetic registers, one store per drill: never
        under snapshot_dir, so nothing that reads the real register sees them."""
        return self.home / "drill-snapshots"

    @property
    def ops_db_path(self) -> Path:
        return self.home / "ops.db"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the configuration file is looked for: SONAE_CONFIG, or the default."""
    env = os.environ if env is None else env
    return Path(env.get("SONAE_CONFIG") or DEFAULT_CONFIG_PATH)


def _config_text(source: Path) -> str | None:
    """The file's text; None when there is no file. One the appliance may
    not read is refused naming its owner and mode (a root-owned 0600 copy
    of the example, or a folder on the way it may not enter). A UTF-8 file
    may start with a byte-order mark (Windows editors write one); another
    encoding (Shift_JIS, UTF-16 from a Japanese Windows) is refused as
    such, not as the TOML error its first odd byte would give."""
    try:
        text = source.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(permission_message(source)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at position {exc.start}: Shift_JIS or UTF-16?): "
                          "save it as UTF-8") from None
    if "\x00" in text:  # UTF-16 without its byte-order mark decodes as UTF-8, NULs and all
        raise ConfigError(f"{source} is not UTF-8 (it holds NUL bytes: UTF-16?): save it as UTF-8")
    return text


def parse_config_file(source: Path) -> dict | None:
    """The file's TOML as written (None when there is no file), before any
    key is checked."""
    text = _config_text(source)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    values = copy.deepcopy(DEFAULTS)
    source = Path(path) if path is not None else config_path(env)
    loaded = parse_config_file(source)
    if loaded is not None:
        for section, items in loaded.items():
            if section not in values or not isinstance(items, dict):
                raise ConfigError(f"{source}: unknown section [{section}]{_nearest(section, values)}")
            for key, value in items.items():
                values[section][key] = _checked(section, key, value, where=str(source))
    elif path is not None:
        raise ConfigError(f"configuration file {source} does not exist")
    else:
        source = None
    for name, raw in env.items():
        if not name.startswith("SONAE_") or name in ("SONAE_CONFIG", "SONAE_HOME"):
            continue
        rest = name[len("SONAE_"):].lower()
        for section in values:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                if key not in DEFAULTS[section]:
                    raise ConfigError(f"environment variable {name}: [{section}] has no key {key!r}"
                                      f"{_nearest(key, DEFAULTS[section], prefix=f'SONAE_{section.upper()}_')}")
                values[section][key] = _checked(section, key, _convert(raw, DEFAULTS[section][key], name), where=name)
                break
    home = Path(env.get("SONAE_HOME") or DEFAULT_HOME)
    return Config(values, home, source)


def render_toml(values: Mapping[str, Mapping[str, Any]]) -> str:
    """Write a configuration as TOML (used by `sonae demo` and tests to
    produce a real file rather than relying on environment variables)."""
    lines: list[str] = []
    for section, items in values.items():
        lines.append(f"[{section}]")
        for key, value in items.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {value!r} as TOML")
