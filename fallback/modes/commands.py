"""`sonae mode`: read and change the operating mode from the console (for
when the web UI itself is unreachable; acts with the supervisor's rights and
is audited under the operator's name)."""

from __future__ import annotations

import click

from fallback import modes
from fallback.cli_support import config, operator
from fallback.ops import open_ops


@click.group("mode")
def mode_group():
    """Show or change the operating mode (standby/suspect/downtime/recovery)."""


@mode_group.command("show")
def show():
    state = modes.current(open_ops(config()))
    click.echo(f"{state.mode}\t{state.label}\tsince {state.since or '-'}\tby {state.actor}\t{state.reason}")


@mode_group.command("history")
def history():
    for row in modes.history(open_ops(config())):
        click.echo(f"{row['at']}\t{row['from_mode']} -> {row['to_mode']}\t{row['actor']}\t{row['reason']}")


@mode_group.command("set")
@click.argument("mode", type=click.Choice([modes.STANDBY, modes.SUSPECT, modes.DOWNTIME, modes.RECOVERY]))
@click.option("--reason", required=True, help="Why (recorded), e.g. 住民記録システム障害.")
@click.option("--actor")
def set_mode(mode, reason, actor):
    """Change the mode as a supervisor would."""
    state = modes.change(open_ops(config()), mode, actor=operator(actor), role="supervisor", reason=reason)
    click.echo(f"mode is now {state.mode} ({state.label})")
