"""Helpers shared by the CLI modules: the loaded config (checked at the
start of a service), the services' log lines, and the acting operator's
name for the audit trail."""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os

import click

from fallback.access import state_problem
from fallback.config import Config, load_config
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


def config() -> Config:
    return load_config()


def service_config() -> Config:
    """The configuration of `sonae serve` and `sonae worker`: refused at
    start, naming the path, its owner and mode, when the state directory
    cannot be written — not at the first request or job."""
    loaded = load_config()
    if problem := state_problem(loaded.home):
        raise click.ClickException(problem)
    return loaded


def operator(actor: str | None) -> str:
    """Who is running a command: --actor if given, else the OS user, prefixed
    so the audit log tells CLI actions from web actions."""
    if actor:
        return actor
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return f"cli:{name}"
