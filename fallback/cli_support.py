"""Helpers shared by the CLI modules: the loaded config and the acting
operator's name for the audit trail."""

from __future__ import annotations

import getpass
import os

from fallback.config import Config, load_config


def config() -> Config:
    return load_config()


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
