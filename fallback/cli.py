"""The `sonae` command.

Subcommands are grouped by area and loaded lazily from "module:attribute"
strings, so `sonae --help` stays fast and no area imports another's CLI.
Groups from other distributions (cloudsim) arrive through the
`sonae.commands` entry-point group: nothing imports cloudsim.

Every command exits non-zero with a one-line reason on stderr when it fails;
expected failures raise `click.ClickException` (or one of the domain errors
listed in EXPECTED_ERRORS, which are turned into one) — never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

import click

# name -> "module:attribute"; each module is the CLI face of one area.
COMMANDS = {
    "serve": "fallback.serve:serve",
    "worker": "fallback.worker_command:worker",
    "sync": "fallback.mirror.sync_commands:sync_group",
    "snapshot": "fallback.mirror.snapshot_commands:snapshot_group",
    "key": "fallback.key_commands:key_group",
    "user": "fallback.staff.commands:user_group",
    "audit": "fallback.staff.audit_commands:audit_group",
    "verify": "fallback.verification.commands:verify",
    "certificate": "fallback.counter.commands:certificate_group",
    "mode": "fallback.modes.commands:mode_group",
    "drill": "fallback.drills.commands:drill_group",
    "demo": "fallback.demo.commands:demo_group",
}


def _expected_errors() -> tuple[type[BaseException], ...]:
    from fallback.config import ConfigError
    from sync.contract import ContractError
    from sync.crypto import KeyFileError, WrongKeyError
    from sync.errors import SyncError

    return (ConfigError, KeyFileError, WrongKeyError, ContractError, SyncError)


class LazyGroup(click.Group):
    def _targets(self) -> dict[str, str]:
        targets = dict(COMMANDS)
        for ep in entry_points(group="sonae.commands"):
            targets.setdefault(ep.name, ep.value)
        return targets

    def list_commands(self, ctx):
        return sorted(self._targets())

    def get_command(self, ctx, name):
        target = self._targets().get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx):
        from sync.crypto import DatabaseError

        try:
            return super().invoke(ctx)
        except _expected_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        except DatabaseError as exc:
            # The key opened the file (WrongKeyError otherwise), so it is damaged.
            raise click.ClickException(
                f"a database file is damaged ({exc}); run `sonae snapshot verify`, then `sonae snapshot rollback N` "
                "to a good generation (runbooks/08-snapshot-restore.md)"
            ) from exc


@click.group(cls=LazyGroup)
@click.version_option(package_name="sonae")
def main():
    """Sonae (備え): keeps the counters issuing certificates when the cloud
    resident register is down."""
    # Everything written under SONAE_HOME (the register, the audit,
    # exports) is for the appliance's own user only: files 0600, folders 0700.
    os.umask(0o077)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
