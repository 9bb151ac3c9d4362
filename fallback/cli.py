"""The `sonae` command.

Subcommands are grouped by area and loaded lazily from "module:attribute"
strings, so `sonae --help` stays fast and no area imports another's CLI.
Groups from other distributions (cloudsim) arrive through the
`sonae.commands` entry-point group: nothing imports cloudsim.

Every command exits non-zero with a one-line reason on stderr when it fails;
expected failures raise `click.ClickException`, a refusal of the appliance's
family (fallback.errors.SonaeError, whose `reason` is the line) or one of
the sync library's errors — never a traceback. A file the appliance may not
read or write is named with its owner and mode (fallback.access), and a
full or failing disk as such (fallback.errors.storage_fault), never either
reported as damage or a wrong key.

A production install has no cloudsim (the image, `make install`): `sonae
cloudsim` and `sonae demo` then say that they come with the `demo` extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

# name -> "module:attribute"; each module is the CLI face of one area.
COMMANDS = {
    "serve": "fallback.serve:serve",
    "worker": "fallback.worker_command:worker",
    "sync": "fallback.mirror.sync_commands:sync_group",
    "snapshot": "fallback.mirror.snapshot_commands:snapshot_group",
    "key": "fallback.key_commands:key_group",
    "user": "fallback.staff.commands:user_group",
    "terminal": "fallback.staff.commands:terminal_group",
    "audit": "fallback.staff.audit_commands:audit_group",
    "ops": "fallback.ops_commands:ops_group",
    "verify": "fallback.verification.commands:verify",
    "certificate": "fallback.counter.commands:certificate_group",
    "mode": "fallback.modes.commands:mode_group",
    "drill": "fallback.drills.commands:drill_group",
    "demo": "fallback.demo.commands:demo_group",
    "doctor": "fallback.monitoring.commands:doctor",
    "health": "fallback.monitoring.commands:health",
}
# Commands that need cloudsim, which only a demo or test install has.
DEMO_COMMANDS = ("cloudsim", "demo")
DEMO_MISSING = ("`sonae {name}` needs cloudsim, which a production install leaves out: it comes with the `demo` extra "
                "of a source checkout (`make demo`, or pip install -e ./cloudsim -e '.[demo]')")


def demo_installed() -> bool:
    return importlib.util.find_spec("cloudsim") is not None


def _needs_demo(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help="Not installed here: comes with the `demo` extra.", add_help_option=False)
    def refuse():
        raise click.ClickException(DEMO_MISSING.format(name=name))

    return refuse


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors of the sync library (which cannot know fallback's family)
    whose message is already the one line to show."""
    from sync.contract import ContractError
    from sync.crypto import KeyFileError
    from sync.errors import SyncError

    return (KeyFileError, ContractError, SyncError)


class LazyGroup(click.Group):
    def _targets(self) -> dict[str, str]:
        targets = dict(COMMANDS)
        for ep in entry_points(group="sonae.commands"):
            targets.setdefault(ep.name, ep.value)
        return targets

    def list_commands(self, ctx):
        return sorted(set(self._targets()) | set(DEMO_COMMANDS))

    def get_command(self, ctx, name):
        if name in DEMO_COMMANDS and not demo_installed():
            return _needs_demo(name)
        target = self._targets().get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx):
        """Every expected failure of every command becomes its one line here."""
        from fallback.errors import SonaeError
        from sync.crypto import DatabaseError, WrongKeyError

        try:
            return super().invoke(ctx)
        except SonaeError as exc:
            raise click.ClickException(exc.reason) from exc
        except (WrongKeyError, DatabaseError) as exc:
            raise click.ClickException(_database_problem(exc)) from exc
        except _expected_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            if (line := _file_problem(exc)) is None:
                raise
            raise click.ClickException(line) from exc


def _database_problem(exc: Exception) -> str:
    """SQLite cannot tell a file it may not open or write from a wrong key
    or damage: a state directory the appliance may not write is neither,
    so it is named first, then a disk that failed (full, I/O error, held)."""
    from fallback.access import state_problem
    from fallback.config import load_config
    from fallback.errors import storage_fault
    from sync.crypto import WrongKeyError

    home = load_config().home
    if problem := state_problem(home):
        return problem
    if fault := storage_fault(exc, home):
        return fault.reason
    if isinstance(exc, WrongKeyError):
        return str(exc)
    # The key opened the file (WrongKeyError otherwise) and its disk did not fail, so it is damaged.
    return (f"a database file is damaged ({exc}); for the register copy run `sonae snapshot verify`, then "
            "`sonae snapshot rollback N` to a good generation; for ops.db run `sonae ops verify` (runbooks/08-snapshot-restore.md)")


def _file_problem(exc: OSError) -> str | None:
    """A full or failing disk, or a file the appliance may not read or
    write (named with its owner and mode; under SONAE_HOME, where it must
    do both, as the state directory's first such path); None for any other
    OSError."""
    from fallback.access import permission_message, state_problem
    from fallback.config import load_config
    from fallback.errors import storage_fault

    home = load_config().home
    if fault := storage_fault(exc, home):
        return fault.reason
    if not isinstance(exc, PermissionError) or exc.filename is None:
        return None
    if home.resolve() in Path(exc.filename).resolve().parents and (problem := state_problem(home)):
        return problem
    return permission_message(exc.filename, write=_writing(exc))


def _writing(exc: PermissionError) -> bool:
    """Whether the refused operation wanted to write: reading is judged
    first, so a file that cannot even be read is named as such."""
    from fallback.access import blocking_path

    return blocking_path(exc.filename) is None


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
