"""Helpers shared by the CLI modules: the loaded config (checked at the
start of a service) and the acting operator's name for the audit trail."""

from __future__ import annotations

import getpass
import os

import click

from fallback.access import state_problem
from fallback.config import Config, load_config


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
