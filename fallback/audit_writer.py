"""Look-up audit entries (searches, record views) written by a process of
their own.

Every look-up appends an audit entry under ops.db's writer lock, which the
serving processes share (fallback.ops.Transaction). Written by the request's
own thread, the lock's holder takes the interpreter lock again for every
statement, behind its process's other threads, and the other serving
process waits meanwhile: on a 2-core box 8 busy counters' searches stalled
together for 100-300 ms at a time (bench/README.md, the counter search at
4M, twelfth session). `sonae serve` therefore starts one writer process
(`sonae serve --lookup-writer`, single-threaded, so its turn under the lock
is never held up), and the threads of its serving processes hand it their
look-up entries over a Unix socket in SONAE_HOME, each thread on its own
connection. It writes what arrives together in one transaction and answers
each entry's id once committed: a look-up still returns only after its
entry is in the database, as before.

Anything the writer cannot do — not started (the tests' apps, the CLI),
stopped, its transaction failed — the thread does itself, as it always did
(`append` answers None), so an entry is never dropped; one the writer
committed but could not confirm (it died in between) is then written twice,
which over-states a look-up and hides none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fallback.ops import open_ops

log = logging.getLogger(__name__)

SOCKET_NAME = "lookup-audit.sock"
RETRY_AFTER_S = 30.0  # after the writer failed a thread, it writes itself this long before trying again
REPLY_TIMEOUT_S = 2.0  # the writer's turn under the lock takes milliseconds; longer, the thread writes itself
SEND_TIMEOUT_S = 0.5  # a client that does not read its answers is dropped, not waited on
HEARTBEAT_S = 1.0  # how often the writer's loop tells `sonae serve` it runs (serve.LookupWriter)
MAX_LINE_BYTES = 64 * 1024  # an entry is a query and up to 50 resident codes: a few KiB
LOOKUP_ACTIONS = ("search", "view", "session.elsewhere")  # what the serving threads write without waiting for the disk

_socket_path: Path | None = None
_generation = 0  # which use() a thread's channel and back-off belong to
_local = threading.local()


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


def use(path: Path | None) -> None:
    """Hand this process's look-up entries to the writer listening at `path` (None: write them here)."""
    global _socket_path, _generation
    _socket_path, _generation = path, _generation + 1


def append(actor: str, action: str, target: str | None, detail: str, drill: int) -> int | None:
    """The id the writer gave the entry once committed, or None: write it yourself."""
    if _socket_path is None:
        return None
    if getattr(_local, "generation", None) != _generation:  # a channel to an earlier writer is no use
        _forget_channel()
        _local.generation, _local.retry_at = _generation, 0.0
    if time.monotonic() < _local.retry_at:
        return None
    try:
        channel = getattr(_local, "channel", None)
        if channel is None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(REPLY_TIMEOUT_S)
            connection.connect(str(_socket_path))
            channel = _local.channel = connection.makefile("rwb")
        channel.write(json.dumps([actor, action, target, detail, drill], ensure_ascii=False).encode() + b"\n")
        channel.flush()
        answer = channel.readline()
        return int(answer)  # "error" or "" (the writer gone): ValueError
    except (OSError, ValueError):
        _forget_channel()
        _local.retry_at = time.monotonic() + RETRY_AFTER_S
        return None


def _entry(sent) -> tuple:
    """A look-up entry as a serving thread sent it, or ValueError: the
    writer takes nothing else (no other action, no detail that is not a
    JSON object, which would stop `sonae audit export` for good)."""
    if not (isinstance(sent, list) and len(sent) == 5 and isinstance(sent[0], str) and sent[1] in LOOKUP_ACTIONS
            and (sent[2] is None or isinstance(sent[2], str)) and isinstance(sent[3], str) and sent[4] in (0, 1)):
        raise ValueError("not a look-up entry")
    if not isinstance(json.loads(sent[3]), dict):
        raise ValueError("a detail that is not a JSON object")
    return tuple(sent)


def _gone(client: socket.socket) -> bool:
    """Whether a client closed its end (its thread gave up waiting and
    wrote its entries itself): what it sent before is not written again."""
    try:
        return client.recv(1, socket.MSG_PEEK) == b""  # the socket does not block: nothing waiting is BlockingIOError
    except BlockingIOError:
        return False
    except OSError:
        return True


def _forget_channel() -> None:
    channel = getattr(_local, "channel", None)
    _local.channel = None
    if channel is not None:
        try:
            channel.close()
        except OSError:
            pass


def run(config, parent_pid: int, record_lookups: Callable[[object, list[tuple]], list[int]], *, heartbeat_fd: int | None = None) -> None:
    """The writer process: until its parent ends (or SIGTERM), commit what
    the serving processes' threads send, each round of arrivals in one
    transaction (`record_lookups`: fallback.audit's), and answer each
    entry's id (or "error")."""

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server decides
    # ops.db opened before the socket is there: a thread that finds it gets
    # its answer within REPLY_TIMEOUT_S, also while a busy box opens ops.db.
    conn = open_ops(config)
    path = socket_path(config.home)
    path.unlink(missing_ok=True)  # a dead writer's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}
    try:
        beat_at = 0.0
        while not stop.is_set() and os.getppid() == parent_pid:
            if heartbeat_fd is not None and time.monotonic() - beat_at >= HEARTBEAT_S:
                beat_at = time.monotonic()
                with contextlib.suppress(OSError):  # a full pipe: the server has heard enough
                    os.write(heartbeat_fd, b".")
            arrived: list[tuple[socket.socket, tuple]] = []
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    client, _ = listener.accept()
                    client.setblocking(False)
                    selector.register(client, selectors.EVENT_READ)
                    pending[client] = b""
                    continue
                client = key.fileobj
                try:
                    data = client.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    _drop(selector, pending, client)
                    continue
                lines = (pending[client] + data).split(b"\n")
                pending[client] = lines.pop()
                try:
                    if len(pending[client]) > MAX_LINE_BYTES:
                        raise ValueError("a line longer than any entry")
                    entries = [_entry(json.loads(line)) for line in lines if line]
                except ValueError:  # not one of ours: no answer, the connection closed
                    log.error("look-up audit writer: something that is not a look-up entry; its connection is closed")
                    _drop(selector, pending, client)
                    continue
                if not _gone(client):
                    arrived += [(client, entry) for entry in entries]
            if not arrived:
                continue
            try:
                answers = [str(entry_id).encode() for entry_id in record_lookups(conn, [entry for _, entry in arrived])]
            except Exception as exc:  # the threads write themselves and meet the fault (a full disk) as the request's own
                log.error("look-up audit writer: %s; the serving threads write their entries themselves", exc)
                answers = [b"error"] * len(arrived)
            for (client, _), answer in zip(arrived, answers, strict=True):
                if client.fileno() < 0:
                    continue
                try:
                    client.settimeout(SEND_TIMEOUT_S)
                    client.sendall(answer + b"\n")
                    client.setblocking(False)
                except OSError:  # gone (it wrote the entry itself), or not reading its answers: dropped
                    _drop(selector, pending, client)
    finally:
        path.unlink(missing_ok=True)
        conn.close()


def _drop(selector, pending: dict, client: socket.socket) -> None:
    if client.fileno() >= 0:
        selector.unregister(client)
        client.close()
    pending.pop(client, None)
