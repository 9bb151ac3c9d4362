"""Helpers shared by the CLI modules: the loaded config (checked at the
start of a service), the lock the services hold while they run, the
services' log lines, and the acting operator's name for the audit trail."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import click

from fallback.access import running_as, state_problem
from fallback.config import Config, config_path, load_config
from fallback.keys import key_status, signing_key_status
from fallback.ops import TOKYO


class JstFormatter(logging.Formatter):
    """Log lines stamped in Japan time with the offset, as every screen
    shows time (2026-12-06T10:15:02.123+09:00), whatever the host's zone."""

    def formatTime(self, record, datefmt=None) -> str:  # noqa: N802 (logging's name)
        return dt.datetime.fromtimestamp(record.created, TOKYO).isoformat(timespec="milliseconds")


def configure_logging() -> None:
    """The log format of `sonae serve` and `sonae worker` (standard error)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JstFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Their INFO lines say only that a job ran as planned, list glyph names
    # or a render's seven steps: thousands of lines a day that hide the
    # appliance's own.
    for chatty in ("apscheduler", "fontTools", "weasyprint"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def config() -> Config:
    return load_config()


def service_config() -> Config:
    """The configuration of `sonae serve` and `sonae worker`: refused at
    start, in one line, when the state directory cannot be written or a key
    cannot be used (naming the path, its owner and mode) — not at the first
    request or job, nor at the first certificate of an outage."""
    loaded = load_config()
    if problem := state_problem(loaded.home):
        raise click.ClickException(problem)
    for problem in (key_status(loaded), signing_key_status(loaded)):
        if problem:
            raise click.ClickException(problem)
    return loaded


def warn_without_config_file(config: Config) -> None:
    """A service started with no configuration file runs on the defaults
    (the example ward, loopback) and SONAE_* variables alone: legitimate for
    the tests, a mistake on a ward's box (a wrong SONAE_ETC_DIR, a renamed
    file), so it is said once in the log."""
    if config.source is None:
        logging.getLogger("sonae").warning(
            "no configuration file at %s: running on the defaults and SONAE_* variables only; "
            "write it from deploy/sonae.toml.example (or point SONAE_CONFIG at it)", config_path())


def listen_problem(exc: OSError, host: str, port: int, *, host_from: str = "web.host", port_from: str = "web.port") -> str:
    """Why the counter app cannot listen on host:port, in one line naming
    where each came from (the setting, or `sonae serve`'s --host / --port)
    and what to do (`sonae serve`, `sonae doctor`)."""
    def change(source: str) -> str:
        return f"set {source} to" if source.startswith("web.") else f"give {source}"

    if isinstance(exc, socket.gaierror):
        return (f"{host_from} {host!r} is not an address or a name this host resolves ({exc.strerror}): "
                f"{change(host_from)} one of this host's addresses, or 0.0.0.0 for all")
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} ({port_from}) on {host} is already in use by another program (another `sonae serve`?): "
                f"stop that program, or {change(port_from)} a free port")
    if exc.errno == errno.EACCES:
        return (f"{running_as()} may not listen on port {port} ({port_from}): ports below 1024 need root; "
                "use a port of 1024 or above, with a reverse proxy in front for 80 or 443 (README \"Serving over HTTPS\")")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{host} ({host_from}) is not an address of this host: "
                f"{change(host_from)} one of its addresses, or 0.0.0.0 for all")
    return f"cannot listen on {host}:{port} ({host_from}, {port_from}): {exc.strerror or exc}"


# `sonae serve` and `sonae worker` hold this shared for their lifetime;
# `sonae key rotate` takes it exclusively: a service that kept its
# databases open under the old key across a rotation would write with
# that key into files now under the new one (and the anchor with the old).
SERVICES_LOCK = "services.lock"


def _lock_holders(path: Path) -> list[int]:
    """The PIDs /proc/locks names as holding a lock on `path` (Linux; empty
    when it cannot tell)."""
    try:
        stat, lines = path.stat(), Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    return sorted({int(fields[4]) for fields in map(str.split, lines)
                   if len(fields) > 5 and fields[5] == inode and fields[4].isdigit()})


@contextlib.contextmanager
def _services_lock(config: Config, mode: int) -> Iterator[bool]:
    """Yields whether the lock under SONAE_HOME was taken in `mode` (never waits)."""
    if not config.home.is_dir():
        raise click.ClickException(f"{config.home} (SONAE_HOME) is not a folder; create it for the user the services run as, "
                                   "or point SONAE_HOME at the appliance's folder")
    fd = os.open(config.home / SERVICES_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def service_running(config: Config) -> Iterator[None]:
    """Held by `sonae serve` and `sonae worker` from start to stop; refused
    in one line while a key rotation runs."""
    with _services_lock(config, fcntl.LOCK_SH) as taken:
        if not taken:
            raise click.ClickException("`sonae key rotate` is running; start the service again once it has finished "
                                       "and security.key_file names the new key (runbooks/07-kagi-kanri.md)")
        yield


@contextlib.contextmanager
def services_stopped(config: Config) -> Iterator[None]:
    """Held by `sonae key rotate`: refused in one line, naming the running
    services' PIDs, while `sonae serve` or `sonae worker` runs."""
    with _services_lock(config, fcntl.LOCK_EX) as taken:
        if not taken:
            path = config.home / SERVICES_LOCK
            pids = ", ".join(map(str, _lock_holders(path))) or "unknown"
            raise click.ClickException(f"`sonae serve` or `sonae worker` is running (pid {pids}, holding {path}); "
                                       "stop both services first (runbooks/07-kagi-kanri.md step 8), then rerun")
        yield


WORKER_LOCK = "worker.lock"


@contextlib.contextmanager
def the_only_worker(config: Config) -> Iterator[None]:
    """Held by `sonae worker` from start to stop: a second one on the same
    SONAE_HOME is refused in one line (it would probe, alert and mail the
    morning report twice)."""
    path = config.home / WORKER_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pids = ", ".join(map(str, _lock_holders(path))) or "unknown"
            raise click.ClickException(f"another `sonae worker` is running on {config.home} (pid {pids}, holding {path}); "
                                       "a box runs one worker — leave that one running, or stop it first") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def operator(actor: str | None) -> str:
    """Who is running a command: --actor if given, else the OS user, prefixed
    so the audit log tells CLI actions from web actions."""
    if actor:
        return actor
    # The account the process runs as, not $LOGNAME or $USER (which
    # getpass trusts): anyone can set those to a 係長's name, or a tab.
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = str(os.getuid())
    return f"cli:{name}"
