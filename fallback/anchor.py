"""The audit chain's anchor: its head, kept outside the operational database.

A hash chain shows an altered or reordered entry, but not the newest
entries going missing: a database that lost its WAL, or was restored from a
copy, holds a shorter chain that still verifies — and its serial counters
have gone back, so serials already handed out would be issued again to
other residents. Transparency logs solve this with signed checkpoints kept
elsewhere; this is that checkpoint. After every issuance the chain head
(how many entries, the last hash) and the highest serial each box of a
pair allocated in each scope are written, with an HMAC under a key of
their own, to a separate file that is
fsync'ed and atomically replaced. `audit verify` checks the database
against it, issuance never hands out a serial at or below one it names, and
alerts and the morning report carry its figures to IT's mailbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from fallback import audit
from fallback.config import Config
from fallback.errors import SonaeError
from fallback.keys import master_key
from fallback.ops import BOX_BEFORE_PAIRS, now_iso
from sync.crypto import derive_key

try:
    import fcntl
except ImportError:  # pragma: no cover - the appliance runs on Linux
    fcntl = None


class AnchorError(SonaeError):
    """The anchor file cannot be trusted or read; the message says what to do."""

    status = 503
    code = "audit_anchor"
    title = "監査記録の控えを確認できません"


@dataclass(frozen=True)
class Anchor:
    entries: int  # audit entries 1..entries existed when it was written
    head: str  # the hash of entry `entries` (the chain's GENESIS when 0)
    serials: dict[str, int]  # "scope:box_id" -> the highest serial that box allocated
    at: str

    def line(self) -> str:
        """One line for an alert or a report: enough to compare by eye."""
        serials = ", ".join(f"{key} {serial}" for key, serial in sorted(self.serials.items())) or "なし"
        return f"監査ログ {self.entries}件 (末尾 {self.head[:16]}…)、最大の発行番号 {serials}、{self.at[:19]} 時点"


def anchor_path(config: Config) -> Path:
    configured = config["security"]["audit_anchor_file"]
    return Path(configured) if configured else config.home / "audit-anchor.json"


def _key(config: Config, master: bytes | None = None) -> bytes:
    return derive_key(master or master_key(config), "audit-anchor")


def _mac(key: bytes, anchor: Anchor) -> str:
    body = json.dumps(asdict(anchor), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def serial_key(scope: str, box_id: str) -> str:
    """Each box of a pair allocates from its own range, so each has its own
    highest serial per scope."""
    return f"{scope}:{box_id}"


def highest_serials(conn) -> dict[str, int]:
    """The highest serial each box has allocated, per scope."""
    return {serial_key(scope, box_id): next_serial - 1 for scope, box_id, next_serial in conn.execute(
        "SELECT scope, box_id, next_serial FROM serial_counters WHERE next_serial > first_serial")}


def head_of(conn, entries: int | None = None) -> Anchor:
    """The database's chain head at entry `entries` (default: its newest)
    and its highest serials, now."""
    if entries is None:
        row = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    else:
        row = conn.execute("SELECT id, hash FROM audit WHERE id = ?", (entries,)).fetchone()
    entries, head = (row[0], row[1]) if row else (0, audit.GENESIS)
    return Anchor(entries, head, highest_serials(conn), now_iso())


def read_anchor(config: Config) -> Anchor | None:
    """The latest anchor, or None before the first issuance."""
    path = anchor_path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"the audit anchor {path} cannot be read ({exc.strerror})") from exc
    try:
        stored = json.loads(text)
        anchor = Anchor(int(stored["entries"]), str(stored["head"]), {str(k): int(v) for k, v in stored["serials"].items()},
                        str(stored["at"]))
        mac = str(stored["mac"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnchorError(f"the audit anchor {path} is damaged; compare it with the last alert or morning report "
                          "(runbooks/08-snapshot-restore.md)") from exc
    if not hmac.compare_digest(mac, _mac(_key(config), anchor)):
        raise AnchorError(f"the audit anchor {path} was not written by this appliance's key (altered or replaced)")
    # An anchor from before pairs names scopes alone: their serials were
    # those of the box that ran alone, box 1 (fallback.ops, migration 10).
    serials = {key if ":" in key else serial_key(key, BOX_BEFORE_PAIRS): value for key, value in anchor.serials.items()}
    return Anchor(anchor.entries, anchor.head, serials, anchor.at)


_write_lock = threading.Lock()


def write_anchor(config: Config, conn, durable_entries: int) -> Anchor:
    """Record the database's head after an issuance committed, up to
    `durable_entries`: that issuance's own audit entry, which its commit
    put on the disk with every entry before it. A newer entry may be a
    search's, committed without waiting for the disk (ops.Transaction):
    anchored, a power cut could leave a database that lacks it — an
    intact copy judged as one that lost entries. The anchor is read and
    written under the lock and never moves back, however threads and the
    worker process interleave. An anchor the database no longer matches is
    not overwritten silently: it is kept beside the new one and the
    mismatch becomes an audit entry, so the loss stays on record."""
    path = anchor_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key(config)
    with _write_lock, open(path.with_name(path.name + ".lock"), "a") as lock:
        if fcntl:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            held = read_anchor(config)
            lost = problems(conn, held)
        except AnchorError as exc:
            held, lost = None, [str(exc)]
        if lost:
            path.replace(path.with_name(f"{path.name}.superseded-{now_iso()[:19].replace(':', '')}"))
            audit.record(conn, "system", "audit.anchor_superseded", None, {"problems": lost})
        anchor = head_of(conn, durable_entries)
        if held is not None:
            merged = {s: max(anchor.serials.get(s, 0), held.serials.get(s, 0)) for s in {*anchor.serials, *held.serials}}
            newest = held if not lost and held.entries > anchor.entries else anchor
            anchor = Anchor(newest.entries, newest.head, merged, anchor.at)
        _store(path, key, anchor)
    return anchor


def _store(path: Path, key: bytes, anchor: Anchor) -> None:
    """Atomically replace the anchor file, on the disk before returning."""
    text = json.dumps({**asdict(anchor), "mac": _mac(key, anchor)}, ensure_ascii=False, sort_keys=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def rekey_anchor(config: Config, new_master: bytes) -> None:
    """During `sonae key rotate` (services stopped): the same anchor, its
    HMAC under the new master key. One the configured key does not verify
    is left as it is: already rekeyed (a rotation run again), or for
    `audit verify` to report."""
    try:
        anchor = read_anchor(config)
    except AnchorError:
        return
    if anchor is not None:
        _store(anchor_path(config), _key(config, new_master), anchor)


def serial_floor(config: Config, scope: str) -> int:
    """This box's serials at or below this were handed out at some point,
    whatever the database now says. A damaged anchor gives no floor here —
    the counter keeps working on the database's own counters — and is
    reported by the next `write_anchor` (an audit entry) and by `audit verify`."""
    try:
        anchor = read_anchor(config)
    except AnchorError:
        return 0
    return anchor.serials.get(serial_key(scope, config["counter"]["box_id"]), 0) if anchor else 0


def problems(conn, anchor: Anchor | None) -> list[str]:
    """What the database lacks compared with the anchor (empty: it holds
    at least everything the anchor saw)."""
    if anchor is None:
        return []
    found = []
    held = conn.execute("SELECT hash FROM audit WHERE id = ?", (anchor.entries,)).fetchone() if anchor.entries else ("",)
    newest = conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]
    if newest < anchor.entries:
        found.append(
            f"the operational database has {newest} audit entries but {anchor.entries} were anchored at {anchor.at[:19]}: "
            f"its newest {anchor.entries - newest} entries are lost (a lost WAL or a restore from an older copy)"
        )
    elif anchor.entries and held[0] != anchor.head:
        found.append(f"audit entry {anchor.entries} differs from the one anchored at {anchor.at[:19]}: entries were lost "
                     "and others written since (a restore from an older copy), or the chain was rewritten")
    held_serials = highest_serials(conn)
    for key, highest in sorted(anchor.serials.items()):
        scope, box_id = key.split(":", 1)
        known = held_serials.get(key, 0)
        if known < highest:
            found.append(f"serials of scope {scope} (box {box_id}) up to {highest} were handed out but the database knows only up to "
                         f"{known}; they will not be issued again")
    return found
